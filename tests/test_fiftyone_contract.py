"""The contract of :mod:`vetset.core._fiftyone`, the one module that uses FiftyOne's private API.

Each function's result is compared with FiftyOne's public API on the same input: the
stored documents (read raw from the samples collection), the schema, and the values read
back. A FiftyOne upgrade is checked by running this file. Each function's fallback (a
FiftyOne without the internal) is run too and must store the same.
"""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from vetset.core import _fiftyone as door
from vetset.core.dataset import root_dataset


@pytest.fixture
def names():
    """Unique dataset names, deleted after the test."""
    import fiftyone as fo

    made = []

    def make(tag: str = "") -> str:
        made.append(f"contract-{tag}-{uuid.uuid4().hex[:10]}")
        return made[-1]

    yield make
    for name in made:
        if fo.dataset_exists(name):
            fo.delete_dataset(name)


def _raw(ds, drop=("_id", "_dataset_id", "_rand", "created_at", "last_modified_at")):
    """The stored sample documents of ``ds``, in filepath order, without per-dataset keys."""
    docs = sorted(ds._sample_collection.find({}), key=lambda d: d["filepath"])
    return [{k: v for k, v in d.items() if k not in drop} for d in docs]


def _samples(n=4):
    import fiftyone as fo

    return [fo.Sample(filepath=f"/data/c/{i}.jpg", tags=["train"] if i % 2 else ["val", "blurry"]) for i in range(n)]


