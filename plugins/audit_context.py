"""What an audit check's ``evaluate(ctx, options)`` receives, and the single write pass at the end.

The per-image pass (:mod:`vetset.plugins.audit`) decodes every image once in worker
processes and hands back compact numbers. :class:`AuditContext` holds them as columns
aligned with the audited samples, and collects what the checks decide:

* per-sample fields (``ctx.set_field``), written for all checks in **one** pass of bulk
  writes (one ``UpdateOne`` per sample, 10,000 per batch);
* issue tags (``ctx.tag``), replacing the tags earlier audits wrote, in the same write;
* coverage counts (``ctx.coverage``), class x property bin per split.

Why one pass: ``SampleCollection.set_values`` issues one bulk operation per field, about
0.3 s per field for 10,000 samples (measured on CIFAR-10 test, FiftyOne 1.22); the audit
writes a dozen fields and the tags, so one ``UpdateOne`` per sample that sets all of
them, through the same ``Dataset._bulk_write`` that ``set_values`` uses internally, is
about ten times faster (0.44 s for 12 fields x 10,000 samples). Without that internal
method (another FiftyOne version) it falls back to ``set_values`` per field.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from vetset.core.dataset import GT_FIELD, SPLITS, UNREADABLE_TAG
from vetset.core.errors import PluginError

#: Field types by short name, for :meth:`AuditContext.set_field`.
FIELD_KINDS = ("float", "int", "bool", "str", "metadata")
#: Samples per bulk write, so the pending updates never hold the whole dataset in memory.
WRITE_BATCH = 10_000
#: Tags a check may not write: they carry the split or are the loader's.
RESERVED_TAGS = frozenset(SPLITS) | {"augmented"}


@dataclass
class AuditContext:
    """Columns of the audited samples and the writes the checks stage.

    Attributes:
        view: the audited FiftyOne dataset or view.
        ids, filepaths: sample ids and file paths, in audit order (length ``n``).
        labels: ``ground_truth.label`` per sample (``None`` when missing).
        splits: ``"train"``/``"val"``/``"test"`` tag per sample, or ``None``.
        classes: the dataset's sorted class list (``default_classes`` plus labels seen).
        readable: ``bool`` array, shape ``(n,)``: the file decoded.
        width, height: ``int64`` arrays, pixels after EXIF orientation (0 if unreadable).
        file_size: ``int64`` array, bytes.
        exif_orientation, n_frames: ``int64`` arrays (1 when absent).
        mode, format: Pillow mode / format names per sample (``""`` if unreadable).
        error: decode failure reason per sample (``None`` when readable).
        sample_tags: each sample's tags when the audit started.
        computed: ``{check: {key: list}}``, what each check's ``compute`` returned per
            image (``None`` for unreadable images or when ``compute`` failed).
        options: the audit stage's options model.
        log: one-line message callable.
    """

    view: Any
    ids: list[str]
    filepaths: list[str]
    labels: list[str | None]
    splits: list[str | None]
    classes: list[str]
    readable: np.ndarray
    width: np.ndarray
    height: np.ndarray
    file_size: np.ndarray
    exif_orientation: np.ndarray
    n_frames: np.ndarray
    mode: list[str]
    format: list[str]
    error: list[str | None]
    sample_tags: list[list[str]]
    computed: dict[str, dict[str, list[Any]]]
    options: Any = None
    log: Callable[[str], None] = print
    fields: dict[str, tuple[list[Any], str]] = field(default_factory=dict)
    tags: dict[str, np.ndarray] = field(default_factory=dict)
    coverage: dict[str, dict[str, dict[str, dict[str, int]]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Number of audited samples (readable or not)."""
        return len(self.ids)

    @property
    def split_names(self) -> list[str]:
        """Splits present among the audited samples, in ``train, val, test`` order."""
        present = set(self.splits)
        return [s for s in SPLITS if s in present]

    # -- reading -----------------------------------------------------------------------
    def column(self, check: str, key: str, dtype: Any = np.float64, fill: Any = np.nan) -> np.ndarray:
        """``computed[check][key]`` as an array of shape ``(n,)``; ``fill`` where missing.

        Raises:
            KeyError: the check computed nothing under ``key`` (not run, or no readable image).
        """
        values = self.computed.get(check, {}).get(key)
        if values is None:
            raise KeyError(f"check {check!r} computed no {key!r}")
        if dtype is object:
            return np.array(values, dtype=object)
        return np.array([fill if v is None else v for v in values], dtype=dtype)

    def has(self, check: str, key: str) -> bool:
        """Whether ``computed[check][key]`` exists."""
        return key in self.computed.get(check, {})

    def masks_by_split(self) -> dict[str, np.ndarray]:
        """``{split: bool mask}`` for present splits plus ``"all"`` (every sample)."""
        splits = np.array([s or "" for s in self.splits], dtype=object)
        out = {s: splits == s for s in self.split_names}
        out["all"] = np.ones(self.n, dtype=bool)
        return out

    def count_by_class(self, mask: np.ndarray) -> dict[str, dict[str, int]]:
        """``{split: {class: count}}`` of samples where ``mask`` is true (splits incl. ``all``)."""
        labels = np.array([lab or "" for lab in self.labels], dtype=object)
        out = {}
        for split, smask in self.masks_by_split().items():
            sel = labels[mask & smask]
            values, counts = np.unique(sel.astype(str), return_counts=True) if len(sel) else ([], [])
            found = dict(zip(values, (int(c) for c in counts)))
            out[split] = {c: found.get(c, 0) for c in self.classes}
        return out

    def examples(self, mask: np.ndarray, order: np.ndarray | None = None, limit: int = 12) -> list[dict[str, Any]]:
        """Up to ``limit`` samples where ``mask`` is true, as ``{id, filepath, label, split}``.

        Args:
            mask: ``bool`` array, shape ``(n,)``.
            order: optional sort key, shape ``(n,)``; lowest first.
            limit: how many to return.
        """
        idx = np.flatnonzero(mask)
        if order is not None and len(idx):
            idx = idx[np.argsort(order[idx], kind="stable")]
        return [{"id": self.ids[i], "filepath": self.filepaths[i], "label": self.labels[i],
                 "split": self.splits[i]} for i in idx[:limit]]

    # -- staging writes ------------------------------------------------------------------
    def set_field(self, name: str, values: Sequence[Any], kind: str) -> None:
        """Stage per-sample values of field ``name`` (written once, after every check).

        Args:
            name: top-level sample field name.
            values: one value per audited sample (``None`` leaves the field empty);
                NaN floats are stored as ``None``.
            kind: one of :data:`FIELD_KINDS` (``metadata`` = ``fo.ImageMetadata`` dicts).

        Raises:
            PluginError: wrong length, unknown kind, or a field already staged by another check.
        """
        if kind not in FIELD_KINDS:
            raise PluginError(f"audit field {name!r}: kind must be one of {', '.join(FIELD_KINDS)}, got {kind!r}")
        if len(values) != self.n:
            raise PluginError(f"audit field {name!r} has {len(values)} values for {self.n} samples")
        if name in self.fields:
            raise PluginError(f"audit field {name!r} is written by two checks")
        self.fields[name] = (_clean(values, kind), kind)

    def tag(self, tag: str, mask: np.ndarray) -> int:
        """Stage issue tag ``tag`` on samples where ``mask`` is true; returns how many.

        Tags the audit wrote before are removed from every audited sample first, so a rerun
        never duplicates or keeps stale issues.

        Raises:
            PluginError: ``tag`` is a split name or otherwise reserved.
        """
        if tag in RESERVED_TAGS:
            raise PluginError(f"audit checks may not write the reserved tag {tag!r}")
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != (self.n,):
            raise PluginError(f"audit tag {tag!r}: mask has shape {mask.shape}, expected ({self.n},)")
        self.tags[tag] = self.tags.get(tag, np.zeros(self.n, dtype=bool)) | mask
        return int(mask.sum())

    def add_coverage(self, prop: str, bins: Sequence[str | None], bin_names: Sequence[str]) -> dict[str, Any]:
        """Count samples per split x class x bin for coverage property ``prop``.

        Args:
            prop: property name (``orientation``, ``colour``, ``clarity``...).
            bins: the bin of each sample (``None`` for unreadable ones, not counted).
            bin_names: every bin, in display order (bins with no sample count 0).

        Returns:
            ``{split: {class: {bin: count}}}`` (also stored under ``ctx.coverage``), splits
            including ``all``.
        """
        bins_arr = np.array([b or "" for b in bins], dtype=object)
        labels = np.array([lab or "" for lab in self.labels], dtype=object)
        for split, smask in self.masks_by_split().items():
            table = {}
            for cls in self.classes:
                cmask = smask & (labels == cls)
                values, counts = np.unique(bins_arr[cmask].astype(str), return_counts=True) if cmask.any() else ([], [])
                found = dict(zip(values, counts))
                table[cls] = {b: int(found.get(b, 0)) for b in bin_names}
            self.coverage.setdefault(split, {})[prop] = table
        return {split: self.coverage[split][prop] for split in self.coverage}


