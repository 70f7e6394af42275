"""Where weights come from: the Hugging Face cache (offline, as timm reads it), a file, a
vetset checkpoint, and the one-sentence failure when none is available. Nothing downloads:
conftest sets HF_HUB_OFFLINE=1 and an empty HF_HUB_CACHE; the Hub endpoint used for the
reachability check is a local socket that never answers."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from vetset.core.errors import RecipeError

TAG = "test_resnet.r160_in1k"  # timm's tiny test model (0.37 M parameters) has a real pretrained tag
REV = "0123456789abcdef0123456789abcdef01234567"


def lay_out_hf_cache(cache: Path, tag: str = TAG, seed: int = 7) -> dict[str, torch.Tensor]:
    """Write ``tag``'s weights (a locally built timm model) in the Hugging Face hub cache layout.

    ``models--timm--<tag>/snapshots/<rev>/model.safetensors`` and ``refs/main`` holding
    ``<rev>``: what ``huggingface_hub.hf_hub_download("timm/<tag>", "model.safetensors")``
    returns offline. Returns the state dict written.
    """
    import timm
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    model = timm.create_model(tag.split(".")[0], pretrained=False)  # 1000 classes, as the ImageNet tag has
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    repo = cache / f"models--timm--{tag}"
    (repo / "snapshots" / REV).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    save_file(state, str(repo / "snapshots" / REV / "model.safetensors"))
    return state


@pytest.fixture
def hub_unreachable(tmp_path, monkeypatch):
    """Online mode, but the Hub endpoint is a socket that accepts connections and never answers
    (what a black-holed network looks like to the client: the request hangs until its timeout)."""
    import socket

    from huggingface_hub import constants

    from vetset.plugins.train import weights

    cache = tmp_path / "hf-empty"
    cache.mkdir()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{silent.getsockname()[1]}")
    monkeypatch.setattr(weights, "_probe_cache", {})
    monkeypatch.setattr(weights, "_probe_pending", {})
    yield cache
    silent.close()


def test_pretrained_true_reads_the_hf_cache_offline_through_timm(hub_offline_cache):
    from vetset.plugins.train.weights import cached_pretrained_file, create_with_weights, describe

    state = lay_out_hf_cache(hub_offline_cache)
    assert cached_pretrained_file("test_resnet") == str(
        hub_offline_cache / f"models--timm--{TAG}" / "snapshots" / REV / "model.safetensors")
    model, info = create_with_weights("test_resnet", 1000, pretrained=True)
    assert info["source"] == "hub_cache" and info["pretrained_tag"] == TAG and info["head"] == "kept"
    assert info["hf_hub_id"] == f"timm/{TAG}"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, state[name]), name
    assert TAG in describe(info)
    # another class count: timm drops the ImageNet classifier, the backbone is the cached one
    model, info = create_with_weights("test_resnet", 3, pretrained="auto")
    assert info["head"] == "new" and model.get_classifier().out_features == 3
    assert torch.equal(model.state_dict()["conv1.0.weight"], state["conv1.0.weight"])
    # no classifier: pooled features for an embedding pass
    model, _ = create_with_weights(TAG, 0, pretrained=True)
    assert model.eval()(torch.zeros(2, 3, 64, 64)).shape == (2, model.num_features)


def test_the_cli_trains_from_the_hf_cache_with_hf_hub_offline(tmp_path, digits_dir):
    """`pretrained: true` end to end: HF_HUB_OFFLINE=1 and HF_HUB_CACHE pointing at the laid-out cache."""
    cache = tmp_path / "hf-cache"
    cache.mkdir()
    state = lay_out_hf_cache(cache)
    recipe = tmp_path / "cached.yaml"
    recipe.write_text(
        "name: cached\nstages:\n  train: {model_name: test_resnet, pretrained: true, img_size: 32, epochs: 1,\n"
        "          batch_size: 64, threads: 1, workers: 0, device: cpu}\n")
    out = tmp_path / "out"
    res = run_cli("run", str(recipe), "--data", str(digits_dir), "--dataset", "t-weights-cache", "--out", str(out),
                  env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache)})
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert f"weights: {TAG} (pretrained, Hugging Face Hub from the local cache" in res.stdout
    block = json.loads((out / "result.json").read_text())["stages"]["train"]
    assert block["weights"]["source"] == "hub_cache" and block["weights"]["pretrained_tag"] == TAG
    assert block["weights"]["file"].startswith(str(cache))
    # the tag's preprocessing: its mean/std (0.5) and crop_pct (0.95), at the asked size
    assert block["data_config"]["mean"] == [0.5, 0.5, 0.5] and block["data_config"]["crop_pct"] == 0.95
    assert block["data_config"]["input_size"] == [3, 32, 32]
    assert block["finetune"]["backbone_lr_scale"] == 0.1  # pretrained: the backbone learns 10x slower
    # training started from the cached weights: one epoch at 0.1 x lr keeps the stem close to them
    trained = torch.load(block["checkpoint"], weights_only=True)["state_dict"]["conv1.0.weight"].flatten()
    cached = state["conv1.0.weight"].flatten()
    assert torch.corrcoef(torch.stack([trained, cached]))[0, 1] > 0.9


def test_offline_with_nothing_cached_is_one_sentence_and_writes_nothing(tmp_path, digits_dir):
    recipe = tmp_path / "needs.yaml"
    recipe.write_text("name: needs\nstages:\n  train: {model_name: test_resnet, pretrained: true, epochs: 1}\n")
    out = tmp_path / "out"
    empty = tmp_path / "empty-cache"
    empty.mkdir()
    res = run_cli("run", str(recipe), "--data", str(digits_dir), "--dataset", "t-weights-none", "--out", str(out),
                  env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(empty)})
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    message = res.stderr.strip()
    assert len(message.splitlines()) == 1 or "\n" not in " ".join(message.split()), message
    assert TAG in message and "stages.train.weights" in message and "connected machine" in message
    assert "HF_HUB_OFFLINE is set" in message
    assert not out.exists()
    assert list(empty.iterdir()) == []
    import fiftyone as fo

    assert not fo.dataset_exists("t-weights-none")


def test_a_probe_started_early_is_waited_for_not_asked_again(hub_unreachable):
    from vetset.plugins.train import weights

    weights.start_hub_probe(timeout=1.0)
    weights.start_hub_probe(timeout=1.0)  # one request under way: the second call adds none
    assert len(weights._probe_pending) == 1
    time.sleep(0.8)  # the caller's own work, while the request hangs
    t0 = time.monotonic()
    assert weights.hub_reachable(timeout=1.0) is False
    assert time.monotonic() - t0 < 0.9  # only what was left of timeout + 0.5 s, not a new request
    assert weights._probe_pending == {}
    t0 = time.monotonic()
    assert weights.hub_reachable(timeout=1.0) is False  # the cached answer
    assert time.monotonic() - t0 < 0.1


def test_an_unreachable_hub_is_decided_in_seconds_and_auto_falls_back(hub_unreachable):
    from vetset.plugins.train.weights import create_with_weights, hub_reachable, pretrained_status

    t0 = time.monotonic()
    assert hub_reachable(timeout=1.0) is False
    assert 0.9 < time.monotonic() - t0 < 3.0  # waited for the timeout, not longer
    status = pretrained_status("test_resnet", probe_timeout=1.0)
    assert status == {**status, "available": False, "reachable": False, "offline": False, "cached_file": None}
    model, info = create_with_weights("test_resnet", 4, pretrained="auto", probe_timeout=1.0)
    assert info["source"] == "none" and "cannot be reached" in info["reason"]
    assert "far weaker" in info["advice"] and "stages.train.weights" in info["advice"]
    assert model.get_classifier().out_features == 4
    with pytest.raises(RecipeError, match=r"stages.train.pretrained: the weights of test_resnet.r160_in1k are not "
                                          r"in the Hugging Face cache .* the Hugging Face Hub cannot be reached"):
        create_with_weights("test_resnet", 4, pretrained=True, probe_timeout=1.0)
    assert time.monotonic() - t0 < 10.0  # the probe's answer is reused, not asked again per call


def test_a_weights_file_safetensors_or_state_dict(tmp_path):
    import timm
    from safetensors.torch import save_file

    from vetset.plugins.train.weights import create_with_weights

    torch.manual_seed(3)
    source = timm.create_model("test_resnet")
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(tmp_path / "w.safetensors"))
    model, info = create_with_weights("test_resnet", 5, weights=tmp_path / "w.safetensors")
    assert info["source"] == "file" and info["file"] == str((tmp_path / "w.safetensors").resolve())
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    assert model.get_classifier().out_features == 5
    # a state dict wrapped as a training script saves it ({"state_dict": ...}, DataParallel's "module." prefix)
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}, "epoch": 3},
               tmp_path / "wrapped.pth")
    model, info = create_with_weights("test_resnet", 5, weights=str(tmp_path / "wrapped.pth"))
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source.state_dict()["layer1.0.conv1.weight"])
    # arbitrary pickled objects are refused (weights_only=True)
    torch.save({"state_dict": source.state_dict(), "obj": Path("x")}, tmp_path / "pickled.pth")
    with pytest.raises(RecipeError, match=r"stages.train.weights: .*pickled.pth cannot be read with "
                                          r"torch.load\(weights_only=True\)"):
        create_with_weights("test_resnet", 5, weights=str(tmp_path / "pickled.pth"))
    with pytest.raises(RecipeError, match="stages.train.weights: .* does not fit resnet10t"):
        create_with_weights("resnet10t", 5, weights=str(tmp_path / "w.safetensors"))


def test_a_vetset_checkpoint_with_other_classes_gives_its_backbone(tmp_path, digits_dir):
    from test_train import FAST, digit_items

    from vetset.plugins.train.checkpoint import load_checkpoint
    from vetset.plugins.train.stage import fit
    from vetset.plugins.train.weights import create_with_weights

    train, classes = digit_items(digits_dir, "train", per_class=20)
    val, _ = digit_items(digits_dir, "val", per_class=10)
    first = fit(train, val, classes, {**FAST, "epochs": 1, "workers": 0}, out_dir=tmp_path / "ten", log=lambda m: None)
    best = load_checkpoint(first.best_checkpoint)
    assert best["weights"]["source"] == "none"

    model, info = create_with_weights("test_resnet", 3, weights=first.best_checkpoint, log=lambda m: None)
    assert info["source"] == "checkpoint" and info["head"] == "new" and len(info["checkpoint_classes"]) == 10
    for name, tensor in model.state_dict().items():
        if not name.startswith("fc."):
            assert torch.equal(tensor, best["state_dict"][name]), name
    assert model.get_classifier().out_features == 3

    three = [(p, c) for p, c in train if c < 3]
    logs: list[str] = []
    second = fit(three, [(p, c) for p, c in val if c < 3], classes[:3],
                 {**FAST, "epochs": 2, "workers": 0, "weights": first.best_checkpoint}, log=logs.append)
    assert second.weights["source"] == "checkpoint"
    assert second.data_config["input_size"] == [3, 32, 32]  # the checkpoint's size and normalisation
    assert second.data_config["mean"] == best["data_config"]["mean"]
    assert any("weights: vetset checkpoint" in m and "classifier new" in m for m in logs)
    assert second.finetune["head_epochs"] == 0 and second.finetune["backbone_lr_scale"] == 0.1


class _RunsCommand:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_a_weights_file_that_loads_nothing_or_is_misnamed_is_one_sentence(tmp_path, monkeypatch):
    """Break-it: with another class count timm loads a file non-strictly, so a state dict
    under an unknown key ({"net": ...}) or with a "backbone." prefix loaded no tensor and
    training went on from random weights, recorded as source "file"."""
    import timm
    from safetensors.torch import save_file

    from vetset.plugins.train.weights import create_with_weights

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(3)
    source = timm.create_model("test_resnet").state_dict()
    torch.save({"net": source}, tmp_path / "net.pth")
    torch.save({f"backbone.{k}": v for k, v in source.items()}, tmp_path / "prefixed.pth")
    for name in ("net.pth", "prefixed.pth"):
        with pytest.raises(RecipeError, match=rf"stages.train.weights: .*{name} gave none of test_resnet's weights: "
                                              r"its tensor names \((net|backbone\.)"):
            create_with_weights("test_resnet", 5, weights=tmp_path / name)
    # part of the backbone missing: trained, said, and counted
    partial = {k: v for k, v in source.items() if not k.startswith("layer4.")}
    torch.save(partial, tmp_path / "partial.pth")
    said: list[str] = []
    model, info = create_with_weights("test_resnet", 5, weights=tmp_path / "partial.pth", log=said.append)
    assert info["tensors_not_loaded"] == sum(1 for k, v in source.items() if k.startswith("layer4.") and v.ndim >= 2)
    assert any("keep their random initialisation" in s for s in said)
    assert torch.equal(model.state_dict()["layer1.0.conv1.weight"], source["layer1.0.conv1.weight"])
    # a safetensors file named .pth, and a pickle that would run a command
    save_file({k: v.contiguous() for k, v in source.items()}, str(tmp_path / "st.pth"))
    with pytest.raises(RecipeError, match=r"st.pth is a safetensors file; give it the .safetensors extension"):
        create_with_weights("test_resnet", 5, weights=tmp_path / "st.pth")
    torch.save({"w": _RunsCommand()}, tmp_path / "evil.pth")
    with pytest.raises(RecipeError, match=r"evil.pth cannot be read with torch.load\(weights_only=True\) .*: "
                                          r".*GLOBAL posix.system"):
        create_with_weights("test_resnet", 5, weights=tmp_path / "evil.pth")
    assert not (tmp_path / "pwned").exists()
