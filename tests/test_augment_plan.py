"""The gap planner on hand-built audit blocks (the audit contract), and the options model."""

from __future__ import annotations

import math

import pytest

from vetset.core.errors import RecipeError
from vetset.plugins.augment.plan import PolicyInfo, Source, class_targets, image_key, make_plan
from vetset.plugins.augment.policies import default_source_bins

POLICIES = {
    "orientation": PolicyInfo("orientation", (("orientation", "portrait"), ("orientation", "landscape")),
                              {("orientation", "portrait"): default_source_bins("orientation", "orientation", "portrait"),
                               ("orientation", "landscape"): default_source_bins("orientation", "orientation", "landscape")}),
    "colour": PolicyInfo("colour", (("colour", "grayscale"),),
                         {("colour", "grayscale"): default_source_bins("colour", "colour", "grayscale")}),
    "light": PolicyInfo("light"),
}
CELL_POLICY = {("orientation", "portrait"): "orientation", ("colour", "grayscale"): "colour"}


def sources_for(label: str, bins_counts: list[tuple[dict[str, str], int]]) -> list[Source]:
    out = []
    for bins, n in bins_counts:
        for _ in range(n):
            out.append(Source(f"id{len(out)}", f"/data/{label}/{len(out):04d}.jpg", label, bins))
    return out


def audit_block(sources: dict[str, list[Source]]) -> dict:
    """class_counts/coverage for the train split, counted from the sources (as the audit does)."""
    cov: dict = {}
    for label, srcs in sources.items():
        for s in srcs:
            for prop, b in s.bins.items():
                cov.setdefault(prop, {}).setdefault(label, {}).setdefault(b, 0)
                cov[prop][label][b] += 1
    return {"class_counts": {"train": {c: len(s) for c, s in sources.items()}}, "coverage": {"train": cov}}


LAND_COLOUR = {"orientation": "landscape", "colour": "colour"}
PORT_COLOUR = {"orientation": "portrait", "colour": "colour"}
LAND_GRAY = {"orientation": "landscape", "colour": "grayscale"}


def plan(sources, shares=None, min_count=0, target_ratio=None, max_per_source=5, seed=0, fill="light"):
    return make_plan(audit_block(sources), sources, sorted(sources), shares or {}, POLICIES, CELL_POLICY, fill,
                     min_count, target_ratio, max_per_source, seed)


def test_class_targets_min_count_and_ratio():
    assert class_targets({"a": 50, "b": 120, "c": 300}, 200, None) == {"a": 200, "b": 200, "c": 300}
    assert class_targets({"a": 50, "b": 120, "c": 300}, 0, 0.5) == {"a": 150, "b": 150, "c": 300}
    assert class_targets({"a": 50, "b": 120}, 100, 1.0) == {"a": 120, "b": 120}


def test_classes_below_min_count_are_lifted_with_the_fill_policy():
    srcs = {"ants": sources_for("ants", [(LAND_COLOUR, 50)]), "bees": sources_for("bees", [(LAND_COLOUR, 120)])}
    p = plan(srcs, min_count=100)
    by_class = {c.label: c for c in p.classes}
    assert by_class["ants"].planned == 50 and by_class["ants"].by_policy == {"light": 50}
    assert by_class["bees"].planned == 0 and by_class["bees"].status == "ok"
    # round-robin: each of the 50 ants sources used once
    assert sorted(im.source.filepath for im in p.images) == sorted(s.filepath for s in srcs["ants"])
    assert {im.index for im in p.images} == {0}


def test_under_covered_cell_is_lifted_from_sources_the_policy_can_turn():
    # bees: 90 landscape, 10 portrait; target portrait 20% -> (10 + x) / (100 + x) >= 0.2 -> x = 13
    srcs = {"bees": sources_for("bees", [(LAND_COLOUR, 90), (PORT_COLOUR, 10)])}
    p = plan(srcs, shares={"orientation": {"portrait": 0.2}})
    assert len(p.images) == math.ceil((0.2 * 100 - 10) / 0.8) == 13
    assert all(im.policy == "orientation" and im.source.bins["orientation"] == "landscape" for im in p.images)
    assert all(im.predicted["orientation"] == "portrait" and im.predicted["colour"] == "colour" for im in p.images)
    (cell,) = p.cells
    assert (cell.before_count, cell.before_total, cell.planned) == (10, 100, 13)
    assert (cell.expected_count, cell.expected_total) == (23, 113)
    assert cell.expected_share >= 0.2 > (22 / 112)  # one image fewer would miss the target
    assert cell.status == "planned"


