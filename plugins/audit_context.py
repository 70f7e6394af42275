"""What an audit check's ``evaluate(ctx, options)`` receives, and the single write pass at the end.

The per-image pass (:mod:`vetset.plugins.audit`) decodes every image once in worker
processes and hands back compact numbers. :class:`AuditContext` holds them as columns
aligned with the audited samples, and collects what the checks decide:

* per-sample fields (``ctx.set_field``), written for all checks in **one** pass of bulk
  writes (one ``UpdateOne`` per sample, 2,000 per batch);
* issue tags (``ctx.tag``), replacing the tags earlier audits wrote, in the same write;
* coverage counts (``ctx.coverage``), class x property bin per split.

Why one pass: ``SampleCollection.set_values`` issues one bulk operation per field, about
0.3 s per field for 10,000 samples (measured on CIFAR-10 test, FiftyOne 1.22); the audit
writes a dozen fields and the tags, so one ``UpdateOne`` per sample that sets all of
them, through the same ``Dataset._bulk_write`` that ``set_values`` uses internally, is
about ten times faster (0.44 s for 12 fields x 10,000 samples). Without that internal
method (another FiftyOne version) it falls back to ``set_values`` per field.

Memory: the driver holds the audit as columns, not per-sample objects. Numbers the
workers computed and the staged fields are numpy arrays (8 bytes a value, 1 for a
boolean), repeated strings (labels, tag sets, colour modes) are shared objects, and the
write documents (and ``ImageMetadata`` dicts) are built per batch of
:data:`WRITE_BATCH` samples (about 5 MB at the peak, whatever the dataset size). What
grows with the number of images is what the dataset-level checks need in memory: id,
path, two hashes and some 20 numbers, about 0.7 KB of Python heap per image
(``tracemalloc``, CIFAR-10 test, every built-in check) and 1.1 KB of resident memory
(``benchmarks/audit_scaling.py``: +5.8 MB for 2,000 images, +14.3 MB for 10,000), so a
million images need about 1 GB on the driver, not pixels or per-image dicts.
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass, field, fields as dc_fields
import sys
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from vetset.core.dataset import GT_FIELD, SPLITS, UNREADABLE_TAG
from vetset.core.errors import PluginError

#: Field types by short name, for :meth:`AuditContext.set_field`.
FIELD_KINDS = ("float", "int", "bool", "str", "metadata")
#: Samples per bulk write, so the pending updates never hold the whole dataset in memory
#: (2,000 ``UpdateOne`` documents of the built-in checks are about 3 MB).
WRITE_BATCH = 2_000
#: Tags a check may not write: they carry the split or are the loader's.
RESERVED_TAGS = frozenset(SPLITS) | {"augmented"}
#: Sample fields a check may not write: FiftyOne's own (the unique ``filepath`` index, ids,
#: timestamps, tags, which go through :meth:`AuditContext.tag`) and the labels.
RESERVED_FIELDS = frozenset({"id", "_id", "filepath", "tags", "created_at", "last_modified_at", "media_type",
                             "_media_type", "_rand", "_dataset_id", GT_FIELD})


class NumericColumn(Sequence):
    """One computed key's numbers for every image, as a numpy array plus a presence mask.

    It reads like the list it replaces: ``col[i]`` is a Python ``int``/``float`` or
    ``None`` where the image gave no value (unreadable, or its ``compute`` failed), and
    iteration yields the same. It costs 9 bytes per image instead of a 32-byte float
    object and a list slot. :meth:`AuditContext.column` reads it without a Python loop.

    Attributes:
        values: ``int64`` or ``float64`` array, shape ``(n,)`` (0 where missing).
        present: ``bool`` array, shape ``(n,)``.
    """

    __slots__ = ("values", "present")

    def __init__(self, values: np.ndarray, present: np.ndarray):
        self.values = values
        self.present = present

    def __len__(self) -> int:
        return len(self.values)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [v if p else None for v, p in zip(self.values[i].tolist(), self.present[i].tolist())]
        return self.values[i].item() if self.present[i] else None

    def __iter__(self) -> Iterator[Any]:
        return (v if p else None for v, p in zip(self.values.tolist(), self.present.tolist()))

    def __setitem__(self, i: Any, value: Any) -> None:
        if isinstance(i, slice):
            idx = range(*i.indices(len(self)))
            value = list(value)
            if len(value) != len(idx):
                raise ValueError(f"cannot assign {len(value)} values to a slice of {len(idx)}")
            for k, v in zip(idx, value):
                self[k] = v
            return
        if value is None:
            self.present[i] = False
            self.values[i] = 0
            return
        if not _is_number(value):
            raise TypeError(f"a NumericColumn holds numbers or None, not {type(value).__name__}")
        if not _exact_in(self, value):
            raise ValueError(f"{value!r} cannot join this {self.values.dtype} column without rounding "
                             "(integers above 2**53 and floats do not mix in one column)")
        if self.values.dtype == np.int64 and not isinstance(value, (int, np.integer)):
            self.values = self.values.astype(np.float64)
        try:
            self.values[i] = value
        except OverflowError:
            raise ValueError(f"{value!r} is outside the 64-bit integer range") from None
        self.present[i] = True

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, NumericColumn):
            return bool(np.array_equal(self.present, other.present)
                        and np.array_equal(self.values[self.present], other.values[other.present]))
        if isinstance(other, (list, tuple)):
            return self.tolist() == list(other)
        return NotImplemented

    __hash__ = None  # mutable, like the list it stands for

    def __add__(self, other: Any) -> list[Any]:
        return self.tolist() + list(other)

    def __radd__(self, other: Any) -> list[Any]:
        return list(other) + self.tolist()

    def __repr__(self) -> str:
        return f"NumericColumn({self.values.dtype}, n={len(self)}, present={int(self.present.sum())})"

    def tolist(self) -> list[Any]:
        """The values as a list of Python numbers, ``None`` where missing (also what JSON gets)."""
        return self[:]

    def to_array(self, dtype: Any = np.float64, fill: Any = np.nan) -> np.ndarray:
        """The values as ``dtype``, ``fill`` where missing; shape ``(n,)``."""
        missing = ~self.present
        if missing.any():
            if np.issubdtype(np.dtype(dtype), np.integer) and isinstance(fill, float) and math.isnan(fill):
                raise ValueError(f"{int(missing.sum())} images have no value: pass a fill for an integer column")
            out = self.values.astype(dtype)
            out[missing] = fill
            return out
        return self.values.astype(dtype)


#: Integers above this lose precision as float64 (2**53, IEEE 754 double's 53-bit significand).
_EXACT_FLOAT_INT = 2**53


def _exact_in(col: "NumericColumn", value: Any) -> bool:
    """Whether ``value`` fits ``col`` without losing precision (an int column turns float64
    when a float arrives, so its integers, and any new one, must stay below 2**53)."""
    is_int = isinstance(value, (int, np.integer))
    if col.values.dtype == np.int64 and is_int:
        return True
    if is_int and abs(int(value)) > _EXACT_FLOAT_INT:
        return False
    if col.values.dtype == np.int64 and col.present.any():
        return int(np.abs(col.values[col.present]).max()) <= _EXACT_FLOAT_INT
    return True


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


class _ComputedBuilder:
    """Fills ``{key: column}`` for one check as records arrive (see :func:`collect_records`).

    A key whose values are numbers becomes a :class:`NumericColumn` (``int64`` while every
    value is an integer, then ``float64``); any other key, or one that mixes numbers with
    other types, a list. A key's repeated strings (a colour mode, a bin name) are shared,
    so each is one object however many images carry it; a key with more than
    :attr:`MAX_SHARED` distinct strings (a hash) stops sharing, since each value is unique.
    """

    MAX_SHARED = 256

    def __init__(self, n: int):
        self.n = n
        self.cols: dict[str, Any] = {}
        self.shared: dict[str, dict[str, str] | None] = {}

    def set(self, i: int, key: str, value: Any) -> None:
        col = self.cols.get(key)
        if col is None:
            if _is_number(value):
                col = NumericColumn(np.zeros(self.n, dtype=np.int64 if isinstance(value, (int, np.integer))
                                             else np.float64), np.zeros(self.n, dtype=bool))
            else:
                col = [None] * self.n
            self.cols[key] = col
        if value is None:
            return
        if type(col) is NumericColumn:
            if _is_number(value) and _exact_in(col, value):
                try:
                    col[i] = value
                    return
                except ValueError:  # an int beyond int64: keep Python ints
                    pass
            col = self.cols[key] = list(col)
        elif type(value) is str:
            shared = self.shared.get(key, {})
            if shared is not None:
                value = shared.setdefault(value, value)
                self.shared[key] = shared if len(shared) <= self.MAX_SHARED else None
        col[i] = value


@dataclass
class PassColumns:
    """The image pass's records as columns, one entry per audited image (see :func:`collect_records`).

    Attributes:
        readable: ``bool`` array, shape ``(n,)``: the file decoded.
        width, height: ``int64`` arrays, pixels after EXIF orientation (0 if unreadable).
        file_size: ``int64`` array, bytes.
        exif_orientation, n_frames: ``int64`` arrays (1 when absent).
        mode, format: Pillow mode / format names per sample (``""`` if unreadable).
        error: decode failure reason per sample (``None`` when readable).
        computed: ``{check: {key: column}}``, what each check's ``compute`` returned per
            image, ``None`` for unreadable images or when ``compute`` failed. A column is a
            sequence of length ``n``: a :class:`NumericColumn` for numbers, else a list.
        failures: ``{check: ["<filepath>: <error>", ...]}``, images whose ``compute`` raised.
    """

    readable: np.ndarray
    width: np.ndarray
    height: np.ndarray
    file_size: np.ndarray
    exif_orientation: np.ndarray
    n_frames: np.ndarray
    mode: list[str]
    format: list[str]
    error: list[str | None]
    computed: dict[str, dict[str, Sequence[Any]]]
    failures: dict[str, list[str]]


@dataclass
class AuditContext(PassColumns):
    """Columns of the audited samples and the writes the checks stage.

    The image pass's columns (:class:`PassColumns`: ``readable``, ``width``, ``height``,
    ``file_size``, ``exif_orientation``, ``n_frames``, ``mode``, ``format``, ``error``,
    ``computed``, ``failures``) and:

    Attributes:
        view: the audited FiftyOne dataset or view.
        ids, filepaths: sample ids and file paths, in audit order (length ``n``).
        labels: ``ground_truth.label`` per sample (``None`` when missing).
        splits: ``"train"``/``"val"``/``"test"`` tag per sample, or ``None``.
        classes: the dataset's sorted class list (``default_classes`` plus labels seen).
        sample_tags: each sample's tags when the audit started (a tuple per sample; equal
            tag sets share one tuple).
        options: the audit stage's options model.
        log: one-line message callable.
    """

    view: Any
    ids: list[str]
    filepaths: list[str]
    labels: list[str | None]
    splits: list[str | None]
    classes: list[str]
    sample_tags: list[tuple[str, ...]]
    options: Any = None
    log: Callable[[str], None] = print
    fields: dict[str, tuple[Any, str]] = field(default_factory=dict)
    tags: dict[str, np.ndarray] = field(default_factory=dict)
    coverage: dict[str, dict[str, dict[str, dict[str, int]]]] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_pass(cls, columns: PassColumns, **kwargs: Any) -> "AuditContext":
        """An :class:`AuditContext` over the image pass's ``columns`` (shared, not copied)."""
        return cls(**{f.name: getattr(columns, f.name) for f in dc_fields(PassColumns)}, **kwargs)

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
        if isinstance(values, NumericColumn) and dtype is not object:
            return values.to_array(dtype, fill)
        if dtype is object:
            return np.array(list(values), dtype=object)
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
    def set_field(self, name: str, values: Any, kind: str) -> None:
        """Stage per-sample values of field ``name`` (written once, after every check).

        Args:
            name: top-level sample field name.
            values: one value per audited sample, a sequence or a numpy array of shape
                ``(n,)``; ``None`` leaves the field empty, and so do NaN and infinite floats.
                Numbers and booleans are kept as numpy arrays and strings as one shared
                object array, so staging costs 1-8 bytes per sample. For ``metadata``
                (``fo.ImageMetadata`` dicts), any sequence that can be sliced: it is read
                one write batch at a time, so it may build the dicts on demand.
            kind: one of :data:`FIELD_KINDS`.

        Raises:
            PluginError: wrong length, unknown kind, a value of the wrong type, a reserved
                name (:data:`RESERVED_FIELDS`, leading ``_``, a ``.``), or a field already
                staged by another check.
        """
        if kind not in FIELD_KINDS:
            raise PluginError(f"audit field {name!r}: kind must be one of {', '.join(FIELD_KINDS)}, got {kind!r}")
        if len(values) != self.n:
            raise PluginError(f"audit field {name!r} has {len(values)} values for {self.n} samples")
        if name in self.fields:
            raise PluginError(f"audit field {name!r} is written by two checks")
        if not isinstance(name, str) or name in RESERVED_FIELDS or not name or name.startswith("_") \
                or any(c in name for c in ".$"):
            raise PluginError(f"audit field {name!r} is not a field checks may write (FiftyOne's own fields, the "
                              "labels, names starting with '_' or containing '.' or '$' are reserved)")
        try:
            self.fields[name] = (_stage(values, kind), kind)
        except (TypeError, ValueError, OverflowError) as exc:
            raise PluginError(f"audit field {name!r}: values are not all {kind} or None ({exc})") from exc

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


