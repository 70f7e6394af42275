"""Fine-tuning as the field does it: linear probe, classifier-first epochs, backbone learning
rate, layer-wise decay through timm, class-imbalance handling chosen from the data."""

from __future__ import annotations

import pytest
import torch
from test_train import FAST, digit_items

from vetset.core.errors import RecipeError
from vetset.plugins.train.stage import fit


@pytest.fixture(scope="module")
def source_checkpoint(digits_dir, tmp_path_factory):
    """A vetset checkpoint trained on digits 0-9 (1 epoch): the 'pretrained' weights here."""
    train, classes = digit_items(digits_dir, "train", per_class=15)
    out = fit(train, [], classes, {**FAST, "epochs": 1, "workers": 0}, out_dir=tmp_path_factory.mktemp("src"),
              log=lambda m: None)
    return out.best_checkpoint


def _backbone(state: dict) -> dict:
    return {k: v for k, v in state.items() if not k.startswith("fc.")}


def test_linear_probe_trains_only_the_classifier(digits_dir, source_checkpoint):
    from vetset.plugins.train.checkpoint import load_checkpoint

    train, classes = digit_items(digits_dir, "train", per_class=20)
    val, _ = digit_items(digits_dir, "val", per_class=10)
    logs: list[str] = []
    out = fit(train, val, classes, {**FAST, "epochs": 4, "workers": 0, "weights": source_checkpoint,
                                    "finetune": "linear_probe", "lr": 1e-2}, log=logs.append)
    start = load_checkpoint(source_checkpoint)["state_dict"]
    trained = out.model.state_dict()
    for name, tensor in _backbone(start).items():
        assert torch.equal(trained[name].cpu(), tensor), name  # BatchNorm statistics included
    assert not torch.equal(trained["fc.weight"].cpu(), start["fc.weight"])
    assert out.finetune["finetune"] == "linear_probe" and len(out.history) == 4
    assert any("features (200, " in m for m in logs)
    # the probe learns something real from the digit features: well above chance (0.1)
    best = out.history[out.best_epoch - 1]["val_acc"]
    assert best > 0.3
    # the features' standardisation is folded into the saved classifier: the model alone predicts the same
    from vetset.plugins.train.inference import predict

    probs, _ = predict(out.model, [p for p, _ in val], out.data_config, {**FAST, "workers": 0})
    assert abs(float((probs.argmax(1) == [c for _, c in val]).mean()) - best) < 1e-9


def test_classifier_first_epoch_leaves_the_backbone_alone(digits_dir, source_checkpoint):
    from vetset.plugins.train.checkpoint import load_checkpoint

    train, classes = digit_items(digits_dir, "train", per_class=10)
    opts = {**FAST, "epochs": 1, "workers": 0, "weights": source_checkpoint, "head_epochs": 1}
    out = fit(train, [], classes, opts, log=lambda m: None)
    start = load_checkpoint(source_checkpoint)["state_dict"]
    for name, tensor in _backbone(start).items():
        assert torch.equal(out.model.state_dict()[name].cpu(), tensor), name
    # the same epoch without the classifier-only phase moves the backbone
    out = fit(train, [], classes, {**opts, "head_epochs": 0}, log=lambda m: None)
    assert not torch.equal(out.model.state_dict()["conv1.0.weight"].cpu(), start["conv1.0.weight"])
    assert out.finetune["backbone_lr_scale"] == 0.1


def test_backbone_rate_and_layer_decay_come_from_timm_param_groups():
    import timm

    from vetset.plugins.train.model import create_optimizer
    from vetset.plugins.train.options import TrainOptions

    model = timm.create_model("test_resnet", num_classes=3)
    opt = create_optimizer(model, TrainOptions(lr=1e-3), backbone_lr_scale=0.1)
    heads = [g for g in opt.param_groups if g["is_head"]]
    bodies = [g for g in opt.param_groups if not g["is_head"]]
    assert {round(g["lr"], 9) for g in heads} == {1e-3} and {round(g["lr"], 9) for g in bodies} == {1e-4}
    assert {p.data_ptr() for g in heads for p in g["params"]} == {p.data_ptr() for p in model.fc.parameters()}
    assert {g["weight_decay"] for g in heads} == {0.0, 0.05}  # biases without decay (timm's groups)
    decayed = create_optimizer(model, TrainOptions(lr=1e-3, layer_decay=0.5), backbone_lr_scale=1.0)
    scales = sorted({g["lr_scale"] for g in decayed.param_groups})
    assert scales[-1] == 1.0 and scales[0] < 0.1 and len(scales) >= 4  # 0.5 ** depth, deepest layer at 1


def test_imbalanced_training_images_get_a_weighted_loss_automatically(digits_dir):
    from vetset.plugins.train.options import TrainOptions
    from vetset.plugins.train.tuning import class_weights, resolve_class_balance

    train, classes = digit_items(digits_dir, "train")
    few = [(p, c) for p, c in train if c == 0][:60] + [(p, c) for p, c in train if c == 1][:5]
    logs: list[str] = []
    out = fit(few, [], classes[:2], {**FAST, "epochs": 1, "workers": 0}, log=logs.append)
    balance = out.finetune["class_balance"]
    assert balance["mode"] == "loss" and balance["ratio"] == 12.0 and balance["threshold"] == 10.0
    assert any("imbalanced 12.0x > 10x: class-weighted loss" in m for m in logs)
    assert torch.allclose(class_weights([c for _, c in few], 2), torch.tensor([65 / 120, 65 / 10]))
    mixing = resolve_class_balance(TrainOptions(mixup=0.8), [c for _, c in few], 2)
    assert mixing["mode"] == "sampler"
    assert resolve_class_balance(TrainOptions(), [c for _, c in few], 2, threshold=20)["mode"] == "off"
    with pytest.raises(RecipeError, match="stages.train.class_balance: loss weights do not apply to mixup"):
        resolve_class_balance(TrainOptions(mixup=0.8, class_balance="loss"), [0, 1], 2)


def test_balanced_sampler_draws_classes_equally():
    import numpy as np

    from vetset.plugins.train.data import BalancedEpochSampler

    targets = [0] * 90 + [1] * 10
    sampler = BalancedEpochSampler(targets, seed=1)
    sampler.set_epoch(0)
    drawn = np.array([targets[i] for i, _ in sampler] + [targets[i] for e in (1, 2, 3)
                                                         for i, _ in (sampler.set_epoch(e) or sampler)])
    assert abs(drawn.mean() - 0.5) < 0.08  # 400 draws: about half from the 10-image class
    sampler.set_epoch(0)
    assert [i for i, _ in sampler] == [i for i, _ in BalancedEpochSampler(targets, seed=1)]
