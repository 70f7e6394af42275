"""FiftyOne's private API, behind one door: every call vetset makes into FiftyOne internals.

Nothing else in vetset touches a FiftyOne name that starts with ``_``. Each function here
does what a public FiftyOne call does, faster, and ``tests/test_fiftyone_contract.py``
compares its result with that public call's on the same input (the stored documents, the
schema, the values read back), so a FiftyOne upgrade is checked by running that one file.
Each function falls back to the public call when this FiftyOne lacks the internal, or
when the environment sets ``VETSET_FIFTYONE_PUBLIC=1`` (a way around a FiftyOne upgrade
that breaks an internal, and how the benchmarks measure what the public calls cost).

The private calls that remain, and the benchmark that keeps each (the public call costs
more than 10% there; the figures are in the benchmark's output, not here):

* :func:`update_samples` -- ``Dataset._bulk_write``: one ``UpdateOne`` per sample that sets
  every audit field and the tags, where the public ``set_values`` writes one field per
  pass. ``benchmarks/audit_vs_cleanvision.py`` (the audit's ``write`` seconds).
* :func:`declare_sample_fields` -- ``Dataset._merge_sample_field_schema``: one schema
  update for all new fields, where ``add_sample_field`` reloads the dataset per field.
  ``benchmarks/audit_vs_cleanvision.py`` (each run audits a new dataset, so it declares
  every field).
* :func:`stored_fields` -- ``Dataset._sample_collection.find`` with a projection: the
  stored values of the audit's fields, compared with the new ones so that an unchanged
  rerun writes nothing. ``benchmarks/command_latency.py`` (the unchanged rerun).
* :func:`save_views` -- ``Dataset._doc.saved_views`` and ``DatasetView._serialize``: the
  stored stages of each saved view, compared with what ``save_view`` would store, so an
  unchanged view is not rewritten. ``benchmarks/command_latency.py`` (the unchanged rerun).
* :func:`insert_samples` -- ``Dataset._make_dict`` and ``_sample_collection.insert_many``:
  the documents ``add_samples`` writes, without its schema inference, validation and
  re-binding of each ``Sample``. ``benchmarks/augment_throughput.py`` (the paired
  per-image bookkeeping: "sample insert").

* :func:`import_fiftyone` -- which modules ``import fiftyone`` loads: scikit-learn (with
  SciPy's statistics and pandas behind it, most of the import's time) is imported by
  ``fiftyone.core.plots`` only to bind two module names that are used when a plot is
  drawn; vetset's commands bind them to stand-ins that import the real module on first
  use. ``benchmarks/command_latency.py`` (``import fiftyone`` against
  ``vetset.core._fiftyone.import_fiftyone()``).

* :func:`dataset_stamps` -- reads FiftyOne's database with pymongo, without importing
  fiftyone: the dataset document (``datasets`` collection), its saved views (``views``) and
  its samples' ``last_modified_at``, so that an unchanged rerun is recognised before the
  import. ``benchmarks/command_latency.py`` (the unchanged rerun).

The stored forms vetset builds itself (:func:`image_metadata_doc`, :func:`classification_doc`)
and the timestamp FiftyOne stores (:func:`now`) are here too, with their contract tests,
so that the documents written through this module match FiftyOne's in one place.
"""

from __future__ import annotations

import datetime as dt
import importlib
import os
import sys
import types
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fiftyone as fo


#: Modules ``fiftyone.core.plots.utils`` imports only to bind their names (``import
#: sklearn.linear_model as skl``, ``import sklearn.metrics as skm``); :func:`import_fiftyone`
#: binds stand-ins for them. The contract test checks that this is still all FiftyOne
#: needs of scikit-learn at import time.
DEFERRED_IMPORTS = ("sklearn", "sklearn.linear_model", "sklearn.metrics")


class _Deferred(types.ModuleType):
    """A stand-in for a module that imports the real one on first attribute access.

    It is in ``sys.modules`` only while :func:`import_fiftyone` runs ``import fiftyone``;
    afterwards only the names FiftyOne bound to it refer to it, and every attribute read
    through them is the real module's.
    """

    def __getattr__(self, name: str) -> Any:
        _release()  # never import the real module while a stand-in holds its sys.modules slot
        return getattr(importlib.import_module(self.__name__), name)


def _release() -> None:
    for name in DEFERRED_IMPORTS:
        if isinstance(sys.modules.get(name), _Deferred):
            del sys.modules[name]


