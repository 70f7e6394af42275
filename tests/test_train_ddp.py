"""Training on several processes: torchrun + DistributedDataParallel (gloo on CPU), the launcher, the CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from test_train import FAST, digit_items

from vetset.core.errors import DataError, RecipeError
from vetset.plugins.train.distributed import DistContext, DistributedEpochSampler, ddp_device, shard

#: Two gloo processes, one CPU thread each, workers 0: the ranks' startup (torch, timm) dominates.
DDP = dict(FAST, batch_size=16, workers=0, nproc=2)


def test_two_gloo_processes_report_the_metrics_of_a_single_process_evaluation(digits_dir, tmp_path):
    from vetset.plugins.train.checkpoint import model_from_checkpoint
    from vetset.plugins.train.ddp import launch_fit
    from vetset.plugins.train.stage import cross_entropy, predict

    train, classes = digit_items(digits_dir, "train", per_class=30)
    val, _ = digit_items(digits_dir, "val", per_class=9)
    val = val[:-1]  # 89 images: shards of 45 and 44, no padding
    logs: list[str] = []
    out = launch_fit(train, val, classes, dict(DDP, epochs=2, ema=True, ema_decay=0.5), tmp_path, log=logs.append,
                     timeout_s=600)
    assert any("DistributedDataParallel on 2 processes (cpu, gloo)" in m for m in logs)
    assert [h["epoch"] for h in out.history] == [1, 2] and out.device == "cpu"
    assert sum(m.startswith("[train] epoch") for m in logs) == 2  # rank 0 alone speaks
    assert (tmp_path / "ddp.log").is_file() and not list(tmp_path.glob("ddp_error*"))

    best = torch.load(out.best_checkpoint, weights_only=True)
    assert best["epoch"] + 1 == out.best_epoch and best["options"]["nproc"] == 2 and best["classes"] == classes
    # each rank took ceil(300 / 2) = 150 images per epoch in batches of 16: 10 optimizer steps per epoch
    # (one process would take 19); DDP kept the ranks' steps in lockstep
    last = torch.load(out.last_checkpoint, weights_only=True)
    steps = {float(s["step"]) for s in last["train_state"]["optimizer"]["state"].values()}
    assert steps == {20.0}

    # the metrics all-reduced over the two shards are those of one process evaluating the saved weights
    model = model_from_checkpoint(best, "cpu")
    probs, logits = predict(model, [p for p, _ in val], best["data_config"], dict(FAST, workers=0))
    targets = np.array([c for _, c in val])
    correct = int((probs.argmax(1) == targets).sum())
    row = out.history[out.best_epoch - 1]
    assert row["val_acc"] == correct / len(val)
    assert row["val_loss"] == pytest.approx(cross_entropy(logits, targets), rel=1e-5)
    assert correct > 2 * len(val) // 10, correct  # it learned: 10 classes, chance is ~9 of 89
    # the model launch_fit hands back is the best checkpoint's
    again, _ = predict(out.model, [p for p, _ in val], out.data_config, dict(FAST, workers=0))
    np.testing.assert_array_equal(again, probs)


def test_a_failing_rank_ends_the_launch_with_one_error(digits_dir, tmp_path):
    from vetset.plugins.train.ddp import launch_fit

    train, classes = digit_items(digits_dir, "train", per_class=3)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not an image")
    with pytest.raises(DataError, match=r"broken\.png cannot be decoded .*stage 'train', rank [01] of 2; log: .*ddp\.log"):
        launch_fit(train + [(str(broken), 0)], [], classes, dict(DDP, epochs=1), tmp_path / "run", timeout_s=600)
    assert not (tmp_path / "run" / "ddp_fit.json").exists()


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc to find leftover processes")
def test_timeout_stops_torchrun_and_its_ranks(digits_dir, tmp_path):
    from vetset.core.errors import VetsetError
    from vetset.plugins.train.ddp import launch_fit

    train, classes = digit_items(digits_dir, "train", per_class=3)
    with pytest.raises(VetsetError, match=r"did not finish within 2 s and was stopped; log: .*ddp\.log"):
        launch_fit(train, [], classes, dict(DDP, epochs=1), tmp_path, timeout_s=2)
    spec = str(tmp_path / "ddp_spec.json").encode()
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _cmdline_has(p, spec)]
    assert not left, left


def _cmdline_has(proc: Path, needle: bytes) -> bool:
    try:
        return needle in (proc / "cmdline").read_bytes()
    except OSError:
        return False


def test_device_choice_per_rank():
    # CUDA present: one GPU per process, NCCL; an index in the option gives way to LOCAL_RANK
    assert ddp_device("auto", local_rank=1, cuda_count=2) == ("cuda:1", "nccl")
    assert ddp_device("cuda:0", local_rank=1, cuda_count=4) == ("cuda:1", "nccl")
    assert ddp_device("cpu", local_rank=1, cuda_count=2) == ("cpu", "gloo")
    assert ddp_device("auto", local_rank=3, cuda_count=0) == ("cpu", "gloo")
    assert ddp_device("auto", local_rank=0, cuda_count=0, mps_available=True) == ("cpu", "gloo")
    with pytest.raises(RecipeError, match=r"stages.train.nproc: 3 or more processes .* 2 CUDA device\(s\); use at most nproc: 2"):
        ddp_device("auto", local_rank=2, cuda_count=2)
    with pytest.raises(RecipeError, match="CUDA is not available"):
        ddp_device("cuda", local_rank=0, cuda_count=0)
    with pytest.raises(RecipeError, match="mps cannot train on several processes"):
        ddp_device("mps", local_rank=0, cuda_count=0, mps_available=True)


def test_samplers_split_train_with_padding_and_val_without():
    data = list(range(11))
    ranks = [DistributedEpochSampler(data, num_replicas=2, rank=r, shuffle=True, seed=5) for r in (0, 1)]
    for s in ranks:
        s.set_epoch(3)
    pairs = [list(s) for s in ranks]
    assert [len(p) for p in pairs] == [6, 6]  # ceil(11 / 2): one image is seen twice
    assert {i for p in pairs for i, _ in p} == set(data) and {e for p in pairs for _, e in p} == {3}
    same = DistributedEpochSampler(data, num_replicas=2, rank=0, shuffle=True, seed=5)
    same.set_epoch(3)
    assert list(same) == pairs[0]  # same seed and epoch: same order
    same.set_epoch(4)
    assert list(same) != pairs[0]
    parts = [shard(data, DistContext(world_size=2, rank=r)) for r in (0, 1)]
    assert [len(p) for p in parts] == [6, 5] and sorted(parts[0] + parts[1]) == data


def test_nproc_on_the_command_line_and_in_recipes(hooks, tmp_path):
    from vetset.core.recipe import parse_recipe
    from vetset.plugins.train.ddp import with_nproc
    from vetset.plugins.train.stage import check_options

    recipe = parse_recipe({"name": "t", "stages": {"train": {"epochs": 1}, "validate": {}}}, hooks.stages)
    assert recipe.options("train").nproc == 1
    two = with_nproc(recipe, 2, hooks.stages)
    assert two.options("train").nproc == 2 and two.options("train").epochs == 1 and recipe.options("train").nproc == 1
    with pytest.raises(RecipeError, match="recipe 'a' has no train stage"):
        with_nproc(parse_recipe({"name": "a", "stages": {"audit": {}}}, hooks.stages), 2, hooks.stages)
    if not torch.cuda.is_available():
        with pytest.raises(RecipeError, match="CUDA is not available"):
            check_options({"nproc": 2, "device": "cuda"})
    check_options({"nproc": 2, "device": "cpu"})


def _digits_subset(src: Path, dest: Path, train: int, val: int) -> Path:
    for split, n in (("train", train), ("val", val)):
        for cls in sorted((src / split).iterdir()):
            (dest / split / cls.name).mkdir(parents=True)
            for f in sorted(cls.glob("*.png"))[:n]:
                shutil.copy(f, dest / split / cls.name / f.name)
    return dest


@pytest.mark.slow
def test_recipes_run_with_nproc_trains_under_torchrun_and_validates(digits_dir, tmp_path, fresh_name):
    import fiftyone as fo
    import yaml

    data = _digits_subset(digits_dir, tmp_path / "digits", train=20, val=9)
    recipe = tmp_path / "ddp.yaml"
    train_opts = {k: v for k, v in DDP.items() if k != "nproc"}
    recipe.write_text(yaml.safe_dump({"name": "ddp", "stages": {"train": dict(train_opts, epochs=3),
                                                                 "validate": {"workers": 0}}}))
    if fo.dataset_exists(fresh_name):
        fo.delete_dataset(fresh_name)
    proc = run_cli("run", str(recipe), "--data", str(data), "--dataset", fresh_name, "--out", str(tmp_path / "out"),
                   "--nproc", "2")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "torchrun: 2 processes" in proc.stdout and "DistributedDataParallel on 2 processes" in proc.stdout
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    block = result["stages"]["train"]
    assert block["options"]["nproc"] == 2 and result["recipe"]["stages"]["train"]["nproc"] == 2
    assert block["num_train"] == 200 and block["num_val"] == 90 and len(block["history"]) == 3
    assert Path(block["checkpoint"]).is_file() and (tmp_path / "out" / "train" / "ddp_fit.json").is_file()
    best = block["history"][block["best_epoch"] - 1]
    assert block["metrics"]["best_val_acc"] == best["val_acc"] > 0.2  # 10 classes: chance is 0.1
    # the validate stage (driver process, one process) finds the accuracy the ranks reported
    val = result["stages"]["validate"]
    assert val["checkpoint"] == block["checkpoint"]
    assert val["val"]["accuracy"] == pytest.approx(best["val_acc"], abs=1e-4)  # stored with 4 decimals
    ds = fo.load_dataset(fresh_name)
    assert len(ds.exists("predictions")) == len(ds) == 290 and ds.list_evaluations() == ["eval"]
    correct = ds.match_tags("val").values("eval")
    assert sum(correct) / 90 == best["val_acc"]


def test_nproc_beyond_the_train_split_or_the_cpus_is_one_sentence(digits_dir, tmp_path):
    import os

    from vetset.plugins.train.ddp import launch_fit

    items = [(str(p), 0) for p in sorted((digits_dir / "train" / "0").iterdir())[:3]]
    with pytest.raises(RecipeError, match=r"^nproc 2 needs at least 4 readable train images \(2 per process\); "
                                          r"the train split has 3: use fewer processes.$"):
        launch_fit(items, items, ["0", "1"], {"nproc": 2, "device": "cpu"}, tmp_path)
    cpus = os.cpu_count() or 1
    with pytest.raises(RecipeError, match=rf"more CPU training processes than this machine has CPUs \({cpus}\)"):
        launch_fit(items * 100, items, ["0", "1"], {"nproc": cpus + 1, "device": "cpu"}, tmp_path)