class _Without:
    """A dataset seen through a FiftyOne that lacks the internals: public attributes only."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._ds, name)


def _audit_like_fields():
    import fiftyone as fo

    return {"metadata": fo.EmbeddedDocumentField(fo.ImageMetadata), "brightness": fo.FloatField(),
            "count": fo.IntField(), "exif_rotated": fo.BooleanField(), "colour_mode": fo.StringField()}


def _schema(ds):
    return {name: (type(f).__name__, getattr(f, "document_type", None)) for name, f in ds.get_field_schema().items()}


def test_declare_sample_fields_gives_the_schema_add_sample_field_gives(names):
    import fiftyone as fo

    public, fast, fallback = (fo.Dataset(names(t)) for t in ("pub", "fast", "fb"))
    for ds in (public, fast, fallback):
        ds.add_samples(_samples(), progress=False)
    for name, field in _audit_like_fields().items():
        kwargs = {"embedded_doc_type": field.document_type} if name == "metadata" else {}
        public.add_sample_field(name, type(field), **kwargs)
    door.declare_sample_fields(fast, _audit_like_fields())
    door.declare_sample_fields(_Without(fallback), _audit_like_fields())
    assert _schema(fast) == _schema(public) == _schema(fallback)
    assert _schema(fast)["metadata"] == ("EmbeddedDocumentField", fo.ImageMetadata)
    door.declare_sample_fields(fast, {"count": fo.IntField()})  # declared already: unchanged
    assert _schema(fast) == _schema(public)
    with pytest.raises(ValueError):
        door.declare_sample_fields(fast, {"count": fo.StringField()})
    # the schema reaches a freshly loaded dataset object (another process sees it)
    assert isinstance(fo.load_dataset(fast.name).get_field_schema()["brightness"], fo.FloatField)


def test_update_samples_stores_what_set_values_stores(names):
    import fiftyone as fo

    values = {
        "metadata": [door.image_metadata_doc(900 + i, "image/jpeg", 32, 24 + i, 3) if i != 1 else None
                     for i in range(4)],
        "brightness": [0.25, None, 0.5, 1.0],
        "count": [1, None, 2**53 + 1, -4],
        "exif_rotated": [True, None, False, True],
        "colour_mode": ["colour", None, "grayscale", "colour"],
        "tags": [["val", "dark"], ["train"], ["val"], ["train", "blurry", "dark"]],
    }
    public, fast, fallback = (fo.Dataset(names(t)) for t in ("pub", "fast", "fb"))
    for ds in (public, fast, fallback):
        ds.add_samples(_samples(), progress=False)
        door.declare_sample_fields(ds, _audit_like_fields())
    before = {d["filepath"]: d["last_modified_at"] for d in fast._sample_collection.find({})}
    kept = fast.first()  # an in-memory sample of the dataset sees the update
    view = public.sort_by("filepath")
    for name, col in values.items():
        view.set_values(name, [fo.ImageMetadata.from_dict(v) if isinstance(v, dict) else v for v in col]
                        if name == "metadata" else col)
    for ds in (fast, fallback):
        ids = ds.sort_by("filepath").values("id")
        docs = [{name: col[k] for name, col in values.items()} for k in range(4)]
        door.update_samples(ds if ds is fast else _Without(ds), ids, docs)
    assert _raw(fast) == _raw(public) == _raw(fallback)
    for ds in (fast, public, fallback):
        for doc in ds._sample_collection.find({}):
            if doc["filepath"] in before:
                assert doc["last_modified_at"] > before[doc["filepath"]]  # stamped, as FiftyOne stamps a write
    assert kept.brightness == 0.25 and kept.tags == ["val", "dark"] and kept.metadata.height == 24
    read = fast.sort_by("filepath")
    assert read.values("count") == [1, None, 2**53 + 1, -4]
    assert read.values("metadata.height") == [24, None, 26, 27]
    assert len(fast.match_tags("dark")) == 2
    with pytest.raises(ValueError, match="2 sample ids for 1 documents"):
        door.update_samples(fast, ids[:2], docs[:1])


def test_stored_fields_reads_back_what_update_samples_stored(names):
    """stored_fields gives, per id, the documents update_samples took; the public fallback equals it;
    a field never set and an unknown id read as None / {}."""
    import fiftyone as fo

    ds = fo.Dataset(names("stored"))
    ds.add_samples(_samples(), progress=False)
    door.declare_sample_fields(ds, _audit_like_fields())
    ids = ds.sort_by("filepath").values("id")
    docs = [{"metadata": door.image_metadata_doc(900 + i, "image/jpeg", 32, 24 + i, 3), "brightness": 0.25 * i,
             "count": 2**53 + i, "tags": ["train", "dark"] if i % 2 else ["val"]} for i in range(3)]
    door.update_samples(ds, ids[:3], docs)
    wanted = [*docs[0], "colour_mode"]
    fast = door.stored_fields(ds, [ids[2], ids[0], ids[3], "0" * 24], wanted)
    assert fast[0] == {**docs[2], "colour_mode": None} and fast[1] == {**docs[0], "colour_mode": None}
    assert fast[2] == {"metadata": None, "brightness": None, "count": None, "colour_mode": None, "tags": ["train"]}
    assert fast[3] == {}
    assert door.stored_fields(_Without(ds), [ids[2], ids[0], ids[3], "0" * 24], wanted) == fast


def test_save_views_writes_only_changed_views(names):
    """save_views stores what save_view(overwrite=True) stores, and rewrites a view only when its
    stages or description changed."""
    import fiftyone as fo

    ds = fo.Dataset(names("views"))
    ds.add_samples(_samples(), progress=False)
    dark, train = ds.match_tags("dark"), ds.match_tags("train")
    assert door.save_views(ds, [("dark", dark, "dark ones"), ("train", train, None)]) == ["dark", "train"]
    def stamp(name):
        return next(v.last_modified_at for v in fo.load_dataset(ds.name)._doc.saved_views if v.name == name)

    first = stamp("dark")
    assert door.save_views(ds, [("dark", ds.match_tags("dark"), "dark ones"), ("train", train, None)]) == []
    assert stamp("dark") == first
    assert door.save_views(ds, [("dark", ds.match_tags("blurry"), "dark ones"), ("train", train, "new")]) == \
        ["dark", "train"]
    again = fo.load_dataset(ds.name)
    assert len(again.load_saved_view("dark")) == 2 and again.get_saved_view_info("train")["description"] == "new"
    public = fo.Dataset(names("views-pub"))
    public.add_samples(_samples(), progress=False)
    public.save_view("dark", public.match_tags("blurry"), description="dark ones")
    ours = {v.name: list(v.view_stages) for v in fo.load_dataset(ds.name)._doc.saved_views}
    assert ours["dark"] == [v.view_stages for v in public._doc.saved_views][0]
    assert door.save_views(_Without(ds), [("dark", ds.match_tags("blurry"), "dark ones")]) == ["dark"]


def test_insert_samples_writes_what_add_samples_writes(names):
    """The augmentation writer's insert skips only FiftyOne's Python-side work: the stored
    document, its timestamps and every field read back equal those of ``add_samples``."""
    import fiftyone as fo

    from vetset.plugins.augment.plan import PlannedImage, Source
    from vetset.plugins.augment.store import _sample, declare_fields
    from vetset.plugins.augment.writer import Task

    ds = fo.Dataset(names("ins"))
    declare_fields(ds)
    params = [{"transform": "Affine", "params": {"rotate": -6.2, "matrix": [[0.9, -0.1, 73.7], [0.1, 0.9, -21.4]]}}]

    def sample(path):
        return fo.Sample(filepath=path, tags=["train", "augmented"], ground_truth=fo.Classification(label="ants"),
                         source_id="a" * 24, source_filepath="/data/ants/1.jpg", aug_policy="light", aug_target=None,
                         aug_plan="p1", aug_key="k1", aug_params=params)

    def made(path):  # what the writer makes: a bare sample, the other fields in stored form
        im = PlannedImage(Source("a" * 24, "/data/ants/1.jpg", "ants", {}), "light", 0, 7, "k1", None, {})
        bare, fields = _sample("p1", (im, Task("/data/ants/1.jpg", path, "light", 7), {"params": params}))
        return [bare], [fields]

    ds.add_samples([sample("/out/public.jpg")], expand_schema=False, validate=False, progress=False)
    door.insert_samples(ds, *made("/out/fast.jpg"))
    door.insert_samples(_Without(ds), *made("/out/fallback.jpg"))
    assert len(ds) == 3 and len(ds.match_tags("augmented")) == 3
    public, fast, fallback = (ds._sample_collection.find_one({"filepath": fp})
                              for fp in ("/out/public.jpg", "/out/fast.jpg", "/out/fallback.jpg"))
    for doc in (public, fast, fallback):
        assert doc["created_at"] == doc["last_modified_at"] and doc.pop("created_at") and doc.pop("last_modified_at")
        assert 0 <= doc.pop("_rand") < 1  # FiftyOne's random key for take()/shuffle()
        doc.pop("_id"), doc.pop("filepath")
        doc["ground_truth"].pop("_id")
    assert fast == public and fallback == public
    empty = fo.Dataset(names("empty"))  # into an empty dataset the media type is set, as add_samples sets it
    door.insert_samples(empty, *made("/out/first.jpg"))
    assert empty.media_type == "image"
    empty.add_samples([sample("/out/second.jpg")])
    assert len(empty) == 2
    read = ds.match(fo.ViewField("filepath") == "/out/fast.jpg").first()
    assert read.ground_truth.label == "ants" and read.aug_params == params and read.aug_target is None
    assert read.created_at is not None and read.metadata is None


def test_stored_forms_equal_fiftyone_s_own():
    import fiftyone as fo

    for args in ((900, "image/jpeg", 32, 24, 3), (12, None, 8, 8, None)):
        ours = door.image_metadata_doc(*args)
        theirs = fo.ImageMetadata(size_bytes=args[0], mime_type=args[1], width=args[2], height=args[3],
                                  num_channels=args[4]).to_mongo().to_dict()
        assert {k: v for k, v in ours.items() if v is not None} == theirs  # FiftyOne leaves out None fields
        assert fo.ImageMetadata.from_dict(ours).width == args[2]
    a, b = door.classification_doc("ants"), door.classification_doc("ants")
    theirs = fo.Classification(label="ants").to_mongo()
    assert a["_id"] != b["_id"] and a["_id"] != theirs["_id"]
    assert {k: v for k, v in a.items() if k != "_id"} == {k: v for k, v in theirs.items() if k != "_id"}
    a["tags"].append("x")
    assert door.classification_doc("ants")["tags"] == []  # copies never share the template's list


def test_now_is_the_clock_fiftyone_stamps_documents_with(names):
    import fiftyone as fo

    ds = fo.Dataset(names("now"))
    t0 = door.now()
    ds.add_samples(_samples(1), progress=False)
    stamped = ds.first().created_at
    assert t0.tzinfo is None and stamped.tzinfo is None
    assert dt.timedelta(0) <= stamped - t0.replace(microsecond=t0.microsecond // 1000 * 1000) < dt.timedelta(seconds=30)


def test_root_dataset_is_the_dataset_behind_a_view(names):
    import fiftyone as fo

    ds = fo.Dataset(names("root"))
    ds.add_samples(_samples(), progress=False)
    assert root_dataset(ds) is ds and root_dataset(ds.match_tags("train").limit(1)) is ds


def test_vetset_fiftyone_public_takes_the_public_path(names, monkeypatch):
    """``VETSET_FIFTYONE_PUBLIC=1`` (a way around a FiftyOne upgrade that breaks an internal)
    makes the door ask for no internal, and the writes still land."""
    import fiftyone as fo

    class Watched:  # the dataset, recording which internals the door asks it for
        asked: list[str] = []

        def __init__(self, ds):
            self._ds = ds

        def __getattr__(self, name):
            if name.startswith("_"):
                Watched.asked.append(name)
            return getattr(self._ds, name)

    ds = fo.Dataset(names("env"))
    ds.add_samples(_samples(2), progress=False)
    monkeypatch.setenv("VETSET_FIFTYONE_PUBLIC", "1")
    door.declare_sample_fields(Watched(ds), {"score": fo.FloatField()})
    ids = ds.sort_by("filepath").values("id")
    door.update_samples(Watched(ds), ids, [{"score": 0.5, "tags": ["a"]}, {"score": None, "tags": []}])
    door.insert_samples(Watched(ds), [fo.Sample(filepath="/data/c/9.jpg")], [{"score": 2.0}])
    assert Watched.asked == []
    assert ds.sort_by("filepath").values("score") == [0.5, None, 2.0]
    assert ds.count_sample_tags() == {"a": 1}
    monkeypatch.delenv("VETSET_FIFTYONE_PUBLIC")
    door.update_samples(Watched(ds), ids[:1], [{"score": 1.5}])
    assert Watched.asked == ["_bulk_write"] and ds.sort_by("filepath").values("score")[0] == 1.5


def test_import_fiftyone_defers_only_what_plots_use():
    """In a new process: ``import_fiftyone`` leaves scikit-learn unimported, FiftyOne's
    plot helpers still reach the real scikit-learn, and a later ``import sklearn`` is it."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from vetset.core._fiftyone import import_fiftyone, DEFERRED_IMPORTS\n"
        "fo = import_fiftyone()\n"
        "assert 'sklearn.base' not in sys.modules, 'scikit-learn was imported'\n"
        "assert not any(n in sys.modules for n in DEFERRED_IMPORTS), 'a stand-in is left in sys.modules'\n"
        "import fiftyone.core.plots.utils as pu\n"
        "import sklearn.metrics\n"
        "assert pu.skm.confusion_matrix is sklearn.metrics.confusion_matrix\n"
        "assert pu.skl.LinearRegression.__module__.startswith('sklearn.linear_model')\n"
        "import numpy as np\n"
        "cm = pu.skm.confusion_matrix(['a', 'b', 'a'], ['a', 'a', 'a'], labels=['a', 'b'])\n"
        "assert cm.tolist() == [[2, 0], [1, 0]], cm\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def test_dataset_stamps_change_with_every_write_and_not_with_a_read(names):
    import os

    import fiftyone as fo

    from vetset.core.database import database_name

    uri, db = os.environ["FIFTYONE_DATABASE_URI"], database_name()
    assert db == fo.config.database_name
    name = names("stamps")
    assert door.dataset_stamps(uri, db, name) is None
    ds = fo.Dataset(name, persistent=True)
    ds.add_samples(_samples(4))
    seen = [door.dataset_stamps(uri, db, name)]
    assert seen[0]["samples"] == 4 and seen[0]["samples_modified"] is not None

    fo.load_dataset(name).count()  # a read: the same stamps
    assert door.dataset_stamps(uri, db, name) == seen[0]

    def changed(write) -> None:
        write()
        now = door.dataset_stamps(uri, db, name)
        assert now not in seen, write
        seen.append(now)

    changed(lambda: ds.take(1, seed=1).tag_samples("reviewed"))
    changed(lambda: ds.set_values("score", [0.1, 0.2, 0.3, 0.4]))
    changed(lambda: ds.delete_samples(ds.first()))
    changed(lambda: ds.add_sample(fo.Sample(filepath="/data/c/new.jpg")))
    changed(lambda: setattr(ds, "info", {"owner": "someone"}) or ds.save())
    changed(lambda: ds.save_view("mine", ds.limit(2)))
    changed(lambda: ds.delete_saved_view("mine"))
    changed(lambda: ds.delete_sample_field("score"))

