"""Loaders on real files: digits, ants/bees photos, CSV manifests, and bad input."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from vetset.core.dataset import load_dataset, split_view, stratified_split
from vetset.core.errors import DataError


def tree_digest(root: Path) -> str:
    """Hash of every path, size and content below ``root`` (detects any modification)."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            h.update(str(p.relative_to(root)).encode())
            if p.is_file():
                h.update(p.read_bytes())
    return h.hexdigest()


def test_digits_imagefolder_with_splits_and_idempotent_reload(digits_dir, fresh_name):
    before = tree_digest(digits_dir)
    ds, summary = load_dataset(digits_dir, name=fresh_name)
    assert summary.num_samples == 1797 and summary.added == 1797 and summary.format == "imagefolder"
    assert summary.classes == [str(i) for i in range(10)]
    assert sum(summary.counts["train"].values()) + sum(summary.counts["val"].values()) == 1797
    assert summary.split_made is False and summary.unreadable == 0
    assert ds.persistent and ds.default_classes == summary.classes
    assert set(ds.distinct("tags")) == {"train", "val"}
    ds2, again = load_dataset(digits_dir, name=fresh_name)
    assert again.added == 0 and again.updated == 0 and again.removed == 0 and len(ds2) == 1797
    assert tree_digest(digits_dir) == before


def test_hymenoptera_photos_including_gif_placeholder(hymenoptera_dir, fresh_name):
    ds, summary = load_dataset(hymenoptera_dir, name=fresh_name)
    assert summary.counts["train"] == {"ants": 124, "bees": 121}
    assert summary.counts["val"] == {"ants": 70, "bees": 83}
    gif = ds.match({"filepath": {"$regex": "imageNotFound\\.gif$"}})
    assert len(gif) == 1 and gif.first().unreadable_reason is None  # a real (palette) GIF, readable
    assert len(split_view(ds, "train")) == 245


def test_flat_folder_gets_seeded_stratified_split_that_is_stable(hymenoptera_dir, tmp_path, fresh_name):
    root = tmp_path / "flat"
    for cls in ("ants", "bees"):
        (root / cls).mkdir(parents=True)
        for f in sorted((hymenoptera_dir / "train" / cls).iterdir())[:20]:
            shutil.copy(f, root / cls / f.name)
    ds, summary = load_dataset(root, name=fresh_name, val_fraction=0.25, seed=3)
    assert summary.split_made
    assert summary.counts["val"] == {"ants": 5, "bees": 5} and summary.counts["train"] == {"ants": 15, "bees": 15}
    val_before = sorted(ds.match_tags("val").values("filepath"))
    # a new file arrives: old samples keep their split, nothing is duplicated
    src = sorted((hymenoptera_dir / "train" / "ants").iterdir())[30]
    shutil.copy(src, root / "ants" / "new.jpg")
    ds, again = load_dataset(root, name=fresh_name, val_fraction=0.25, seed=3)
    assert again.added == 1 and len(ds) == 41
    assert set(val_before) <= set(ds.match_tags("val").values("filepath"))
    # a file disappears from the source: its sample goes too
    (root / "bees" / sorted(os.listdir(root / "bees"))[0]).unlink()
    ds, third = load_dataset(root, name=fresh_name)
    assert third.removed == 1 and len(ds) == 40


def test_stratified_split_keeps_single_image_classes_in_train():
    labels = ["a"] * 10 + ["b"] * 2 + ["c"]
    splits = stratified_split(labels, 0.2, seed=0)
    assert splits.count("val") == 2 + 1  # round(10*.2)=2 from a, 1 from b (at least one), none from c
    assert splits[-1] == "train"
    assert stratified_split(labels, 0.2, seed=0) == splits


def test_csv_manifest_with_relative_paths_and_label_update(digits_dir, tmp_path, fresh_name):
    files = sorted((digits_dir / "train" / "3").iterdir())[:6] + sorted((digits_dir / "val" / "8").iterdir())[:4]
    manifest = tmp_path / "m.csv"
    rows = ["filepath,label,split"]
    for i, f in enumerate(files):
        rel = os.path.relpath(f, tmp_path)
        rows.append(f"{rel},{f.parent.name},{'val' if i % 5 == 0 else 'train'}")
    manifest.write_text("\n".join(rows) + "\n")
    ds, summary = load_dataset(manifest, name=fresh_name)
    assert summary.format == "csv" and summary.num_samples == 10
    assert summary.counts["all"] == {"3": 6, "8": 4} and summary.counts["val"] == {"3": 2, "8": 0}
    rows[1] = rows[1].rsplit(",", 2)[0] + ",8,val"
    manifest.write_text("\n".join(rows) + "\n")
    ds, again = load_dataset(manifest, name=fresh_name)
    assert again.updated == 1 and again.added == 0 and ds.count_values("ground_truth.label") == {"3": 5, "8": 5}


