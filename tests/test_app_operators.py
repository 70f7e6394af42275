"""vetset's FiftyOne operators and panel, driven with a mocked ``ctx`` on a real dataset.

The ``ctx`` is FiftyOne's own ``ExecutionContext`` built from request parameters (so the
dataset, the view, the selection and ``ctx.target_view()`` are real), with its outward
effects mocked: ``ctx.ops`` (set_view, open_panel, panel state), the executor's
``trigger`` and ``set_progress``. Each test then checks what the operator wrote to the
dataset and to ``result.json``.
"""

from __future__ import annotations

import json
from unittest.mock import MagicMock

import pytest
from app_data import TRAIN, VALIDATE, validated_dataset


@pytest.fixture(scope="module")
def ds_name(hymenoptera_dir, session_tmp):
    return validated_dataset(hymenoptera_dir, session_tmp)


@pytest.fixture(scope="module")
def ops():
    from vetset.plugins.fiftyone_app import navigation, operators, panel

    return operators, panel, navigation


def make_ctx(dataset, params=None, view=None, selected=None, delegated=False, panel_state=None):
    """A real ExecutionContext for ``dataset`` whose ops, executor and progress are mocks."""
    from fiftyone.operators.executor import ExecutionContext

    request = {"dataset_name": dataset.name, "params": dict(params or {}), "selected": list(selected or []),
               "delegated": delegated}
    if view is not None:
        request["view"] = view._serialize()
    if panel_state is not None:
        request["params"].update(panel_id="panel-1", panel_state=panel_state)
    ctx = ExecutionContext(request_params=request, executor=MagicMock(), set_progress=MagicMock())
    ctx._ops = MagicMock()
    return ctx


def _props(prop):
    return prop.type.properties


def test_open_saved_view_lists_vetset_views_with_counts_and_sets_the_view(ds_name, ops):
    import fiftyone as fo

    ds = fo.load_dataset(ds_name)
    n_errors = len(ds.load_saved_view("validation_errors"))
    ctx = make_ctx(ds)
    form = ops[2].OpenSavedView().resolve_input(ctx)
    field = _props(form)["name"]
    assert field.default == "validation_errors"
    labels = {c.value: c.label for c in field.view.choices}
    assert set(labels) == set(ds.list_saved_views())
    assert labels["validation_errors"] == f"validation_errors ({n_errors} samples)"
    per_class = [v for v in labels if v.startswith("validation_errors/") and not v.startswith("validation_errors/slice/")]
    assert sum(len(ds.load_saved_view(v)) for v in per_class) == n_errors
    slices = [v for v in labels if v.startswith("validation_errors/slice/")]  # failure slices: subsets of the errors
    assert all(set(ds.load_saved_view(v).values("id")) <= set(ds.load_saved_view("validation_errors").values("id"))
               for v in slices)

    ctx = make_ctx(ds, {"name": "validation_errors"})
    out = ops[2].OpenSavedView().execute(ctx)
    ctx.ops.set_view.assert_called_once_with(name="validation_errors")
    assert out == {"name": "validation_errors", "count": n_errors}


def test_open_saved_view_warns_when_there_are_none(fresh_name, ops):
    import fiftyone as fo

    ds = fo.Dataset(fresh_name)
    form = ops[2].OpenSavedView().resolve_input(make_ctx(ds))
    warn = _props(form)["no_views"]
    assert warn.invalid and "no saved views" in warn.view.label
    ds.delete()


def test_open_audit_panel_opens_the_panel(ds_name, ops):
    import fiftyone as fo

    ctx = make_ctx(fo.load_dataset(ds_name))
    ops[2].OpenAuditPanel().execute(ctx)
    ctx.ops.open_panel.assert_called_once_with("vetset_audit", layout="horizontal", is_active=True)


