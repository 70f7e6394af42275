"""Recipe validation: YAML in, one clear sentence out (file, key path, what is allowed)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

from vetset.core.errors import RecipeError
from vetset.core.recipe import load_recipe, parse_recipe, read_yaml
from vetset.core.registry import Registry, Stage


class TrainLike(BaseModel):
    model_config = {"extra": "forbid"}
    epochs: int = Field(3, ge=1)
    model_name: str = "resnet10t"


@pytest.fixture
def stages():
    reg: Registry = Registry("stage")
    reg.add("train", Stage(name="train", run=lambda r, o: {}, options=TrainLike), "test")
    reg.add("report", Stage(name="report", run=lambda r, o: {}), "test")
    return reg


def test_valid_recipe_fills_defaults(stages):
    rec = parse_recipe({"name": "r", "stages": {"train": {"epochs": 5}, "report": None}}, stages, "r.yaml")
    assert rec.options("train").epochs == 5 and rec.options("train").model_name == "resnet10t"
    assert rec.stage_names() == ["train", "report"]
    dumped = rec.dump()
    assert dumped["stages"]["train"] == {"epochs": 5, "model_name": "resnet10t"}
    assert dumped["data"]["val_fraction"] == 0.2


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"name": "r", "stages": {"train": {"epochs": "ten"}}}, r"r\.yaml.*stages\.train\.epochs.*valid integer.*'ten'"),
        ({"name": "r", "stages": {"train": {"epochs": 0}}}, r"stages\.train\.epochs: Input should be greater than or equal to 1"),
        ({"name": "r", "stages": {"train": {"epoch": 3}}}, r"stages\.train\.epoch: unknown key; allowed keys: epochs, model_name"),
        ({"name": "r", "stages": {"trian": {}}}, r"stages\.trian is not a known stage; known stages: train, report"),
        ({"stages": {"train": {}}}, r"name: required key is missing"),
        ({"name": "r", "stages": {}}, r"stages: .*at least 1 item"),
        ({"name": "r", "stagse": {}}, r"stagse: unknown key; allowed keys: name, description, data, stages, fail_on"),
        ({"name": "r", "stages": {"train": {}}, "data": {"val_fraction": 1.5}}, r"data\.val_fraction: Input should be less than 1"),
        ({"name": "r", "stages": {"train": {}}, "fail_on": {"audit.metrics.x": "lots"}}, r"fail_on\.audit\.metrics\.x"),
        ({"name": "r", "stages": {"train": {}}, "fail_on": {"audit.metrics.x": 0}},
         r"r\.yaml: fail_on\.audit\.metrics\.x must name a value of one of this recipe's stages, as "
         r"<stage>\.metrics\.<name> with <stage> one of train\."),
        ({"name": "r", "stages": {"train": {}}, "fail_on": {"train": 0}}, r"fail_on\.train must name a value"),
        ({"name": "r", "stages": {"train": {}}, "fail_on": {"train..x": 0}}, r"fail_on\.train\.\.x must name a value"),
        ({"name": "r", "stages": {"train": {}}, "fail_on": {"train.metrics.x": float("nan")}},
         r"fail_on\.train\.metrics\.x: Input should be a finite number"),
        ({"name": "r", "stages": {"train": {}}, "fail_on": {"train.metrics.x": True}},
         r"fail_on\.train\.metrics\.x: expected a number, got a boolean"),
        (["not", "a", "mapping"], r"must be a YAML mapping"),
    ],
)
def test_invalid_recipes_name_file_and_key(stages, data, expected):
    with pytest.raises(RecipeError, match=expected):
        parse_recipe(data, stages, "r.yaml")


def test_yaml_syntax_error_names_file_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nstages:\n  train: {epochs: 3\n  report: {}\n")
    with pytest.raises(RecipeError, match=r"bad\.yaml is not valid YAML at line \d+, column \d+"):
        read_yaml(bad)


def test_yaml_tags_are_refused_by_safe_load(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hi']\nstages: {report: {}}\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        read_yaml(evil)


def test_missing_file_and_unknown_name(hooks, tmp_path):
    with pytest.raises(RecipeError, match=r"nope\.yaml does not exist"):
        load_recipe(str(tmp_path / "nope.yaml"), hooks)
    with pytest.raises(RecipeError, match=r"'nosuch' is neither a recipe name \(.*audit.*\) nor a recipe file"):
        load_recipe("nosuch", hooks)


def test_every_bundled_recipe_validates(hooks):
    for name in ("audit", "augment", "train", "full", "label_noise"):
        assert name in hooks.recipes
        rec = load_recipe(name, hooks)
        assert rec.name == name and rec.stage_names()


def test_every_problem_of_a_recipe_is_reported_at_once(stages):
    data = {"name": "r", "data": {"val_fracton": 0.2}, "stages": {"trian": {}, "train": {"epoch": 3}}}
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, stages, "r.yaml")
    text = str(info.value)
    assert text.startswith("Recipe r.yaml is invalid: data.val_fracton: unknown key")
    assert "Also: stages.trian is not a known stage" in text
    del data["data"]
    with pytest.raises(RecipeError) as info:
        parse_recipe(data, stages, "r.yaml")
    assert str(info.value) == ("Recipe r.yaml: stages.trian is not a known stage; known stages: train, report. Also: "
                               "stages.train.epoch: unknown key; allowed keys: epochs, model_name.")


def test_label_noise_filter_by_typo_is_one_sentence():
    """`filter_by` accepts cleanlab's values or `auto`: a typo names them all in one message, not one
    per member of a type union (`filter_by.literal['prune_by_noise_rate', ...]: ...; filter_by.literal['auto']: ...`)."""
    from vetset.plugins.label_noise.options import LabelNoiseOptions

    reg: Registry = Registry("stage")
    reg.add("label_noise", Stage(name="label_noise", run=lambda r, o: {}, options=LabelNoiseOptions), "test")
    with pytest.raises(RecipeError) as err:
        parse_recipe({"name": "r", "stages": {"label_noise": {"filter_by": "autoo"}}}, reg, "r.yaml")
    assert str(err.value) == (
        "Recipe r.yaml is invalid: stages.label_noise.filter_by: Input should be 'auto', 'prune_by_noise_rate', "
        "'prune_by_class', 'both', 'confident_learning', 'predicted_neq_given', 'low_normalized_margin' or "
        "'low_self_confidence' (got 'autoo').")
    ok = parse_recipe({"name": "r", "stages": {"label_noise": {"filter_by": "both"}}}, reg, "r.yaml")
    assert ok.options("label_noise").filter_by == "both"
