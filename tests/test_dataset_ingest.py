"""Loading in bulk and loading again: the stored documents equal ``add_samples``', and a
rerun reads only the files whose size or modification time changed."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import vetset.core.dataset as loader
from vetset.core.dataset import load_dataset


def _folder(digits_dir: Path, dest: Path, per_class: int = 5) -> Path:
    for cls in ("3", "8"):
        (dest / cls).mkdir(parents=True)
        for f in sorted((digits_dir / "train" / cls).iterdir())[:per_class]:
            shutil.copy(f, dest / cls / f.name)
    (dest / "8" / "empty.png").write_bytes(b"")  # unreadable: recorded with its reason
    return dest


def test_loaded_documents_equal_what_add_samples_stores(digits_dir, tmp_path, fresh_name):
    """The loader's bulk insert (vetset.core._fiftyone.insert_samples) against the public
    add_samples of the same samples: the same stored documents."""
    import fiftyone as fo

    root = _folder(digits_dir, tmp_path / "d")
    ds, summary = load_dataset(root, name=fresh_name)
    assert summary.added == 11 and summary.unreadable == 1
    ref = fo.Dataset(fresh_name + "-ref")
    try:
        samples = []
        for sample in ds.sort_by("filepath"):
            samples.append(fo.Sample(filepath=sample.filepath, tags=list(sample.tags),
                                     ground_truth=fo.Classification(label=sample.ground_truth.label),
                                     unreadable_reason=sample.unreadable_reason, file_size=sample.file_size,
                                     file_mtime=sample.file_mtime, file_ctime=sample.file_ctime))
        ref.add_samples(samples, progress=False)

        def raw(d):
            docs = sorted(d._sample_collection.find({}), key=lambda doc: doc["filepath"])
            for doc in docs:
                for key in ("_id", "_dataset_id", "_rand", "created_at", "last_modified_at"):
                    doc.pop(key)
                doc["ground_truth"].pop("_id")
            return docs

        ours, theirs = raw(ds), raw(ref)
        assert ours == theirs and len(ours) == 11
        empty = next(d for d in ours if d["filepath"].endswith("empty.png"))
        assert empty["unreadable_reason"] == "empty file" and "unreadable" in empty["tags"]
        assert ds.get_field_schema()["file_size"].__class__ is ref.get_field_schema()["file_size"].__class__
    finally:
        fo.delete_dataset(ref.name)


def test_rerun_reads_only_new_and_changed_files(digits_dir, tmp_path, fresh_name, monkeypatch):
    root = _folder(digits_dir, tmp_path / "d")
    ds, first = load_dataset(root, name=fresh_name)
    probed: list[str] = []
    real_probe = loader.probe
    monkeypatch.setattr(loader, "probe", lambda path: probed.append(path) or real_probe(path))

    ds, again = load_dataset(root, name=fresh_name)  # unchanged: nothing is read
    assert probed == [] and again.added == again.reread == again.removed == 0 and len(ds) == 11

    extra = sorted((digits_dir / "train" / "3").iterdir())[10]
    shutil.copy(extra, root / "3" / "new.png")  # a new file
    (root / "8" / "empty.png").write_bytes(extra.read_bytes())  # the broken file fixed
    old = next((root / "3").glob("*.png"))
    st = old.stat()
    os.utime(old, (st.st_atime, st.st_mtime + 10))  # touched: read again, still fine
    gone = sorted((root / "8").glob("*.png"))[0]
    gone.unlink()

    ds, third = load_dataset(root, name=fresh_name)
    assert sorted(Path(p).name for p in probed) == sorted(["new.png", "empty.png", old.name])
    assert third.added == 1 and third.reread == 2 and third.removed == 1 and third.unreadable == 0
    # rewritten with its size and modification time kept (cp -p, touch -d): the change time tells
    victim = sorted((root / "3").glob("*.png"))[-1]
    st = victim.stat()
    victim.write_bytes(b"\0" * st.st_size)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    probed.clear()
    ds, fourth = load_dataset(root, name=fresh_name)
    assert [Path(p).name for p in probed] == [victim.name] and fourth.reread == 1 and fourth.unreadable == 1
    from fiftyone import ViewField as F

    fixed = ds.match(F("filepath").ends_with(os.sep + "empty.png")).first()
    assert fixed.unreadable_reason is None and "unreadable" not in fixed.tags and fixed.file_size == extra.stat().st_size


@pytest.mark.parametrize("existing", [0, 1])
def test_concurrent_insert_skips_files_another_run_added(digits_dir, tmp_path, fresh_name, existing):
    """A run that finds some of its files added meanwhile (the unique filepath index refuses
    them) inserts the rest, in bulk."""
    import fiftyone as fo

    from vetset.core._fiftyone import classification_doc

    root = _folder(digits_dir, tmp_path / "d", per_class=2)
    ds, _ = load_dataset(root, name=fresh_name)
    files = sorted(ds.values("filepath"))
    ds.delete_samples(ds.match(fo.ViewField("filepath").is_in(files[existing:])))
    samples = [fo.Sample(filepath=fp, tags=["train"]) for fp in files]
    fields = [{"ground_truth": classification_doc("3")} for _ in files]
    loader._add_missing(ds, samples, fields)
    assert sorted(ds.values("filepath")) == files


def test_rerun_audit_decodes_only_new_and_changed_files(hymenoptera_dir, tmp_path, fresh_name, hooks, monkeypatch):
    """+2 files and 1 touched file in a 40-image folder: the second audit decodes 3 images, and
    the dataset-level results are those of a full audit of the same folder."""
    from vetset.core.recipe import load_recipe
    from vetset.core.run import Run
    from vetset.plugins.audit import stage as audit_stage

    root = tmp_path / "h"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for f in sorted((hymenoptera_dir / "train" / cls).iterdir())[:20]:
            shutil.copy(f, root / cls / f.name)
    decoded: list[str] = []
    real = audit_stage.audit_image

    def counting(path, max_side, computes):
        decoded.append(path)
        return real(path, max_side, computes)

    def audit(name: str, out: Path) -> dict:
        run = Run(load_recipe("audit", hooks), hooks, data=root, dataset=name, out_dir=out, log=lambda m: None)
        run.load()
        options = audit_stage.AuditOptions(workers=0)  # in-process, where the decodes are counted
        return audit_stage.run_audit(run.dataset, options, hooks, run=run, log=lambda m: None,
                                     cache_dir=run.stage_dir("audit"))

    monkeypatch.setattr(audit_stage, "audit_image", counting)
    first = audit(fresh_name, tmp_path / "out")
    assert len(decoded) == 40 and first["images_reused"] == 0
    decoded.clear()
    again = audit(fresh_name, tmp_path / "out")
    assert decoded == [] and again["images_reused"] == 40
    assert first["samples_written"] == 40 and again["samples_written"] == 0  # an unchanged rerun writes nothing
    for i, f in enumerate(sorted((hymenoptera_dir / "val" / "bees").iterdir())[:2]):
        shutil.copy(f, root / "bees" / f"new{i}{f.suffix}")
    touched = sorted((root / "ants").iterdir())[0]
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    decoded.clear()
    third = audit(fresh_name, tmp_path / "out")
    assert sorted(Path(p).name for p in decoded) == sorted(["new0.jpg", "new1.jpg", touched.name])
    assert third["num_images"] == 42 and third["images_read"] == 3 and third["images_reused"] == 39
    assert 2 <= third["samples_written"] < 42  # the new files, and those whose dataset-level tags changed
    decoded.clear()
    full = audit(fresh_name, tmp_path / "out-full")  # the same dataset, a new run folder: everything read
    assert len(decoded) == 42
    for key in ("class_counts", "coverage", "coverage_gaps", "tags", "metrics"):
        assert third[key] == full[key], key
    # break-it: new content, same size, modification time set back (touch -d): the change time tells
    victim = sorted((root / "bees").iterdir())[0]
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    decoded.clear()
    fourth = audit(fresh_name, tmp_path / "out")
    assert [Path(p).name for p in decoded] == [victim.name] and fourth["images_reused"] == 41


def test_unchanged_rerun_reads_no_stored_values_and_an_outside_edit_is_undone(hymenoptera_dir, tmp_path, fresh_name,
                                                                              hooks, monkeypatch):
    """The audit's write keeps a digest of the values it stored and the samples' latest
    ``last_modified_at``: an unchanged rerun neither reads nor writes samples; a sample edited
    through FiftyOne since (a field cleared, a tag removed) is compared and written again."""
    from vetset.core.recipe import load_recipe
    from vetset.core.run import Run
    from vetset.plugins.audit import _staging
    from vetset.plugins.audit import stage as audit_stage

    root = tmp_path / "h"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for f in sorted((hymenoptera_dir / "train" / cls).iterdir())[:6]:
            shutil.copy(f, root / cls / f.name)
    reads: list[int] = []
    real = _staging.stored_fields

    def counting(ds, ids, names):
        reads.append(len(ids))
        return real(ds, ids, names)

    monkeypatch.setattr(_staging, "stored_fields", counting)

    def audit() -> tuple[dict, object]:
        run = Run(load_recipe("audit", hooks), hooks, data=root, dataset=fresh_name, out_dir=tmp_path / "out",
                  log=lambda m: None)
        run.load()
        block = audit_stage.run_audit(run.dataset, audit_stage.AuditOptions(workers=0), hooks, run=run,
                                      log=lambda m: None, cache_dir=run.stage_dir("audit"))
        return block, run.dataset

    first, ds = audit()
    assert first["samples_written"] == 12
    state = ds.info["vetset"]["audit_write"]
    assert len(state["digest"]) == 40 and state["last_modified_at"]
    reads.clear()
    again, ds = audit()
    assert again["samples_written"] == 0 and reads == []  # nothing read back, nothing written
    for key in ("class_counts", "coverage", "tags", "metrics", "num_readable"):
        assert again[key] == first[key], key
    # break-it: an edit through FiftyOne's public API since the last audit
    sample = ds.first()
    before = sample["brightness"]
    assert before is not None
    sample["brightness"] = None
    sample.save()
    third, ds = audit()
    assert reads == [1] and third["samples_written"] == 1  # only the edited sample is read back (stored.pkl)
    assert ds[sample.filepath]["brightness"] == before
    # a new file: it is read back and written (with any sample whose dataset-level tags it
    # changed); the others' values have the digests kept in stored.pkl and are not read
    shutil.copy(sorted((hymenoptera_dir / "val" / "bees").iterdir())[0], root / "bees" / "new.jpg")
    reads.clear()
    fourth, ds = audit()
    assert fourth["num_images"] == 13 and 1 <= sum(reads) <= 3 and fourth["samples_written"] == sum(reads)
    assert ds[str(root / "bees" / "new.jpg")]["brightness"] is not None
    # a damaged stored.pkl and one more file: every sample is compared again, as before the file existed
    (tmp_path / "out" / "audit" / "stored.pkl").write_bytes(b"not a pickle")
    shutil.copy(sorted((hymenoptera_dir / "val" / "bees").iterdir())[1], root / "bees" / "new2.jpg")
    reads.clear()
    fifth, _ = audit()
    assert sum(reads) == 14 and 1 <= fifth["samples_written"] <= 3