def test_train_form_validates_like_the_recipe(ds_name, ops):
    import fiftyone as fo

    ds = fo.load_dataset(ds_name)
    ctx = make_ctx(ds, {"train__epochs": 0, "train__model_name": "resnet10tt", "validate__top_errors": 5})
    props = _props(ops[0].TrainAndValidate().resolve_input(ctx))
    assert props["train__epochs"].invalid and "greater than or equal to 1" in props["train__epochs"].error_message
    assert props["train_invalid"].invalid
    assert props["train__epochs"].default == 10  # the TrainOptions default, shown in the form
    assert "timm" in (props["train__model_name"].view.description or "")
    assert not props["validate__top_errors"].invalid

    ctx = make_ctx(ds, {"train__epochs": 1, "train__model_name": "resnet10tt"})
    props = _props(ops[0].TrainAndValidate().resolve_input(ctx))
    assert props["train__model_name"].invalid
    assert "did you mean resnet10t" in props["train__model_name"].error_message
    assert "cpu" in props  # no CUDA here: the form says training runs on the CPU
    assert not props["cpu"].invalid

    ctx = make_ctx(ds, {"do_train": False, "do_validate": False})
    assert _props(ops[0].TrainAndValidate().resolve_input(ctx))["nothing"].invalid


def test_train_and_validate_delegated_writes_predictions_views_and_progress(ds_name, ops):
    import fiftyone as fo
    from fiftyone import ViewField as F

    ds = fo.load_dataset(ds_name)
    params = {f"train__{k}": v for k, v in TRAIN.items()} | {f"validate__{k}": v for k, v in VALIDATE.items()}
    params["train__seed"] = 1
    ctx = make_ctx(ds, params, delegated=True)
    out = ops[0].TrainAndValidate().execute(ctx)

    result = json.loads(open(out["result_json"]).read())
    assert result["recipe"]["stages"]["train"]["seed"] == 1  # the form's value reached the stage
    assert result["recipe"]["stages"]["train"]["epochs"] == 1
    assert set(out["stages"]) == {"train", "validate"}
    assert "train" in result["stages"] and "validate" in result["stages"]
    errors = ds.load_saved_view("validation_errors")
    assert out["metrics"]["validate"]["validation_errors"] == len(errors)
    val = ds.match_tags("val")
    assert val.count("predictions") == len(val) == 20
    assert "eval" in ds.list_evaluations()
    wrong = val.match(F("predictions.label") != F("ground_truth.label"))
    assert sorted(errors.values("id")) == sorted(wrong.values("id"))
    # delegated: stage messages and per-epoch progress went to ctx.set_progress
    labels = [c.args[1].label for c in ctx._set_progress.call_args_list]
    assert any(lbl.startswith("[train]") for lbl in labels) and any(lbl.startswith("[validate]") for lbl in labels)
    fractions = [c.args[1].progress for c in ctx._set_progress.call_args_list if c.args[1].progress is not None]
    assert fractions and fractions[-1] == 1.0
    ctx.ops.set_view.assert_not_called()  # delegated: the App is not there to follow
    ctx.executor.trigger.assert_not_called()


