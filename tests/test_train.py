"""The timm trainer: learning, reproducibility, checkpoints, resume, options, the trainer hook."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vetset.core.errors import RecipeError
from vetset.plugins.train.stage import fit, predict

#: Tiny timm model (0.37 M parameters) at the digits' training size: seconds per epoch on CPU. One thread:
#: on a machine shared with other busy processes, two OpenMP threads mostly wait on each other.
#: CPU even where CUDA is present: bit-for-bit reproducibility is promised on CPU only.
FAST = dict(model_name="test_resnet", img_size=32, batch_size=32, lr=3e-3, warmup_epochs=0, threads=1, device="cpu")


def digit_items(root: Path, split: str, per_class: int | None = None) -> tuple[list[tuple[str, int]], list[str]]:
    classes = sorted(p.name for p in (root / split).iterdir())
    items = []
    for i, c in enumerate(classes):
        files = sorted((root / split / c).glob("*.png"))[:per_class]
        items += [(str(f), i) for f in files]
    return items, classes


@pytest.fixture(scope="module")
def digits_small(digits_dir):
    train, classes = digit_items(digits_dir, "train", per_class=30)
    val, _ = digit_items(digits_dir, "val")
    return train, val, classes


def test_fit_learns_digits_and_predict_agrees(digits_small):
    train, val, classes = digits_small
    out = fit(train, val, classes, dict(FAST, epochs=3, workers=0), log=lambda m: None)
    assert [h["epoch"] for h in out.history] == [1, 2, 3]
    assert out.history[-1]["train_loss"] < out.history[0]["train_loss"]
    assert out.device == "cpu" and out.amp_dtype is None
    assert out.data_config["input_size"] == [3, 32, 32]
    probs, logits = predict(out.model, [p for p, _ in val], out.data_config, dict(FAST, workers=0))
    assert probs.shape == logits.shape == (len(val), 10)
    assert probs.dtype == logits.dtype == np.float32
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    acc = float((probs.argmax(1) == np.array([c for _, c in val])).mean())
    assert acc > 0.35, acc  # 10 classes: chance is 0.1; 300 training images, 3 epochs
    best = out.history[out.best_epoch - 1]
    assert acc == pytest.approx(best["val_acc"], abs=1e-9)


def test_same_seed_same_weights_whatever_the_workers(digits_dir):
    train, classes = digit_items(digits_dir, "train", per_class=12)
    val, _ = digit_items(digits_dir, "val", per_class=4)
    aug = {"transform": {"__class_fullname__": "Compose", "p": 1.0, "transforms": [
        {"__class_fullname__": "Affine", "p": 1.0, "rotate": [-15, 15], "scale": [0.8, 1.2]}]}}
    runs = [fit(train, val, classes, dict(FAST, epochs=2, workers=w, seed=7, train_transform=aug), log=lambda m: None)
            for w in (0, 2)]
    a, b = (r.model.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].history[-1]["train_loss"] == runs[1].history[-1]["train_loss"]
    other = fit(train, val, classes, dict(FAST, epochs=2, workers=0, seed=8, train_transform=aug), log=lambda m: None)
    assert not torch.equal(other.model.state_dict()["fc.weight"], a["fc.weight"])


class Interrupt(Exception):
    pass


def test_checkpoints_load_weights_only_and_resume_continues(digits_dir, tmp_path):
    train, classes = digit_items(digits_dir, "train", per_class=10)
    val, _ = digit_items(digits_dir, "val", per_class=3)
    opts = dict(FAST, epochs=3, workers=0, ema=True, ema_decay=0.9, clip_grad=1.0)
    full = fit(train, val, classes, opts, out_dir=tmp_path / "full", log=lambda m: None)

    def stop_after_epoch_2(msg):
        if msg.startswith("[train] epoch 2/3"):
            raise Interrupt

    with pytest.raises(Interrupt):
        fit(train, val, classes, opts, out_dir=tmp_path / "cut", log=stop_after_epoch_2)
    last = torch.load(tmp_path / "cut" / "last.pt", weights_only=True)
    assert last["epoch"] == 1 and len(last["history"]) == 2
    assert last["classes"] == classes and last["options"]["model_name"] == "test_resnet"
    logs = []
    resumed = fit(train, val, classes, opts, out_dir=tmp_path / "cut", log=logs.append, resume=True)
    assert any("resuming" in m for m in logs) and sum(m.startswith("[train] epoch") for m in logs) == 1
    assert resumed.resumed_from == 2 and [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)

    best = torch.load(full.best_checkpoint, weights_only=True)
    assert best["format"] == "vetset-checkpoint" and best["train_state"] is None
    assert best["epoch"] + 1 == full.best_epoch and best["num_classes"] == 10
    lines = (tmp_path / "full" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 3
    assert (tmp_path / "full" / "history.csv").read_text().startswith("epoch,train_loss,train_acc,val_loss,val_acc,lr")

    # a changed option trains from scratch instead of resuming a different run
    logs.clear()
    fit(train, val, classes, dict(opts, lr=1e-3, epochs=1), out_dir=tmp_path / "cut", log=logs.append, resume=True)
    assert any("training from scratch" in m for m in logs)


def test_early_stopping_on_val_accuracy(digits_dir):
    train, classes = digit_items(digits_dir, "train", per_class=4)
    val, _ = digit_items(digits_dir, "val", per_class=2)
    # an accuracy cannot rise by more than 1.0, so no epoch after the first counts as an improvement
    out = fit(train, val, classes, dict(FAST, epochs=6, workers=0, early_stopping_patience=2, monitor="val_acc",
                                        min_delta=1.0), log=lambda m: None)
    assert out.stopped_early and len(out.history) == 3 and out.best_epoch == 1


def test_mixup_and_label_smoothing_use_timm(digits_dir):
    from timm.data import Mixup
    from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

    from vetset.plugins.train.model import create_loss
    from vetset.plugins.train.options import TrainOptions

    crit, mix = create_loss(TrainOptions(mixup=0.2, cutmix=1.0), 10)
    assert isinstance(crit, SoftTargetCrossEntropy) and isinstance(mix, Mixup)
    crit, mix = create_loss(TrainOptions(), 10)
    assert isinstance(crit, LabelSmoothingCrossEntropy) and mix is None
    train, classes = digit_items(digits_dir, "train", per_class=4)
    out = fit(train, [], classes, dict(FAST, epochs=1, batch_size=8, mixup=0.2, cutmix=1.0, workers=0),
              log=lambda m: None)
    assert out.history[0]["val_loss"] is None and np.isfinite(out.history[0]["train_loss"])


def test_auto_img_size_follows_the_data(digits_dir, hymenoptera_dir):
    from vetset.plugins.train.model import auto_img_size

    digits = [str(p) for p in sorted(digits_dir.glob("train/*/*.png"))]
    photos = [str(p) for p in sorted(hymenoptera_dir.glob("train/*/*"))]
    assert auto_img_size(digits) == 32  # 8x8 images: the floor
    assert auto_img_size(photos, max_size=96) == 96
    assert 160 <= auto_img_size(photos, max_size=1024) <= 512  # median shorter side of the photos


def test_photos_with_exif_and_a_gif_become_model_inputs(hymenoptera_dir):
    from vetset.plugins.train.data import ImageDataset, build_transforms

    cfg = {"input_size": [3, 48, 48], "interpolation": "bicubic"}
    files = [hymenoptera_dir / "train" / "ants" / "imageNotFound.gif"] + sorted(
        (hymenoptera_dir / "train" / "bees").glob("*.jpg"))[:3]
    ds = ImageDataset([(str(f), 0) for f in files], build_transforms(cfg, train=True), max_side=96, seed=1)
    for i in range(len(ds)):
        x, y = ds[(i, 0)]
        assert x.dtype == torch.uint8 and tuple(x.shape) == (3, 48, 48) and y == 0
        assert torch.equal(x, ds[(i, 0)][0])  # same (seed, epoch, index): same crop
    # photos are landscape: the random square crop moves between epochs
    assert any(not torch.equal(ds[(i, 0)][0], ds[(i, 1)][0]) for i in range(1, len(ds)))


def test_option_errors_name_the_option():
    from vetset.plugins.train.stage import check_options

    with pytest.raises(RecipeError, match=r"model_name: 'resnet10x' is not a timm model name; did you mean .*resnet10t"):
        check_options({"model_name": "resnet10x"})
    bad = {"__class_fullname__": "Compose", "p": 1.0,
           "transforms": [{"__class_fullname__": "HorizontalFlip", "p": 0.5},
                          {"__class_fullname__": "GaussBlur", "p": 0.5}]}
    with pytest.raises(RecipeError, match=r"train_transform: transform 'GaussBlur' at train_transform.transforms\[1\]"):
        check_options({"train_transform": bad})
    bad["transforms"][1] = {"__class_fullname__": "GaussianBlur", "p": 0.5, "blur_limit": "wide"}
    with pytest.raises(RecipeError, match="'GaussianBlur' at train_transform.transforms\\[1\\] has bad arguments"):
        check_options({"train_transform": bad})
    with pytest.raises(RecipeError, match="stages.train.opt"):
        check_options({"opt": "adamx"})
    with pytest.raises(RecipeError, match="stages.train.epochs"):
        check_options({"epochs": 0})
    with pytest.raises(RecipeError, match=r"stages.train.pretrained: the weights of resnet10t.c3_in1k are not in the "
                                          r"Hugging Face cache .* HF_HUB_OFFLINE is set"):  # conftest: offline, empty cache
        check_options({"model_name": "resnet10t", "pretrained": True})
    with pytest.raises(RecipeError, match=r"stages.train.model_name: Invalid pretrained tag \(nope\) for resnet10t.*c3_in1k"):
        check_options({"model_name": "resnet10t.nope"})


def test_train_transform_from_an_albumentations_file(tmp_path):
    import albumentations as A

    from vetset.plugins.train.options import load_train_transform

    pipe = A.Compose([A.HorizontalFlip(p=0.5), A.RandomBrightnessContrast(p=0.3)])
    A.save(pipe, str(tmp_path / "aug.json"))
    A.save(pipe, str(tmp_path / "aug.yaml"), data_format="yaml")
    for name in ("aug.json", "aug.yaml"):
        built = load_train_transform(str(tmp_path / name))
        assert [type(t).__name__ for t in built.transforms] == ["HorizontalFlip", "RandomBrightnessContrast"]
    assert load_train_transform(A.to_dict(pipe)).transforms[1].p == 0.3


def test_a_train_transform_that_makes_tensors_or_floats_is_refused_by_validate(tmp_path):
    """ToTensorV2 in train_transform passed `recipes validate`, then training failed in
    cv2.copyMakeBorder (vetset pads and crops after it); Normalize would normalize twice."""
    import albumentations as A
    from albumentations.pytorch import ToTensorV2
    from conftest import run_cli

    from vetset.plugins.train.data import build_transforms
    from vetset.plugins.train.options import load_train_transform

    with pytest.raises(RecipeError, match=r"transform 'ToTensorV2' at train_transform.transforms\[1\] turns the "
                                          r"image into a tensor"):
        load_train_transform(A.to_dict(A.Compose([A.HorizontalFlip(p=0.5), ToTensorV2()])))
    nested = A.Compose([A.OneOf([A.Normalize(), A.Blur()], p=1.0)])
    A.save(nested, str(tmp_path / "aug.json"))
    with pytest.raises(RecipeError, match=r"'Normalize' at train_transform.transforms\[0\].transforms\[0\]"):
        load_train_transform(str(tmp_path / "aug.json"))
    # what is accepted yields the uint8 (H, W, 3) array vetset's own steps need
    ok = build_transforms({"input_size": (3, 16, 16)}, load_train_transform(A.to_dict(A.Compose([A.Blur(p=1.0)]))))
    out = ok(image=np.full((20, 24, 3), 100, np.uint8))["image"]
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nstages:\n  train:\n    model_name: resnet10t\n    train_transform:\n"
                      "      transform: {__class_fullname__: Compose, p: 1.0, transforms: "
                      "[{__class_fullname__: ToTensorV2, p: 1.0}]}\n")
    proc = run_cli("validate", str(recipe))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "stages.train.train_transform: transform 'ToTensorV2' at train_transform.transforms[0]" in proc.stderr


def test_device_and_autocast_dtype_choice():
    from vetset.plugins.train.data import resolve_amp, resolve_device

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_amp("auto", cpu) is None
    assert resolve_amp("bfloat16", cpu) is torch.bfloat16
    assert resolve_amp("off", cuda, bf16_supported=True) is None
    assert resolve_amp("auto", cuda, bf16_supported=True) is torch.bfloat16
    assert resolve_amp("auto", cuda, bf16_supported=False) is torch.float16
    assert resolve_amp("float16", cuda, bf16_supported=True) is torch.float16
    with pytest.raises(RecipeError, match="float16 needs a CUDA device"):
        resolve_amp("float16", cpu)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type in (expected, "mps")
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(RecipeError, match="stages.train.device"):
        resolve_device("tpu7")
    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="CUDA is not available"):
            resolve_device("cuda")


class MajorityTrainer:
    """A third-party trainer: predicts the most frequent train class (a real, if weak, baseline)."""

    def fit(self, run, options):
        from vetset.core.dataset import split_view

        counts = split_view(run.dataset, "train").count_values("ground_truth.label")
        majority = max(sorted(counts), key=lambda c: counts[c])
        val = split_view(run.dataset, "val").values("ground_truth.label")
        acc = sum(v == majority for v in val) / len(val)
        return {"trainer": "majority", "prediction": majority, "metrics": {"val_accuracy": acc}}


class MajorityPlugin:
    from vetset.core import hookimpl

    @hookimpl
    def vetset_make_trainer(self, name, options):
        return MajorityTrainer() if name == "timm" else None


def test_a_third_party_trainer_replaces_the_default(hooks, digits_dir, fresh_name, tmp_path):
    from test_validate import drop_dataset

    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run
    from vetset.plugins.train.stage import TimmTrainer

    drop_dataset(fresh_name)
    assert isinstance(hooks.make_trainer("timm", {}), TimmTrainer)
    hooks.pm.register(MajorityPlugin(), name="majority-trainer")
    try:
        assert isinstance(hooks.make_trainer("timm", {}), MajorityTrainer)
        recipe = parse_recipe({"name": "t", "stages": {"train": {"epochs": 1}}}, hooks.stages)
        result = Run(recipe, hooks, data=digits_dir, dataset=fresh_name, out_dir=tmp_path, log=lambda m: None).execute()
        block = result["stages"]["train"]
        assert block["trainer"] == "majority" and block["prediction"] in [str(d) for d in range(10)]
        assert 0.05 < block["metrics"]["val_accuracy"] < 0.15  # ~10 balanced classes
        assert not (tmp_path / "train" / "best.pt").exists()  # the timm trainer never ran
    finally:
        hooks.pm.unregister(name="majority-trainer")
    assert isinstance(hooks.make_trainer("timm", {}), TimmTrainer)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_trains_with_autocast_and_channels_last(digits_small, tmp_path):
    from vetset.plugins.train.checkpoint import model_from_checkpoint

    train, val, classes = digits_small
    opts = dict(FAST, device="auto", epochs=3, workers=2, ema=True)
    out = fit(train, val, classes, opts, out_dir=tmp_path, log=lambda m: None)
    assert out.device.startswith("cuda")
    expected = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    assert out.amp_dtype == expected
    conv = next(m for m in out.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    probs, _ = predict(out.model, [p for p, _ in val], out.data_config, opts)
    acc = float((probs.argmax(1) == np.array([c for _, c in val])).mean())
    assert acc > 0.35, acc
    # the checkpoint reloads on CPU and agrees with the GPU predictions (bfloat16 vs float32 rounding aside)
    cpu_model = model_from_checkpoint(out.best_checkpoint, "cpu")
    cpu_probs, _ = predict(cpu_model, [p for p, _ in val], out.data_config, dict(FAST, workers=0))
    assert float((cpu_probs.argmax(1) == probs.argmax(1)).mean()) > 0.95
    # float16 autocast goes through the gradient scaler
    half = fit(train, [], classes, dict(opts, amp="float16", epochs=1, ema=False), log=lambda m: None)
    assert half.amp_dtype == "float16" and np.isfinite(half.history[0]["train_loss"])


def test_local_weights_files_start_the_model(tmp_path):
    import timm

    from vetset.plugins.train.checkpoint import save_checkpoint
    from vetset.plugins.train.model import create_model
    from vetset.plugins.train.options import TrainOptions

    torch.manual_seed(123)
    source = timm.create_model("test_resnet")  # 1000 classes, as an ImageNet weights file would have
    torch.save(source.state_dict(), tmp_path / "weights.pth")
    model = create_model(TrainOptions(model_name="test_resnet", weights=str(tmp_path / "weights.pth")), 10)
    stem = "conv1.0.weight"
    assert torch.equal(model.state_dict()[stem], source.state_dict()[stem])
    assert model.get_classifier().out_features == 10  # timm re-initialises a classifier of another size

    # a vetset checkpoint trained on 3 classes starts a 10-class model: all but the classifier carry over
    save_checkpoint(tmp_path / "best.pt", {"model_name": "test_resnet", "classes": list("abc"), "num_classes": 3,
                                           "state_dict": timm.create_model("test_resnet", num_classes=3).state_dict()})
    logs = []
    model = create_model(TrainOptions(model_name="test_resnet", weights=str(tmp_path / "best.pt")), 10, log=logs.append)
    assert any("fc.weight" in m for m in logs)
    with pytest.raises(RecipeError, match="holds a test_resnet checkpoint, not resnet10t"):
        create_model(TrainOptions(model_name="resnet10t", weights=str(tmp_path / "best.pt")), 10)
    with pytest.raises(RecipeError, match="stages.train.weights: file .* does not exist"):
        create_model(TrainOptions(model_name="test_resnet", weights=str(tmp_path / "nope.pth")), 10)
