"""vetset's work operators (audit, label issues, training, recipes): thin forms over core.

Each operator builds its form from what the pluggy plugins registered (stages and their
pydantic options, checks, recipes, saved views), validates it in ``resolve_input``, and
in ``execute`` calls one ``vetset.plugins.fiftyone_app.api`` function with the dataset's name. Long
work (training, label noise, augmentation, whole recipes) defaults to delegated execution
(``fiftyone delegated launch`` runs it) and reports progress with ``ctx.set_progress``.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vetset.plugins.fiftyone_app import forms
from vetset.plugins.fiftyone_app.forms import SEP


def _hooks() -> Any:
    from vetset.core.manager import get_hooks

    return get_hooks()


def _run(ctx: Any, stages: dict[str, dict[str, Any]], view_ids: list[str] | None = None,
         fail_on: dict[str, float] | None = None) -> dict[str, Any]:
    """Call ``app_api.run_stages`` with App progress; return a small JSON-able summary."""
    from vetset.plugins.fiftyone_app.api import run_stages

    with forms.reporting(ctx) as log:
        out = run_stages(ctx.dataset.name, stages, view_ids=view_ids, hooks=_hooks(), log=log, fail_on=fail_on)
    forms.reload_app(ctx)
    return {"dataset": out["dataset"], "target": out["target"], "num_samples": out["num_samples"],
            "out_dir": out["out_dir"], "result_json": out["result_json"], "stages": list(out["stages"]),
            "metrics": {name: (block or {}).get("metrics", {}) for name, block in out["stages"].items()},
            "saved_views": out["saved_views"],
            "fail_on_failures": list((out.get("fail_on") or {}).get("failures", []))}


def _open_view(ctx: Any, name: str) -> None:
    if ctx.params.get("open_view", True) and name in ctx.dataset.list_saved_views() and not forms.is_delegated(ctx):
        ctx.ops.set_view(name=name)


class RunAudit(foo.Operator):
    """Audit the dataset, the current view or the selected samples with the chosen checks."""

    @property
    def config(self):
        return foo.OperatorConfig(name="run_audit", label="vetset: audit dataset", dynamic=True,
                                  allow_immediate_execution=True, allow_delegated_execution=True,
                                  icon="fact_check")

    def resolve_input(self, ctx):
        inputs = types.Object()
        hooks = _hooks()
        spec = forms.stage_or_warning(inputs, hooks, "audit")
        if spec is None:
            return types.Property(inputs, view=types.View(label="vetset: audit"))
        inputs.view_target(ctx, action_description="Audit", allow_selected_samples=True)
        if ctx.params.get("view_target") not in (None, "DATASET"):
            inputs.view("subset_notice", types.Notice(
                label="Fields and tags are written for these samples; the audit/... saved views are rebuilt; "
                      "result.json and the panel keep the last whole-dataset audit."))
        target = ctx.target_view()
        if len(target) == 0:
            forms.warning(inputs, "empty_target", "There are no samples to audit", block=True)
        names = hooks.checks.names()
        if not names:
            forms.warning(inputs, "no_checks", "No check plugin is registered",
                          "`recipes plugins` lists the loaded plugins.", block=True)
        else:
            inputs.view("checks_header", types.Header(label="Checks", divider=True))
            for name in names:
                inputs.bool(f"check{SEP}{name}", default=True, label=name,
                            description=hooks.checks[name].description, view=types.CheckboxView())
            if not _chosen_checks(ctx.params, names):
                forms.warning(inputs, "none_chosen", "Choose at least one check", block=True)
        inputs.view("options_header", types.Header(label="Audit options", divider=True))
        unticked = tuple(f"checks.{n}" for n in names if n not in _chosen_checks(ctx.params, names))
        # the check boxes above stand for the `select` option; unticked checks' options are hidden
        props = forms.model_inputs(inputs, spec.options, "audit", skip=("select", *unticked))
        values = _audit_options(ctx.params, spec.options, names)
        forms.validate_options(inputs, spec.options, values, props, "audit")
        return types.Property(inputs, view=types.View(label="vetset: audit"))

    def execute(self, ctx):
        import fiftyone.core.dataset as fod

        spec = _hooks().stages["audit"]
        target = ctx.target_view()
        view_ids = None if isinstance(target, fod.Dataset) else target.values("id")
        options = _audit_options(ctx.params, spec.options, _hooks().checks.names())
        return _run(ctx, {"audit": options}, view_ids=view_ids)

    def resolve_output(self, ctx):
        return forms.summary_output(ctx, "Audit finished")


def _chosen_checks(params: dict[str, Any], names: list[str]) -> list[str]:
    return [n for n in names if params.get(f"check{SEP}{n}", True)]


def _audit_options(params: dict[str, Any], model: type, names: list[str]) -> dict[str, Any]:
    """The audit stage options from the form, with the chosen checks.

    The audit options name the checks to run in a ``select`` field and hold each check's
    options under ``checks.<name>`` (see ``vetset.plugins.audit.stage``); checks left
    unticked are left out of ``select``.
    """
    values = forms.options_from_params(params, model, "audit")
    chosen = _chosen_checks(params, names)
    if "select" in model.model_fields and len(chosen) < len(names):
        values["select"] = chosen
    return values


class FindLabelIssues(foo.Operator):
    """Find likely label errors with cleanlab on out-of-fold pred_probs."""

    @property
    def config(self):
        return foo.OperatorConfig(name="find_label_issues", label="vetset: find label issues", dynamic=True,
                                  allow_immediate_execution=True, allow_delegated_execution=True,
                                  default_choice_to_delegated=True, icon="rule")

    def resolve_input(self, ctx):
        inputs = types.Object()
        classes = ctx.dataset.distinct("ground_truth.label") if "ground_truth" in ctx.dataset.get_field_schema() else []
        if len(classes) < 2:
            forms.warning(inputs, "few_classes", "Label noise needs at least two classes in ground_truth",
                          f"The dataset has {len(classes)}.", block=True)
        forms.stage_form(inputs, _hooks(), "label_noise", ctx.params)
        forms.open_view_input(inputs, "label_issues")
        return types.Property(inputs, view=types.View(label="vetset: find label issues"))

    def execute(self, ctx):
        spec = _hooks().stages["label_noise"]
        out = _run(ctx, {"label_noise": forms.options_from_params(ctx.params, spec.options, "label_noise")})
        _open_view(ctx, "label_issues")
        return out

    def resolve_output(self, ctx):
        return forms.summary_output(ctx, "Label issues found")


class TrainAndValidate(foo.Operator):
    """Train a timm model on the train split and validate it (saved view ``validation_errors``)."""

    @property
    def config(self):
        return foo.OperatorConfig(name="train_and_validate", label="vetset: train and validate", dynamic=True,
                                  allow_immediate_execution=True, allow_delegated_execution=True,
                                  default_choice_to_delegated=True, icon="model_training")

    def resolve_input(self, ctx):
        inputs = types.Object()
        hooks = _hooks()
        do_train = ctx.params.get("do_train", True)
        do_validate = ctx.params.get("do_validate", True)
        inputs.bool("do_train", default=True, label="Train", view=types.CheckboxView())
        inputs.bool("do_validate", default=True, label="Validate", view=types.CheckboxView(),
                    description="Write predictions, evaluate them (eval_key 'eval') and save 'validation_errors'.")
        if not (do_train or do_validate):
            forms.warning(inputs, "nothing", "Choose Train, Validate or both", block=True)
        n_train, n_val = len(ctx.dataset.match_tags("train")), len(ctx.dataset.match_tags("val"))
        if do_train and (n_train == 0 or n_val == 0):
            forms.warning(inputs, "splits", "Training needs samples tagged 'train' and 'val'",
                          f"The dataset has {n_train} train and {n_val} val samples.", block=True)
        if do_train and not _cuda():
            forms.warning(inputs, "cpu", "No CUDA GPU on the server: training runs on the CPU",
                          "Schedule it (delegated) so the App stays responsive.")
        if do_train:
            inputs.view("train_header", types.Header(label="Training options", divider=True))
            checked = forms.stage_form(inputs, hooks, "train", ctx.params)
            if checked is not None:
                _check_model_name(checked[0], checked[1])
        if do_validate:
            inputs.view("validate_header", types.Header(label="Validation options", divider=True))
            forms.stage_form(inputs, hooks, "validate", ctx.params)
            forms.open_view_input(inputs, "validation_errors")
        return types.Property(inputs, view=types.View(label="vetset: train and validate"))

    def execute(self, ctx):
        hooks = _hooks()
        stages = {}
        for stage, flag in (("train", "do_train"), ("validate", "do_validate")):
            if ctx.params.get(flag, True):
                stages[stage] = forms.options_from_params(ctx.params, hooks.stages[stage].options, stage)
        out = _run(ctx, stages)
        _open_view(ctx, "validation_errors")
        return out

    def resolve_output(self, ctx):
        return forms.summary_output(ctx, "Training and validation finished")


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:
        return False


def _check_model_name(props: dict[str, Any], values: dict[str, Any]) -> None:
    """Flag ``model_name`` when it is not a timm model (the train plugin's own check)."""
    if "model_name" not in props or values.get("trainer", "timm") != "timm":
        return
    try:
        from vetset.plugins.train.options import check_model_name
    except ImportError:
        return
    from vetset.core.errors import VetsetError

    try:
        check_model_name(values.get("model_name", "resnet10t"))
    except VetsetError as exc:
        props["model_name"].invalid = True
        props["model_name"].error_message = str(exc)


class RunRecipe(foo.Operator):
    """Run any registered recipe (bundled or from a plugin) on this dataset."""

    @property
    def config(self):
        return foo.OperatorConfig(name="run_recipe", label="vetset: run a recipe", dynamic=True,
                                  allow_immediate_execution=True, allow_delegated_execution=True,
                                  default_choice_to_delegated=True, icon="playlist_play")

    def resolve_input(self, ctx):
        from vetset.core.errors import VetsetError
        from vetset.core.recipe import load_recipe

        inputs = types.Object()
        hooks = _hooks()
        choices = types.DropdownView()
        for name in hooks.recipes:
            choices.add_choice(name, label=name, description=hooks.recipes.plugin_of(name))
        inputs.enum("recipe", choices.values(), required=True, label="Recipe", view=choices,
                    description="Recipes registered by vetset's plugins (`recipes list`).")
        name = ctx.params.get("recipe")
        if name:
            try:
                recipe = load_recipe(name, hooks)
            except VetsetError as exc:
                forms.warning(inputs, "bad_recipe", f"Recipe {name!r} cannot be used", str(exc), block=True)
            else:
                inputs.view("recipe_notice", types.Notice(
                    label=f"{name}: {' → '.join(recipe.stage_names())}", description=recipe.description or None))
        return types.Property(inputs, view=types.View(label="vetset: run a recipe"))

    def execute(self, ctx):
        from vetset.core.recipe import read_yaml, resolve_recipe_path

        raw = read_yaml(resolve_recipe_path(ctx.params["recipe"], _hooks().recipes))
        return _run(ctx, dict(raw.get("stages") or {}), fail_on=dict(raw.get("fail_on") or {}))

    def resolve_output(self, ctx):
        return forms.summary_output(ctx, "Recipe finished")
