"""Report section of the ``iterate`` stage: each round against the one it was compared with."""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import ReportContext, esc, note, safe, table


def _ci(block: dict[str, Any]) -> str:
    lo, hi = block["ci"]
    return f"{block['diff']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _start(r: dict[str, Any]) -> str:
    start = r.get("start") or {}
    if not start:
        return "-" if r["round"] else "train stage"
    if start.get("mode") == "kept":
        return f"round {start['from_round']}, {start['epochs']} more epochs"
    return f"random init, {start['epochs']} epochs"


def render_rounds(result: dict[str, Any], ctx: ReportContext) -> str | None:
    """Round table (accuracy, macro-F1, differences with paired bootstrap intervals, verdict), per-slice errors."""
    it = (result.get("stages") or {}).get("iterate")
    if not isinstance(it, dict) or not it.get("rounds"):
        return None
    rounds = it["rounds"]
    out = [note(f"Kept round {it['best_round']}: <code>{esc(it['best_checkpoint'])}</code>. Stopped: "
                f"{esc(it['stopped'])}.", "good" if it["best_round"] else "info"),
           "<p>Each round aims augmentation at the worst failure slices of the best model so far, trains "
           "with the same options and seed (fine-tuning the kept model unless <code>start: scratch</code>), "
           "and is compared with that model on the same val images "
           "(differences new - old with paired bootstrap 95% intervals; better / worse only when the "
           "interval excludes 0).</p>"]
    rows = []
    for r in rounds:
        c = r.get("compare") or {}
        rows.append((r["round"], r.get("accuracy"), r.get("macro_f1"),
                     _ci(c["accuracy"]) if c else "-", _ci(c["macro_f1"]) if c else "-",
                     f"{c.get('fixed', '-')} / {c.get('broken', '-')}" if c else "-",
                     safe(f"<strong>{esc(c['verdict'])}</strong> (vs round {c['against_round']})") if c else "baseline",
                     _start(r), "; ".join(r.get("aimed") or []) or "-"))
    out.append(table(["round", "val accuracy", "macro F1", "accuracy diff [95% CI]", "macro-F1 diff [95% CI]",
                      "fixed / broken", "verdict", "trained from", "aimed at"], rows))
    for r in rounds[1:]:
        per_slice = (r.get("compare") or {}).get("per_slice") or []
        if per_slice:
            out.append(f"<p>Round {r['round']}: error on the slices of round {r['compare']['against_round']} "
                       f"(saved views <code>{esc(', '.join(r.get('views') or {}))}</code>)</p>")
            out.append(table(["slice", "val samples", "error before", "error after", "aimed at"],
                             [(s["label"], s["n"], s["old"], s["new"], bool(s.get("aimed"))) for s in per_slice]))
    return "".join(out)