_INT64_MAX = np.iinfo(np.int64).max


def _stage(values: Any, kind: str) -> Any:
    """Staged storage of one field: ``(array, present)`` for numbers/booleans, an object array
    for strings, ``values`` itself for metadata.

    Missing values (``None``; NaN and infinities) leave the field empty. A float array may
    carry an ``int`` or ``bool`` field when its finite values are whole numbers or 0/1 (what
    :meth:`AuditContext.column` returns, NaN for unreadable images).

    Raises:
        ValueError: not one value per sample (an array of more than one dimension), or a
            value that is not of ``kind`` (a string for a number, 1.5 for an ``int``, a
            number outside int64 for an ``int``, anything but a boolean for a ``bool``).
    """
    if kind == "metadata":
        return values
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise ValueError(f"expected one value per sample, got an array of shape {values.shape}")
    if kind == "str":
        out = np.empty(len(values), dtype=object)
        out[:] = [None if _is_missing(v) else v if type(v) is str else str(v) for v in values]
        return out
    if not (isinstance(values, np.ndarray) and values.dtype != object):
        values = _numbers(values, kind)
        if isinstance(values, tuple):  # exact ints with their presence mask
            return values
    if values.dtype.kind not in ("b", "i", "u", "f") or (kind == "float" and values.dtype.kind == "b"):
        raise ValueError(f"got a {values.dtype} array")
    if values.dtype.kind == "f":
        present = np.isfinite(values)
        finite = values[present]
    else:
        present, finite = np.ones(len(values), dtype=bool), values
    if kind == "int":
        if values.dtype.kind == "b":
            raise ValueError("got booleans")
        if values.dtype.kind == "f" and not np.array_equal(finite, np.trunc(finite)):
            raise ValueError(f"{finite[finite != np.trunc(finite)][0].item()!r} is not a whole number")
        if len(finite) and (finite.max() >= 2.0**63 or finite.min() < -(2.0**63)):
            raise ValueError("a value is outside the 64-bit integer range")
        return np.where(present, values, 0).astype(np.int64), present
    if kind == "bool":
        if values.dtype.kind != "b" and not np.isin(finite, (0, 1)).all():
            raise ValueError(f"{finite[~np.isin(finite, (0, 1))][0].item()!r} is not a boolean")
        return np.where(present, values, 0).astype(bool), present
    return values.astype(np.float64), present