def test_panel_shows_balance_issues_and_opens_a_view(ds_name, ops):
    import fiftyone as fo

    from vetset.core.dataset import split_counts

    ds = fo.load_dataset(ds_name)
    panel = ops[1].AuditPanel()
    ctx = make_ctx(ds, panel_state={})
    panel.on_load(ctx)
    state = ctx.panel_state
    counts = split_counts(ds)
    assert {r["class"]: (r["train"], r["val"]) for r in state["balance"]} == {
        c: (counts["train"][c], counts["val"][c]) for c in ("ants", "bees")}
    assert [r["share"] for r in state["balance"]] == ["50.0%", "50.0%"]
    issues = {r["view"]: r["count"] for r in state["issues"]}
    assert issues["validation_errors"] == len(ds.load_saved_view("validation_errors"))
    from vetset.plugins.fiftyone_app.api import audit_summary

    coverage = audit_summary(ds_name)["coverage"]["all"]
    assert set(state["coverage_props"]) == set(coverage) >= {"orientation", "colour", "clarity"}
    for prop, bins in state["coverage_props"].items():
        assert {r["class"]: {b: r[b] for b in bins} for r in state[f"coverage_{prop}"]} == {
            c: {b: coverage[prop][c].get(b, 0) for b in bins} for c in coverage[prop]}
    traces = ctx.ops.patch_panel_data.call_args_list[-1].args[0]["balance_plot"]
    assert [t["name"] for t in traces] == ["train", "val"] and traces[0]["y"] == [10, 10]

    rendered = panel.render(ctx)
    names = set(_props(rendered))
    assert {"balance", "balance_plot", "issues", "menu", "split", "coverage_orientation"} <= names
    table = _props(rendered)["issues"].view
    assert [c.key for c in table.columns] == ["view", "count"]
    tips = {(t.row, t.column): t.to_json()["value"] for t in table.tooltips}
    row = [r["view"] for r in state["issues"]].index("validation_errors")
    assert "prediction" in tips[(row, "view")]
    assert table.row_actions[0].to_json()["on_click"].endswith("#open_issue")

    row = [r["view"] for r in state["issues"]].index("validation_errors")
    ctx = make_ctx(ds, {"row": row}, panel_state=state)
    panel.open_issue(ctx)
    ctx.ops.set_view.assert_called_once_with(name="validation_errors")

    ctx = make_ctx(ds, {"value": "train"}, panel_state=dict(state))
    panel.change_split(ctx)
    assert ctx.panel_state["split"] == "train"
    assert sum(sum(v for k, v in r.items() if k != "class") for r in ctx.panel_state["coverage_orientation"]) == 20

    panel.plugin_name = "@vetset/vetset"  # set by FiftyOne when it registers the panel
    ctx = make_ctx(ds, panel_state=state)
    panel.run_audit(ctx)
    (name, params), _ = ctx.executor.trigger.call_args
    assert name == "prompt_user_for_operation" and params["operator_uri"] == "@vetset/vetset/run_audit"
    assert params["on_success"] == "@vetset/vetset/vetset_audit#refresh"


def test_run_recipe_lists_registered_recipes_and_runs_one(ds_name, ops, tmp_path):
    """A throwaway plugin registers a recipe; the operator lists it and runs its stages."""
    import fiftyone as fo
    import yaml

    from vetset.core import hookimpl
    from vetset.core.manager import get_hooks

    recipe = tmp_path / "quick.yaml"
    # two gates as `recipes run` checks them: one the run passes, one it exceeds
    recipe.write_text(yaml.safe_dump({"name": "quick-validate", "stages": {"validate": VALIDATE},
                                      "fail_on": {"validate.metrics.validation_errors": -1,
                                                  "validate.metrics.val_accuracy": 1.0}}))

    class QuickRecipes:
        @hookimpl
        def vetset_register_recipes(self, register):
            register("quick-validate", recipe)

    hooks = get_hooks(refresh=True)
    hooks.pm.register(QuickRecipes(), name="test-quick-recipes")
    try:
        ds = fo.load_dataset(ds_name)
        ctx = make_ctx(ds, {"recipe": "quick-validate"})
        props = _props(ops[0].RunRecipe().resolve_input(ctx))
        choices = {c.value: c.description for c in props["recipe"].view.choices}
        assert choices["quick-validate"] == "test-quick-recipes" and "full" in choices
        assert props["recipe_notice"].view.label == "quick-validate: validate"
        before = ds.load_saved_view("validation_errors").values("id")
        out = ops[0].RunRecipe().execute(ctx)
        assert out["stages"] == ["validate"]
        assert out["metrics"]["validate"]["validation_errors"] == len(before)
        # the recipe's fail_on is checked as the CLI does and shown, not raised; result.json records it
        errors = len(before)
        assert out["fail_on_failures"] == [f"validate.metrics.validation_errors = {errors:g} exceeds -1"]
        gates = json.loads(open(out["result_json"]).read())["fail_on"]
        assert gates["checked"]["validate.metrics.val_accuracy"]["failed"] is False
        assert gates["checked"]["validate.metrics.validation_errors"] == {"value": errors, "threshold": -1,
                                                                            "failed": True}
        ctx.executor.trigger.assert_called_once_with("reload_dataset", None)
    finally:
        get_hooks(refresh=True)