def shares(counts: dict[str, dict[str, dict[str, int]]], digits: int = 4) -> dict[str, dict[str, dict[str, float]]]:
    """Turn ``{split: {class: {bin: count}}}`` into row shares (each class sums to 1; 0 if empty)."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for split, table in counts.items():
        out[split] = {}
        for cls, row in table.items():
            total = sum(row.values())
            out[split][cls] = {b: round(v / total, digits) if total else 0.0 for b, v in row.items()}
    return out


def _clean(values: Iterable[Any], kind: str) -> list[Any]:
    out = []
    for v in values:
        if v is None:
            out.append(None)
        elif kind == "float":
            f = float(v)
            out.append(f if np.isfinite(f) else None)
        elif kind == "int":
            out.append(int(v))
        elif kind == "bool":
            out.append(bool(v))
        elif kind == "str":
            out.append(str(v))
        else:
            out.append(v)
    return out


def _field_type(kind: str) -> tuple[Any, dict[str, Any]]:
    import fiftyone as fo

    if kind == "metadata":
        return fo.EmbeddedDocumentField, {"embedded_doc_type": fo.ImageMetadata}
    return {"float": fo.FloatField, "int": fo.IntField, "bool": fo.BooleanField, "str": fo.StringField}[kind], {}


def _declare(ds: Any, fields: dict[str, tuple[Any, dict[str, Any]]]) -> None:
    """Add sample fields to the schema, all at once when this FiftyOne allows it."""
    if not fields:
        return
    merge = getattr(ds, "_merge_sample_field_schema", None)
    if merge is not None:  # one schema update instead of one per field (about 10x faster)
        merge({name: ftype(**kwargs) for name, (ftype, kwargs) in fields.items()})
        return
    for name, (ftype, kwargs) in fields.items():
        ds.add_sample_field(name, ftype, **kwargs)


def write_all(ctx: AuditContext, old_tags: Iterable[str]) -> dict[str, Any]:
    """Write every staged field and the new issue tags of ``ctx`` in bulk (one pass, batched).

    Each sample gets one ``UpdateOne`` that sets all staged fields and its tags: the
    current tags minus ``old_tags`` (those earlier audits wrote) plus the staged ones.
    Missing fields are declared first, in one schema update; afterwards the
    values read back through the public API (``values``, ``match_tags``...).

    Returns:
        ``{"fields": [...], "tags": {tag: count}, "seconds": float}``.

    Raises:
        PluginError: a staged field exists in the dataset with another type.
    """
    import time

    from bson import ObjectId
    from pymongo import UpdateOne

    t0 = time.perf_counter()
    ds = ctx.view._dataset
    schema = ds.get_field_schema()
    new = {}
    for name, (_, kind) in ctx.fields.items():
        ftype, kwargs = _field_type(kind)
        if name not in schema:
            new[name] = (ftype, kwargs)
        elif not isinstance(schema[name], ftype):
            raise PluginError(f"dataset {ds.name!r} already has a field {name!r} of type "
                              f"{type(schema[name]).__name__}; the audit writes a {ftype.__name__}")
    _declare(ds, new)
    drop = set(old_tags) | set(ctx.tags)
    current = ctx.sample_tags
    names = list(ctx.fields)
    cols = [ctx.fields[n][0] for n in names]
    tag_names = list(ctx.tags)
    tag_cols = [ctx.tags[t] for t in tag_names]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    bulk = getattr(ds, "_bulk_write", None)
    for start in range(0, ctx.n, WRITE_BATCH):
        docs = []
        for k in range(start, min(ctx.n, start + WRITE_BATCH)):
            doc = {n: c[k] for n, c in zip(names, cols)}
            tags = [t for t in (current[k] or []) if t not in drop]
            tags += [t for t, col in zip(tag_names, tag_cols) if col[k]]
            doc["tags"] = tags
            doc["last_modified_at"] = now
            docs.append(doc)
        ids = ctx.ids[start:start + len(docs)]
        if bulk is not None:
            bulk([UpdateOne({"_id": ObjectId(i)}, {"$set": d}) for i, d in zip(ids, docs)], ids=ids)
        else:  # a FiftyOne without the internal bulk writer: the public API, one field at a time
            view = ds.select(ids, ordered=True)
            for name in names + ["tags"]:
                view.set_values(name, [d[name] for d in docs])
    return {"fields": names, "tags": {t: int(c.sum()) for t, c in ctx.tags.items()},
            "seconds": round(time.perf_counter() - t0, 3)}


@dataclass
class PassColumns:
    """The image pass's records as columns (see :func:`collect_records`).

    Attributes:
        width, height, file_size, exif_orientation, n_frames: ``int64`` arrays, shape ``(n,)``.
        mode, format: Pillow mode / format per image (``""`` if unreadable).
        error: decode failure reason per image (``None`` when readable).
        computed: ``{check: {key: list}}`` as :attr:`AuditContext.computed`.
        failures: ``{check: ["<filepath>: <error>", ...]}``, images whose ``compute`` raised.
    """

    width: np.ndarray
    height: np.ndarray
    file_size: np.ndarray
    exif_orientation: np.ndarray
    n_frames: np.ndarray
    mode: list[str]
    format: list[str]
    error: list[str | None]
    computed: dict[str, dict[str, list[Any]]]
    failures: dict[str, list[str]]

    @property
    def readable(self) -> np.ndarray:
        """``bool`` array, shape ``(n,)``: the image decoded."""
        return np.array([e is None for e in self.error], dtype=bool)


def collect_records(records: Iterable[tuple], filepaths: Sequence[str], checks: Sequence[str]) -> PassColumns:
    """Turn the stream of image-pass records into columns as they arrive.

    Each record (``vetset.plugins.audit.audit_image``: ``(width, height, file_size,
    mode, format, exif_orientation, n_frames, error, results)``, one ``results`` dict per
    check in ``checks`` order) is unpacked into preallocated ``int64`` arrays and one list
    per computed key, then dropped: the driver keeps about 8 bytes per number instead of a
    tuple and a dict per image (about 1 KB per image less for the built-in checks, measured
    with ``tracemalloc`` on CIFAR-10; ``benchmarks/audit_scaling.py``).

    Args:
        records: the records in the order of ``filepaths`` (a generator is consumed once).
        filepaths: the audited files (length ``n``), for failure messages.
        checks: names of the checks whose ``compute`` produced ``results``, in order.

    Raises:
        PluginError: the stream has more or fewer records than ``filepaths``.
    """
    n = len(filepaths)
    ints = np.zeros((5, n), dtype=np.int64)  # width, height, file_size, exif_orientation, n_frames
    mode: list[str] = [""] * n
    fmt: list[str] = [""] * n
    error: list[str | None] = [None] * n
    computed: dict[str, dict[str, list[Any]]] = {name: {} for name in checks}
    failures: dict[str, list[str]] = {}
    i = -1
    for i, (w, h, size, m, f, orient, frames, err, results) in enumerate(records):
        if i >= n:
            raise PluginError(f"the image pass returned more than {n} records")
        ints[:, i] = (w, h, size, orient, frames)
        mode[i], fmt[i], error[i] = m, f, err
        for name, res in zip(checks, results):
            if "__error__" in res:
                failures.setdefault(name, []).append(f"{filepaths[i]}: {res['__error__']}")
                continue
            cols = computed[name]
            for key, value in res.items():
                col = cols.get(key)
                if col is None:
                    col = cols[key] = [None] * n
                col[i] = value
    if i + 1 != n:
        raise PluginError(f"the image pass returned {i + 1} records for {n} images")
    return PassColumns(width=ints[0], height=ints[1], file_size=ints[2], exif_orientation=ints[3], n_frames=ints[4],
                       mode=mode, format=fmt, error=error, computed=computed, failures=failures)


def read_columns(view: Any) -> tuple[list[str], list[str], list[str | None], list[str | None], list[list[str]]]:
    """``(ids, filepaths, labels, splits, tags)`` of ``view``."""
    ids, filepaths, tags = view.values(["id", "filepath", "tags"])
    if GT_FIELD in view.get_field_schema():
        labels = view.values(f"{GT_FIELD}.label")
    else:
        labels = [None] * len(ids)
    splits = []
    for t in tags:
        t = t or []
        splits.append(next((s for s in SPLITS if s in t), None))
    return list(ids), list(filepaths), list(labels), splits, [list(t or []) for t in tags]


__all__ = ["AuditContext", "FIELD_KINDS", "PassColumns", "RESERVED_TAGS", "UNREADABLE_TAG", "collect_records",
           "read_columns", "shares", "write_all"]
