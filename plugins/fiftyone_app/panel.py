"""The vetset audit panel: class balance per split, class x property coverage, issue counts.

Everything shown comes from :func:`vetset.plugins.fiftyone_app.api.audit_summary` (the run's
``result.json`` plus live counts of vetset's saved views). Clicking an issue row loads its
saved view in the grid next to the panel.
"""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types

from vetset.plugins.fiftyone_app.navigation import PANEL_NAME

SPLIT_ORDER = ("train", "val", "test", "all")


class AuditPanel(foo.Panel):
    """Audit summary of the current dataset."""

    @property
    def config(self):
        return foo.PanelConfig(name=PANEL_NAME, label="vetset audit", icon="fact_check",
                               help_markdown="Audit summary written by vetset (`recipes run`, or the "
                                             "'vetset: audit dataset' operator). Click an issue row to "
                                             "open its saved view.")

    # -- events ----------------------------------------------------------------------
    def on_load(self, ctx):
        from vetset.core.errors import VetsetError
        from vetset.plugins.fiftyone_app.api import audit_summary, balance_rows, coverage_rows

        if ctx.dataset is None:
            ctx.panel.state.summary = None
            return
        try:
            summary = audit_summary(ctx.dataset.name)
        except VetsetError as exc:
            ctx.panel.state.error = str(exc)
            return
        ctx.panel.state.error = None
        splits = [s for s in SPLIT_ORDER if s in summary["coverage"]] or ["all"]
        split = ctx.panel.state.split if ctx.panel.state.split in splits else splits[-1]
        columns, cov_rows = coverage_rows(summary["coverage"], split)
        ctx.panel.state.summary = {k: summary[k] for k in (
            "dataset", "num_samples", "has_audit", "result_json", "finished_at", "stages_run")}
        ctx.panel.state.splits = splits
        ctx.panel.state.split = split
        ctx.panel.state.balance_splits = [s for s in SPLIT_ORDER if s in summary["class_counts"]]
        ctx.panel.state.balance = balance_rows(summary["class_counts"])
        # one small table per property (orientation, colour, clarity): narrow enough for a split panel
        props = list(dict.fromkeys(col.split(":", 1)[0] for col in columns))
        ctx.panel.state.coverage_props = {
            prop: [col.split(":", 1)[1] for col in columns if col.startswith(prop + ":")] for prop in props}
        for prop, bins in ctx.panel.state.coverage_props.items():
            ctx.panel.state.set(f"coverage_{prop}",
                                [{"class": r["class"], **{b: r[f"{prop}:{b}"] for b in bins}} for r in cov_rows])
        rows = sorted(summary["issues"], key=lambda r: -r["count"])  # stable: registry order within a count
        ctx.panel.state.issues = [{"view": r["name"], "count": r["count"], "description": r["description"]}
                                  for r in rows]
        ctx.panel.state.metrics = summary["metrics"]
        ctx.panel.state.slices = slice_rows(summary.get("slices") or {})
        ctx.panel.state.test_slices = slice_rows(summary.get("test_slices") or {}, limit=5)
        ctx.panel.state.rounds = round_rows(summary.get("iterate") or {})
        ctx.panel.state.drift = [r["verdict"] for r in (summary.get("drift") or {}).get("drifted") or []][:8]
        ctx.panel.state.brain_keys = [k for k in ctx.dataset.list_brain_runs()
                                      if k in ("vetset_similarity", "vetset_embeddings")]
        ctx.panel.data.balance_plot = _balance_plot(summary["class_counts"])

    def on_change_dataset(self, ctx):
        self.on_load(ctx)

    def refresh(self, ctx):
        self.on_load(ctx)

    def change_split(self, ctx):
        ctx.panel.state.split = ctx.params.get("value") or ctx.panel.state.split
        self.on_load(ctx)

    def open_issue(self, ctx):
        """Row action of the issues table: load that row's saved view."""
        rows = ctx.panel.state.issues or []
        row = ctx.params.get("row")
        if row is None or not (0 <= int(row) < len(rows)):
            return
        ctx.ops.set_view(name=rows[int(row)]["view"])

    def open_slice(self, ctx):
        """Row action of the failure-slices table: load that slice's saved view of errors."""
        _open_row(ctx, ctx.panel.state.slices, "view")

    def open_test_slice(self, ctx):
        """Row action of the test split's failure-slices table."""
        _open_row(ctx, ctx.panel.state.test_slices, "view")

    def open_fixed(self, ctx):
        """Row action of the rounds table: the val images that round fixed (``iterate/round<r>/fixed``)."""
        _open_row(ctx, ctx.panel.state.rounds, "fixed_view")

    def open_broken(self, ctx):
        """Row action of the rounds table: the val images that round broke (``iterate/round<r>/broken``)."""
        _open_row(ctx, ctx.panel.state.rounds, "broken_view")

    def run_audit(self, ctx):
        ctx.prompt("@vetset/vetset/run_audit", on_success=self.refresh)

    # -- layout ----------------------------------------------------------------------
    def render(self, ctx):
        panel = types.Object()
        state = ctx.panel.state
        if state.error:
            panel.view("error", types.Warning(label=state.error))
            return types.Property(panel, view=types.GridView(orientation="vertical"))
        summary = state.summary or {}
        title = f"##### vetset audit of {summary.get('dataset', '-')} ({summary.get('num_samples', 0)} samples)"
        panel.md(title, name="title")
        menu = panel.menu("menu", variant="square")
        menu.btn("refresh", label="Refresh", icon="refresh", on_click=self.refresh)
        menu.btn("run_audit", label="Run audit", icon="fact_check", on_click=self.run_audit)
        if not summary.get("has_audit"):
            panel.view("no_audit", types.Notice(
                label="No audit result yet for this dataset: run 'vetset: audit dataset' "
                      "(or `recipes run audit --dataset NAME`). Class counts below are live."))
        else:
            panel.md(f"Results: `{summary.get('result_json')}` (finished {summary.get('finished_at') or '-'}; "
                     f"stages: {', '.join(summary.get('stages_run') or [])})", name="source")

        panel.md("**Class balance per split**", name="balance_title")
        balance = types.TableView()
        balance.add_column("class", label="class")
        for split in state.balance_splits or []:
            balance.add_column(split, label=split)
        balance.add_column("share", label="share of all")
        panel.list("balance", types.Object(), view=balance)
        panel.plot("balance_plot", layout={"barmode": "group", "height": 260, "margin": {"t": 10, "b": 40},
                                           "yaxis": {"title": "images"}})

        panel.md("**Coverage: class x property** (images per bin)", name="coverage_title")
        if state.coverage_props:
            splits = types.TabsView()
            for split in state.splits or []:
                splits.add_choice(split, label=split)
            panel.enum("split", splits.values(), default=state.split, view=splits, on_change=self.change_split)
            for prop, bins in state.coverage_props.items():
                coverage = types.TableView()
                coverage.add_column("class", label=prop)
                for b in bins:
                    coverage.add_column(b, label=b)
                panel.list(f"coverage_{prop}", types.Object(), view=coverage)
        else:
            panel.md("_No coverage in the audit result._", name="no_coverage")

        panel.md("**Issues**: vetset's saved views (hover a name for what it holds; Open loads it)",
                 name="issues_title")
        if state.issues:
            issues = types.TableView()
            issues.add_column("view", label="saved view")
            issues.add_column("count", label="samples")
            for i, row in enumerate(state.issues):  # what each view holds, on hover (keeps the table narrow)
                if row.get("description"):
                    issues.add_tooltip(i, "view", row["description"])
            issues.add_row_action("open", on_click=self.open_issue, label="Open", icon="open_in_new",
                                  tooltip="Load this saved view")
            panel.list("issues", types.Object(), view=issues)
        else:
            panel.md("_No vetset saved views on this dataset yet._", name="no_issues")

        if state.drift:
            panel.md("**Train vs validation drift**\n\n" + "\n".join(f"- {v}" for v in state.drift), name="drift")
        if state.slices:
            panel.md("**Failure slices** (val error rate by class x property bin; worse slices in a bin the "
                     "class's train images lack first, then worst first; Open loads the slice's errors)",
                     name="slices_title")
            panel.list("slices", types.Object(), view=_slice_table(
                "open_slice", self.open_slice, "Load this slice's saved view of errors"))
        if state.test_slices:
            panel.md("**Failure slices on the test split** (Open loads the slice's test errors)",
                     name="test_slices_title")
            panel.list("test_slices", types.Object(), view=_slice_table(
                "open_test_slice", self.open_test_slice, "Load this slice's saved view of test errors"))
        if state.rounds:
            panel.md("**Retraining rounds** (each against the model it was compared with on the same val "
                     "images; paired bootstrap 95% interval of the difference)", name="rounds_title")
            table = types.TableView()
            for key, label in (("round", "round"), ("accuracy", "val accuracy"), ("macro_f1", "macro F1"),
                               ("diff", "accuracy diff [CI]"), ("verdict", "verdict"), ("changed", "fixed / broken"),
                               ("kept", "kept")):
                table.add_column(key, label=label)
            table.add_row_action("open_fixed", on_click=self.open_fixed, label="Fixed", icon="check",
                                 tooltip="Load the val images this round fixed")
            table.add_row_action("open_broken", on_click=self.open_broken, label="Broken", icon="close",
                                 tooltip="Load the val images this round broke")
            panel.list("rounds", types.Object(), view=table)
        brain = state.brain_keys or []
        if brain:  # written by the embed stage
            lines = []
            if "vetset_similarity" in brain:
                lines.append("- **Similar images**: select samples, then *Sort by image similarity* in the grid's "
                             "actions, *Show similar samples*, then *Show results* (brain key `vetset_similarity`)")
            if "vetset_embeddings" in brain:
                lines.append("- **Embedding map**: open the *Embeddings* panel, brain key `vetset_embeddings`; "
                             "*Color by* `ground_truth.label`, `outlier_score`, `embed_group`, or `label_quality` / "
                             "`prediction` when label_noise / validate ran")
            panel.md("**Embeddings** (the embed stage)\n" + "\n".join(lines), name="embeddings")
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2, padding=1))


