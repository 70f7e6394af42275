"""The embedding pass on worker processes and on Ray gives the in-process features.

Real photos (hymenoptera, 193x130 up to 2592x1944, one truncated file); the backbone is a
resnet10t with seeded random weights saved as a state-dict file (which features these are
does not matter here, only that every executor computes the same ones from that file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vetset.core.executor import use_executor
from vetset.plugins.embed.backbone import load_backbone_file
from vetset.plugins.embed.options import EmbedOptions
from vetset.plugins.embed.stage import compute_features, content_hashes, store_meta
from vetset.plugins.embed.store import FeatureStore

N_PHOTOS = 24


@pytest.fixture(scope="module")
def photos(tmp_path_factory, hymenoptera_dir) -> list[str]:
    root = tmp_path_factory.mktemp("embed-exec")
    files = sorted((hymenoptera_dir / "train" / "ants").glob("*.jpg"))[:N_PHOTOS // 2]
    files += sorted((hymenoptera_dir / "val" / "bees").glob("*.jpg"))[:N_PHOTOS // 2]
    out = []
    for f in files:
        shutil.copyfile(f, root / f.name)
        out.append(str(root / f.name))
    data = Path(out[0]).read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 3])
    out.insert(5, str(root / "truncated.jpg"))
    return out


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    import timm
    import torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("embed-weights") / "resnet10t-random.pth"
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), path)
    return path


def _pass(photos, weights, out: Path, **opts) -> tuple[np.ndarray, list[str], FeatureStore]:
    options = EmbedOptions(weights=str(weights), model_name="resnet10t", img_size=64, batch_size=2,
                           shard_size=16, device="cpu", **opts)
    backbone = load_backbone_file(weights, "resnet10t", 64)
    store = FeatureStore(out, store_meta(backbone, options))
    hashes = content_hashes(photos, [None] * len(photos))
    computed, failed, _s = compute_features(backbone, options, store, photos, hashes, log=lambda m: None)
    assert computed == len(photos) - 1 and failed == [photos[5]]
    assert len(list(store.dir.glob("shard-*.hashes.npy"))) >= 2  # written shard by shard, not all at the end
    ok = [h for p, h in zip(photos, hashes) if p != photos[5]]
    return store.get(ok), failed, store


@pytest.fixture(scope="module")
def in_process(photos, weights, tmp_path_factory):
    return _pass(photos, weights, tmp_path_factory.mktemp("inproc"))[0]


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape == (N_PHOTOS, 512) and np.isfinite(a).all()
    assert np.abs(a - b).max() <= 1e-4 * max(1.0, np.abs(a).max()), np.abs(a - b).max()


def test_local_workers_give_the_in_process_features(photos, weights, in_process, tmp_path):
    feats, _failed, _store = _pass(photos, weights, tmp_path, workers=2)
    _same(in_process, feats)


def test_ray_gives_the_in_process_features(photos, weights, in_process, tmp_path):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        address = ray.get_runtime_context().gcs_address
        with use_executor({"name": "ray", "address": address}):
            feats, _failed, _store = _pass(photos, weights, tmp_path)
        assert ray.is_initialized()  # an instance vetset joined is left running
    finally:
        ray.shutdown()
    _same(in_process, feats)


def test_worker_refuses_other_weights(weights, tmp_path):
    import torch

    from vetset.core.errors import VetsetError
    from vetset.plugins.embed.workers import BackboneSpec, rebuild

    copy = tmp_path / "w.pth"
    shutil.copyfile(weights, copy)
    spec = BackboneSpec.of(load_backbone_file(copy, "resnet10t", 64), 64)
    state = torch.load(copy, weights_only=True)
    state["conv1.0.weight"] += 1  # the file changed after the driver read it
    torch.save(state, copy)
    with pytest.raises(VetsetError, match="other weights or preprocessing"):
        rebuild(spec)
