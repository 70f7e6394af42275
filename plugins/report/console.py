"""The diagnosis lines of the console summary ``recipes run`` prints at the end of a run.

From ``result.json`` only, like the reports: the worst failure slice of the val (and test)
split, the drift verdicts, and each retraining round against the one it was compared with.
"""

from __future__ import annotations

from typing import Any

from vetset.plugins.validate._wording import coverage_text


def _slice_line(sl: dict[str, Any], split: str) -> str | None:
    worst = sl.get("worst")
    if not worst:
        return None
    lo, hi = worst["ci"]
    rest = worst.get("rest_error_rate")
    where = f"; saved view {worst['view']}" if worst.get("view") else ""
    return (f"worst {split} slice: {worst['label']}: {worst['errors']} of {worst['n']} wrong "
            f"({worst['error_rate']:.0%}, {int(100 * sl.get('confidence', 0.95))}% CI {lo:.0%}-{hi:.0%})"
            + ("" if rest is None else f" vs {rest:.0%} for the rest of the class") + coverage_text(worst) + where)


def diagnosis_lines(result: dict[str, Any], max_drift: int = 3) -> list[str]:
    """One-line sentences on failure slices, drift and retraining rounds, in that order.

    Args:
        result: a run result (``result.json``).
        max_drift: drift verdicts named (the largest total variation distances; the rest counted).

    Returns:
        Lines without trailing newline; empty when none of ``validate``, ``drift``,
        ``iterate`` ran.
    """
    stages = result.get("stages") or {}
    lines: list[str] = []
    val = stages.get("validate") or {}
    for key, split in (("slices", "val"), ("test_slices", "test")):
        line = _slice_line(val.get(key) or {}, split)
        if line:
            lines.append(line)
    drift = stages.get("drift") or {}
    if "rows" in drift:
        drifted = drift.get("drifted") or []
        if not drifted:
            lines.append(f"drift: none between train and {', '.join(drift.get('splits') or [])}")
        for r in drifted[:max_drift]:
            lines.append(f"drift: {r['verdict']} (TVD {r['tvd']:.2f}, p={r['p_value']:.2g})")
        if len(drifted) > max_drift:
            lines.append(f"drift: {len(drifted) - max_drift} more drifting rows (report, result.json stages.drift)")
    it = stages.get("iterate") or {}
    primary = it.get("primary", "accuracy")
    for r in (it.get("rounds") or [])[1:]:
        c = r.get("compare") or {}
        m = c.get(primary)
        if not m:
            continue
        lines.append(f"round {r['round']} vs round {c['against_round']}: {primary} {m['old']:.3f} -> {m['new']:.3f} "
                     f"({m['diff']:+.3f}, CI {m['ci'][0]:+.3f} to {m['ci'][1]:+.3f}): {c['verdict']}; "
                     f"fixed {c.get('fixed')}, broke {c.get('broken')}")
    if it.get("rounds"):
        lines.append(f"kept round {it['best_round']}: {it['best_checkpoint']} ({it.get('stopped')})")
    return lines
