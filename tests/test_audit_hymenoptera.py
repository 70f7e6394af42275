"""The full audit on the real ants/bees photos: numbers checked against the data's README."""

from __future__ import annotations

from pathlib import Path

import pytest

GRAY_PHOTOS = {"154124431_65460430f2.jpg", "854534770_31f6156383.jpg", "290082189_f66cb80bfc.jpg"}


@pytest.fixture(scope="module")
def hym(hymenoptera_dir):
    import fiftyone as fo

    from vetset.core.dataset import load_dataset
    from vetset.core.manager import Hooks
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    name = "t-audit-hym"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds, _ = load_dataset(hymenoptera_dir, name=name)
    hooks = Hooks()
    block = run_audit(ds, AuditOptions(workers=2), hooks, log=lambda m: None)
    return ds, block, hooks


def test_counts_and_orientation_match_the_readme(hym):
    ds, block, _ = hym
    assert block["num_images"] == block["num_readable"] == 398
    assert block["class_counts"]["train"] == {"ants": 124, "bees": 121}
    assert block["class_counts"]["val"] == {"ants": 70, "bees": 83}
    orient = block["coverage"]["all"]["orientation"]
    totals = {b: sum(row[b] for row in orient.values()) for b in ("landscape", "portrait", "square")}
    assert totals == {"landscape": 329, "portrait": 60, "square": 9}  # README: 329 / 60 / 9
    assert block["checks"]["orientation"]["exif_rotated"] == 0  # a few carry the tag, all with value 1
    assert block["checks"]["orientation"]["exif_orientations"] == {"1": 398}
    shares = block["checks"]["orientation"]["share"]["train"]["ants"]
    counts = block["coverage"]["train"]["orientation"]["ants"]
    assert shares["portrait"] == round(counts["portrait"] / 124, 4)
    big = ds.match_tags("val").match(
        {"filepath": {"$regex": "ants-devouring-remains"}}).first().metadata
    assert (big.width, big.height, big.mime_type, big.num_channels) == (2592, 1944, "image/jpeg", 3)


def test_colour_is_decided_from_pixels(hym):
    ds, block, _ = hym
    modes = dict(zip((Path(p).name for p in ds.values("filepath")), ds.values("colour_mode")))
    assert {n for n, m in modes.items() if m == "grayscale"} == GRAY_PHOTOS  # RGB JPEGs that are visually gray
    assert {n for n, m in modes.items() if m == "bw"} == {"imageNotFound.gif"}  # the two-tone placeholder
    colour = block["checks"]["colour"]
    assert colour["gray_in_colour_files"] == 4 and colour["file_modes"] == {"P": 1, "RGB": 397}
    assert block["checks"]["unreadable"]["formats"] == {"GIF": 1, "JPEG": 397}


def test_balance_and_metrics(hym):
    _, block, _ = hym
    m = block["metrics"]
    assert m["classes_below_min"] == 2 and m["imbalance_ratio"] == round(124 / 121, 4)
    assert m["unreadable"] == 0 and m["duplicate_groups"] == 0 and m["leakage_groups"] == 0
    assert m["conflicting_label_groups"] == 0
    bal = block["checks"]["balance"]
    assert bal["below_min"] == {"bees": 121, "ants": 124} and bal["basis"] == "train" and not bal["imbalanced"]
    assert sum(sum(r.values()) for r in block["coverage"]["all"]["clarity"].values()) == 398


def test_block_matches_the_result_schema(hym):
    from jsonschema import Draft202012Validator

    from vetset.core.result_schema import load_schema

    _, block, _ = hym
    schema = load_schema()
    validator = Draft202012Validator({"$ref": "#/$defs/audit", "$defs": schema["$defs"]})
    assert [e.message for e in validator.iter_errors(block)] == []


def test_fields_written_and_rerun_replaces_stale_tags(hym):
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    ds, block, hooks = hym
    schema = ds.get_field_schema()
    for field in ("metadata", "orientation", "colour_mode", "clarity", "sharpness", "brightness", "contrast",
                  "entropy", "exif_rotated", "phash", "file_hash", "aspect_ratio", "duplicate_group"):
        assert field in schema, field
    assert None not in ds.values("sharpness") and len(set(ds.values("file_hash"))) == 398
    before = ds.count_sample_tags()
    assert before["low_entropy"] == block["metrics"]["low_entropy"] == 2
    stale = ds.match_tags("low_entropy", bool=False).limit(3)
    stale.tag_samples("blurry")  # as if an earlier audit had called them blurry
    block2 = run_audit(ds, AuditOptions(workers=0), hooks, log=lambda m: None)
    assert ds.count_sample_tags() == before, "a rerun must neither duplicate nor keep stale issue tags"
    assert block2["metrics"] == block["metrics"]
