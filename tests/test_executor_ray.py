"""The Ray executor: the same audit as the local worker processes, on real photos.

One local Ray instance (``ray.init(num_cpus=2)``) serves the whole module; the CLI test
joins it through its address, so vetset must leave it running.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import run_cli

ray = pytest.importorskip("ray")

PER_FOLDER = 17  # 4 folders x 17 photos + 4 made files = 72 images, above MIN_IMAGES_FOR_WORKERS
ANT = "train/ants/0013035.jpg"  # 768x512 landscape


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance with 2 CPUs for this module; yields its GCS address."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, hymenoptera_dir) -> Path:
    """72 images: 17 real photos per split/class, a val copy of a train ant (leakage),
    an EXIF-rotated ant, a truncated and an empty file."""
    from PIL import Image

    root = tmp_path_factory.mktemp("rayaudit") / "data"
    for split in ("train", "val"):
        for cls in ("ants", "bees"):
            dest = root / split / cls
            dest.mkdir(parents=True)
            photos = sorted(p for p in (hymenoptera_dir / split / cls).iterdir() if p.suffix == ".jpg")
            for p in photos[:PER_FOLDER]:
                shutil.copy(p, dest / p.name)
    ant = hymenoptera_dir / ANT
    shutil.copy(ant, root / "val" / "ants" / "leaked.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.open(ant).save(root / "train" / "ants" / "rotated.jpg", exif=exif, quality=90)
    data = ant.read_bytes()
    (root / "train" / "bees" / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "val" / "bees" / "empty.jpg").write_bytes(b"")
    return root


def _without_timings(value):
    """``value`` without timing keys (``seconds``, ``images_per_s``), the executor's name and how
    many samples the audit wrote (``samples_written``: only those whose stored values differ)."""
    if isinstance(value, dict):
        return {k: _without_timings(v) for k, v in value.items()
                if k not in ("seconds", "images_per_s", "executor", "samples_written")}
    if isinstance(value, list):
        return [_without_timings(v) for v in value]
    return value


def _sample_fields(ds) -> dict[str, list]:
    """Every field of every sample (the audit's and the tags), samples in filepath order."""
    ds.reload()
    view = ds.sort_by("filepath")
    skip = {"id", "created_at", "last_modified_at"}
    out = {}
    for name in view.get_field_schema():
        if name in skip:
            continue
        values = view.values(name)
        out[name] = [v.to_dict() if hasattr(v, "to_dict") else v for v in values]
    return out


def test_ray_and_local_give_identical_audits(ray_address, corpus, hooks):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    name = "t-ray-vs-local"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds, _ = load_dataset(corpus, name=name)
    options = AuditOptions(workers=2)
    local = run_audit(ds, options, hooks, log=lambda m: None, executor="local")
    local_fields = _sample_fields(ds)
    for field in ("orientation", "sharpness", "phash", "file_hash", "metadata"):  # start from empty fields
        ds.clear_sample_field(field)
    on_ray = run_audit(ds, options, hooks, log=lambda m: None, executor="ray")
    ray_fields = _sample_fields(ds)

    assert local["executor"] == {"name": "local", "workers": 2}
    assert on_ray["executor"] == {"name": "ray", "workers": 2}
    assert _without_timings(on_ray) == _without_timings(local)
    assert ray_fields == local_fields
    # and the audit is the real one: 72 images, 2 unreadable, the copied ant leaks, the rotated one is portrait
    assert on_ray["num_images"] == 72 and on_ray["num_readable"] == 70
    assert on_ray["metrics"]["unreadable"] == 2 and on_ray["metrics"]["leakage_groups"] == 1
    by_name = dict(zip((Path(p).name for p in ray_fields["filepath"]), ray_fields["orientation"]))
    assert by_name["rotated.jpg"] == "portrait" and by_name["leaked.jpg"] == "landscape"
    assert sum(s is not None for s in ray_fields["sharpness"]) == 70
    assert len(set(ray_fields["file_hash"]) - {None}) == 69  # 70 readable files, one byte-identical pair


def test_ray_executor_keeps_order_bounds_work_in_flight_and_raises(ray_address):
    from vetset.core.executor import get_executor, release
    from vetset.core.executor_ray import IN_FLIGHT_PER_CPU, RayExecutor

    ex = get_executor("ray", 2)
    assert isinstance(ex, RayExecutor) and ex.workers == 2  # the running instance's CPUs
    items = list(range(101))
    out = list(ex.map(lambda x: (x * x, os.getpid()), items, chunksize=3))
    assert [v for v, _ in out] == [x * x for x in items]
    assert os.getpid() not in {pid for _, pid in out}  # ran in Ray's worker processes
    assert 2 <= ex.peak_in_flight <= IN_FLIGHT_PER_CPU * 2  # 34 chunks, never more than 4 at once

    def boom(x):
        if x == 7:
            raise ValueError("bad item 7")
        return x

    with pytest.raises(ValueError, match="bad item 7"):
        list(ex.map(boom, items, chunksize=2))
    release()  # vetset did not start this instance: it must keep running
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2


def test_cli_executor_ray_joins_the_running_instance(ray_address, corpus, tmp_path):
    out = tmp_path / "out"
    res = run_cli("run", "audit", "--data", str(corpus), "--dataset", "t-ray-cli", "--out", str(out),
                  "--executor", "ray", "--address", ray_address)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((out / "result.json").read_text())
    assert result["recipe"]["executor"] == {"name": "ray", "address": ray_address, "workers": None}
    audit = result["stages"]["audit"]
    assert audit["executor"] == {"name": "ray", "workers": 2}
    assert audit["num_images"] == 72 and audit["metrics"]["leakage_groups"] == 1
    assert ray.is_initialized() and ray.cluster_resources()["CPU"] == 2  # the CLI left the instance running


def test_run_sends_audit_and_augmentation_writer_to_the_recipe_executor(ray_address, corpus, tmp_path, hooks,
                                                                        monkeypatch):
    import hashlib

    import fiftyone as fo

    from vetset.core.executor_ray import RayExecutor
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    calls = []
    real_map = RayExecutor.map

    def spy(self, fn, items, chunksize=None):  # the real map, recording which work went to Ray
        calls.append((getattr(fn, "func", fn).__name__, len(items)))
        return real_map(self, fn, items, chunksize)

    monkeypatch.setattr(RayExecutor, "map", spy)
    stages = {"audit": {}, "augment": {"min_count": 24, "coverage_targets": {}, "workers": 2, "reaudit": False}}
    written = {}
    for backend in ("local", "ray"):
        name = f"t-ray-augment-{backend}"
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        recipe = parse_recipe({"name": "t", "executor": {"name": backend}, "stages": stages}, hooks.stages, "t.yaml")
        run = Run(recipe, hooks, data=corpus, dataset=name, out_dir=tmp_path / backend, log=lambda m: None)
        result = run.execute()["stages"]
        assert result["audit"]["executor"]["name"] == backend
        folder = tmp_path / backend / "augment" / "images"
        written[backend] = sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.jpg"))
        assert len(written[backend]) == result["augment"]["write"]["written"] == 13  # ants 18 -> 24, bees 17 -> 24
    assert calls == [("audit_chunk", 9), ("_apply_in_worker", 13)]  # only the ray run used Ray: 9 chunks of 8 paths
    assert written["ray"] == written["local"]  # the same augmented images, byte for byte
    assert ray.is_initialized()  # the run joined the module's instance and left it running


def test_bad_executor_is_one_sentence_exit_2(corpus, tmp_path, capsys):
    from vetset.recipes.cli import main

    recipe = tmp_path / "dask.yaml"
    recipe.write_text("name: d\nexecutor: {name: dask}\nstages:\n  audit: {}\n")
    assert main(["run", str(recipe), "--data", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert "dask.yaml" in err and "executor.name" in err and "'local' or 'ray'" in err and "(got 'dask')" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 3

    assert main(["run", "audit", "--data", str(corpus), "--executor", "spark"]) == 2
    err = capsys.readouterr().err
    assert "--executor" in err and "(got 'spark')" in err and len(err.strip().splitlines()) <= 3
    assert main(["run", "audit", "--data", str(corpus), "--address", "auto"]) == 2
    assert "only used by the ray executor" in capsys.readouterr().err
    assert main(["run", "audit", "--data", str(corpus), "--executor", ""]) == 2  # not silently 'local'
    assert "(got '')" in capsys.readouterr().err
    assert main(["run", "audit", "--data", str(corpus), "--executor", "ray", "--address", "http://127.0.0.1:8265"]) == 2
    err = capsys.readouterr().err
    assert "a http:// address is the Ray dashboard" in err and "ray://host:10001" in err and len(err.strip().splitlines()) <= 3
    recipe.write_text("name: d\nexecutor: {name: local, workers: true}\nstages:\n  audit: {workers: 2}\n")
    assert main(["run", str(recipe), "--data", str(corpus)]) == 2
    err = capsys.readouterr().err
    assert "executor.workers" in err and "got a boolean" in err

    from vetset.core.errors import RecipeError
    from vetset.core.executor import get_executor

    with pytest.raises(RecipeError, match="Unknown executor 'dask'; the executor must be one of: local, ray."):
        get_executor("dask")


def test_missing_ray_package_is_one_sentence(corpus, monkeypatch, capsys):
    from vetset.core.errors import VetsetError
    from vetset.core.executor import get_executor
    from vetset.recipes.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    with pytest.raises(VetsetError, match=r"^The ray executor needs the 'ray' package: pip install 'vetset\[ray\]'.$"):
        list(get_executor("ray", 2).map(abs, [1, 2]))
    assert main(["run", "audit", "--data", str(corpus), "--executor", "ray"]) == 2  # before loading anything
    err = capsys.readouterr().err
    assert "pip install 'vetset[ray]'" in err and "Traceback" not in err and len(err.strip().splitlines()) <= 3


def test_read_file_takes_fsspec_urls(hymenoptera_dir):
    import fsspec

    from vetset.core.images import decode, read_file

    data = (hymenoptera_dir / ANT).read_bytes()
    fsspec.filesystem("memory").pipe("memory://vetset-test/ants/a.jpg", data)
    assert read_file("memory://vetset-test/ants/a.jpg") == (data, None)
    img = decode("memory://vetset-test/ants/a.jpg")
    assert (img.width, img.height, img.format, img.error) == (768, 512, "JPEG", None)
    assert read_file("memory://vetset-test/ants/missing.jpg") == (None, "cannot read file (no such file)")
    assert read_file("memory://vetset-test/ants") == (None, "not a regular file")
    assert read_file((hymenoptera_dir / ANT).as_uri()) == (data, None)  # file:// is a local path
    assert read_file("nosuchproto://x/y.jpg")[1].startswith("cannot read file (")


def test_unreachable_ray_address_fails_in_seconds(corpus, tmp_path):
    """ray.init retries a dead GCS address for ~14 minutes; vetset checks the port first (fresh process: no Ray yet)."""
    import socket
    import time

    from conftest import run_cli

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    res = run_cli("run", "audit", "--data", str(corpus), "--dataset", "t-ray-unreachable", "--out", str(tmp_path / "o"),
                  "--executor", "ray", "--address", f"127.0.0.1:{port}")
    assert res.returncode == 2, res.stderr[-2000:]
    assert time.perf_counter() - t0 < 180
    assert f"cannot reach the Ray cluster at 127.0.0.1:{port}: nothing accepts connections" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 3