def _is_missing(v: Any) -> bool:
    """``None``, a float NaN (any float type) or pandas' ``NA``."""
    if v is None or type(v).__name__ == "NAType":
        return True
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _numbers(values: Sequence[Any], kind: str) -> Any:
    """A sequence of Python/numpy scalars (``None``, NaN, pandas ``NA`` = missing) as a 1-D
    float array for :func:`_stage`; for ``int``, ``(int64 array, present)`` built exactly from
    the values (whole-number floats included), never through float64."""
    out: list[Any] = []
    for v in values:
        if _is_missing(v):
            out.append(None)
        elif isinstance(v, (bool, np.bool_)):
            if kind != "bool":
                raise ValueError(f"{v!r} is not a number")
            out.append(int(v))
        elif isinstance(v, (str, bytes)) or not isinstance(v, numbers.Real):
            raise ValueError(f"{v!r} is not {'a boolean' if kind == 'bool' else 'a number'}")
        else:
            out.append(v)
    if kind != "int":
        return np.array([np.nan if v is None else float(v) for v in out], dtype=np.float64)
    exact, present = [], []
    for v in out:
        if v is not None and not isinstance(v, (int, np.integer)):
            if not math.isfinite(v):  # an infinity: missing, as in a float array
                v = None
            elif float(v) != math.trunc(v):
                raise ValueError(f"{float(v)!r} is not a whole number")
            else:
                v = math.trunc(v)
        if v is not None and not -_INT64_MAX - 1 <= int(v) <= _INT64_MAX:
            raise ValueError(f"{v!r} is outside the 64-bit integer range")
        exact.append(0 if v is None else int(v))
        present.append(v is not None)
    present = np.array(present, dtype=bool)
    return np.array(exact, dtype=np.int64), present