def test_cells_and_class_lift_together_keep_every_share_at_target():
    srcs = {"ants": sources_for("ants", [(LAND_COLOUR, 60), (LAND_GRAY, 2), (PORT_COLOUR, 3)])}
    shares = {"orientation": {"portrait": 0.25}, "colour": {"grayscale": 0.1}}
    p = plan(srcs, shares=shares, min_count=150)
    (klass,) = p.classes
    assert klass.before + klass.planned >= 150
    for cell in p.cells:
        assert cell.expected_share >= cell.target_share
        assert cell.expected_total == klass.before + klass.planned
    by_policy = p.by_policy()
    assert by_policy["orientation"] > 0 and by_policy["colour"] > 0 and by_policy["light"] > 0
    # every (source, policy, index) is unique, so every file name is unique
    keys = [(im.source.filepath, im.policy, im.index) for im in p.images]
    assert len(set(keys)) == len(keys) and len({im.key for im in p.images}) == len(keys)


def test_a_cell_with_no_eligible_source_is_infeasible_with_the_reason():
    square = {"orientation": "square", "colour": "grayscale"}  # like the 8x8 digits
    srcs = {"3": sources_for("3", [(square, 40)])}
    p = plan(srcs, shares={"orientation": {"portrait": 0.2}})
    (cell,) = p.cells
    assert cell.status == "infeasible" and "landscape" in cell.reason and "'3'" in cell.reason
    assert p.images == []


def test_max_per_source_bounds_the_plan():
    srcs = {"ants": sources_for("ants", [(LAND_COLOUR, 2)])}
    p = plan(srcs, min_count=20, max_per_source=3)
    (klass,) = p.classes
    assert klass.planned == 6 and klass.status == "infeasible" and "max_per_source=3" in klass.reason
    assert sorted(im.index for im in p.images) == [0, 0, 1, 1, 2, 2]


def test_plans_are_deterministic_and_seeded():
    srcs = {"bees": sources_for("bees", [(LAND_COLOUR, 30), (PORT_COLOUR, 2)])}
    a = plan(srcs, shares={"orientation": {"portrait": 0.3}}, min_count=40)
    b = plan(srcs, shares={"orientation": {"portrait": 0.3}}, min_count=40)
    c = plan(srcs, shares={"orientation": {"portrait": 0.3}}, min_count=40, seed=1)
    assert [(im.key, im.seed) for im in a.images] == [(im.key, im.seed) for im in b.images]
    assert [im.key for im in a.images] != [im.key for im in c.images]
    key, seed = image_key("/data/x.jpg", "light", 0, 0)
    assert len(key) == 10 and 0 <= seed < 2 ** 32 and image_key("/data/x.jpg", "light", 1, 0)[0] != key
    name = a.images[0].filename("jpg")
    assert name.startswith(a.images[0].source.filepath.rsplit("/", 1)[1][:-4]) and name.endswith(f"-{a.images[0].key}.jpg")


def test_options_model_rejects_bad_targets(hooks):
    from vetset.core.recipe import parse_recipe

    def parse(augment):
        return parse_recipe({"name": "x", "stages": {"augment": augment}}, hooks.stages, source="x.yaml")

    assert parse({}).options("augment").min_count == 200
    with pytest.raises(RecipeError, match=r"x.yaml.*stages.augment.coverage_targets.*sum to 1.2"):
        parse({"coverage_targets": {"orientation": {"portrait": 0.6}, "colour": {"grayscale": 0.6}}})
    with pytest.raises(RecipeError, match=r"stages.augment.coverage_targets.*orientation.diagonal is not a bin"):
        parse({"coverage_targets": {"orientation": {"diagonal": 0.1}}})
    with pytest.raises(RecipeError, match=r"stages.augment.policies.gray.targets.*colour.greyscale"):
        parse({"policies": {"gray": {"pipeline": {"__class_fullname__": "ToGray"}, "targets": ["colour.greyscale"]}}})
    with pytest.raises(RecipeError, match=r"stages.augment.min_cont: unknown key"):
        parse({"min_cont": 3})