def test_unreadable_files_are_recorded_not_fatal_and_source_untouched(hymenoptera_dir, tmp_path, fresh_name):
    root = tmp_path / "bad"
    (root / "ants").mkdir(parents=True)
    (root / "bees").mkdir()
    for f in sorted((hymenoptera_dir / "train" / "ants").iterdir())[:3]:
        shutil.copy(f, root / "ants" / f.name)
    (root / "bees" / "empty.jpg").write_bytes(b"")
    (root / "bees" / "notes.jpg").write_text("this is not an image")
    (root / "bees" / "README.txt").write_text("skipped: not an image extension")
    before = tree_digest(root)
    ds, summary = load_dataset(root, name=fresh_name)
    reasons = dict(zip([Path(p).name for p in ds.values("filepath")], ds.values("unreadable_reason")))
    assert reasons["empty.jpg"] == "empty file" and reasons["notes.jpg"] == "not an image"
    assert summary.unreadable == 2 and summary.skipped_non_image == 1
    assert len(ds.match_tags("unreadable")) == 2 and len(split_view(ds, "train")) + len(split_view(ds, "val")) == 3
    assert tree_digest(root) == before


def test_empty_class_folder_is_kept_in_the_class_list(digits_dir, tmp_path, fresh_name):
    root = tmp_path / "d"
    shutil.copytree(digits_dir / "train" / "1", root / "one")
    (root / "empty").mkdir()
    ds, summary = load_dataset(root, name=fresh_name)
    assert summary.classes == ["empty", "one"] and summary.counts["all"]["empty"] == 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda p: p / "missing", r"missing does not exist"),
        (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", r"is not a folder"),
        (lambda p: (p / "e").mkdir() or p / "e", r"has no class sub-folders"),
        (lambda p: (p / "t" / "a").mkdir(parents=True) or (p / "t" / "a" / "x.txt").write_text("x") and p / "t",
         r"has class folders but no image files in them \(1 other files skipped\)"),
        (lambda p: (p / "m.csv").write_text("path,cls\na,b\n") and p / "m.csv", r"needs the columns filepath,label"),
        (lambda p: (p / "s.csv").write_text("filepath,label,split\na.jpg,x,holdout\n") and p / "s.csv",
         r"row 2: split 'holdout' is not one of train, val, test"),
    ],
)
def test_bad_sources_get_one_clear_sentence(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_dataset(make(tmp_path), name="t-bad-source")


def test_unknown_fiftyone_dataset_name():
    with pytest.raises(DataError, match="FiftyOne dataset 'no-such-ds' does not exist"):
        load_dataset(None, name="no-such-ds")


def test_reload_keeps_the_audits_unreadable_tag_until_the_file_is_fixed(hymenoptera_dir, tmp_path, fresh_name):
    """A truncated JPEG parses (header probe OK) but cannot decode: the audit tags it; a reload must not untag it."""
    from fiftyone import ViewField as F

    from vetset.plugins.audit.stage import AuditOptions, run_audit

    root = tmp_path / "trunc"
    (root / "ants").mkdir(parents=True)
    (root / "bees").mkdir()
    photos = sorted((hymenoptera_dir / "train" / "ants").iterdir())[:3]
    for f in photos:
        shutil.copy(f, root / "ants" / f.name)
    for f in sorted((hymenoptera_dir / "train" / "bees").iterdir())[:3]:
        shutil.copy(f, root / "bees" / f.name)
    whole = photos[0].read_bytes()
    (root / "ants" / "cut.jpg").write_bytes(whole[: len(whole) // 2])
    ds, summary = load_dataset(root, name=fresh_name)
    assert summary.unreadable == 0  # the header parses: only a decode finds it
    run_audit(ds, AuditOptions(workers=0), log=lambda m: None)
    cut = ds.match(F("filepath").ends_with("cut.jpg"))
    assert cut.first().unreadable_reason == "truncated file" and "unreadable" in cut.first().tags

    ds, summary = load_dataset(root, name=fresh_name)  # a rerun loads again
    assert summary.unreadable == 1 and cut.first().unreadable_reason == "truncated file"
    assert "cut.jpg" not in {Path(p).name for p in split_view(ds, "train").values("filepath")} | \
        {Path(p).name for p in split_view(ds, "val").values("filepath")}

    (root / "ants" / "cut.jpg").write_bytes(whole)  # repaired: the next load clears the tag
    ds, summary = load_dataset(root, name=fresh_name)
    assert summary.unreadable == 0 and cut.first().unreadable_reason is None and "unreadable" not in cut.first().tags


def test_concurrent_loads_into_one_dataset_add_each_file_once(digits_dir, fresh_name):
    """Two processes loading the same folder into one dataset at once (a shared database) add every file once."""
    import subprocess
    import sys

    import fiftyone as fo

    code = ("import sys\nfrom vetset.core.dataset import load_dataset\n"
            "ds, s = load_dataset(sys.argv[1], name=sys.argv[2])\nprint(s.added)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(digits_dir), fresh_name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-2000:] for o in outs]
    files = sorted(str(p) for p in digits_dir.rglob("*.png"))
    ds = fo.load_dataset(fresh_name)
    assert sorted(ds.values("filepath")) == files
    assert sum(int(o[0].split()[-1]) for o in outs) >= len(files)  # each process reported what it meant to add


def test_reload_removes_duplicates_left_by_earlier_concurrent_runs(digits_dir, tmp_path, fresh_name):
    """A dataset from before the unique filepath index, with one file added twice, is repaired on load."""
    import fiftyone as fo
    from fiftyone import ViewField as F

    root = tmp_path / "d"
    shutil.copytree(digits_dir / "train" / "1", root / "one")
    files = sorted(str(p) for p in root.rglob("*.png"))
    ds = fo.Dataset(fresh_name, persistent=True)
    samples = [fo.Sample(filepath=f, tags=["train"], ground_truth=fo.Classification(label="one")) for f in files]
    ds.add_samples(samples + [fo.Sample(filepath=files[0], tags=["train"],
                                        ground_truth=fo.Classification(label="one"))], progress=False)
    first = ds.match(F("filepath") == files[0]).values("id")
    assert len(ds) == len(files) + 1 and len(first) == 2
    ds, summary = load_dataset(root, name=fresh_name)
    assert sorted(ds.values("filepath")) == files
    assert ds.match(F("filepath") == files[0]).values("id") == [min(first)]
    assert "removed 1 duplicate samples of files loaded twice by concurrent runs" in summary.warnings


def test_another_folder_with_the_same_dataset_name_is_refused(digits_dir, tmp_path, fresh_name):
    """Two folders with one base name (same default dataset name) must not merge silently."""
    a, b = tmp_path / "a" / "digits", tmp_path / "b" / "digits"
    shutil.copytree(digits_dir / "train" / "1", a / "one")
    shutil.copytree(digits_dir / "train" / "2", b / "two")
    ds, _ = load_dataset(a, name=fresh_name)
    n = len(ds)
    with pytest.raises(DataError, match=rf"Dataset '{fresh_name}' holds the images of {a}, not {b}; pass another --dataset"):
        load_dataset(b, name=fresh_name)
    ds, _ = load_dataset(a, name=fresh_name)  # the same folder again is fine
    assert len(ds) == n


def test_training_view_uses_only_the_latest_augmentation_folder(fresh_name, tmp_path):
    import fiftyone as fo

    from vetset.core.dataset import training_view

    ds = fo.Dataset(fresh_name)
    try:
        old, new = tmp_path / "run1" / "augment" / "images", tmp_path / "run2" / "augment" / "images"
        ds.add_samples([fo.Sample(filepath=str(tmp_path / "src" / f"{i}.jpg"), tags=["train"]) for i in range(3)]
                       + [fo.Sample(filepath=str(tmp_path / "src" / "v.jpg"), tags=["val"])]
                       + [fo.Sample(filepath=str(old / f"a{i}.jpg"), tags=["train", "augmented"]) for i in range(4)]
                       + [fo.Sample(filepath=str(new / f"b{i}.jpg"), tags=["train", "augmented"]) for i in range(2)]
                       + [fo.Sample(filepath=str(tmp_path / "run10" / f"c{i}.jpg"), tags=["train", "augmented"])
                          for i in range(1)])
        view, left_out = training_view(ds)  # no augment run recorded: every train sample
        assert (len(view), left_out) == (10, 0)
        ds.info = {"vetset": {"augment_folder": str(new)}}
        ds.save()
        view, left_out = training_view(ds)
        assert (len(view), left_out) == (5, 5)
        assert sorted(os.path.basename(p) for p in view.values("filepath")) == ["0.jpg", "1.jpg", "2.jpg", "b0.jpg", "b1.jpg"]
    finally:
        ds.delete()


def test_a_default_name_held_by_another_folder_gets_a_name_of_its_own(digits_dir, tmp_path):
    """Without --dataset, a second folder with the same base name (another checkout's demo) loads
    into ``<default>-<hash of its path>``, the same one on every rerun; the first keeps the default."""
    import uuid

    import fiftyone as fo

    from vetset.core.dataset import default_dataset_name

    base = f"digits-{uuid.uuid4().hex[:8]}"
    a, b = tmp_path / "a" / base, tmp_path / "b" / base
    shutil.copytree(digits_dir / "train" / "1", a / "one")
    shutil.copytree(digits_dir / "train" / "2", b / "two")
    names = []
    try:
        ds_a, sum_a = load_dataset(a)
        names.append(ds_a.name)
        ds_b, sum_b = load_dataset(b)
        names.append(ds_b.name)
        assert ds_a.name == default_dataset_name(a) and not sum_a.warnings
        assert ds_b.name.startswith(ds_a.name + "-") and len(ds_b.name) == len(ds_a.name) + 7
        assert sum_b.warnings == [f"dataset {ds_a.name!r} holds the images of {a}; this folder uses dataset {ds_b.name!r}"]
        assert set(ds_b.distinct("ground_truth.label")) == {"two"} and set(ds_a.distinct("ground_truth.label")) == {"one"}
        again, _ = load_dataset(b)
        assert again.name == ds_b.name and len(again) == len(ds_b)
        fo.delete_dataset(ds_a.name)  # with the default name free, b stays in its own dataset
        names.remove(ds_a.name)
        assert load_dataset(b)[0].name == ds_b.name
    finally:
        for name in names:
            if fo.dataset_exists(name):
                fo.delete_dataset(name)
