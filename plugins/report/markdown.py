"""``report.md``: a short Markdown summary of a run for a pull request or a chat message.

It holds the headline counts, the ``fail_on`` gates, the recommended actions and every
stage's flat ``metrics``; the figures are those of ``result.json``, formatted as in the
HTML report.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import Action, fmt
from vetset.plugins.report.overview import num_samples, split_totals


def _cell(value: Any) -> str:
    text = "-" if value is None else (fmt(value) if isinstance(value, (int, float)) else str(value))
    return text.replace("|", "\\|").replace("\n", " ")


def markdown_summary(result: dict[str, Any], actions: list[Action], html_name: str = "report.html",
                     title: str | None = None) -> str:
    """The Markdown text of ``report.md``.

    Args:
        result: the run result.
        actions: ranked actions (:func:`vetset.plugins.report.actions.recommended_actions`).
        html_name: file name (or link) of the HTML report, linked at the end.
        title: heading; default ``vetset report: <dataset>``.
    """
    recipe = (result.get("recipe") or {}).get("name", "?")
    lines = [f"# {title or 'vetset report: ' + str(result.get('dataset', '?'))}", ""]
    facts = [f"recipe `{recipe}`", f"{_cell(num_samples(result))} images"]
    totals = split_totals(result)
    facts += [f"{_cell(n)} {split}" for split, n in totals.items() if split != "all"]
    if result.get("duration_s") is not None:
        facts.append(f"{result['duration_s']:.1f} s")
    facts.append(f"vetset {result.get('vetset_version', '?')}")
    lines += [" · ".join(facts), ""]

    fail_on = result.get("fail_on") or {}
    checked = fail_on.get("checked") or {}
    if checked:
        failures = fail_on.get("failures") or []
        lines.append(f"**fail_on: {'FAILED' if failures else 'passed'}** ({len(checked) - len(failures)} of "
                     f"{len(checked)} gates passed)")
        lines += [""] + [f"- :x: {f}" for f in failures] + ([""] if failures else [])

    lines.append("## Recommended actions")
    lines.append("")
    if actions:
        for i, a in enumerate(actions, 1):
            share = f" ({a.share:.1%} of the {a.share_of})" if a.share is not None else ""
            lines.append(f"{i}. **[{a.severity}]** {a.title}{share}")
    else:
        lines.append("None: no stage that ran found a problem.")
    lines.append("")

    skipped = [(stage, block["skipped"]) for stage, block in (result.get("stages") or {}).items()
               if isinstance(block, dict) and isinstance(block.get("skipped"), str) and block["skipped"]]
    if skipped:  # a stage that ran but checked nothing says why, here as on the console and in the HTML
        lines += ["## Skipped", ""] + [f"- **{_cell(stage)}**: {why}" for stage, why in skipped] + [""]

    rows = [(stage, name, value) for stage, block in (result.get("stages") or {}).items() if isinstance(block, dict)
            for name, value in (block.get("metrics") or {}).items()]
    if rows:
        lines += ["## Metrics", "", "| stage | metric | value |", "| --- | --- | ---: |"]
        lines += [f"| {_cell(s)} | `{_cell(n)}` | {_cell(v)} |" for s, n, v in rows]
        lines.append("")
    lines.append(f"Full report: [{html_name}]({html_name}) · data: `result.json` (schema {result.get('schema_version')})")
    return "\n".join(lines) + "\n"