def _batch(staged: Any, kind: str, start: int, stop: int) -> list[Any]:
    """Python values of samples ``start:stop`` of a staged field, ``None`` where empty."""
    if kind == "metadata":
        return list(staged[start:stop])
    if kind == "str":
        return staged[start:stop].tolist()
    arr, present = staged
    return [v if p else None for v, p in zip(arr[start:stop].tolist(), present[start:stop].tolist())]


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
        merge({name: ftype(kwargs["embedded_doc_type"]) if "embedded_doc_type" in kwargs else ftype(**kwargs)
               for name, (ftype, kwargs) in fields.items()})
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
    tag_names = list(ctx.tags)
    tag_cols = [ctx.tags[t] for t in tag_names]
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    bulk = getattr(ds, "_bulk_write", None)
    for start in range(0, ctx.n, WRITE_BATCH):
        stop = min(ctx.n, start + WRITE_BATCH)
        cols = [_batch(ctx.fields[n][0], ctx.fields[n][1], start, stop) for n in names]
        tcols = [col[start:stop].tolist() for col in tag_cols]
        docs = []
        for j, k in enumerate(range(start, stop)):
            doc = {n: c[j] for n, c in zip(names, cols)}
            tags = [t for t in (current[k] or ()) if t not in drop]
            tags += [t for t, col in zip(tag_names, tcols) if col[j]]
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


