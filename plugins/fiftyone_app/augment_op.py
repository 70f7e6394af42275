"""The augmentation operator: plan (nothing written) or apply the augment stage."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vetset.plugins.fiftyone_app import forms
from vetset.plugins.fiftyone_app.operators import _hooks, _open_view, _run


class Augment(foo.Operator):
    """Plan albumentations augmentation for the audit's coverage gaps, or apply the plan."""

    @property
    def config(self):
        return foo.OperatorConfig(name="augment", label="vetset: plan and apply augmentation", dynamic=True,
                                  allow_immediate_execution=True, allow_delegated_execution=True,
                                  default_choice_to_delegated=True, icon="auto_fix_high")

    def resolve_execution_options(self, ctx):
        from fiftyone.operators.executor import ExecutionOptions

        apply = ctx.params.get("mode", "plan") == "apply"
        return ExecutionOptions(allow_immediate_execution=True, allow_delegated_execution=apply,
                                default_choice_to_delegated=apply)

    def resolve_input(self, ctx):
        from vetset.plugins.fiftyone_app.api import stored_result

        inputs = types.Object()
        modes = types.RadioGroup()
        modes.add_choice("plan", label="Plan", description="Show how many new train images each class, "
                                                           "policy and coverage cell would get; write nothing.")
        modes.add_choice("apply", label="Apply", description="Write the planned images (under the run folder) "
                                                             "as train samples tagged 'augmented', then re-audit.")
        inputs.enum("mode", modes.values(), default="plan", label="Mode", view=modes)
        if not (stored_result(ctx.dataset).get("stages") or {}).get("audit"):
            forms.warning(inputs, "no_audit", "This dataset has no audit result yet",
                          "The plan starts from the audit's coverage table; without one the dataset is audited "
                          "first (fields and tags are written).")
        forms.stage_form(inputs, _hooks(), "augment", ctx.params)
        return types.Property(inputs, view=types.View(label="vetset: augmentation"))

    def execute(self, ctx):
        spec = _hooks().stages["augment"]
        options = forms.options_from_params(ctx.params, spec.options, "augment")
        if ctx.params.get("mode", "plan") == "apply":
            out = _run(ctx, {"augment": options})
            _open_view(ctx, "augmented")
            return out
        from vetset.plugins.fiftyone_app.api import plan_augmentation

        with forms.reporting(ctx) as log:
            plan = plan_augmentation(ctx.dataset.name, options, hooks=_hooks(), log=log)
        return {"mode": "plan", "plan_key": plan["plan_key"], "images": plan["images"],
                "output_dir": plan["output_dir"], "by_policy": plan["plan"]["by_policy"],
                "classes": [{k: c[k] for k in ("label", "before", "target", "planned", "status")}
                            for c in plan["plan"]["classes"]],
                "cells": [{"cell": f"{c['label']} {c['property']}={c['bin']}", "policy": c["policy"] or "-",
                           "before": f"{c['before_count']}/{c['before_total']}",
                           "target_share": c["target_share"], "planned": c["planned"], "status": c["status"]}
                          for c in plan["plan"]["cells"]]}

    def resolve_output(self, ctx):
        if ctx.params.get("mode", "plan") != "plan":
            return forms.summary_output(ctx, "Augmentation written")
        outputs = types.Object()
        outputs.int("images", label="New train images the plan would write")
        outputs.str("output_dir", label="They would go to")
        outputs.obj("by_policy", label="Images per policy", view=types.JSONView())
        classes = types.TableView()
        for key in ("label", "before", "target", "planned", "status"):
            classes.add_column(key, label=key)
        outputs.list("classes", types.Object(), label="Per class (train split)", view=classes)
        cells = types.TableView()
        for key in ("cell", "policy", "before", "target_share", "planned", "status"):
            cells.add_column(key, label=key.replace("_", " "))
        outputs.list("cells", types.Object(), label="Coverage cells", view=cells)
        return types.Property(outputs, view=types.View(label="Augmentation plan (nothing written)"))
