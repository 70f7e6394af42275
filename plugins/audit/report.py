"""Report sections of the audit: balance (10), coverage (20), quality (30), duplicates (40), unreadable (50).

Each ``render(result, ctx)`` reads only ``result["stages"]["audit"]`` (the JSON block of
:func:`vetset.plugins.audit.stage.run_audit`) and returns an HTML fragment, or ``None`` when
the run has no audit block (or not the part it shows). Thumbnails come from the source
files through :func:`vetset.core.report_kit.thumb_grid`.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import esc, figure, note, stat_cards, table, thumb_grid

PROPERTIES = ("orientation", "colour", "clarity")
QUALITY_ISSUES = (("blurry", "clarity"), ("dark", "exposure"), ("overexposed", "exposure"),
                  ("low_contrast", "exposure"), ("low_entropy", "exposure"), ("tiny", "size"),
                  ("odd_size", "size"), ("odd_aspect_ratio", "orientation"), ("exif_rotated", "orientation"))
#: Groups of duplicates drawn with thumbnails; the rest are in the table and the saved views.
GROUPS_WITH_THUMBNAILS = 8


def _block(result: dict[str, Any]) -> dict[str, Any] | None:
    block = (result.get("stages") or {}).get("audit")
    return block if isinstance(block, dict) else None


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def _view_note(name: str, ctx: Any) -> str:
    if ctx is not None and name in ctx.saved_views():
        return f' <span class="muted">Saved view <code>{esc(name)}</code>.</span>'
    return ""


# -- balance ---------------------------------------------------------------------------------
def render_balance(result: dict[str, Any], ctx: Any) -> str | None:
    """Class counts per split as grouped bars with the minimum as a line, and what is missing."""
    block = _block(result)
    if not block or not block.get("class_counts"):
        return None
    import plotly.graph_objects as go

    counts = block["class_counts"]
    bal = (block.get("checks") or {}).get("balance") or {}
    splits = [s for s in ("train", "val", "test") if s in counts] or ["all"]
    classes = list(counts.get("all") or counts[splits[0]])
    parts = [stat_cards([
        ("classes", len(classes)),
        ("imbalance ratio (max/min)", bal.get("imbalance_ratio"), "audit.metrics.imbalance_ratio"),
        (f"classes below {bal.get('min_images', '?')} {bal.get('basis', '')} images",
         len(bal.get("below_min", {})), "audit.metrics.classes_below_min"),
        ("empty classes", len(bal.get("empty_classes", [])), "audit.metrics.empty_classes"),
    ])]
    fig = go.Figure([go.Bar(name=s, x=classes, y=[counts[s].get(c, 0) for c in classes]) for s in splits])
    if "min_images" in bal:
        fig.add_hline(y=bal["min_images"], line_dash="dash", line_color="#D55E00",
                      annotation_text=f"minimum {bal['min_images']} ({bal.get('basis')})", annotation_position="top left")
    fig.update_layout(barmode="group", height=320, yaxis_title="readable images", xaxis_title="class",
                      xaxis={"type": "category"})
    parts.append(figure(fig))
    if bal.get("below_min"):
        listed = ", ".join(f"{esc(c)} ({n})" for c, n in bal["below_min"].items())
        parts.append(note(f"Below the minimum of {bal['min_images']} {esc(bal['basis'])} images: {listed}. "
                          "Collect more real images first; augmentation can lift counts but adds no new content."
                          + _view_note("audit/small_classes", ctx), "warn"))
    if bal.get("imbalanced"):
        parts.append(note(f"The largest class ({esc(bal.get('largest_class'))}) has {bal['imbalance_ratio']:g}x the "
                          f"images of the smallest ({esc(bal.get('smallest_class'))}).", "warn"))
    if bal.get("missing_from_train"):
        parts.append(note("In val/test but not in train (cannot be learned): "
                          + ", ".join(esc(c) for c in bal["missing_from_train"]), "bad"))
    for split, missing in (bal.get("missing_from_eval") or {}).items():
        if missing:
            parts.append(note(f"In train but not in {esc(split)} (cannot be scored): " + ", ".join(esc(c) for c in missing), "warn"))
    if bal.get("empty_classes"):
        parts.append(note("Class folders with no readable image: " + ", ".join(esc(c) for c in bal["empty_classes"]), "bad"))
    rows = [[c] + [counts[s].get(c, 0) for s in splits] + ([counts["all"].get(c, 0)] if "all" in counts and splits != ["all"] else [])
            for c in classes]
    headers = ["class"] + splits + (["all"] if "all" in counts and splits != ["all"] else [])
    parts.append(table(headers, rows, cls="num"))
    return "".join(parts)


# -- coverage --------------------------------------------------------------------------------
def render_coverage(result: dict[str, Any], ctx: Any) -> str | None:
    """Heatmaps class x bin (share, with counts) per property, and the coverage gaps."""
    block = _block(result)
    coverage = (block or {}).get("coverage") or {}
    if not coverage:
        return None
    import plotly.graph_objects as go

    split = "train" if "train" in coverage else "all"
    props = [p for p in PROPERTIES if p in coverage[split]] + [p for p in coverage[split] if p not in PROPERTIES]
    parts = [f'<p>Share of each class\'s <b>{esc(split)}</b> images in each bin (counts in the cells). '
             "Findings that cover most of a class are shown here, not hidden: a class that is almost always "
             "one way is where a model learns the property instead of the class.</p>"]
    for prop in props:
        tab = coverage[split][prop]
        classes = list(tab)
        bins = list(next(iter(tab.values()), {}))
        z, text = [], []
        for c in classes:
            total = sum(tab[c].values())
            z.append([tab[c][b] / total if total else 0.0 for b in bins])
            text.append([f"{tab[c][b]} ({_pct(tab[c][b] / total) if total else '-'})" for b in bins])
        fig = go.Figure(go.Heatmap(z=z, x=bins, y=classes, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                                   colorscale="Blues", colorbar={"title": "share"},
                                   hovertemplate="%{y} / %{x}: %{text}<extra></extra>"))
        fig.update_layout(title=prop, height=max(180, 60 + 28 * len(classes)), yaxis={"type": "category", "autorange": "reversed"})
        parts.append(figure(fig))
    gaps = block.get("coverage_gaps") or []
    opts = (block.get("options") or {})
    if gaps:
        parts.append(note(f"{len(gaps)} coverage gap(s): the bin holds under {_pct(opts.get('coverage_gap_share'))} of "
                          f"the class's {esc(split)} images but at least that share of all of them.", "warn"))
        parts.append(table(["class", "property", "bin", "class share", "overall share"],
                           [[g["class"], g["property"], g["bin"], _pct(g["share"]), _pct(g["overall_share"])] for g in gaps]))
    else:
        parts.append(note("No coverage gap: no class lacks a bin that the rest of the data has.", "good"))
    return "".join(parts)


# -- quality ---------------------------------------------------------------------------------
def _issue_count(checks: dict[str, Any], issue: str, check: str) -> int | None:
    summary = checks.get(check) or {}
    metrics = summary.get("metrics") or {}
    return metrics.get(issue) if isinstance(metrics.get(issue), int) else None


def render_quality(result: dict[str, Any], ctx: Any) -> str | None:
    """Issue counts, sharpness and brightness distributions per class, example thumbnails."""
    block = _block(result)
    checks = (block or {}).get("checks") or {}
    if not any(c in checks for c in ("clarity", "exposure", "size", "orientation")):
        return None
    import plotly.graph_objects as go

    found = [(issue, check, _issue_count(checks, issue, check)) for issue, check in QUALITY_ISSUES]
    found = [f for f in found if f[2] is not None]
    parts = [stat_cards([(issue.replace("_", " "), n, f"audit.metrics.{issue}") for issue, _, n in found])]
    clarity = checks.get("clarity") or {}
    dist = clarity.get("distribution") or {}
    if dist.get("edges"):
        import math

        edges = dist["edges"]  # log10 of sharpness
        mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        fig = go.Figure([go.Bar(name=c, x=mids, y=v, opacity=0.6, width=(edges[1] - edges[0]))
                         for c, v in dist["counts"].items()])
        th = clarity.get("thresholds", {})
        for key, colour in (("blurry_below", "#D55E00"), ("sharp_above", "#009E73")):
            if th.get(key):
                fig.add_vline(x=math.log10(th[key]), line_dash="dash", line_color=colour,
                              annotation_text=f"{key.replace('_', ' ')} {th[key]:g}")
        ticks = list(range(math.floor(edges[0]), math.ceil(edges[-1]) + 1))
        fig.update_layout(barmode="overlay", height=300, title=f"Sharpness (variance of the Laplacian at {th.get('size', '?')} px)",
                          xaxis={"title": "sharpness (log scale)", "tickvals": ticks, "ticktext": [f"{10 ** t:,}" for t in ticks]},
                          yaxis_title="images")
        parts.append(figure(fig))
    up = clarity.get("upscaled") or {}
    if up.get("count"):
        size = clarity.get("thresholds", {}).get("size", "?")
        parts.append(f"<p class=\"note\">{up['count']:,} images are smaller than {size} px and were upscaled to "
                     f"measure their sharpness; upscaling blurs, so for them (blurry: {up.get('blurry', 0):,}) the "
                     "clarity bin says more about resolution than about focus.</p>")
    bright = ((checks.get("exposure") or {}).get("distribution") or {}).get("brightness") or {}
    if bright.get("edges"):
        e = bright["edges"]
        mids = [(a + b) / 2 for a, b in zip(e[:-1], e[1:])]
        fig = go.Figure([go.Bar(name=c, x=mids, y=v, opacity=0.6) for c, v in bright["counts"].items()])
        fig.update_layout(barmode="overlay", height=300, title="Brightness (mean luma, 0-1)", xaxis_title="brightness",
                          yaxis_title="images")
        parts.append(figure(fig))
    by_class: dict[str, dict[str, int]] = {}
    for check in ("exposure", "size"):
        for issue, row in ((checks.get(check) or {}).get("by_class") or {}).items():
            by_class[issue] = row
    odd = ((checks.get("orientation") or {}).get("odd_aspect_ratio") or {})
    if odd.get("by_class"):
        by_class["odd_aspect_ratio"] = odd["by_class"]
    if clarity.get("share"):
        split = "all" if "all" in clarity["share"] else next(iter(clarity["share"]))
        counts = (block.get("coverage") or {}).get(split, {}).get("clarity", {})
        by_class = {"blurry": {c: row.get("blurry", 0) for c, row in counts.items()}, **by_class}
    if by_class:
        classes = sorted({c for row in by_class.values() for c in row})
        parts.append(table(["class"] + [i.replace("_", " ") for i in by_class],
                           [[c] + [by_class[i].get(c, 0) for i in by_class] for c in classes], cls="num"))
    if ctx is not None:
        for issue, check, n in found:
            examples = ((checks.get(check) or {}).get("examples") or {}).get(issue) or []
            if n and examples:
                parts.append(f"<h3>{esc(issue.replace('_', ' '))}</h3>")
                parts.append(thumb_grid([(e["filepath"], f"{e.get('label')} / {e.get('split')}") for e in examples],
                                        ctx, total=n, view=f"audit/{issue}"))
    return "".join(parts)


# -- duplicates ------------------------------------------------------------------------------
def render_duplicates(result: dict[str, Any], ctx: Any) -> str | None:
    """Duplicate, leakage and label-conflict groups, leakage first, with thumbnails."""
    block = _block(result)
    dup = ((block or {}).get("checks") or {}).get("duplicates")
    if not dup:
        return None
    m = dup.get("metrics", {})
    parts = [stat_cards([
        ("duplicate groups", m.get("duplicate_groups", 0), "audit.metrics.duplicate_groups"),
        ("exact (same bytes)", m.get("exact_duplicate_groups", 0), "audit.metrics.exact_duplicate_groups"),
        ("leakage groups (span splits)", m.get("leakage_groups", 0), "audit.metrics.leakage_groups"),
        ("label conflicts", m.get("conflicting_label_groups", 0), "audit.metrics.conflicting_label_groups"),
        ("redundant images", m.get("redundant_images", 0), "audit.metrics.redundant_images"),
    ])]
    parts.append(f'<p class="muted">Near duplicates: perceptual hashes (imagehash phash, 64 bits) within '
                 f'{dup.get("radius")} bits; exact: same SHA-256 of the file bytes.</p>')
    if m.get("leakage_groups"):
        splits = ", ".join(f"{esc(k)}: {v}" for k, v in (dup.get("leakage_by_splits") or {}).items())
        parts.append(note(f"{m['leakage_groups']} group(s) of the same image span splits ({splits}); validation "
                          "scores are inflated until each group sits in one split." + _view_note("audit/leakage", ctx), "bad"))
    if m.get("conflicting_label_groups"):
        parts.append(note(f"{m['conflicting_label_groups']} group(s) carry different labels for the same image."
                          + _view_note("audit/label_conflicts", ctx), "bad"))
    groups = dup.get("groups") or []
    if not groups:
        parts.append(note("No duplicates found.", "good"))
        return "".join(parts)
    parts.append(table(["group", "kind", "images", "labels", "splits", "max bits to first"],
                       [[g["group"], ", ".join(g["kinds"]) or "near", g["size"], ", ".join(map(str, g["labels"])),
                         ", ".join(g["splits"]), g.get("max_distance_to_first")] for g in groups]))
    if dup.get("groups_total", 0) > len(groups):
        parts.append(f'<p class="muted">{len(groups)} of {dup["groups_total"]} groups listed; the saved view '
                     "<code>audit/duplicates</code> holds them all.</p>")
    if ctx is not None:
        for g in groups[:GROUPS_WITH_THUMBNAILS]:
            parts.append(f"<h3>{esc(g['group'])} <span class=\"muted\">{esc(', '.join(g['kinds']) or 'near')}</span></h3>")
            parts.append(thumb_grid([(mm["filepath"], f"{mm.get('label')} / {mm.get('split')}") for mm in g["members"]],
                                    ctx, total=g["size"], view="audit/duplicates"))
    return "".join(parts)


# -- unreadable ------------------------------------------------------------------------------
def render_unreadable(result: dict[str, Any], ctx: Any) -> str | None:
    """Every unreadable file with its reason and what to do; multi-frame files."""
    block = _block(result)
    un = ((block or {}).get("checks") or {}).get("unreadable")
    if un is None:
        return None
    parts = [stat_cards([("unreadable files", un.get("count", 0), "audit.metrics.unreadable"),
                         ("animated / multi-frame", len(un.get("animated", [])), "audit.metrics.animated")])]
    if not un.get("count"):
        parts.append(note("Every file decoded.", "good"))
    else:
        parts.append(note("These files are skipped by every stage; they were reported, not modified or deleted."
                          + _view_note("audit/unreadable", ctx), "warn"))
        parts.append(table(["file", "class", "split", "reason", "what it means"],
                           [[f["filepath"], f.get("label"), f.get("split"), f["reason"], f["explanation"]] for f in un["files"]]))
        if un["count"] > len(un["files"]):
            parts.append(f'<p class="muted">{len(un["files"])} of {un["count"]} listed.</p>')
    if un.get("animated"):
        parts.append("<p>Multi-frame files (only the first frame is used):</p>")
        parts.append(table(["file", "class", "frames"], [[a["filepath"], a.get("label"), a["frames"]] for a in un["animated"]]))
    if un.get("formats"):
        parts.append('<p class="muted">Formats of the readable files: '
                     + ", ".join(f"{esc(k)} {v:,}" for k, v in un["formats"].items()) + ".</p>")
    return "".join(parts)