def import_fiftyone() -> types.ModuleType:
    """Import ``fiftyone`` without the modules it imports but uses only to draw plots.

    ``import fiftyone`` imports scikit-learn (and through it SciPy's statistics and pandas)
    to bind two module names in ``fiftyone.core.plots.utils``; here they are bound to
    stand-ins (:data:`DEFERRED_IMPORTS`) that import the real module when an attribute is
    first read, so a FiftyOne plot still works and a later ``import sklearn`` is the real
    one. When fiftyone or scikit-learn is already imported this is a plain import.
    Call it from a command's process before anything else imports fiftyone (the ``recipes``
    CLI does); ``VETSET_FIFTYONE_PUBLIC=1`` turns it into a plain import.

    Returns:
        The ``fiftyone`` module.
    """
    if "fiftyone" in sys.modules or any(n in sys.modules for n in DEFERRED_IMPORTS) \
            or os.environ.get("VETSET_FIFTYONE_PUBLIC", "") not in ("", "0"):
        import fiftyone

        return fiftyone
    stand_ins = {name: _Deferred(name) for name in DEFERRED_IMPORTS}
    for name, module in stand_ins.items():
        parent, _, child = name.rpartition(".")
        if parent:
            setattr(stand_ins[parent], child, module)  # ``import a.b as x`` reads ``a.b``
    sys.modules.update(stand_ins)
    try:
        import fiftyone
    finally:
        _release()
    return fiftyone


def _internal(obj: Any, name: str) -> Any:
    """``obj``'s internal attribute ``name``, or ``None`` when absent or ``VETSET_FIFTYONE_PUBLIC=1``."""
    if os.environ.get("VETSET_FIFTYONE_PUBLIC", "") not in ("", "0"):
        return None
    return getattr(obj, name, None)


