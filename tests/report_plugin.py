"""A throwaway third-party plugin used by the report tests.

It contributes what an outside check package would: a recipe stage (``class_stats``)
that counts images per split and class from the FiftyOne dataset, its report section
(a plotly bar chart, a table and thumbnails), and a section whose render raises, to show
that one broken plugin costs its own section only.
"""

from __future__ import annotations

from typing import Any

from vetset.core import NoOptions, ReportSection, Stage, hookimpl
from vetset.core.manager import BUILTIN_PLUGINS, Hooks, build_plugin_manager
from vetset.core.report_kit import figure, table, thumb_grid

PLUGIN_NAME = "acme-class-stats"
#: The built-ins of an audit run: recipes, the audit and its checks, the report.
AUDIT_BUILTINS = tuple(p for p in BUILTIN_PLUGINS if p.startswith(
    ("vetset.recipes.", "vetset.plugins.audit.", "vetset.plugins.report.")))
SECTION_TITLE = "Class statistics (acme)"
BROKEN_TITLE = "Acme broken section"


def render_class_stats(result: dict[str, Any], ctx: Any) -> str | None:
    block = (result.get("stages") or {}).get("class_stats")
    if not block:
        return None
    import plotly.graph_objects as go

    counts = block["counts"]
    classes = sorted({c for per in counts.values() for c in per})
    fig = go.Figure([go.Bar(name=split, x=classes, y=[per.get(c, 0) for c in classes]) for split, per in counts.items()])
    fig.update_layout(barmode="group", height=320, title="images per class")
    rows = [[c] + [counts[s].get(c, 0) for s in counts] for c in classes]
    grid = thumb_grid([tuple(e) for e in block["examples"]], ctx, view="acme/all")
    return figure(fig) + f'<div class="acme-table">{table(["class", *counts], rows)}</div>' + grid


def render_broken(result: dict[str, Any], ctx: Any) -> str:
    raise RuntimeError("acme section exploded")


class ClassStatsPlugin:
    """Registered in-process by the tests; counts how often its stage really ran."""

    def __init__(self, broken: bool = True):
        self.runs = 0
        self.broken = broken

    def run_stage(self, run: Any, options: Any) -> dict[str, Any]:
        from vetset.core.dataset import split_view

        self.runs += 1
        ds = run.dataset
        counts = {}
        for split in ("train", "val"):
            values = split_view(ds, split).count_values("ground_truth.label")
            counts[split] = {str(k): int(v) for k, v in sorted(values.items()) if k is not None}
        view = ds.match_tags("unreadable", bool=False)
        examples = [[fp, lab] for fp, lab in zip(view.values("filepath"), view.values("ground_truth.label"))]
        train = counts["train"]
        smallest = min(train.values())
        return {"counts": counts, "examples": examples,
                "metrics": {"smallest_class": smallest, "smallest_class_fraction": smallest / sum(train.values())}}

    @hookimpl
    def vetset_register_stages(self, register):
        register(Stage("class_stats", self.run_stage, NoOptions, "count images per class (acme)"))

    @hookimpl
    def vetset_register_report_sections(self, register):
        register(ReportSection("class_stats", SECTION_TITLE, render_class_stats, order=15))
        if self.broken:
            register(ReportSection("acme_broken", BROKEN_TITLE, render_broken, order=16))


def make_hooks(plugin: Any | None = None, builtins: tuple[str, ...] | None = None) -> Hooks:
    """Hooks with the report plugin (or ``builtins``) and ``plugin`` registered as a third party."""
    pm = build_plugin_manager(builtins=builtins or ("vetset.recipes.bundled", "vetset.plugins.report.stage"),
                              entry_points=False)
    if plugin is not None:
        pm.register(plugin, name=PLUGIN_NAME)
    return Hooks(pm)


def resolve_key(result: dict[str, Any], key: str) -> Any:
    """A stat card's ``data-key``: a dotted path from the result's top level, else under ``stages``."""
    from vetset.core.result import lookup

    node: Any = result
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return lookup(result, key)
        node = node[part]
    return node


_AUDIT_RUNS: dict[str, Any] = {}


def audit_run(hymenoptera_dir: Any, tmp_path_factory: Any) -> tuple[Any, dict[str, Any], ClassStatsPlugin, Hooks]:
    """One real ``audit`` + acme ``class_stats`` + ``report`` run on hymenoptera, shared by the report tests.

    Returns ``(run, result, plugin, hooks)``; computed once per test process.
    """
    if "hym" not in _AUDIT_RUNS:
        import fiftyone as fo

        from vetset.core.recipe import parse_recipe
        from vetset.core.run import Run

        name = "t-report-hym"
        if fo.dataset_exists(name):  # FiftyOne attaches to any running database service
            fo.delete_dataset(name)
        plugin = ClassStatsPlugin()
        hooks = make_hooks(plugin, builtins=AUDIT_BUILTINS)
        recipe = parse_recipe({"name": "acme-audit", "stages": {
            "audit": {}, "class_stats": {}, "report": {"max_thumbnails": 12}}}, hooks.stages)
        run = Run(recipe, hooks, data=hymenoptera_dir, dataset=name, out_dir=tmp_path_factory.mktemp("report-hym"),
                  log=lambda m: None)
        _AUDIT_RUNS["hym"] = (run, run.execute(), plugin, hooks)
    return _AUDIT_RUNS["hym"]
