"""What an audit check's ``evaluate(ctx, options)`` receives, and the single write pass at the end.

The per-image pass (:mod:`vetset.plugins.audit.stage`) decodes every image once in worker
processes and hands back compact numbers. :class:`AuditContext` holds them as columns
aligned with the audited samples, and collects what the checks decide:

* per-sample fields (``ctx.set_field``), written for all checks in **one** pass of bulk
  writes (one ``UpdateOne`` per sample, 2,000 per batch);
* issue tags (``ctx.tag``), replacing the tags earlier audits wrote, in the same write;
* coverage counts (``ctx.coverage``), class x property bin per split.

Why one pass: ``SampleCollection.set_values`` issues one bulk operation per field, and
the audit writes a dozen fields and the tags, so one update per sample that sets all of
them (:func:`vetset.core._fiftyone.update_samples`) is far faster; the figures are in
``benchmarks/audit_vs_cleanvision.py``'s output (the ``write`` seconds).

Memory: the driver holds the audit as columns, not per-sample objects. Numbers the
workers computed and the staged fields are pandas nullable arrays (numpy values plus a
missing-value mask: 9 bytes a value, 2 for a boolean), repeated strings (labels, tag
sets, colour modes) are shared objects, and the write documents (and ``ImageMetadata``
dicts) are built per batch of :data:`WRITE_BATCH` samples, whatever the dataset size.
What grows with the number of images is what the dataset-level checks need in memory:
id, path, two hashes and some 20 numbers, well under 1 KB per image (the driver's
memory per image is printed by ``benchmarks/audit_scaling.py`` and bounded by
``tests/test_audit_context.py``), not pixels or per-image dicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from dataclasses import fields as dc_fields
from typing import Any

import numpy as np
import pandas as pd

from vetset.core.dataset import GT_FIELD, SPLITS, UNREADABLE_TAG
from vetset.core.errors import PluginError
from vetset.plugins.audit._columns import PassColumns, collect_records
from vetset.plugins.audit._staging import FIELD_KINDS, WRITE_BATCH, stage, write_all

#: Tags a check may not write: they carry the split or are the loader's.
RESERVED_TAGS = frozenset(SPLITS) | {"augmented"}
#: Sample fields a check may not write: FiftyOne's own (the unique ``filepath`` index, ids,
#: timestamps, tags, which go through :meth:`AuditContext.tag`) and the labels.
RESERVED_FIELDS = frozenset({"id", "_id", "filepath", "tags", "created_at", "last_modified_at", "media_type",
                             "_media_type", "_rand", "_dataset_id", GT_FIELD})

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
    def from_pass(cls, columns: PassColumns, **kwargs: Any) -> AuditContext:
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
        """``computed[check][key]`` as an array of shape ``(n,)``; ``fill`` where missing
        (``None`` for ``dtype=object``).

        Raises:
            KeyError: the check computed nothing under ``key`` (not run, or no readable image).
            ValueError: an integer ``dtype`` with the default NaN ``fill`` and missing values.
        """
        values = self.computed.get(check, {}).get(key)
        if values is None:
            raise KeyError(f"check {check!r} computed no {key!r}")
        if isinstance(values, pd.api.extensions.ExtensionArray):
            if dtype is object:
                return values.to_numpy(dtype=object, na_value=None)
            if np.issubdtype(np.dtype(dtype), np.integer) and isinstance(fill, float) and math.isnan(fill) \
                    and values.isna().any():
                raise ValueError(f"{int(values.isna().sum())} images have no {key!r}: pass a fill for an integer column")
            return values.to_numpy(dtype=dtype, na_value=fill)
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
                ``(n,)``; ``None`` (or ``pd.NA``) leaves the field empty, and so do NaN and
                infinite floats. Numbers and booleans are kept as pandas nullable arrays and
                strings as one shared object array, so staging costs 2-9 bytes per sample. For ``metadata``
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
            self.fields[name] = (stage(values, kind), kind)
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


def read_columns(view: Any) -> tuple[list[str], list[str], list[str | None], list[str | None], list[tuple[str, ...]]]:
    """``(ids, filepaths, labels, splits, tags)`` of ``view``.

    Equal labels are one string object and equal tag sets one tuple, so these columns cost
    a list slot per sample rather than a string or a list each.
    """
    if GT_FIELD in view.get_field_schema():  # one query for the four columns
        ids, filepaths, tags, labels = view.values(["id", "filepath", "tags", f"{GT_FIELD}.label"])
        shared: dict[str, str] = {}
        labels = [None if lab is None else shared.setdefault(lab, lab) for lab in labels]
    else:
        ids, filepaths, tags = view.values(["id", "filepath", "tags"])
        labels = [None] * len(ids)
    tag_sets: dict[tuple[str, ...], tuple[str, ...]] = {}
    splits = []
    for k, t in enumerate(tags):
        t = tuple(t or ())
        t = tags[k] = tag_sets.setdefault(t, t)
        splits.append(next((s for s in SPLITS if s in t), None))
    return list(ids), list(filepaths), labels, splits, list(tags)


__all__ = ["AuditContext", "FIELD_KINDS", "WRITE_BATCH", "PassColumns", "RESERVED_FIELDS", "RESERVED_TAGS",
           "UNREADABLE_TAG",
           "collect_records", "read_columns", "shares", "write_all"]
