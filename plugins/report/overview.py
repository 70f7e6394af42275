"""The report's overview section (order 0): what was run on which data, and the gates.

Everything comes from the run result: the dataset and its source, the recipe, the
vetset version, sample counts per split (``load.counts``, else ``audit.class_counts``),
the time each stage took, the ``fail_on`` gates, and the loader's warnings.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import ReportContext, esc, note, safe, stat_cards, table


def split_totals(result: dict[str, Any]) -> dict[str, int]:
    """``{split: images}`` from ``load.counts`` (or ``audit.class_counts``), ``all`` last.

    Returns an empty dict when neither is present.
    """
    counts = (result.get("load") or {}).get("counts") or \
        ((result.get("stages") or {}).get("audit") or {}).get("class_counts") or {}
    totals = {split: int(sum(v for v in per_class.values() if isinstance(v, (int, float))))
              for split, per_class in counts.items() if isinstance(per_class, dict)}
    if "all" in totals:
        totals["all"] = totals.pop("all")
    return totals


def num_samples(result: dict[str, Any]) -> int | None:
    """Samples in the dataset: ``load.num_samples``, else ``audit.num_images``, else ``None``."""
    load = result.get("load") or {}
    if isinstance(load.get("num_samples"), int):
        return load["num_samples"]
    audit = (result.get("stages") or {}).get("audit") or {}
    return audit.get("num_images") if isinstance(audit.get("num_images"), int) else None


def _classes(result: dict[str, Any]) -> list[str]:
    load = result.get("load") or {}
    if load.get("classes"):
        return list(load["classes"])
    counts = ((result.get("stages") or {}).get("audit") or {}).get("class_counts") or {}
    return sorted({c for per in counts.values() if isinstance(per, dict) for c in per})


def gate_rows(result: dict[str, Any]) -> list[list[Any]]:
    """Rows ``[metric, value, threshold, badge]`` of the ``fail_on`` gates that were checked."""
    rows = []
    for metric, gate in ((result.get("fail_on") or {}).get("checked") or {}).items():
        badge = '<span class="badge fail">failed</span>' if gate.get("failed") else '<span class="badge pass">passed</span>'
        value = gate.get("value")
        rows.append([safe(f"<code>{esc(metric)}</code>"), value if value is not None else "not computed",
                     gate.get("threshold"), safe(badge)])
    return rows


def render_overview(result: dict[str, Any], ctx: ReportContext) -> str:
    """HTML of the overview section; always present (every run has a dataset and a recipe)."""
    load = result.get("load") or {}
    recipe = result.get("recipe") or {}
    totals = split_totals(result)
    stats = [("images", num_samples(result), "load.num_samples"),
             ("classes", len(_classes(result)))]
    for split in ("train", "val", "test"):
        if split in totals:
            stats.append((f"{split} images", totals[split]))
    if "unreadable" in load:
        stats.append(("unreadable files", load.get("unreadable"), "load.unreadable"))
    if load.get("skipped_non_image"):
        stats.append(("non-image files skipped", load["skipped_non_image"], "load.skipped_non_image"))
    if load.get("skipped_hidden"):
        stats.append(("hidden folders skipped", load["skipped_hidden"], "load.skipped_hidden"))
    stats.append(("run time (s)", result.get("duration_s"), "duration_s"))
    parts = [stat_cards(stats)]

    failures = (result.get("fail_on") or {}).get("failures") or []
    gates = gate_rows(result)
    if failures:
        items = "".join(f"<li>{esc(f)}</li>" for f in failures)
        parts.append(note(f"<strong>The recipe's fail_on gates failed</strong> — <code>recipes run</code> exits "
                          f"with code 1:<ul>{items}</ul>", "bad"))
    elif gates:
        parts.append(note(f"The recipe's fail_on gates passed ({len(gates)} of {len(gates)}).", "good"))

    facts = [
        ("Dataset", f"<code>{esc(result.get('dataset', '-'))}</code>"),
        ("Source", f"<code>{esc(result.get('source') or '-')}</code>"),
        ("Format", esc(load.get("format", "-"))),
        ("Recipe", f"<strong>{esc(recipe.get('name', '-'))}</strong> <span class=\"muted\">{esc(recipe.get('source', ''))}</span>"),
        ("Description", esc(recipe.get("description") or "-")),
        ("Classes", esc(", ".join(_classes(result)) or "-")),
        ("Split", "made by vetset (stratified, seeded)" if load.get("split_made") else "as given by the data"),
        ("Started", esc(result.get("started_at") or "-")),
        ("Finished", esc(result.get("finished_at") or "in progress")),
        ("Output folder", f"<code>{esc(result.get('out_dir', '-'))}</code>"),
        ("vetset version", esc(result.get("vetset_version", "-"))),
    ]
    left = "<h3>Run</h3><dl class=\"facts\">" + "".join(f"<dt>{k}</dt><dd>{v}</dd>" for k, v in facts) + "</dl>"
    right = ""
    times = result.get("stage_times_s") or {}
    stage_rows = [[safe(f"<code>{esc(name)}</code>"), times.get(name)] for name in (result.get("stages") or {})]
    if stage_rows:
        right += "<h3>Stages</h3>" + table(["stage", "seconds"], stage_rows)
    if totals:
        right += "<h3>Images per split</h3>" + table(["split", "images"], [[s, n] for s, n in totals.items()])
    parts.append(f'<div class="cols"><div>{left}</div><div>{right}</div></div>')
    if gates:
        parts.append("<h3>fail_on gates</h3>" + table(["metric", "value", "fails when above", "result"], gates))
    for warning in load.get("warnings") or []:
        parts.append(note(esc(warning), "warn"))
    return "".join(parts)
