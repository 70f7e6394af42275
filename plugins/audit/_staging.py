"""Staging and writing the audit's per-sample fields: one bulk pass after every check.

:meth:`vetset.plugins.audit.context.AuditContext.set_field` stores each field through
:func:`stage` (numpy arrays, strictly typed by kind); :func:`write_all` turns the staged
columns into one ``UpdateOne`` per sample, :data:`WRITE_BATCH` samples at a time (see
:mod:`vetset.plugins.audit.context` for why one pass).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from vetset.core._fiftyone import declare_sample_fields, update_samples
from vetset.core.dataset import root_dataset
from vetset.core.errors import PluginError

#: Field types by short name, for :meth:`~vetset.plugins.audit.context.AuditContext.set_field`.
FIELD_KINDS = ("float", "int", "bool", "str", "metadata")
#: Samples per bulk write, so the pending updates never hold the whole dataset in memory
#: (2,000 ``UpdateOne`` documents of the built-in checks are about 3 MB).
WRITE_BATCH = 2_000


_INT64_MAX = np.iinfo(np.int64).max


def stage(values: Any, kind: str) -> Any:
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
    float array for :func:`stage`; for ``int``, ``(int64 array, present)`` built exactly from
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


def _field(kind: str) -> Any:
    """A new FiftyOne field of ``kind``, for the schema."""
    import fiftyone as fo

    if kind == "metadata":
        return fo.EmbeddedDocumentField(fo.ImageMetadata)
    return {"float": fo.FloatField, "int": fo.IntField, "bool": fo.BooleanField, "str": fo.StringField}[kind]()


def write_all(ctx: Any, old_tags: Iterable[str]) -> dict[str, Any]:
    """Write every staged field and the new issue tags of ``ctx`` in bulk (one pass, batched).

    Each sample gets one ``UpdateOne`` that sets all staged fields and its tags: the
    current tags minus ``old_tags`` (those earlier audits wrote) plus the staged ones.
    Missing fields are declared first, in one schema update
    (:func:`vetset.core._fiftyone.declare_sample_fields`); the updates go through
    :func:`vetset.core._fiftyone.update_samples`, and read back through the public API
    (``values``, ``match_tags``...).

    Returns:
        ``{"fields": [...], "tags": {tag: count}, "seconds": float}``.

    Raises:
        PluginError: a staged field exists in the dataset with another type.
    """
    import time

    t0 = time.perf_counter()
    ds = root_dataset(ctx.view)
    schema = ds.get_field_schema()
    new = {}
    for name, (_, kind) in ctx.fields.items():
        wanted = _field(kind)
        if name not in schema:
            new[name] = wanted
        elif not isinstance(schema[name], type(wanted)):
            raise PluginError(f"dataset {ds.name!r} already has a field {name!r} of type "
                              f"{type(schema[name]).__name__}; the audit writes a {type(wanted).__name__}")
    declare_sample_fields(ds, new)
    drop = set(old_tags) | set(ctx.tags)
    current = ctx.sample_tags
    names = list(ctx.fields)
    tag_names = list(ctx.tags)
    tag_cols = [ctx.tags[t] for t in tag_names]
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
            docs.append(doc)
        update_samples(ds, ctx.ids[start:stop], docs)
    return {"fields": names, "tags": {t: int(c.sum()) for t, c in ctx.tags.items()},
            "seconds": round(time.perf_counter() - t0, 3)}


__all__ = ["FIELD_KINDS", "WRITE_BATCH", "stage", "write_all"]