def collect_records(records: Iterable[tuple], filepaths: Sequence[str], checks: Sequence[str]) -> PassColumns:
    """Turn the stream of image-pass records into columns as they arrive.

    Each record (``vetset.plugins.audit.audit_image``: ``(width, height, file_size,
    mode, format, exif_orientation, n_frames, error, results)``, one ``results`` dict per
    check in ``checks`` order) is unpacked into preallocated ``int64`` arrays and one
    column per computed key (a :class:`NumericColumn` for numbers), then dropped: the
    driver keeps about 9 bytes per number instead of a tuple, a dict and a float object
    per image (``benchmarks/audit_scaling.py`` measures the driver's memory).

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
    builders = {name: _ComputedBuilder(n) for name in checks}
    failures: dict[str, list[str]] = {}
    intern = sys.intern
    i = -1
    for i, (w, h, size, m, f, orient, frames, err, results) in enumerate(records):
        if i >= n:
            raise PluginError(f"the image pass returned more than {n} records")
        ints[:, i] = (w, h, size, orient, frames)
        mode[i], fmt[i], error[i] = intern(m), intern(f), err
        for name, res in zip(checks, results):
            if "__error__" in res:
                failures.setdefault(name, []).append(f"{filepaths[i]}: {res['__error__']}")
                continue
            setter = builders[name].set
            for key, value in res.items():
                setter(i, key, value)
    if i + 1 != n:
        raise PluginError(f"the image pass returned {i + 1} records for {n} images")
    return PassColumns(readable=np.array([e is None for e in error], dtype=bool), width=ints[0], height=ints[1],
                       file_size=ints[2], exif_orientation=ints[3], n_frames=ints[4], mode=mode, format=fmt,
                       error=error, computed={name: b.cols for name, b in builders.items()}, failures=failures)


def read_columns(view: Any) -> tuple[list[str], list[str], list[str | None], list[str | None], list[tuple[str, ...]]]:
    """``(ids, filepaths, labels, splits, tags)`` of ``view``.

    Equal labels are one string object and equal tag sets one tuple, so these columns cost
    a list slot per sample rather than a string or a list each.
    """
    ids, filepaths, tags = view.values(["id", "filepath", "tags"])
    if GT_FIELD in view.get_field_schema():
        labels = view.values(f"{GT_FIELD}.label")
        shared: dict[str, str] = {}
        labels = [None if lab is None else shared.setdefault(lab, lab) for lab in labels]
    else:
        labels = [None] * len(ids)
    tag_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
    splits = []
    for k, t in enumerate(tags):
        t = tuple(t or ())
        t = tags[k] = tag_sets.setdefault(t, t)
        splits.append(next((s for s in SPLITS if s in t), None))
    return list(ids), list(filepaths), labels, splits, list(tags)


__all__ = ["AuditContext", "FIELD_KINDS", "NumericColumn", "PassColumns", "RESERVED_FIELDS", "RESERVED_TAGS", "UNREADABLE_TAG",
           "collect_records", "read_columns", "shares", "write_all"]
