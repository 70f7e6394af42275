"""K-fold pred_probs with the timm trainer (digits), and the CIFAR-10 files when present."""

from __future__ import annotations

import numpy as np
import pytest
from label_noise_data import flip_labels, imagefolder_rows, recall_precision, run_stages, write_manifest

TRAIN = {"model_name": "resnet10t", "img_size": 16, "epochs": 4, "lr": 3e-3, "batch_size": 32, "workers": 0,
         "warmup_epochs": 0, "device": "cpu"}


def test_stratified_folds_partition_the_samples():
    from vetset.plugins.label_noise.pred_probs import stratified_folds

    labels = np.repeat(np.arange(4), [30, 20, 10, 3])
    folds = stratified_folds(labels, 5, seed=0)
    held = np.concatenate([te for _, te in folds])
    assert sorted(held.tolist()) == list(range(len(labels)))  # every sample held out exactly once
    for tr, te in folds:
        assert not set(tr) & set(te) and len(tr) + len(te) == len(labels)
        assert np.bincount(labels[te], minlength=4)[:3].tolist() == [6, 4, 2]
    assert folds[0][1].tolist() == stratified_folds(labels, 5, seed=0)[0][1].tolist()
    assert folds[0][1].tolist() != stratified_folds(labels, 5, seed=1)[0][1].tolist()


@pytest.mark.slow
def test_kfold_stage_finds_flipped_digits_and_caches_folds(digits_dir, tmp_path):
    from vetset.plugins.label_noise.options import light_augmentation
    from vetset.plugins.label_noise.pred_probs import kfold_pred_probs

    rows = imagefolder_rows(digits_dir, per_class=30)
    flipped = flip_labels(rows, 15, seed=0)
    stage = {"method": "kfold", "n_folds": 3, "train": TRAIN}
    run = run_stages({"label_noise": stage}, write_manifest(rows, tmp_path / "noisy.csv"), "ln-kfold", tmp_path / "out")
    block = run.results["label_noise"]
    assert [f["n_held_out"] for f in block["folds"]] == [100, 100, 100]
    assert not any(f["cached"] for f in block["folds"])
    assert block["oof_accuracy"] > 0.6
    flagged = set(run.dataset.match_tags("label_issue").values("filepath"))
    recall, precision = recall_precision(flagged, flipped)
    assert recall >= 0.5 and precision >= 4 * 15 / 300, (recall, precision)  # chance precision 0.05
    # the folds' pred_probs are cached: a resumed computation trains nothing and gives the same rows; the
    # cache key holds the train options, so this also shows the folds trained with the light augmentation
    # (fold_augmentation's default, as no train_transform was set)
    with np.load(block["pred_probs_file"]) as z:
        fps, labels, saved = list(z["filepaths"]), z["labels"], z["pred_probs"]
    trained = []
    opts = {**TRAIN, "train_transform": light_augmentation()}
    again, folds = kfold_pred_probs(fps, labels, run.classes, opts, 3, 0, out_dir=run.stage_dir("label_noise") / "folds",
                                    resume=True, on_fold=lambda *a: trained.append(a[0]))
    assert all(f["cached"] for f in folds) and trained == []
    np.testing.assert_allclose(again, saved, atol=1e-6)


def test_cifar_flipped_labels_found_with_embeddings(cifar_test_dir, tmp_path):
    rows = [r for r in imagefolder_rows(cifar_test_dir, per_class=150) if r["label"] in ("airplane", "frog", "truck")]
    flipped = flip_labels(rows, 30, seed=0)
    stage = {"method": "embeddings", "embeddings": {"model_name": "test_resnet", "img_size": 32}}
    run = run_stages({"label_noise": stage}, write_manifest(rows, tmp_path / "noisy.csv"), "ln-cifar", tmp_path / "out")
    block = run.results["label_noise"]
    flagged = set(run.dataset.match_tags("label_issue").values("filepath"))
    recall, precision = recall_precision(flagged, flipped)
    share = len(flagged) / len(rows)
    assert block["num_checked"] == 450 and block["oof_accuracy"] > 0.55
    # chance: recall == share of samples flagged, precision == 30 / 450
    assert recall >= 2.5 * share and precision >= 2.5 * 30 / 450, (recall, precision, share)


def test_embedding_weights_file_is_loaded(digits_dir, tmp_path):
    """A local weights file reaches the backbone (and a bad one is named)."""
    import timm
    import torch

    from vetset.core.errors import RecipeError
    from vetset.plugins.label_noise.pred_probs import embed_images

    files = [r["filepath"] for r in imagefolder_rows(digits_dir, per_class=2)]
    torch.manual_seed(123)
    src = timm.create_model("test_resnet", num_classes=10)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    with_file = embed_images(files, "test_resnet", weights=str(tmp_path / "w.pth"), img_size=32)
    without = embed_images(files, "test_resnet", img_size=32)
    src.reset_classifier(0)
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    tf = create_transform(**resolve_data_config({"img_size": 32}, model=src))
    with torch.inference_mode():
        expected = src.eval()(torch.stack([tf(Image.open(f).convert("RGB")) for f in files])).numpy()
    np.testing.assert_allclose(with_file, expected, rtol=1e-4, atol=1e-5)
    assert not np.allclose(without, expected, atol=1e-3)
    with pytest.raises(RecipeError, match="embeddings.weights"):
        embed_images(files, "test_resnet", weights=str(tmp_path / "absent.pth"))
    with pytest.raises(RecipeError, match="not a timm model name"):
        embed_images(files, "resnet_does_not_exist")
