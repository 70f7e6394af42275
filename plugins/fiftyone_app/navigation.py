"""Navigation operators: open a saved view, open the audit panel."""

from __future__ import annotations

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vetset.plugins.fiftyone_app import forms
from vetset.plugins.fiftyone_app.operators import _hooks

#: The audit panel's registered name (see ``panel.py``).
PANEL_NAME = "vetset_audit"


class OpenSavedView(foo.Operator):
    """Load one of the dataset's saved views (vetset's first, with their sample counts)."""

    @property
    def config(self):
        return foo.OperatorConfig(name="open_saved_view", label="vetset: open a saved view", dynamic=True,
                                  icon="visibility")

    def resolve_input(self, ctx):
        from vetset.plugins.fiftyone_app.api import vetset_views

        inputs = types.Object()
        names = ctx.dataset.list_saved_views()
        if not names:
            forms.warning(inputs, "no_views", "This dataset has no saved views yet",
                          "Run 'vetset: audit dataset' or 'vetset: train and validate' to create them.", block=True)
            return types.Property(inputs, view=types.View(label="vetset: open a saved view"))
        ours = vetset_views(ctx.dataset, _hooks())
        choices = types.DropdownView()
        for row in ours:
            choices.add_choice(row["name"], label=f"{row['name']} ({row['count']} samples)",
                               description=row["description"] or None)
        for name in names:
            if name not in {r["name"] for r in ours}:
                choices.add_choice(name, label=name)
        default = "validation_errors" if "validation_errors" in names else (ours[0]["name"] if ours else names[0])
        inputs.enum("name", choices.values(), default=default, required=True, label="Saved view", view=choices)
        return types.Property(inputs, view=types.View(label="vetset: open a saved view"))

    def execute(self, ctx):
        name = ctx.params["name"]
        if name not in ctx.dataset.list_saved_views():
            from vetset.core.errors import DataError

            raise DataError(f"Dataset {ctx.dataset.name!r} has no saved view {name!r}.")
        ctx.ops.set_view(name=name)
        return {"name": name, "count": len(ctx.dataset.load_saved_view(name))}


class OpenAuditPanel(foo.Operator):
    """Open the vetset audit panel next to the samples grid."""

    @property
    def config(self):
        return foo.OperatorConfig(name="open_audit_panel", label="vetset: open the audit panel", icon="insights")

    def execute(self, ctx):
        ctx.ops.open_panel(PANEL_NAME, layout="horizontal", is_active=True)
