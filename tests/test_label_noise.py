"""The label_noise stage end to end on real digits with a known set of flipped labels.

Method ``embeddings`` (timm resnet10t features + cross-validated logistic regression), so
the module runs in well under a minute on two idle cores.
"""

from __future__ import annotations

import numpy as np
import pytest
from label_noise_data import flip_labels, imagefolder_rows, recall_precision, run_stages, write_manifest

N_PER_CLASS, N_FLIP = 80, 40
STAGE = {"method": "embeddings", "datalab": True, "embeddings": {"model_name": "resnet10t", "img_size": 32}}


@pytest.fixture(scope="module")
def noisy_digits(digits_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ln-digits")
    rows = imagefolder_rows(digits_dir, per_class=N_PER_CLASS)
    true = {r["filepath"]: r["label"] for r in rows}
    flipped = flip_labels(rows, N_FLIP, seed=1)
    manifest = write_manifest(rows, tmp / "noisy.csv")
    run = run_stages({"label_noise": STAGE}, manifest, "ln-digits", tmp / "out")
    return run, flipped, true


def test_flipped_labels_are_found_well_above_chance(noisy_digits):
    run, flipped, _ = noisy_digits
    block = run.results["label_noise"]
    assert block["num_checked"] == 10 * N_PER_CLASS and block["skipped"] is None
    assert block["oof_accuracy"] > 0.75 and block["oof_kappa"] > 0.7
    assert not any("weak model" in w for w in block["warnings"])
    flagged = set(run.dataset.match_tags("label_issue").values("filepath"))
    assert len(flagged) == block["num_issues"] == block["metrics"]["label_issues"] > 0
    recall, precision = recall_precision(flagged, flipped)
    share = len(flagged) / block["num_checked"]
    # chance: a random flag set of this size has recall == share and precision == 5%
    assert recall >= 0.6 and recall >= 3 * share, (recall, share)
    assert precision >= 4 * N_FLIP / block["num_checked"], precision


def test_fields_written_in_fiftyone(noisy_digits):
    run, flipped, true = noisy_digits
    ds = run.dataset
    fps, quality, suggested, conf = ds.values(["filepath", "label_quality", "suggested_label.label",
                                              "suggested_label.confidence"])
    assert all(q is not None and 0.0 <= q <= 1.0 for q in quality)
    assert all(c is not None and 0.0 < c <= 1.0 for c in conf)
    q = dict(zip(fps, quality))
    assert np.mean([q[f] for f in flipped]) < 0.5 * np.mean([q[f] for f in fps if f not in flipped])
    # the suggestion names the original class for most flipped samples
    sug = dict(zip(fps, suggested))
    assert np.mean([sug[f] == true[f] for f in flipped]) >= 0.7


def test_saved_view_worst_first(noisy_digits):
    run, _, _ = noisy_digits
    ds = run.dataset
    assert "label_issues" in ds.list_saved_views()
    view = ds.load_saved_view("label_issues")
    values = view.values("label_quality")
    assert len(values) == run.results["label_noise"]["num_issues"]
    assert values == sorted(values)
    top = run.results["label_noise"]["top_issues"]
    assert [t["filepath"] for t in top] == view.values("filepath")[: len(top)]


def test_pred_probs_saved_for_reuse(noisy_digits):
    run, _, _ = noisy_digits
    block = run.results["label_noise"]
    with np.load(block["pred_probs_file"]) as z:
        probs, ids, labels = z["pred_probs"], list(z["sample_ids"]), z["labels"]
        assert list(z["classes"]) == run.classes
    assert probs.shape == (10 * N_PER_CLASS, 10) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    given = dict(zip(*run.dataset.values(["id", "ground_truth.label"])))
    assert [run.classes[k] for k in labels] == [given[i] for i in ids]
    assert abs((probs.argmax(1) == labels).mean() - block["oof_accuracy"]) < 1e-9


def test_report_section_shows_flagged_samples(noisy_digits):
    from vetset.core.report_kit import ReportContext
    from vetset.plugins.label_noise.report import render

    run, _, _ = noisy_digits
    result = {"dataset": run.dataset.name, "stages": {"label_noise": run.results["label_noise"]}}
    html = render(result, ReportContext(result=result, dataset=run.dataset))
    top = run.results["label_noise"]["top_issues"][0]
    assert html.count("data:image/jpeg;base64,") >= len(run.results["label_noise"]["top_issues"])
    assert f'{top["given"]} → {top["suggested"]}' in html
    assert "recipes export-labels --dataset ln-digits" in html
    assert render({"stages": {}}, ReportContext(result={})) is None


def test_datalab_on_same_pred_probs(noisy_digits):
    pytest.importorskip("datasets", reason="Datalab needs pip install 'cleanlab[datalab]'")
    run, _, _ = noisy_digits
    block = run.results["label_noise"]["datalab"]
    types = {s["issue_type"]: s["num_issues"] for s in block["summary"]}
    assert set(types) == {"outlier", "near_duplicate"}
    ds = run.dataset
    assert len(ds.match_tags("datalab_outlier")) == types["outlier"]
    assert len(ds.match_tags("datalab_near_duplicate")) == types["near_duplicate"]
    scores = [s for s in ds.values("datalab_outlier_score") if s is not None]
    assert len(scores) == 10 * N_PER_CLASS
    listed = [o["outlier_score"] for o in block["outliers"]]
    assert listed == sorted(listed)


def test_rerun_does_not_duplicate_and_keeps_review_tags(noisy_digits, tmp_path):
    run, _, _ = noisy_digits
    ds = run.dataset
    first = sorted(ds.match_tags("label_issue").values("id"))
    reviewed = first[0]
    ds.select(reviewed).tag_samples("label_confirmed")
    # rerun from the saved pred_probs file with the same filter (filter_by auto picks by method): the same
    # samples are flagged, tagged once
    saved = {"method": "pred_probs_file", "pred_probs_file": run.results["label_noise"]["pred_probs_file"],
             "filter_by": run.results["label_noise"]["filter_by"]}
    again = run_stages({"label_noise": saved}, None, "ln-digits", tmp_path / "again")
    assert again.dataset.name == ds.name
    ds.reload()
    assert sorted(ds.match_tags("label_issue").values("id")) == first
    assert ds.count_sample_tags()["label_issue"] == len(first)
    assert ds.match_tags("label_confirmed").values("id") == [reviewed]
    assert again.results["label_noise"]["oof_accuracy"] == run.results["label_noise"]["oof_accuracy"]
