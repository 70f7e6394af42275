"""Report sections of the ``embed`` stage: near duplicates from embeddings (45) and outliers (47).

Each ``render(result, ctx)`` reads only ``result["stages"]["embed"]`` and returns an HTML
fragment, or ``None`` when the run has no embed block. A skipped stage shows its reason.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import esc, note, stat_cards, table, thumb_grid

#: Groups drawn as thumbnails side by side; the rest are in the table and the saved views.
GROUPS_WITH_THUMBNAILS = 8


def _block(result: dict[str, Any]) -> dict[str, Any] | None:
    block = (result.get("stages") or {}).get("embed")
    return block if isinstance(block, dict) else None


def _backbone_line(block: dict[str, Any]) -> str:
    bb = block.get("backbone") or {}
    origin = {"weights": "weights file", "pretrained": "pretrained weights", "checkpoint": "this run's checkpoint"}
    size = (bb.get("data_config") or {}).get("input_size", [0, 0, 0])[-1]
    flip = ", mean of image and mirror" if bb.get("flip") else ""
    if bb.get("crops"):
        flip += " and of centre crops " + ", ".join(f"{c:g}" for c in bb["crops"])
    return (f'<p class="muted">Features: {esc(bb.get("model_name"))} ({esc(origin.get(bb.get("source"), bb.get("source")))}'
            f' <code>{esc(bb.get("weights_file"))}</code>), {bb.get("num_features")}-d pooled features at {size} px{flip}; '
            f'{block.get("num_embedded", 0)} images, {(block.get("store") or {}).get("computed", 0)} computed now.</p>')


def _views(ctx: Any, *names: str) -> str:
    have = set(ctx.saved_views()) if ctx is not None else set()
    shown = [n for n in names if n in have]
    return (' <span class="muted">Saved view ' + ", ".join(f"<code>{esc(n)}</code>" for n in shown) + ".</span>") if shown else ""


def render_duplicates(result: dict[str, Any], ctx: Any) -> str | None:
    """Near-duplicate groups by cosine similarity, leakage first, thumbnails side by side."""
    block = _block(result)
    if block is None:
        return None
    if block.get("skipped") and not block.get("duplicates"):
        return note(esc(block["skipped"]), "warn")
    dup = block.get("duplicates")
    if not dup:
        return None
    m = dup.get("metrics", {})
    parts = [stat_cards([
        ("groups", m.get("similar_groups", 0), "embed.metrics.similar_groups"),
        ("leakage groups (span splits)", m.get("similar_leakage_groups", 0), "embed.metrics.similar_leakage_groups"),
        ("label conflicts", m.get("similar_conflicting_label_groups", 0), "embed.metrics.similar_conflicting_label_groups"),
        ("groups pHash missed", m.get("similar_groups_missed_by_phash", 0), "embed.metrics.similar_groups_missed_by_phash"),
        ("redundant images", m.get("similar_redundant_images", 0), "embed.metrics.similar_redundant_images"),
    ])]
    parts.append(_backbone_line(block))
    parts.append(f'<p class="muted">Near duplicates: cosine similarity of centred features at least {dup.get("threshold")} '
                 f'(rule <code>{esc(dup.get("rule"))}</code>, among each image\'s {dup.get("k")} nearest neighbours); '
                 "they find crops, mirrors and burst shots that perceptual hashes miss.</p>")
    if m.get("similar_leakage_groups"):
        parts.append(note(f"{m['similar_leakage_groups']} group(s) of near-identical images span splits; validation "
                          "scores are inflated until each group sits in one split." + _views(ctx, "embed/leakage"), "bad"))
    if m.get("similar_conflicting_label_groups"):
        parts.append(note(f"{m['similar_conflicting_label_groups']} group(s) carry different labels."
                          + _views(ctx, "embed/label_conflicts"), "bad"))
    groups = dup.get("groups") or []
    if not groups:
        parts.append(note("No near duplicates found.", "good"))
        return "".join(parts)
    parts.append(table(["group", "kind", "images", "labels", "splits", "lowest similarity", "pHash found it"],
                       [[g["group"], ", ".join(g["kinds"]) or "near", g["size"], ", ".join(map(str, g["labels"])),
                         ", ".join(g["splits"]), g["min_similarity"],
                         {True: "yes", False: "no", None: "-"}[g.get("phash_found")]] for g in groups]))
    if dup.get("groups_total", 0) > len(groups):
        parts.append(f'<p class="muted">{len(groups)} of {dup["groups_total"]} groups listed; the saved view '
                     "<code>embed/duplicates</code> holds them all.</p>")
    if ctx is not None:
        for g in groups[:GROUPS_WITH_THUMBNAILS]:
            parts.append(f"<h3>{esc(g['group'])} <span class=\"muted\">{esc(', '.join(g['kinds']) or 'near')}</span></h3>")
            parts.append(thumb_grid([(mm["filepath"], f"{mm.get('label')} / {mm.get('split')} / {mm['similarity']:.3f}")
                                     for mm in g["members"]], ctx, total=g["size"], view="embed/duplicates"))
    return "".join(parts)


def _score_words(out: dict[str, Any]) -> str:
    which = "the image's own class" if out.get("classes") == "given" else "the nearest class"
    method = out.get("method", "knn")
    if method == "class_mean":
        return (f"squared Euclidean distance of an image's features to the mean of {which} (nearest class mean; "
                "Lee et al. 2018 with identity covariance)")
    if method == "centroid":
        return f"cosine distance of an image's centred features to the centroid of {which} (0 to 2)"
    if method == "mahalanobis":
        return (f"squared Mahalanobis distance to the mean of {which} (Lee et al. 2018; shared Ledoit-Wolf "
                "covariance)")
    return (f"mean cosine distance of an image's centred features to its {out.get('k')} nearest neighbours "
            "(cleanlab's feature-based outlier score)")


def render_outliers(result: dict[str, Any], ctx: Any) -> str | None:
    """Outlier count, per-class table and the most unusual images."""
    block = _block(result)
    out = (block or {}).get("outliers")
    if not out:
        return None
    parts = [stat_cards([("outliers", out.get("count", 0), "embed.metrics.outliers"),
                         ("median score", out.get("median_score")), ("fence", out.get("fence"))])]
    parts.append(f'<p class="muted">Score: {_score_words(out)}; flagged above Q3 + (1/{out.get("threshold")}'
                 " - 1) x IQR of all scores (Datalab's outlier rule).</p>")
    per = out.get("per_class") or {}
    if per:
        parts.append("<h3>Per class</h3>" + table(["class", "images", "outliers", "median score"],
                                                  [[c, v["images"], v["outliers"], v["median_score"]] for c, v in per.items()]))
    top = out.get("top") or []
    if not top:
        parts.append(note("No outliers flagged.", "good"))
    elif ctx is not None:
        parts.append("<h3>Most unusual first</h3>" + _views(ctx, "embed/outliers"))
        parts.append(thumb_grid([(t["filepath"], f"{t.get('label')} / {t.get('split')} / {t['score']:.3f}") for t in top],
                                ctx, total=out.get("count"), view="embed/outliers"))
    return "".join(parts)
