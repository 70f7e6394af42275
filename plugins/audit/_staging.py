"""Staging and writing the audit's per-sample fields: one bulk pass after every check.

:meth:`vetset.plugins.audit.context.AuditContext.set_field` stores each field through
:func:`stage` (pandas nullable arrays, strictly typed by kind); :func:`write_all` turns the staged
columns into one ``UpdateOne`` per sample, :data:`WRITE_BATCH` samples at a time (see
:mod:`vetset.plugins.audit.context` for why one pass).
"""

from __future__ import annotations

import hashlib
import math
import os
import pickle
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd

from vetset.core._fiftyone import declare_sample_fields, stored_fields, update_samples
from vetset.core.dataset import root_dataset
from vetset.core.errors import PluginError

#: Field types by short name, for :meth:`~vetset.plugins.audit.context.AuditContext.set_field`.
FIELD_KINDS = ("float", "int", "bool", "str", "metadata")
#: Samples per bulk write, so the pending updates never hold the whole dataset in memory
#: (2,000 ``UpdateOne`` documents of the built-in checks are about 3 MB).
WRITE_BATCH = 2_000
#: Up to this many samples, :func:`write_all` keeps the documents it built to digest them for
#: its write pass (about 2 KB a sample with the built-in checks) instead of building them again.
KEEP_DOCS = 50_000


#: The pandas nullable dtype each numeric kind is staged as.
NULLABLE = {"float": "Float64", "int": "Int64", "bool": "boolean"}


def stage(values: Any, kind: str) -> Any:
    """Staged storage of one field: a pandas nullable array (``Float64``, ``Int64``, ``boolean``:
    values plus a missing-value mask, 9 bytes a sample; 2 for booleans) for numbers and
    booleans, an object array for strings, ``values`` itself for metadata.

    Missing values (``None``, pandas' ``NA``; NaN and infinities) leave the field empty. A
    float array may carry an ``int`` or ``bool`` field when its finite values are whole
    numbers or 0/1 (what :meth:`AuditContext.column` returns, NaN for unreadable images).
    The conversion is pandas' own (``pd.array(values, dtype=...)``): integers are exact,
    never through float64.

    Raises:
        ValueError, TypeError, OverflowError: not one value per sample (an array of more
            than one dimension), or a value that is not of ``kind`` (pandas' message: a
            string for a number, 1.5 for an ``int``, a number outside int64 for an ``int``,
            anything but booleans or 0/1 for a ``bool``), or a boolean for a number.
    """
    if kind == "metadata":
        return values
    if getattr(values, "ndim", 1) != 1:
        raise ValueError(f"expected one value per sample, got an array of shape {values.shape}")
    if kind == "str":
        out = np.empty(len(values), dtype=object)
        out[:] = [v if type(v) is str else None if v is None or v is pd.NA or _is_nan(v) else str(v) for v in values]
        return out
    if isinstance(values, np.ndarray):
        if values.dtype.kind == "f":  # infinities are missing, as NaN is
            values = np.where(np.isinf(values), np.nan, values)
        elif values.dtype.kind == "b" and kind != "bool":
            raise ValueError("got booleans")
    elif not isinstance(values, pd.api.extensions.ExtensionArray):
        values = [None if type(v) is float and math.isinf(v) else v for v in values]
        if kind != "bool" and any(isinstance(v, (bool, np.bool_)) for v in values):
            raise ValueError(f"{next(v for v in values if isinstance(v, (bool, np.bool_)))!r} is not a number")
    with np.errstate(invalid="ignore"):  # pandas checks the cast itself and raises TypeError
        return pd.array(values, dtype=NULLABLE[kind])


def _is_nan(v: Any) -> bool:
    return isinstance(v, (float, np.floating)) and math.isnan(v)


