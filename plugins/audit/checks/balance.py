"""Built-in check ``balance``: images per class and split, imbalance, small and missing classes.

Counts are of readable images (unreadable files train nothing). The minimum and the
imbalance ratio are judged on the ``train`` split when the data has one, else on all
images. A class found in val/test but not in train cannot be learned; a class in train
but not in val/test cannot be scored.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Check, ReportSection, ViewSpec

#: ``dataset.info["vetset"]`` key holding the classes below the minimum (for the saved view).
SMALL_CLASSES_KEY = "audit_small_classes"


class BalanceOptions(BaseModel):
    """``audit.balance`` options.

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


def balance_evaluate(ctx: Any, options: BalanceOptions) -> dict[str, Any]:
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


@hookimpl
def vetset_register_checks(register):
    register(Check("balance", "images per class and split, imbalance ratio, classes below the minimum or missing from a split",
                   balance_evaluate, None, BalanceOptions))


def _small_classes(dataset: Any) -> Any:
    from fiftyone import ViewField as F

    small = list(((dataset.info or {}).get("vetset") or {}).get(SMALL_CLASSES_KEY) or [])
    return dataset.match(F("ground_truth.label").is_in(small))


@hookimpl
def vetset_register_views(register):
    register(ViewSpec("audit/small_classes", "audit", _small_classes,
                      "images of the classes with fewer train images than audit.balance.min_images"))


@hookimpl
def vetset_register_report_sections(register):
    from vetset.plugins.audit.report import render_balance

    register(ReportSection("balance", "Class balance", render_balance, order=10))