def now() -> dt.datetime:
    """The current time as FiftyOne stores ``created_at``/``last_modified_at``: naive UTC."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def update_samples(dataset: fo.Dataset, ids: Sequence[str], docs: Sequence[Mapping[str, Any]]) -> None:
    """Set fields of existing samples, one update per sample: what ``set_values`` per field stores.

    Each ``docs[k]`` maps top-level field names to stored-form values (``None``, numbers,
    strings, lists, dicts such as :func:`image_metadata_doc`; ``tags`` a list of strings)
    for sample ``ids[k]``; every field must be declared already
    (:func:`declare_sample_fields`). ``last_modified_at`` is set to :func:`now`, as
    FiftyOne does on every write; in-memory ``fo.Sample`` objects of these ids are reloaded.

    Args:
        dataset: the ``fo.Dataset`` holding the samples (not a view).
        ids: sample ids (hex strings), length ``n``.
        docs: length ``n``; the same keys in every document.

    Raises:
        ValueError: ``ids`` and ``docs`` differ in length.
        pymongo.errors.BulkWriteError: the database refused an update.
    """
    if len(ids) != len(docs):
        raise ValueError(f"{len(ids)} sample ids for {len(docs)} documents")
    if not docs:
        return
    bulk = _internal(dataset, "_bulk_write")
    if bulk is None:  # a FiftyOne without the internal: the public API, one pass per field
        view = dataset.select(list(ids), ordered=True)
        for name in docs[0]:
            view.set_values(name, [_public_value(d[name]) for d in docs])
        return
    from bson import ObjectId
    from pymongo import UpdateOne

    stamp = now()
    bulk([UpdateOne({"_id": ObjectId(i)}, {"$set": {**d, "last_modified_at": stamp}}) for i, d in zip(ids, docs)],
         ids=list(ids))


def _public_value(value: Any) -> Any:
    """A stored-form value as the public API takes it: an embedded document (``_cls`` names
    a FiftyOne class such as ``ImageMetadata`` or ``Classification``) as that class."""
    if isinstance(value, Mapping) and "_cls" in value:
        import fiftyone as fo

        return getattr(fo, value["_cls"]).from_dict(dict(value))
    return value


def declare_sample_fields(dataset: fo.Dataset, fields: Mapping[str, fo.Field]) -> None:
    """Add top-level sample fields to ``dataset``'s schema, all in one schema update.

    Args:
        dataset: the ``fo.Dataset``.
        fields: ``{name: field instance}``, e.g. ``fo.FloatField()`` or
            ``fo.EmbeddedDocumentField(fo.ImageMetadata)``; names already declared with
            the same type are left as they are.

    Raises:
        ValueError: a name is declared with another type (FiftyOne's message).
    """
    if not fields:
        return
    merge = _internal(dataset, "_merge_sample_field_schema")
    if merge is not None:
        merge(dict(fields))
        return
    for name, field in fields.items():  # a FiftyOne without the internal: one public call per field
        kwargs: dict[str, Any] = {}
        if getattr(field, "document_type", None) is not None:
            kwargs["embedded_doc_type"] = field.document_type
        if getattr(field, "field", None) is not None:
            kwargs["subfield"] = type(field.field)
        dataset.add_sample_field(name, type(field), **kwargs)


def insert_samples(dataset: fo.Dataset, samples: Sequence[fo.Sample],
                   plain_fields: Sequence[Mapping[str, Any]] | None = None) -> None:
    """Insert new samples whose fields ``dataset`` already declares: the documents ``add_samples`` stores.

    The documents are FiftyOne's own (``Dataset._make_dict``, with ``created_at`` and
    ``last_modified_at``), inserted with one ``insert_many``, as ``add_samples`` inserts
    them. What is skipped is what vetset does not use: schema inference and validation
    (every field is declared and built by the caller), the batcher's per-sample JSON size,
    and binding each ``Sample`` to the dataset after the insert (the ``Sample`` objects
    stay unsaved; the caller discards them). An empty dataset gets the first sample's
    media type, as with ``add_samples``.

    Args:
        dataset: the ``fo.Dataset``.
        samples: new ``fo.Sample`` objects.
        plain_fields: per sample, declared fields whose values are already in stored form,
            stored as they are (``None`` values are left out, as FiftyOne leaves them out):
            plain JSON types (``str``, ``int``, ``float``, ``bool``, lists and ``str``-keyed
            dicts of them), or an embedded label's stored form (:func:`classification_doc`).

    Raises:
        pymongo.errors.BulkWriteError: the database refused a document (a duplicate filepath).
    """
    extras = plain_fields or [{} for _ in samples]
    make_dict = _internal(dataset, "_make_dict")
    collection = _internal(dataset, "_sample_collection")
    if make_dict is None or collection is None:  # a FiftyOne without the internals: the public add_samples
        for sample, extra in zip(samples, extras):
            for name, value in extra.items():
                if value is not None:
                    sample[name] = _public_value(value)
        dataset.add_samples(list(samples), expand_schema=False, validate=False, progress=False, batcher=False)
        return
    if dataset.media_type is None and samples:  # what add_samples does for a first sample
        try:
            dataset.media_type = samples[0].media_type
        except ValueError:  # another process inserted the first samples meanwhile, and set it
            dataset.reload()
    stamp = now()
    docs = []
    for sample, extra in zip(samples, extras):
        doc = make_dict(sample, created_at=stamp, last_modified_at=stamp)
        doc.update((k, v) for k, v in extra.items() if v is not None)  # FiftyOne omits None too
        docs.append(doc)
    if docs:
        collection.insert_many(docs)


def stored_fields(dataset: fo.Dataset, ids: Sequence[str], names: Sequence[str]) -> list[dict[str, Any]]:
    """The stored form of fields ``names`` of samples ``ids``, as :func:`update_samples` takes them.

    One ``find`` on the samples collection with a projection (``_sample_collection``), so
    a writer can leave out samples whose values are already stored. A field the document
    lacks reads as ``None`` (FiftyOne leaves ``None`` out on insert and reads it as
    ``None``); embedded documents (``metadata``) come back as stored (``_cls`` and all).
    Without the internal, the public ``values()`` per field, embedded documents turned
    into their stored dict (``to_dict()``).

    Args:
        dataset: the ``fo.Dataset`` (not a view).
        ids: sample ids (hex strings).
        names: top-level field names (``tags`` included if wanted).

    Returns:
        One ``{name: stored value or None}`` per id, in the order of ``ids``; ``{}`` for an
        id the dataset does not hold.
    """
    collection = _internal(dataset, "_sample_collection")
    if collection is None:
        view = dataset.select(list(ids), ordered=True)
        found = dict(zip(view.values("id"), zip(*[view.values(n) for n in names]))) if names else {}
        return [{n: (v.to_dict() if hasattr(v, "to_dict") else v) for n, v in zip(names, found[i])}
                if i in found else {} for i in ids]
    from bson import ObjectId

    by_id: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 50_000):  # a bounded $in list per query
        chunk = [ObjectId(i) for i in ids[start:start + 50_000]]
        for doc in collection.find({"_id": {"$in": chunk}}, {n: True for n in names}):
            by_id[str(doc["_id"])] = {n: doc.get(n) for n in names}
    return [by_id.get(i, {}) for i in ids]


def save_views(dataset: fo.Dataset, views: Sequence[tuple[str, Any, str | None]]) -> list[str]:
    """Save each ``(name, view, description)`` as ``dataset.save_view(name, view,
    description=description, overwrite=True)`` does, skipping those already stored so.

    A saved view is rewritten only when its stored stages (``SavedViewDocument.view_stages``:
    the view's ``_serialize(include_uuids=False)``, each dumped with ``bson.json_util``, as
    ``save_view`` stores them) or its description differ, so a rerun that changes nothing
    writes nothing (``save_view`` with ``overwrite=True`` deletes and re-inserts the view
    document and rewrites the dataset's list, several round trips per view). The dataset's
    saved-view list is reloaded from the database first: another process (an App session,
    a delegated operation) may have saved views since.

    Args:
        dataset: the ``fo.Dataset`` (not a view).
        views: ``(name, fo.DatasetView of dataset, description or None)``.

    Returns:
        The names written now.
    """
    doc = _internal(dataset, "_doc")
    stored: dict[str, tuple[list[str], str | None]] = {}
    if doc is not None and hasattr(doc, "saved_views"):
        doc.reload("saved_views")
        stored = {v.name: (list(v.view_stages), v.description) for v in doc.saved_views}
    else:  # a FiftyOne without the internals: every view is written
        dataset.reload()
    written = []
    for name, view, description in views:
        serialize = _internal(view, "_serialize")
        if serialize is not None and name in stored:
            from bson import json_util

            if stored[name] == ([json_util.dumps(s) for s in serialize(include_uuids=False)], description):
                continue
        dataset.save_view(name, view, description=description, overwrite=True)
        written.append(name)
    return written


@lru_cache(maxsize=1024)
def _classification_template(label: str) -> Any:
    import fiftyone as fo

    return fo.Classification(label=label).to_mongo()


def classification_doc(label: str) -> Any:
    """The stored form of ``fo.Classification(label=label)`` (``Label.to_mongo()``: ``_id``,
    ``_cls``, ``tags``, ``label``) with a new ``_id``, as a ``bson.SON``.

    A copy of one document FiftyOne made per label, for :func:`insert_samples`: it saves
    building and serialising a ``Classification`` per sample.
    """
    from bson import SON, ObjectId

    template = _classification_template(label)
    doc = SON(template)
    doc["_id"], doc["tags"] = ObjectId(), list(template["tags"])
    return doc


def image_metadata_doc(size_bytes: int, mime_type: str | None, width: int, height: int,
                       num_channels: int | None) -> dict[str, Any]:
    """The stored form of ``fo.ImageMetadata(...)`` (what ``ImageMetadata.to_mongo()`` gives), for
    :func:`update_samples`; built as a dict, without the class.

    Args:
        size_bytes: file size in bytes.
        mime_type: e.g. ``"image/jpeg"``, or ``None`` when unknown.
        width, height: pixels.
        num_channels: 1, 3, 4..., or ``None`` when unknown.
    """
    return {"_cls": "ImageMetadata", "size_bytes": int(size_bytes), "mime_type": mime_type, "width": int(width),
            "height": int(height), "num_channels": num_channels}


__all__ = ["classification_doc", "declare_sample_fields", "image_metadata_doc", "insert_samples", "now", "save_views",
           "stored_fields",
           "update_samples"]


def dataset_stamps(uri: str, database: str, name: str, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """What changes when anything stored for dataset ``name`` changes, read with pymongo
    from FiftyOne's database without importing fiftyone.

    FiftyOne keeps one document per dataset in the ``datasets`` collection (its fields,
    info, classes, saved-view and run references, ``last_modified_at``), its saved views in
    ``views`` and its samples in the collection the document names
    (``sample_collection_name``), each sample with ``last_modified_at``, which every
    FiftyOne write sets.

    Args:
        uri: the database URI (``FIFTYONE_DATABASE_URI``).
        database: the database name (``fo.config.database_name``).
        name: the dataset name.
        timeout_s: how long to wait for the server.

    Returns:
        ``{"dataset": sha256 of the dataset document without last_loaded_at, "views": sha256
        of its saved views, "samples": count, "samples_modified": ISO time of the latest
        sample change or None}``, or ``None`` when there is no such dataset.

    Raises:
        pymongo.errors.PyMongoError: the server cannot be reached or refused the read.
    """
    import hashlib
    import json

    from pymongo import MongoClient

    def digest(obj: Any) -> str:
        return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()

    client: Any = MongoClient(uri, serverSelectionTimeoutMS=int(timeout_s * 1000), appname="vetset-stamps")
    try:
        db = client[database]
        doc = db["datasets"].find_one({"name": name})
        if doc is None:
            return None
        doc.pop("last_loaded_at", None)  # set by every fo.load_dataset, a read
        views = sorted(db["views"].find({"_dataset_id": doc["_id"]}), key=lambda v: str(v["_id"]))
        for v in views:
            v.pop("last_loaded_at", None)
        samples = list(db[doc["sample_collection_name"]].aggregate(
            [{"$group": {"_id": None, "n": {"$sum": 1}, "last": {"$max": "$last_modified_at"}}}]))
        count, last = (samples[0]["n"], samples[0]["last"]) if samples else (0, None)
        return {"dataset": digest(doc), "views": digest(views), "samples": count,
                "samples_modified": last.isoformat() if last is not None else None}
    finally:
        client.close()