def test_audit_form_lists_registered_checks_and_validates(ds_name, ops):
    import fiftyone as fo

    from vetset.core.manager import get_hooks

    ds = fo.load_dataset(ds_name)
    names = get_hooks().checks.names()
    props = _props(ops[0].RunAudit().resolve_input(make_ctx(ds)))
    assert [k.split("__", 1)[1] for k in props if k.startswith("check__")] == names
    assert all(props[f"check__{n}"].default is True for n in names)
    assert "audit__checks__clarity__header" in props and "audit__max_side" in props
    assert "audit__checks__clarity__size" in props  # a check's options sit under checks.<name>
    assert "audit__select" not in props  # the check boxes stand for the select option

    params = {f"check__{n}": False for n in names} | {"check__orientation": True, "audit__max_side": 8}
    props = _props(ops[0].RunAudit().resolve_input(make_ctx(ds, params)))
    assert "audit__checks__clarity__header" not in props  # options of unticked checks are hidden
    assert "audit__checks__orientation__header" in props
    assert props["audit__max_side"].invalid and "32" in props["audit__max_side"].error_message

    props = _props(ops[0].RunAudit().resolve_input(make_ctx(ds, {f"check__{n}": False for n in names})))
    assert props["none_chosen"].invalid


def test_audit_selected_samples_writes_only_those(ds_name, ops):
    import fiftyone as fo

    from vetset.core.result import read_result
    from vetset.plugins.fiftyone_app.api import out_dir_of

    ds = fo.load_dataset(ds_name)
    names = [n for n in ops[0]._hooks().checks.names()]
    before = dict(zip(*ds.values(["id", "orientation"])))
    assert all(before.values())
    stored = read_result(out_dir_of(ds))["stages"]["audit"]
    ds.set_values("orientation", [None] * len(ds))
    chosen = sorted(before)[:5]
    params = {f"check__{n}": n == "orientation" for n in names} | {"view_target": "SELECTED_SAMPLES"}
    ctx = make_ctx(ds, params, selected=chosen)
    out = ops[0].RunAudit().execute(ctx)
    assert out["target"] == "view" and out["num_samples"] == 5 and out["result_json"] is None
    after = dict(zip(*ds.values(["id", "orientation"])))
    assert {i: after[i] for i in chosen} == {i: before[i] for i in chosen}
    assert all(after[i] is None for i in after if i not in chosen)
    assert read_result(out_dir_of(ds))["stages"]["audit"] == stored  # result.json keeps the dataset audit
    ctx.executor.trigger.assert_called_once_with("reload_dataset", None)


def test_audit_whole_dataset_rewrites_fields_result_and_views(ds_name, ops):
    import fiftyone as fo

    from vetset.core.result import read_result
    from vetset.plugins.fiftyone_app.api import audit_summary, out_dir_of

    ds = fo.load_dataset(ds_name)
    old = read_result(out_dir_of(ds))
    ctx = make_ctx(ds, {"view_target": "DATASET", "audit__workers": 0})
    out = ops[0].RunAudit().execute(ctx)
    assert out["target"] == "dataset" and out["num_samples"] == 40
    new = read_result(out_dir_of(ds))
    assert new["stages"]["audit"]["num_images"] == 40
    assert new["finished_at"] >= old["finished_at"]
    assert set(new["stages"]) >= {"audit", "train", "validate"}  # other stages' blocks are kept
    assert ds.count("orientation") == 40
    assert out["metrics"]["audit"] == new["stages"]["audit"]["metrics"]
    summary = audit_summary(ds_name)
    assert summary["has_audit"]
    coverage = summary["coverage"]["all"]["orientation"]
    assert sum(sum(bins.values()) for bins in coverage.values()) == 40
    for row in summary["issues"]:
        assert row["count"] == len(ds.load_saved_view(row["name"]))


