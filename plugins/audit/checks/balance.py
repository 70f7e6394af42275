"""Built-in check ``balance``: images per class and split, imbalance, small and missing classes.

Counts are of readable images (unreadable files train nothing). The minimum and the
imbalance ratio are judged on the ``train`` split when the data has one, else on all
images. A class found in val/test but not in train cannot be learned; a class in train
but not in val/test cannot be scored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Check, ReportSection, ViewSpec
from vetset.core.report_kit import (
    Action,
    ReportContext,
    esc,
    figure,
    metric,
    note,
    share,
    stage_block,
    stat_cards,
    table,
    view_note,
)
from vetset.core.result import lookup

if TYPE_CHECKING:  # pragma: no cover
    from vetset.plugins.audit.context import AuditContext

#: ``dataset.info["vetset"]`` key holding the classes below the minimum (for the saved view).
SMALL_CLASSES_KEY = "audit_small_classes"


class BalanceOptions(BaseModel):
    """``stages.audit.checks.balance`` options.

    Attributes:
        min_images: a class with fewer readable train images is reported (and counted in
            ``classes_below_min``). Default 200, the usual floor for a simple image model.
        max_imbalance_ratio: the split is called imbalanced when the largest class has more
            than this many times the images of the smallest non-empty one. Default 10
            (an order of magnitude).
    """

    model_config = {"extra": "forbid"}

    min_images: Count = Field(200, ge=0)
    max_imbalance_ratio: float = Field(10.0, ge=1.0)


def balance_evaluate(ctx: AuditContext, options: BalanceOptions) -> dict[str, Any]:
    """Counts per class and split, imbalance ratio, classes below the minimum, missing and empty classes."""
    counts = ctx.count_by_class(ctx.readable)
    basis = "train" if "train" in counts else "all"
    base = counts[basis]
    nonzero = [n for n in base.values() if n > 0]
    ratio = round(max(nonzero) / min(nonzero), 4) if nonzero else None
    below = sorted((c for c, n in base.items() if n < options.min_images), key=lambda c: (base[c], c))
    empty = [c for c, n in counts["all"].items() if n == 0]
    eval_splits = [s for s in ("val", "test") if s in counts]
    missing_train = [c for c in ctx.classes if "train" in counts and counts["train"][c] == 0
                     and any(counts[s][c] > 0 for s in eval_splits)]
    missing_eval = {s: [c for c in ctx.classes if counts[s][c] == 0 and counts.get("train", {}).get(c, 0) > 0]
                    for s in eval_splits}
    unlabeled = int(sum(1 for lab, ok in zip(ctx.labels, ctx.readable) if ok and lab is None))
    ctx.info[SMALL_CLASSES_KEY] = below
    largest = max(base, key=lambda c: base[c]) if base else None
    return {
        "basis": basis, "min_images": options.min_images, "counts": counts,
        "imbalance_ratio": ratio, "imbalanced": bool(ratio is not None and ratio > options.max_imbalance_ratio),
        "largest_class": largest, "smallest_class": min((c for c in base if base[c] > 0), key=lambda c: base[c], default=None),
        "below_min": {c: base[c] for c in below},
        "missing_from_train": missing_train, "missing_from_eval": missing_eval,
        "empty_classes": empty, "unlabeled": unlabeled,
        "metrics": {"classes_below_min": len(below), "imbalance_ratio": ratio, "empty_classes": len(empty),
                    "classes_missing_from_train": len(missing_train),
                    "classes_missing_from_eval": len({c for v in missing_eval.values() for c in v}),
                    "num_classes": len(ctx.classes)},
    }


def _small_classes(dataset: Any) -> Any:
    from fiftyone import ViewField as F  # fiftyone is heavy: imported when the view is built

    small = list(((dataset.info or {}).get("vetset") or {}).get(SMALL_CLASSES_KEY) or [])
    return dataset.match(F("ground_truth.label").is_in(small))


def render_balance(result: dict[str, Any], ctx: ReportContext | None) -> str | None:
    """Class counts per split as grouped bars with the minimum as a line, and what is missing."""
    block = stage_block(result, "audit")
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
                          + view_note("audit/small_classes", ctx), "warn"))
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


def small_classes_action(result: dict[str, Any]) -> Action | None:
    """``medium``: collect more images for the classes below ``min_images`` (share of the classes)."""
    found = metric(result, "audit.metrics.classes_below_min")
    if not found or found[1] <= 0:
        return None
    counts = (lookup(result, "audit.class_counts") or {})
    n_classes = len(counts.get("all") or counts.get("train") or {}) or None
    after = metric(result, "augment.metrics.classes_below_min_after")
    note_after = (f" After augmentation {after[1]:,} remain below it, but augmented copies add no new "
                  "viewpoints or backgrounds.") if after else ""
    balance = lookup(result, "audit.checks.balance") or {}
    below = balance.get("below_min") if isinstance(balance.get("below_min"), dict) else {}
    minimum = f" {balance['min_images']:,} {balance.get('basis', '')}".rstrip() if isinstance(
        balance.get("min_images"), int) else " the minimum"
    listed = ", ".join(f"{c} ({n:,})" for c, n in list(below.items())[:8]) + (", ..." if len(below) > 8 else "")
    return Action("classes_below_min", "medium",
                  f"Collect more images for {found[1]:,} classes below{minimum} images"
                  + (f": {listed}." if listed else "."),
                  "A class with few training images is learned poorly and scored on too few validation "
                  "images to trust; add real images first, augmentation second." + note_after,
                  found[0], found[1], share(found[1], n_classes), ["small_classes"], "classes")


BALANCE = Check(
    "balance", "images per class and split, imbalance ratio, classes below the minimum or missing from a split",
    balance_evaluate, None, BalanceOptions,
    views=(ViewSpec("audit/small_classes", "audit", _small_classes,
                    "images of the classes with fewer train images than audit.checks.balance.min_images"),),
    report=ReportSection("balance", "Class balance", render_balance, order=10),
    actions=(small_classes_action,))


@hookimpl
def vetset_register_checks(register):
    register(BALANCE)
