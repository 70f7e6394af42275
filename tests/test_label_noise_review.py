"""Review loop: tags on flagged samples -> corrected labels as CSV and a new ImageFolder tree."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from label_noise_data import flip_labels, imagefolder_rows, pixel_pred_probs, run_stages, write_manifest

from vetset.core.errors import VetsetError

NAME = "ln-review"


def _md5(path: str) -> str:
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def reviewed(digits_dir, tmp_path_factory):
    """Flagged digits with three reviews: confirmed, rejected, corrected, plus one conflict."""
    tmp = tmp_path_factory.mktemp("ln-review")
    rows = imagefolder_rows(digits_dir, per_class=20)
    flip_labels(rows, 12, seed=7)
    classes = sorted({r["label"] for r in rows})
    probs = pixel_pred_probs([r["filepath"] for r in rows], [r["label"] for r in rows], classes)
    np.savez(tmp / "pp.npz", pred_probs=probs, filepaths=np.array([r["filepath"] for r in rows]))
    run = run_stages({"label_noise": {"method": "pred_probs_file", "pred_probs_file": str(tmp / "pp.npz")}},
                     write_manifest(rows, tmp / "noisy.csv"), NAME, tmp / "out")
    ds = run.dataset
    flagged = ds.load_saved_view("label_issues")
    ids = flagged.values("id")
    assert len(ids) >= 5
    ds.select(ids[0]).tag_samples("label_confirmed")
    ds.select(ids[1]).tag_samples("label_rejected")
    ds.select(ids[2]).tag_samples(["label_confirmed", "label_rejected"])
    ds.select(ids[3]).set_values("corrected_label", ["7"])
    hashes = {fp: _md5(fp) for fp in ds.values("filepath")}
    return ds, ids, hashes, tmp


def _rows(csv_path: Path) -> dict[str, dict]:
    with open(csv_path, newline="", encoding="utf-8") as f:
        return {r["sample_id"]: r for r in csv.DictReader(f)}


def test_export_applies_reviews_and_copies_into_imagefolder(reviewed):
    from vetset.plugins.label_noise.review import export_labels

    ds, ids, hashes, tmp = reviewed
    res = export_labels(ds, tmp / "fixed", unreviewed="keep")
    rows = _rows(Path(res["csv"]))
    assert res["exported"] == len(rows) == len(ds) == 200
    assert res["left_out"] == {"unreadable": 0, "augmented": 0}
    given = dict(zip(*ds.values(["id", "ground_truth.label"])))
    suggested = dict(zip(*ds.values(["id", "suggested_label.label"])))
    assert (rows[ids[0]]["review"], rows[ids[0]]["final_label"]) == ("confirmed", suggested[ids[0]])
    assert (rows[ids[1]]["review"], rows[ids[1]]["final_label"]) == ("rejected", given[ids[1]])
    assert (rows[ids[2]]["review"], rows[ids[2]]["final_label"]) == ("conflict", given[ids[2]])
    assert (rows[ids[3]]["review"], rows[ids[3]]["final_label"]) == ("corrected", "7")
    assert all(rows[i]["review"] == "unreviewed" and rows[i]["final_label"] == given[i] for i in ids[4:])
    assert res["counts"]["confirmed"] == res["counts"]["rejected"] == res["counts"]["conflict"] == 1
    changed = {i for i, r in rows.items() if r["changed"] == "True"}
    assert changed == {i for i in (ids[0], ids[3]) if rows[i]["final_label"] != given[i]}
    # every exported file sits under <split>/<final label>/ and is a byte copy of its source
    fps = dict(zip(*ds.values(["id", "filepath"])))
    for sid, row in rows.items():
        path = Path(row["exported_path"])
        assert path.parts[-3:-1] == (row["split"], row["final_label"])
        assert _md5(str(path)) == hashes[fps[sid]]
    files = [p for p in (tmp / "fixed").rglob("*.png")]
    assert len(files) == 200
    assert {fp: _md5(fp) for fp in hashes} == hashes  # sources untouched


def test_export_rerun_replaces_and_unreviewed_policies(reviewed):
    from vetset.plugins.label_noise.review import export_labels

    ds, ids, _, tmp = reviewed
    res = export_labels(ds, tmp / "policy", unreviewed="drop", splits=False)
    assert res["exported"] == 200 - (len(ids) - 4) and res["counts"]["dropped"] == len(ids) - 4
    again = export_labels(ds, tmp / "policy", tmp / "elsewhere" / "labels.csv", unreviewed="suggested", splits=False)
    files = list((tmp / "policy").rglob("*.png"))
    assert again["exported"] == len(files) == 200  # replaced, nothing left from the first export
    rows = _rows(tmp / "elsewhere" / "labels.csv")
    suggested = dict(zip(*ds.values(["id", "suggested_label.label"])))
    assert all(rows[i]["final_label"] == suggested[i] for i in ids[4:])
    assert all(Path(rows[i]["exported_path"]).parent.name == suggested[i] for i in ids[4:])


def test_export_refuses_folders_it_did_not_write(reviewed, digits_dir):
    from vetset.plugins.label_noise.review import export_labels

    ds, _, _, tmp = reviewed
    foreign = tmp / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(VetsetError, match="exists and is not empty"):
        export_labels(ds, foreign)
    with pytest.raises(VetsetError, match="holds source images"):
        export_labels(ds, digits_dir.parent)
    with pytest.raises(VetsetError, match="--out DIR"):
        export_labels(ds)
    assert (foreign / "notes.txt").read_text() == "mine"


def test_cli_export_labels(reviewed):
    _, _, _, tmp = reviewed
    done = run_cli("export-labels", "--dataset", NAME, "--out", str(tmp / "cli"), "--csv", str(tmp / "cli.csv"))
    assert done.returncode == 0, done.stderr
    assert "200 images exported" in done.stdout and "1 confirmed, 1 rejected, 1 corrected" in done.stdout
    assert len(_rows(tmp / "cli.csv")) == 200 and (tmp / "cli" / "labels.csv").is_file()
    bad = run_cli("export-labels", "--dataset", NAME, "--out", str(tmp / "cli2"), "--unreviewed", "maybe")
    assert bad.returncode == 2 and "--unreviewed must be keep, suggested or drop" in bad.stderr
    missing = run_cli("export-labels", "--dataset", "ln-no-such-dataset", "--out", str(tmp / "cli3"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_export_refuses_a_dataset_that_never_ran_label_noise(digits_dir, tmp_path, fresh_name):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.plugins.label_noise.review import export_labels

    ds, _ = load_dataset(digits_dir, name=fresh_name)
    try:
        with pytest.raises(VetsetError, match=rf"Dataset '{fresh_name}' has no label-noise results and no review "
                                              r"decisions: run the label_noise stage first"):
            export_labels(ds, tmp_path / "fixed")
        assert not (tmp_path / "fixed").exists()
        ds.select(ds.first().id).set_values("corrected_label", ["3"])  # a manual correction alone is enough
        assert export_labels(ds, csv_path=tmp_path / "fixed.csv")["counts"]["corrected"] == 1
    finally:
        fo.delete_dataset(ds.name)


def test_a_rerun_keeps_the_suggestion_a_reviewer_confirmed(digits_dir, tmp_path):
    """Confirming an issue accepts its suggested label; a later run with other pred_probs must not change it."""
    from vetset.plugins.label_noise.review import export_labels

    rows = imagefolder_rows(digits_dir, per_class=10)
    flip_labels(rows, 6, seed=11)
    classes = sorted({r["label"] for r in rows})
    fps = [r["filepath"] for r in rows]
    probs = pixel_pred_probs(fps, [r["label"] for r in rows], classes)
    np.savez(tmp_path / "pp.npz", pred_probs=probs, filepaths=np.array(fps))
    manifest = write_manifest(rows, tmp_path / "noisy.csv")
    stage = {"label_noise": {"method": "pred_probs_file", "pred_probs_file": str(tmp_path / "pp.npz")}}
    run = run_stages(stage, manifest, "ln-rerun-confirmed", tmp_path / "out")
    ds = run.dataset
    sample = ds.load_saved_view("label_issues").first()
    accepted = sample.suggested_label.label
    ds.select(sample.id).tag_samples("label_confirmed")
    # the next run's model suggests something else for it: its given label
    other = probs.copy()
    i = fps.index(sample.filepath)
    other[i] = 0.0
    other[i, classes.index(sample.ground_truth.label)] = 1.0
    np.savez(tmp_path / "pp.npz", pred_probs=other, filepaths=np.array(fps))
    run_stages(stage, None, "ln-rerun-confirmed", tmp_path / "out")
    assert ds.select(sample.id).first().suggested_label.label == accepted != sample.ground_truth.label
    res = export_labels(ds, csv_path=tmp_path / "labels.csv")
    assert _rows(tmp_path / "labels.csv")[sample.id]["final_label"] == accepted
    assert res["counts"]["confirmed"] == 1


def test_export_counts_the_unreadable_samples_it_leaves_out(reviewed):
    from vetset.plugins.label_noise.review import export_labels

    ds, ids, _, tmp = reviewed
    ds.select(ids[-1]).tag_samples("unreadable")
    try:
        res = export_labels(ds, None, tmp / "only.csv")
        assert res["left_out"] == {"unreadable": 1, "augmented": 0}
        assert len(_rows(Path(res["csv"]))) == 199 and ids[-1] not in _rows(Path(res["csv"]))
    finally:
        ds.select(ids[-1]).untag_samples("unreadable")
