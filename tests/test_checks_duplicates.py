"""Duplicates, leakage and label conflicts on real CIFAR-10 test images, and the grouping maths."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from vetset.plugins.audit.checks.duplicates import leader_groups, near_pairs

# Pairs of CIFAR-10 test files that are two versions of one photo (phash distance in bits).
LEAKED = {("airplane", "0491", "0403"): 4, ("airplane", "0164", "0505"): 2, ("dog", "0269", "0595"): 0}
WITHIN_TRAIN = ("airplane", "0511", "0955")
OTHERS = {"airplane": ["0000", "0001", "0002", "0003"], "dog": ["0000", "0001", "0002", "0003"],
          "cat": ["0000", "0001", "0002", "0003"]}


def test_near_pairs_equals_brute_force():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**63, size=300, dtype=np.uint64) * np.uint64(2) + rng.integers(0, 2, 300, dtype=np.uint64)
    flips = []
    for k in range(60):  # plant neighbours 1..6 bits away
        bits = rng.choice(64, size=1 + k % 6, replace=False)
        mask = np.uint64(sum(1 << int(b) for b in bits))
        flips.append(base[k] ^ mask)
    hashes = np.unique(np.concatenate([base, np.array(flips, dtype=np.uint64)]))
    dist = np.bitwise_count(hashes[:, None] ^ hashes[None, :])
    for radius in (0, 1, 3, 4, 6):
        i, j = np.nonzero(np.triu(dist <= radius, k=1))
        expected = np.stack([i, j], axis=1)
        got = near_pairs(hashes, radius)
        assert np.array_equal(got, expected), radius
    assert len(near_pairs(hashes, 4)) >= 40  # the planted 1-4 bit neighbours


def test_leader_groups_do_not_chain():
    # 0~1, 1~2, 2~3: connected components would give one group; leaders give {0,1} and {2,3}
    pairs = np.array([[0, 1], [1, 2], [2, 3]])
    assert leader_groups(5, pairs).tolist() == [0, 0, 2, 2, 4]
    assert leader_groups(5, pairs, order=np.array([1, 0, 2, 3, 4])).tolist() == [1, 1, 1, 3, 4]


def test_phash_text_matches_imagehash(cifar_test_dir):
    import imagehash
    from PIL import Image

    from vetset.core.images import decode
    from vetset.plugins.audit.checks.duplicates import DuplicateOptions, duplicates_compute

    for name in ("airplane/0491", "dog/0269", "dog/0595", "cat/0007"):
        img = decode(str(cifar_test_dir / f"{name}.jpg"))
        ours = duplicates_compute(img, DuplicateOptions())
        assert ours["phash"] == str(imagehash.phash(Image.fromarray(img.gray())))
        assert len(ours["file_hash"]) == 64


@pytest.fixture(scope="module")
def dup_run(tmp_path_factory, cifar_test_dir):
    """An audit-only run over train/val folders planted with real CIFAR near copies and one exact copy."""
    import fiftyone as fo

    from vetset.core import hookimpl
    from vetset.core.manager import Hooks, build_plugin_manager
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    root = tmp_path_factory.mktemp("dups") / "data"
    src = Path(cifar_test_dir)

    def put(split, cls, name, as_cls=None, as_name=None):
        dest = root / split / (as_cls or cls) / f"{as_name or name}.jpg"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / cls / f"{name}.jpg", dest)

    for (cls, a, b) in LEAKED:
        put("train", cls, a)
        put("val", cls, b)
    put("train", *WITHIN_TRAIN[:2])
    put("train", WITHIN_TRAIN[0], WITHIN_TRAIN[2])
    put("train", "dog", "0296")
    put("train", "dog", "0296", as_cls="cat", as_name="copy_of_dog_0296")  # same bytes, other label
    for cls, names in OTHERS.items():
        for i, name in enumerate(names):
            put("val" if i == 0 else "train", cls, name)

    calls: list[tuple[str, dict]] = []

    class Listener:
        @hookimpl
        def vetset_on_check_finished(self, run, check, summary):
            calls.append((check, summary))

    pm = build_plugin_manager()
    listener = Listener()
    pm.register(listener, name="test-listener")
    try:
        hooks = Hooks(pm)
        recipe = parse_recipe({"name": "t", "stages": {"audit": {"workers": 2}},
                               "fail_on": {"audit.metrics.leakage_groups": 0}}, hooks.stages)
        name = "t-dup-run"
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        run = Run(recipe, hooks, data=root, dataset=name, out_dir=tmp_path_factory.mktemp("dups-out"), log=lambda m: None)
        from vetset.core.errors import ChecksFailed

        with pytest.raises(ChecksFailed, match="leakage_groups = 3 exceeds 0"):
            run.execute()
    finally:
        pm.unregister(listener)
    return run, calls


def test_duplicates_leakage_and_conflicts(dup_run):
    run, _ = dup_run
    block = run.results["audit"]
    m = block["metrics"]
    assert (m["duplicate_groups"], m["exact_duplicate_groups"], m["leakage_groups"], m["conflicting_label_groups"]) == (5, 1, 3, 1)
    assert m["leakage_samples"] == 6 and m["conflicting_label_samples"] == 2 and m["redundant_images"] == 5
    dup = block["checks"]["duplicates"]
    assert dup["leakage_by_splits"] == {"train/val": 3}
    assert dup["within_split_groups"] == {"train": 2, "val": 0}
    groups = {frozenset(Path(mm["filepath"]).stem for mm in g["members"]): g for g in dup["groups"]}
    for (_cls, a, b), bits in LEAKED.items():
        g = groups[frozenset({a, b})]
        assert g["kinds"] == ["leakage"] and g["splits"] == ["train", "val"] and g["max_distance_to_first"] == bits
    conflict = groups[frozenset({"0296", "copy_of_dog_0296"})]
    assert conflict["kinds"] == ["exact", "label_conflict"] and conflict["labels"] == ["cat", "dog"]
    assert groups[frozenset(WITHIN_TRAIN[1:])]["kinds"] == []
    assert len(groups) == 5  # none of the 12 unrelated images is grouped

    ds = run.dataset
    leak = ds.load_saved_view("audit/leakage")
    assert len(leak) == 6 and sorted(set(leak.values("duplicate_group"))) == sorted(
        g["group"] for g in dup["groups"] if "leakage" in g["kinds"])
    assert sorted(Path(p).stem for p in ds.load_saved_view("audit/label_conflicts").values("filepath")) == \
        ["0296", "copy_of_dog_0296"]
    assert len(ds.load_saved_view("audit/exact_duplicates")) == 2 and len(ds.load_saved_view("audit/duplicates")) == 10
    phashes = dict(zip((Path(p).stem for p in ds.values("filepath")), ds.values("phash")))
    assert phashes["0269"] == phashes["0595"]


def test_check_finished_hook_fires_once_per_check_in_order(dup_run):
    run, calls = dup_run
    block = run.results["audit"]
    assert [c for c, _ in calls] == block["checks_run"]
    assert block["checks_run"] == ["balance", "orientation", "colour", "clarity", "exposure", "size", "duplicates", "unreadable"]
    assert dict(calls)["duplicates"] is block["checks"]["duplicates"]


def test_duplicates_report_section_shows_groups_with_thumbnails(dup_run):
    from vetset.core.report_kit import ReportContext
    from vetset.plugins.audit.checks.duplicates import render_duplicates

    run, _ = dup_run
    ctx = ReportContext(result=run.result, dataset=run.dataset)
    html = render_duplicates(run.result, ctx)
    assert 'data-key="audit.metrics.leakage_groups"' in html and "span splits (train/val: 3)" in html
    assert html.count('<figure class="thumb">') == 10 and html.count("data:image/jpeg;base64,") == 10
    assert "audit/leakage" in html and "label_conflict" in html
    assert render_duplicates({"stages": {}}, ctx) is None