def _batch(staged: Any, kind: str, start: int, stop: int) -> list[Any]:
    """Python values of samples ``start:stop`` of a staged field, ``None`` where empty."""
    if kind == "metadata":
        return list(staged[start:stop])
    if kind == "str":
        return staged[start:stop].tolist()
    return staged[start:stop].to_numpy(dtype=object, na_value=None).tolist()


def _field(kind: str) -> Any:
    """A new FiftyOne field of ``kind``, for the schema."""
    import fiftyone as fo

    if kind == "metadata":
        return fo.EmbeddedDocumentField(fo.ImageMetadata)
    return {"float": fo.FloatField, "int": fo.IntField, "bool": fo.BooleanField, "str": fo.StringField}[kind]()


def write_all(ctx: Any, old_tags: Iterable[str], previous: Mapping[str, Any] | None = None,
              digests_file: str | os.PathLike | None = None) -> dict[str, Any]:
    """Write every staged field and the new issue tags of ``ctx`` in bulk (one pass, batched).

    Each sample whose stored values differ gets one ``UpdateOne`` that sets all staged
    fields and its tags: the current tags minus ``old_tags`` (those earlier audits wrote)
    plus the staged ones. The stored values are read first
    (:func:`vetset.core._fiftyone.stored_fields`, one query per batch), so an unchanged
    rerun writes nothing. Cheaper still, when ``previous`` (the ``state`` an earlier call
    returned, kept in ``dataset.info``) holds the same digest of every sample's id and new
    values, and no sample of the view was modified since (the view's largest
    ``last_modified_at``, which FiftyOne and :func:`vetset.core._fiftyone.update_samples`
    set on every write, is the one recorded then), the stored values are those values and
    nothing is read or written. With ``digests_file`` (``<run folder>/audit/stored.pkl`` in a
    run), a digest of each sample's values is kept there with that ``last_modified_at``: a
    sample whose values have the digest stored then, and which was not modified since, is
    not read back either, so adding 100 files to 10,000 reads and compares about 100
    samples (and those whose tags the dataset-level checks changed).
    Missing fields are declared first, in one schema update
    (:func:`vetset.core._fiftyone.declare_sample_fields`); the updates go through
    :func:`vetset.core._fiftyone.update_samples`, and read back through the public API
    (``values``, ``match_tags``...).

    Returns:
        ``{"fields": [...], "tags": {tag: count}, "samples_written": int, "seconds": float,
        "state": {"digest": SHA-1 hex, "last_modified_at": ISO time or None}}``.

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
    def batches() -> Iterator[tuple[list[str], list[dict[str, Any]]]]:
        for start in range(0, ctx.n, WRITE_BATCH):
            stop = min(ctx.n, start + WRITE_BATCH)
            cols = [_batch(ctx.fields[n][0], ctx.fields[n][1], start, stop) for n in names]
            staged: list[list[str]] = [[] for _ in range(stop - start)]  # each sample's new tags, in tag order
            for t, col in zip(tag_names, tag_cols):
                for j in np.flatnonzero(col[start:stop]).tolist():
                    staged[j].append(t)
            docs = []
            for j, k in enumerate(range(start, stop)):
                doc = {n: c[j] for n, c in zip(names, cols)}
                doc["tags"] = [t for t in (current[k] or ()) if t not in drop] + staged[j]
                docs.append(doc)
            yield ctx.ids[start:stop], docs

    digest = hashlib.sha1(pickle.dumps(names, protocol=4))
    sample_digests: list[bytes] = []  # 16 bytes a sample
    # up to KEEP_DOCS samples, the documents of this pass are kept for the write pass instead of built again
    kept: list[tuple[list[str], list[dict[str, Any]]]] | None = [] if ctx.n <= KEEP_DOCS else None
    for ids, docs in batches():
        if kept is not None:
            kept.append((ids, docs))
        for i, doc in zip(ids, docs):
            sample_digests.append(hashlib.blake2b(pickle.dumps(doc, protocol=4), digest_size=16).digest())
            digest.update(i.encode() + sample_digests[-1])
    state = {"digest": digest.hexdigest(), "last_modified_at": None}
    written = 0
    if not (previous and not new and previous.get("digest") == state["digest"]
            and previous.get("last_modified_at") is not None
            and previous["last_modified_at"] == _last_modified(ctx.view)):
        known, modified = _known_digests(digests_file, ds, names, ctx.view) if not new else ({}, set())
        start = 0
        for ids, docs in (kept if kept is not None else batches()):
            todo = [j for j, i in enumerate(ids)
                    if known.get(i) != sample_digests[start + j] or i in modified]
            start += len(ids)
            if not todo:
                continue
            ids, docs = [ids[j] for j in todo], [docs[j] for j in todo]
            # compared with what is stored, unless every field is new (a first audit: every sample changes);
            # a field declared now reads as None where no value is stored
            stored = stored_fields(ds, ids, [*names, "tags"]) if len(new) < len(names) else None
            changed = [(i, doc) for j, (i, doc) in enumerate(zip(ids, docs))
                       if stored is None or not _same(doc, stored[j])]
            update_samples(ds, [i for i, _ in changed], [doc for _, doc in changed])
            written += len(changed)
    state["last_modified_at"] = _last_modified(ctx.view)
    if digests_file is not None:
        from vetset.core.atomic import atomic_write

        record = {"dataset": [ds.name, str(ds.created_at)], "fields": names,
                  "last_modified_at": state["last_modified_at"], "digests": dict(zip(ctx.ids, sample_digests))}
        atomic_write(digests_file, pickle.dumps(record, protocol=pickle.HIGHEST_PROTOCOL), mkdir=True)
    return {"fields": names, "tags": {t: int(c.sum()) for t, c in ctx.tags.items()},
            "samples_written": written, "seconds": round(time.perf_counter() - t0, 3), "state": state}


def _known_digests(path: str | os.PathLike | None, ds: Any, names: list[str],
                   view: Any) -> tuple[dict[str, bytes], set[str]]:
    """The sample digests :func:`write_all` kept in ``path`` for this dataset and fields, and
    the ids of the samples of ``view`` modified after they were kept (to be compared again);
    ``({}, set())`` when there is no usable file."""
    import datetime as dt

    from fiftyone import ViewField as F

    try:
        with open(path, "rb") as f:  # written by vetset into the run folder (write_all)
            record = pickle.load(f)
    except (OSError, TypeError, ValueError, EOFError, pickle.UnpicklingError, AttributeError):
        return {}, set()
    if not isinstance(record, dict) or record.get("fields") != names or not record.get("last_modified_at") \
            or record.get("dataset") != [ds.name, str(ds.created_at)]:
        return {}, set()
    since = dt.datetime.fromisoformat(record["last_modified_at"])
    return record.get("digests") or {}, set(view.match(F("last_modified_at") > since).values("id"))


def _last_modified(view: Any) -> str | None:
    """The largest ``last_modified_at`` of the samples of ``view`` (ISO, UTC), ``None`` when empty."""
    latest = view.max("last_modified_at")
    return latest.isoformat() if latest is not None else None


def _same(doc: dict[str, Any], stored: dict[str, Any]) -> bool:
    """Whether ``stored`` (from :func:`~vetset.core._fiftyone.stored_fields`) holds ``doc``'s values.

    Values compare by type and exactly (floats come from the same cached image pass; an
    ``int`` stored where a ``float`` is staged counts as different and is rewritten); an
    embedded document compares as a dict; ``tags`` compares in order; an absent field is
    ``None``.
    """
    if not stored:
        return False
    for name, value in doc.items():
        old = stored.get(name)
        if isinstance(value, Mapping):
            if not isinstance(old, Mapping) or dict(old) != dict(value):
                return False
        elif type(old) is not type(value) or old != value:
            return False
    return True


__all__ = ["FIELD_KINDS", "WRITE_BATCH", "stage", "write_all"]
