"""Report sections of the diagnosis: failure slices and train/validation drift.

Rendered from the JSON run result only (``stages.validate.slices``, ``stages.drift``);
each ``render_*(result, ctx)`` returns an HTML fragment or ``None`` when there is nothing.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import ReportContext, esc, fmt, note, safe, table, thumb_grid


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f}%"


def _slice_rows(rows: list[dict[str, Any]], limit: int) -> list[tuple[Any, ...]]:
    out = []
    for r in rows[:limit]:
        ci = r.get("ci") or [None, None]
        dci = r.get("excess_ci")  # absent in results written before the Newcombe interval
        excess = _pct(r.get("excess")) + (f" ({_pct(dci[0])} to {_pct(dci[1])})" if dci else "")
        rest = _pct(r.get("rest_error_rate")) + (f" ({r['rest_errors']} of {r['rest_n']})" if "rest_n" in r else "")
        out.append((r["label"], r["n"], r["errors"], _pct(r["error_rate"]), f"{_pct(ci[0])}-{_pct(ci[1])}",
                    rest, safe(f"<strong>{esc(excess)}</strong>") if r.get("clear") else excess, _train_cell(r),
                    safe(f"<code>{esc(r['view'])}</code>") if r.get("view") else "-"))
    return out


def _train_cell(r: dict[str, Any]) -> Any:
    """``0% (0)``, with "not covered" when under the coverage-gap share; bold for a priority slice."""
    if r.get("train_share") is None:  # derived properties, no train split, results written before train shares
        return "-"
    text = f"{_pct(r['train_share'])} ({r['train_n']})" + (" not covered" if r.get("uncovered") else "")
    return safe(f"<strong>{esc(text)}</strong>") if r.get("priority") else text


def render_slices(result: dict[str, Any], ctx: ReportContext) -> str | None:
    """Ranked failure-slice tables (by class, across classes) and thumbnails of the worst slices' errors,
    for the val split and, when there is one, the test split."""
    val = (result.get("stages") or {}).get("validate") or {}
    sl = val.get("slices")
    if not isinstance(sl, dict):
        return None
    out = _render_split(sl, ctx, "val")
    test = val.get("test_slices")
    if isinstance(test, dict):
        out += "<h3>Test split</h3>" + _render_split(test, ctx, "test")
    return out


def _render_split(sl: dict[str, Any], ctx: ReportContext, split: str) -> str:
    level = f"{int(100 * sl.get('confidence', 0.95))}%"
    headers = ["slice", f"{split} samples", "errors", "error rate", f"{level} interval",
               "rest of class", f"excess ({level} interval)", "train share (images)", "saved view"]
    skipped = sl.get("not_ranked") or {}
    out = [f"<p>Error rate of the {split} split ({sl.get('num_samples', 0):,} samples) in each class x property bin, "
           "the properties being the audit's fields, the issue tags of the audit, embed and label_noise stages, and "
           "being a near duplicate of a train image. Slices with at least "
           f"{sl.get('min_support')} samples, and as many in the rest of their class, are ranked by the low end of "
           "the interval of their excess (error rate minus the rest's), so a small slice or a small rest is not "
           "over-read; a bold excess is clear: its interval lies above 0 (Wilson score intervals, Wilson 1927; "
           "Newcombe's hybrid score interval for the difference, Newcombe 1998)."
           + (" Listed first, with a bold train share: slices worse than the rest of their class (one-sided "
              f"{level} bound of the excess above 0) in a bin that holds under {_pct(sl['gap_share'])} of the "
              "class's train images (the audit's coverage_gap_share): the training data explains these errors, "
              "and new or augmented images of that bin can fix them." if sl.get("gap_share") is not None else "")
           + (f" Not ranked: {skipped.get('small_slice', 0)} smaller slices, {skipped.get('small_rest', 0)} whose rest "
              "is smaller (nearly the whole class)." if skipped else "") + "</p>"]
    by_class, across = sl.get("by_class") or [], sl.get("across_classes") or []
    if not by_class and not across:
        out.append(note(f"No slice has {sl.get('min_support')} {split} samples or more; lower "
                        "<code>stages.validate.slices.min_support</code> to rank smaller slices.", "info"))
        return "".join(out)
    worst = sl.get("worst")
    if worst and worst.get("excess", 0) > 0:
        kind = "bad" if worst.get("clear") else "warn"
        cover = ""
        if worst.get("train_share") is not None:
            cover = (f" Its class's train images hold {worst['train_n']} in this bin ({_pct(worst['train_share'])})"
                     + (": training does not cover it." if worst.get("uncovered") else "."))
        out.append(note(f"Worst slice: <strong>{esc(worst['label'])}</strong>: {worst['errors']} of {worst['n']} "
                        f"wrong ({_pct(worst['error_rate'])}) against {_pct(worst['rest_error_rate'])} for the "
                        f"rest of the class ({worst['rest_errors']} of {worst['rest_n']}).{esc(cover)}", kind))
    if by_class:
        out.append("<h4>By class</h4>" + table(headers, _slice_rows(by_class, 15)))
    if across:
        h = headers[:5] + [f"rest of {split}"] + headers[6:7] + ["train share (images), all classes"] + headers[8:]
        out.append("<h4>Across classes</h4>" + table(h, _slice_rows(across, 10)))
    for r in [r for r in by_class + across if r.get("examples")][:4]:
        items = [(e["filepath"], f"predicted {e['prediction']}") for e in r["examples"]]
        out.append(f"<p><strong>{esc(r['label'])}</strong>: errors, most confident first</p>"
                   + thumb_grid(items, ctx, total=r["errors"], view=r.get("view")))
    props = sl.get("properties") or []
    if props:
        out.append('<p class="muted">Properties: ' + "; ".join(
            f"{esc(p['name'])} ({esc(p['source'])}" + (f", cuts {', '.join(fmt(c) for c in p['cuts'])}" if p.get("cuts")
                                                      else "") + ")" for p in props) + ".</p>")
    return "".join(out)


def render_drift(result: dict[str, Any], ctx: ReportContext) -> str | None:
    """Drift verdicts, then the share table of every property that drifts (train vs each split)."""
    drift = (result.get("stages") or {}).get("drift")
    if not isinstance(drift, dict) or "rows" not in drift:
        return None
    t = drift.get("thresholds") or {}
    out = [f"<p>Share of images per bin of each audit property in train against {esc(', '.join(drift['splits']))}. "
           f"Drift: total variation distance &ge; {fmt(t.get('tvd'))} and p &lt; {fmt(t.get('alpha'))} "
           "(chi-square test of homogeneity, Fisher's exact test for small 2x2 tables); per class when both "
           f"splits hold {t.get('min_class_support')} images of it or more.</p>"]
    drifted = drift.get("drifted") or []
    if not drifted:
        out.append(note("No property drifts between train and the other splits.", "good"))
    overall = [r for r in drifted if r["class"] is None]
    per_class = [r for r in drifted if r["class"] is not None]
    if overall:
        out.append(note("<ul>" + "".join(f"<li>{esc(r['verdict'])}</li>" for r in overall) + "</ul>", "warn"))
    rows = []
    for r in (overall + per_class)[:20]:
        shares = "; ".join(f"{esc(b)} {_pct(p)} &rarr; {_pct(q)}" for b, p, q in
                           zip(r["bins"], r["train_shares"], r["shares"]))
        rows.append((r["split"], r.get("class") or "all", r["property"], safe(shares), r["tvd"], r["cramers_v"],
                     f"{r['test']} {r['p_value']:.2g}"))
    if rows:
        out.append(table(["split", "class", "property", "shares train → split", "TVD", "Cramér's V", "test, p"], rows))
    if len(per_class) > 20 - min(20, len(overall)):
        out.append(f'<p class="muted">{len(per_class)} class x property cells drift in all; result.json lists them.</p>')
    return "".join(out)