def test_augment_plan_writes_nothing_and_apply_writes_the_plan(hymenoptera_dir, session_tmp, tmp_path, ops):
    import fiftyone as fo
    from app_data import subset_tree

    from vetset.core.dataset import load_dataset
    from vetset.plugins.fiftyone_app.api import run_stages
    from vetset.plugins.fiftyone_app.augment_op import Augment

    name = "app-hym40-augment"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    ds, _ = load_dataset(subset_tree(hymenoptera_dir, session_tmp / "hym40"), name=name)
    assert "no_audit" in _props(Augment().resolve_input(make_ctx(ds)))
    run_stages(name, {"audit": {"workers": 0}}, out_dir=tmp_path / "run", log=lambda m: None)
    assert "no_audit" not in _props(Augment().resolve_input(make_ctx(ds)))
    plan_opts = Augment().resolve_execution_options(make_ctx(ds, {"mode": "plan"}))
    apply_opts = Augment().resolve_execution_options(make_ctx(ds, {"mode": "apply"}))
    assert not plan_opts.allow_delegated_execution  # a plan is quick and shown at once
    assert apply_opts.allow_delegated_execution and apply_opts.default_choice_to_delegated
    params = {"augment__min_count": 12, "augment__workers": 0, "augment__reaudit": False}

    ctx = make_ctx(ds, params | {"mode": "plan"})
    plan = Augment().execute(ctx)
    assert plan["images"] == sum(c["planned"] for c in plan["classes"]) >= 4  # 10 -> 12 per class at least
    assert {c["label"]: c["target"] for c in plan["classes"]} == {"ants": 12, "bees": 12}
    assert len(ds) == 40 and not (tmp_path / "run" / "augment" / "images").exists()

    ctx = make_ctx(ds, params | {"mode": "apply"})
    out = Augment().execute(ctx)
    ds.reload()
    augmented = ds.match_tags("augmented")
    assert len(augmented) == plan["images"] == out["metrics"]["augment"]["augmented_images"]
    assert all(p.startswith(str(tmp_path / "run")) for p in augmented.values("filepath"))
    assert len(ds.match_tags("train")) == 20 + plan["images"]
    ctx.ops.set_view.assert_called_once_with(name="augmented")
    fo.delete_dataset(name)


def test_label_issues_form_offers_list_options_as_multi_select(ds_name, ops):
    """List-valued options (label_noise.splits: list of fixed choices) are multi-selects that validate."""
    import fiftyone as fo

    ds = fo.load_dataset(ds_name)
    props = _props(ops[0].FindLabelIssues().resolve_input(make_ctx(ds)))
    splits = props["label_noise__splits"]
    view = splits.view.to_json()
    assert view["name"] == "AutocompleteView" and view["allow_user_input"] is False
    assert [c["value"] for c in view["choices"]] == ["train", "val", "test"]
    assert splits.default == ["train", "val", "test"]
    ok = _props(ops[0].FindLabelIssues().resolve_input(make_ctx(ds, {"label_noise__splits": ["val"]})))
    assert not getattr(ok["label_noise__splits"], "invalid", False)
    bad = _props(ops[0].FindLabelIssues().resolve_input(make_ctx(ds, {"label_noise__splits": ["holdout"]})))
    assert bad["label_noise__splits"].invalid is True and "train" in bad["label_noise__splits"].error_message