def slice_rows(slices: dict[str, Any], limit: int = 10) -> list[dict[str, Any]]:
    """Rows of the panel's failure-slices table from the validate block's ``slices``: the worst
    ``limit`` by class, then the worst 3 across classes, in the slices' ranking; ``train`` is the
    bin's share of the class's train images and their count (``"0% (0), not covered"`` under the
    audit's coverage-gap share; ``"-"`` without one); ``view`` is the saved view (or ``None``)."""
    rows = []
    for r in (slices.get("by_class") or [])[:limit] + (slices.get("across_classes") or [])[:3]:
        lo, hi = r["ci"]
        rest = r.get("rest_error_rate")
        share = r.get("train_share")
        rows.append({"slice": r["label"], "errors": f"{r['errors']} / {r['n']}",
                     "rate": f"{r['error_rate']:.0%} ({lo:.0%}-{hi:.0%})",
                     "rest": "-" if rest is None else f"{rest:.0%}",
                     "train": "-" if share is None else f"{share:.0%} ({r['train_n']})"
                     + (", not covered" if r.get("uncovered") else ""), "view": r.get("view")})
    return rows


def round_rows(it: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the panel's rounds table from the iterate block: one per round (round 0 the
    validated model); ``fixed_view`` / ``broken_view`` are the saved views (``None`` for round 0)."""
    rows = []
    for r in it.get("rounds") or []:
        c = r.get("compare") or {}
        acc = c.get("accuracy") or {}
        f1 = r.get("macro_f1")
        views = [v for v in r.get("views") or {}]
        rows.append({"round": r["round"], "accuracy": f"{r['accuracy']:.3f}",
                     "macro_f1": "-" if f1 is None else f"{f1:.3f}",
                     "diff": f"{acc['diff']:+.3f} [{acc['ci'][0]:+.3f}, {acc['ci'][1]:+.3f}]" if acc else "-",
                     "verdict": f"{c['verdict']} (vs round {c['against_round']})" if c else "baseline",
                     "changed": f"{c.get('fixed')} / {c.get('broken')}" if c else "-",
                     "kept": "yes" if r["round"] == it.get("best_round") else "",
                     "fixed_view": next((v for v in views if v.endswith("/fixed")), None),
                     "broken_view": next((v for v in views if v.endswith("/broken")), None)})
    return rows


def _open_row(ctx: Any, rows: list[dict[str, Any]] | None, key: str) -> None:
    """Load the saved view named in ``rows[ctx.params["row"]][key]`` (nothing when absent)."""
    rows = rows or []
    row = ctx.params.get("row")
    if row is None or not (0 <= int(row) < len(rows)) or not rows[int(row)].get(key):
        return
    ctx.ops.set_view(name=rows[int(row)][key])


def _balance_plot(class_counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Plotly bar traces: one per split (``all`` left out), classes on the x axis."""
    traces = []
    for split in SPLIT_ORDER[:-1]:
        counts = class_counts.get(split)
        if counts:
            traces.append({"type": "bar", "name": split, "x": list(counts), "y": list(counts.values())})
    return traces


def _slice_table(action: str, on_click: Any, tooltip: str) -> Any:
    """The failure-slice table (val or test): its columns and the Open row action."""
    table = types.TableView()
    for key, label in (("slice", "slice"), ("errors", "errors / n"), ("rate", "error rate (95% CI)"),
                       ("rest", "rest of class"), ("train", "train share (images)")):
        table.add_column(key, label=label)
    table.add_row_action(action, on_click=on_click, label="Open", icon="open_in_new", tooltip=tooltip)
    return table
