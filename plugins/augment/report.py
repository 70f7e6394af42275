"""The augmentation report section (order 70) and the ``recipes plan`` tables.

Both are drawn from JSON only: the section from ``result["stages"]["augment"]``, the
tables from :meth:`vetset.plugins.augment.plan.Plan.summary`.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import esc, note, stat_cards, table, thumb_grid


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def _cell_rows(cells: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for c in cells:
        after = (f"{c['after_count']}/{c['after_total']} ({_pct(c['after_share'])})" if "after_share" in c else "-")
        if c["status"] == "infeasible":
            status = "infeasible: " + c["reason"]
        elif "reached" in c:
            status = "reached" if c["reached"] else "below target"
        else:
            status = "already at target" if c["status"] == "ok" else "planned"
        rows.append([c["label"], f"{c['property']}={c['bin']}", _pct(c["target_share"]),
                     f"{c['before_count']}/{c['before_total']} ({_pct(c['before_share'])})",
                     c["policy"] or "-", c["planned"], _pct(c["expected_share"]), after, status])
    return rows


CELL_HEADERS = ["class", "cell", "target", "before", "policy", "new", "planned share", "after", "status"]


def _class_rows(block: dict[str, Any]) -> list[list[Any]]:
    after = (block.get("after") or {}).get("class_counts", {})
    return [[c["label"], c["before"], c["target"], c["planned"],
             ", ".join(f"{k} {v}" for k, v in sorted(c["by_policy"].items())) or "-",
             after.get(c["label"], "-") if block.get("after") else "-"]
            for c in block["plan"]["classes"]]


def render_section(result: dict[str, Any], ctx: Any) -> str | None:
    """HTML of the augmentation section, or ``None`` when the run has no augment stage."""
    block = (result.get("stages") or {}).get("augment")
    if not block:
        return None
    m = block.get("metrics", {})
    w = block.get("write", {})
    parts = [stat_cards([
        ("augmented train images", m.get("augmented_images", 0), "augment.metrics.augmented_images"),
        ("written this run", w.get("written", 0), "augment.write.written"),
        ("cells planned", m.get("cells_planned", 0), "augment.metrics.cells_planned"),
        ("cells below target", m.get("cells_below_target", 0), "augment.metrics.cells_below_target"),
        ("cells infeasible", m.get("cells_infeasible", 0), "augment.metrics.cells_infeasible"),
    ])]
    if block.get("after") is None:
        parts.append(note("The dataset was not audited again after writing (<code>reaudit: false</code>).", "warn"))
    elif m.get("cells_below_target"):
        parts.append(note(f"{m['cells_below_target']} planned cell(s) are still below target after the re-audit; "
                          "the table shows which and the policy used.", "bad"))
    else:
        parts.append(note("Every planned cell reached its target share in the re-audit.", "good"))
    if w.get("failed"):
        parts.append(note(f"{w['failed']} image(s) failed: " + esc("; ".join(w.get("errors", []))), "warn"))
    parts.append(f"<p>New images are in <code>{esc(block['output_dir'])}</code>, tagged <code>augmented</code> "
                 "and <code>train</code> (saved view <code>augmented</code>); val and test are never augmented.</p>")
    parts.append("<h3>Coverage before and after (train split)</h3>")
    parts.append(table(CELL_HEADERS, _cell_rows(block.get("cells", [])), cls="num"))
    parts.append("<h3>Class counts (train split)</h3>")
    parts.append(table(["class", "before", "target", "new", "by policy", "after"], _class_rows(block), cls="num"))
    landed = block.get("landed", {})
    rows = [[name, ", ".join(p["targets"]) or "-", block["plan"]["by_policy"].get(name, 0),
             f"{landed[name]['landed']}/{landed[name]['targeted']}" if name in landed else "-",
             p["plugin"], p["description"]] for name, p in block.get("policies", {}).items()]
    parts.append("<h3>Policies</h3>")
    parts.append(table(["policy", "adds", "images", "landed in target cell", "from", "transforms"], rows))
    if ctx is not None and getattr(ctx, "dataset", None) is not None:
        parts.append(_examples(ctx, block))
    return "".join(parts)


def _examples(ctx: Any, block: dict[str, Any]) -> str:
    """Source/augmented pairs, two per policy."""
    from fiftyone import ViewField as F

    try:
        view = ctx.dataset.match_tags("augmented").match(F("filepath").starts_with(block["output_dir"].rstrip("/") + "/"))
        fps, srcs, pols = view.values(["filepath", "source_filepath", "aug_policy"])
    except Exception:  # the dataset was deleted since the run: no examples
        return ""
    items, seen = [], {}
    for fp, src, pol in zip(fps, srcs, pols):
        if seen.get(pol, 0) >= 2 or not src:
            continue
        seen[pol] = seen.get(pol, 0) + 1
        items += [(src, "source"), (fp, pol)]
    if not items:
        return ""
    return "<h3>Examples (source, then augmented)</h3>" + thumb_grid(items, ctx, view="augmented")


def plan_tables(summary: dict[str, Any], policies: dict[str, Any]) -> list[Any]:
    """Rich tables of a plan for ``recipes plan``: classes, cells, policies (nothing truncated)."""
    from rich.table import Table

    def make(title: str, *headers: str) -> Any:
        table = Table(title=title)
        for h in headers:
            table.add_column(h, overflow="fold")
        return table

    classes = make("Class counts (train)", "class", "now", "target", "new", "by policy")
    for c in summary["classes"]:
        classes.add_row(c["label"], str(c["before"]), str(c["target"]), str(c["planned"]),
                        ", ".join(f"{k} {v}" for k, v in sorted(c["by_policy"].items())) or "-")
    cells = make("Coverage cells (train)", "class", "cell", "target", "now", "policy", "new", "planned", "status")
    for row in _cell_rows(summary["cells"]):
        cells.add_row(*[str(x) for x in row[:-2]], row[-1])
    pols = make("Policies", "policy", "images", "adds", "transforms")
    for name, n in sorted(summary["by_policy"].items()):
        pol = policies[name]
        pols.add_row(name, str(n), ", ".join(f"{p}={b}" for p, b in pol.info.targets) or "-", pol.description)
    return [classes, cells, pols]
