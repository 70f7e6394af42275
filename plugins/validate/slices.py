"""Failure slices: where on the validation split the model fails, by class x property bin.

After the ``validate`` stage has predicted the val split, every val sample is placed in
the bins of the slice properties (:mod:`.properties`: the audit's categorical fields,
numeric fields cut at train terciles, image size, issue tags). For each slice

* **class x bin** (``bees``, ``colour_mode = grayscale``): val samples of that class in
  that bin, compared with the rest of the class (same class, another bin of the property);
* **bin across classes** (``colour_mode = grayscale``): every val sample in that bin,
  compared with the other val samples that have a value for the property,

it counts samples ``n`` and errors ``k`` and gives the error rate ``k / n`` with a Wilson
score interval (E. B. Wilson, "Probable inference, the law of succession, and statistical
inference", JASA 22, 1927; recommended over the Wald interval for small ``n`` by Agresti &
Coull, "Approximate is better than 'exact' for interval estimation of binomial
proportions", The American Statistician 52, 1998), computed by
``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``.

A slice is ranked when it and its rest each hold at least ``min_support`` samples: a
"slice" that is nearly its whole class (a rest of one image) says nothing the per-class
error does not, and its rest's rate is too uncertain to compare with. Ranked slices are
ordered by ``score``, the low end of Newcombe's hybrid score interval for the difference
of two independent proportions, slice error rate - rest error rate (R. G. Newcombe,
"Interval estimation for the difference between independent proportions: comparison of
eleven methods", Statistics in Medicine 17, 1998, method 10; :func:`newcombe`), largest
first (ties: larger slice first). With ``p``, ``(l, u)`` the slice's rate and Wilson
interval and ``q``, ``(lq, uq)`` the rest's::

    score = (p - q) - sqrt((p - l)**2 + (uq - q)**2)

It is what the difference is at least, at the interval's level: a small slice and a small
rest both widen the interval and lower the score, so neither side's luck is over-read
(ranking by a lower confidence bound rather than the raw rate: E. Miller, "How not to sort
by average rating", 2009). ``excess`` =
``p - q`` is reported beside it, with its interval ``excess_ci``. A slice is ``clear``
when its score is positive: the interval of the difference lies above 0. Each slice is
tested on its own; with dozens of slices a few are clear by chance at 95%.

**Coverage in training comes first.** For every slice the original train images (those
the audit measured and the numeric cuts come from; augmented copies are left out, as the
iterate stage's rounds do not audit them and the augment stage's re-audit measures only
the coverage checks) are placed in the same bins: ``train_n`` of the class's train images fall in the slice's bin,
``train_share`` of those with a value for the property (across classes: of all train
images). The slice is ``uncovered`` when ``train_share`` is under the audit's
``coverage_gap_share`` (:class:`~vetset.plugins.audit.stage.AuditOptions`, default 0.05;
:func:`failure_slices` takes the value the audit ran with): the threshold by which the
audit calls a class x bin cell a coverage gap. The audit also asks that the bin be common
in the whole train split, because before validation nothing else says the bin matters;
here the val slice itself is that evidence, and a bin train lacks in every class (a
drift between train and val) is the plainest uncovered slice of all, so that second
condition is dropped. ``derived`` slices (near duplicate of a train image...) describe
val samples against train and have no train share.

A slice is ``worse`` when the one-sided lower confidence bound of its excess is above 0:
the question "does this slice fail more than the rest of its class?" is one-sided, so
its level-``confidence`` answer is the low end of the two-sided ``2 * confidence - 1``
Newcombe interval (at 0.95: the low end of the 90% interval; the one-sided test at the
usual 5%). ``clear`` keeps its two-sided meaning (``score > 0``). A slice that is worse
*and* uncovered has ``priority``: its error is the one the training data explains, and
the one new data or augmentation for that bin can fix, so priority slices are listed
first (by ``score`` among themselves), then every other slice by ``score``. Without a
train split (no train share) the order is by ``score`` alone.

The headline (``worst``, the console line, ``worst_slice_*`` metrics) is the first class x
bin slice. Bins across classes are ranked in their own list and not mixed in: their rest
is other classes too, so a bin that holds more of a hard class looks worse without the
model failing on the bin (class composition confounds the comparison); the class x bin
rows compare like with like.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from vetset.core.dataset import split_view, training_view
from vetset.plugins.audit.stage import AuditOptions
from vetset.plugins.validate._wording import coverage_text
from vetset.plugins.validate.properties import DERIVED, Property, find_properties, match_bin, read_values

SLICE_VIEW_PREFIX = "validation_errors/slice/"
#: Saved-view prefix of each split's slices (val: the validation errors' namespace).
SLICE_VIEW_PREFIXES = {"val": SLICE_VIEW_PREFIX, "test": "test_errors/slice/"}
ALL_CLASSES = "all"
#: The audit's coverage-gap threshold (``audit.coverage_gap_share``), used when no audit result gives it.
COVERAGE_GAP_SHARE: float = AuditOptions.model_fields["coverage_gap_share"].default


class SliceOptions(BaseModel):
    """``stages.validate.slices`` options.

    Attributes:
        enabled: compute failure slices after validation.
        min_support: slices with fewer val samples, or whose rest (the rest of the class;
            across classes, the rest of the split) has fewer, are not ranked. Default 10:
            the 95% Wilson interval of 0 errors in 10 is [0, 0.28], narrow enough to
            separate a slice that fails most of the time from one that does not.
        confidence: level of the Wilson and Newcombe intervals. Default 0.95.
        max_bins: categorical fields with more distinct values are not properties. Default 12.
        exclude: property names to leave out (field names, ``size``, ``tag``).
        rows: ranked slices kept in the result (per list). Default 30.
        views: saved views ``validation_errors/slice/<class>/<property>=<bin>`` for this many
            of the worst slices with errors (per list: by class, across classes). Default 5.
        examples: error thumbnails kept per viewed slice. Default 6.
    """

    model_config = {"extra": "forbid"}

    enabled: bool = True
    min_support: int = Field(10, ge=1)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    max_bins: int = Field(12, ge=2)
    exclude: list[str] = []
    rows: int = Field(30, ge=1)
    views: int = Field(5, ge=0)
    examples: int = Field(6, ge=0)


def wilson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of ``k`` successes in ``n`` trials (``(0, 1)`` when ``n`` is 0).

    Source: Wilson (1927), via ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``.
    """
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe(k1: int, n1: int, k2: int, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for the difference ``k1 / n1 - k2 / n2`` of two independent proportions.

    Newcombe's hybrid score interval (R. G. Newcombe, "Interval estimation for the
    difference between independent proportions: comparison of eleven methods", Statistics
    in Medicine 17, 1998, method 10), built from each proportion's Wilson interval
    ``(l1, u1)``, ``(l2, u2)`` (:func:`wilson`)::

        low  = (p1 - p2) - sqrt((p1 - l1)**2 + (u2 - p2)**2)
        high = (p1 - p2) + sqrt((u1 - p1)**2 + (p2 - l2)**2)

    Both samples' uncertainty widens it; it stays within ``[-1, 1]``. Newcombe's worked
    example 56/70 vs 48/80 gives 0.0524 to 0.3339 at 95%.

    Raises:
        ValueError: ``n1`` or ``n2`` is not positive.
    """
    if n1 <= 0 or n2 <= 0:
        raise ValueError(f"newcombe needs samples on both sides (n1={n1}, n2={n2})")
    p1, p2 = k1 / n1, k2 / n2
    (l1, u1), (l2, u2) = wilson(k1, n1, confidence), wilson(k2, n2, confidence)
    d = p1 - p2
    return d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2))


def _row(cls: str | None, prop: Property, b: str, inside: np.ndarray, rest: np.ndarray, wrong: np.ndarray,
         confidence: float, train: tuple[int, int] | None = None,
         gap_share: float = COVERAGE_GAP_SHARE) -> dict[str, Any]:
    n, k = int(inside.sum()), int((inside & wrong).sum())
    rn, rk = int(rest.sum()), int((rest & wrong).sum())
    rate, rrate = k / n, (rk / rn if rn else None)
    lo, hi = wilson(k, n, confidence)
    dlo, dhi = newcombe(k, n, rk, rn, confidence) if rn else (None, None)
    # one-sided bound at level `confidence`: the low end of the two-sided 2c - 1 interval (module docstring)
    worse = bool(rn and newcombe(k, n, rk, rn, 2 * confidence - 1)[0] > 0)
    train_n, train_total = train if train is not None else (None, 0)
    share = train_n / train_total if train_total else None
    uncovered = bool(share is not None and share < gap_share)
    where = f"{prop.name} = {prop.bin_text(b)}" if prop.kind != "tag" else f"tag {b}"
    return {"class": cls, "property": prop.name, "bin": b, "kind": prop.kind,
            "label": f"{cls}, {where}" if cls is not None else f"{where} (all classes)",
            "n": n, "errors": k, "error_rate": round(rate, 4), "ci": [round(lo, 4), round(hi, 4)],
            "rest_n": rn, "rest_errors": rk, "rest_error_rate": None if rrate is None else round(rrate, 4),
            "excess": None if rrate is None else round(rate - rrate, 4),
            "excess_ci": None if dlo is None else [round(dlo, 4), round(dhi, 4)],
            "score": None if dlo is None else round(dlo, 4),
            "clear": bool(dlo is not None and dlo > 0), "worse": worse,
            "train_n": None if share is None else int(train_n),
            "train_share": None if share is None else round(share, 4),
            "uncovered": uncovered, "priority": worse and uncovered}


def rank_slices(gt: list[str | None], wrong: np.ndarray, members: list[tuple[Property, np.ndarray]],
                classes: list[str], min_support: int = 10, confidence: float = 0.95,
                train: tuple[list[str | None], list[np.ndarray | None]] | None = None,
                gap_share: float = COVERAGE_GAP_SHARE) -> dict[str, Any]:
    """Error rate of every slice with enough support on both sides, ranked (module docstring).

    Args:
        gt: ground-truth class per val sample, length ``n``.
        wrong: bool array ``(n,)``, true where the prediction differs from ``gt``.
        members: ``(property, membership)`` pairs, membership a bool array ``(n, len(bins))``
            (:meth:`Property.membership`).
        classes: class names, in the model's order.
        min_support: slices with fewer samples, or whose rest has fewer, are counted, not ranked.
        confidence: level of the Wilson and Newcombe intervals (and of the one-sided ``worse`` bound).
        train: ``(train_gt, train_members)``: the class of each (original) train image and,
            per entry of ``members``, the train images' membership ``(n_train, len(bins))``
            (``None``: no train share, as for ``derived`` properties). ``None``: no train
            split; every ``train_*`` is ``None`` and nothing has ``priority``.
        gap_share: a slice is ``uncovered`` when under this share of its class's train
            images (across classes: of all train images) with a value for the property are
            in its bin; the audit's ``coverage_gap_share``.

    Returns:
        ``{"by_class": [row, ...], "across_classes": [row, ...], "candidates": int,
        "not_ranked": {"small_slice": int, "small_rest": int}}``; each list ranked by
        ``score`` (then ``n``, then ``label``), rows as :func:`_row` builds them: ``class``
        (None across classes), ``property``, ``bin``, ``kind``, ``label``, ``n``, ``errors``,
        ``error_rate``, ``ci`` ([low, high], Wilson), ``rest_n``, ``rest_errors``,
        ``rest_error_rate``, ``excess``, ``excess_ci`` ([low, high], Newcombe), ``score``
        (``excess_ci[0]``), ``clear`` (``score > 0``), ``worse`` (the one-sided
        level-``confidence`` lower bound of ``excess`` is above 0), ``train_n`` and
        ``train_share`` (int, float 0..1; ``None`` without a train share), ``uncovered``
        (``train_share < gap_share``), ``priority`` (``worse`` and ``uncovered``); rows with
        ``priority`` come first (module docstring). ``candidates`` counts the non-empty
        slices considered, ranked or not; ``not_ranked`` those left out because the slice
        (``small_slice``), or else the rest it is compared with (``small_rest``), has fewer
        than ``min_support`` samples.
    """
    labels = np.array([g or "" for g in gt], dtype=object)
    wrong = np.asarray(wrong, dtype=bool)
    by_class: list[dict[str, Any]] = []
    across: list[dict[str, Any]] = []
    counts = {"candidates": 0, "small_slice": 0, "small_rest": 0}
    train_labels = None if train is None else np.array([g or "" for g in train[0]], dtype=object)

    def consider(out: list[dict[str, Any]], cls: str | None, prop: Property, b: str, inside: np.ndarray,
                 rest: np.ndarray, cover: tuple[int, int] | None) -> None:
        counts["candidates"] += 1
        if inside.sum() < min_support:
            counts["small_slice"] += 1
        elif rest.sum() < min_support:
            counts["small_rest"] += 1
        else:
            out.append(_row(cls, prop, b, inside, rest, wrong, confidence, cover, gap_share))

    class_masks = {c: labels == c for c in classes}
    train_masks = {} if train_labels is None else {c: train_labels == c for c in classes}
    for i, (prop, member) in enumerate(members):
        # a tag or derived flag: every sample has the property, those without it are the rest
        has = np.ones(len(labels), dtype=bool) if prop.kind in ("tag", "derived") else member.any(axis=1)
        tmember = None if train is None or prop.kind == DERIVED else train[1][i]
        thas = None if tmember is None else (np.ones(len(tmember), dtype=bool) if prop.kind == "tag"
                                             else tmember.any(axis=1))
        for j, b in enumerate(prop.bins):
            inside = member[:, j]
            if not inside.any():
                continue
            rest = has & ~inside
            consider(across, None, prop, b, inside, rest,
                     None if tmember is None else (int(tmember[:, j].sum()), int(thas.sum())))
            for c, cmask in class_masks.items():
                if (inside & cmask).any():
                    cover = None if tmember is None else (int((tmember[:, j] & train_masks[c]).sum()),
                                                          int((thas & train_masks[c]).sum()))
                    consider(by_class, c, prop, b, inside & cmask, rest & cmask, cover)
    return {"by_class": sorted(by_class, key=_rank_key), "across_classes": sorted(across, key=_rank_key),
            "candidates": counts["candidates"],
            "not_ranked": {"small_slice": counts["small_slice"], "small_rest": counts["small_rest"]}}


def _rank_key(row: dict[str, Any]) -> tuple[bool, float, int, str]:
    return not row.get("priority"), -row["score"], -row["n"], row["label"]


def view_name(row: dict[str, Any], split: str = "val") -> str:
    """Saved-view name of a slice: ``validation_errors/slice/<class or all>/<property>=<bin>``
    (test split: ``test_errors/slice/...``)."""
    return f"{SLICE_VIEW_PREFIXES[split]}{row['class'] or ALL_CLASSES}/{row['property']}={row['bin']}"


def slice_errors_view(dataset: Any, row: dict[str, Any], prop: Property, split: str = "val") -> Any:
    """The slice's errors on ``split``, most confident mistakes first (``None`` before predictions)."""
    from fiftyone import ViewField as F  # deferred: fiftyone takes about 1 s to import

    if "predictions" not in dataset.get_field_schema():
        return None
    view = split_view(dataset, split).exists("predictions")
    if row["class"] is not None:
        view = view.match(F("ground_truth.label") == row["class"])
    view = view.match(F("predictions.label") != F("ground_truth.label"))
    return match_bin(view, prop, row["bin"]).sort_by(F("predictions.confidence"), reverse=True)


def _save_views(dataset: Any, rows: list[dict[str, Any]], props: dict[str, Property], examples: int,
                split: str = "val") -> None:
    """Save a view for each row with errors; add ``view`` and ``examples``; delete stale slice views."""
    dataset.reload()  # see Run.save_views: never write back a stale saved-view list
    keep = set()
    for row in rows:
        view = slice_errors_view(dataset, row, props[row["property"]], split)
        if view is None or not len(view):
            continue
        name = view_name(row, split)
        dataset.save_view(name, view, overwrite=True,
                          description=f"{split} errors in slice {row['label']}: {row['errors']} of {row['n']} wrong "
                                      f"(rest of {'the class' if row['class'] else f'the {split} split'}: "
                                      f"{row['rest_errors']} of {row['rest_n']}); most confident first")
        keep.add(name)
        row["view"] = name
        row["examples"] = [{"filepath": f, "prediction": p} for f, p in
                           zip(*view.limit(examples).values(["filepath", "predictions.label"]))] if examples else []
    for name in dataset.list_saved_views():
        if name.startswith(SLICE_VIEW_PREFIXES[split]) and name not in keep:
            dataset.delete_saved_view(name)


def failure_slices(dataset: Any, classes: list[str], options: SliceOptions, log: Any = print,
                   pred_field: str = "predictions", split: str = "val",
                   gap_share: float | None = None) -> dict[str, Any]:
    """Failure slices of a validated split (``val``, or ``test``), with saved views of the worst ones.

    Args:
        dataset: the FiftyOne dataset after the validate stage wrote ``predictions``.
        classes: the model's classes.
        options: :class:`SliceOptions`.
        log: one-line message callable (the two worst slices are named).
        pred_field: the ``fo.Classification`` field of the model's predictions; saved views
            are kept for ``predictions`` (the validate stage's) only.
        split: ``val`` (saved views ``validation_errors/slice/...``) or ``test``
            (``test_errors/slice/...``); numeric cuts come from the train split either way.
        gap_share: the audit's ``coverage_gap_share`` the run used (``uncovered``, module
            docstring); ``None``: its default, :data:`COVERAGE_GAP_SHARE`.

    Returns:
        ``{"split", "num_samples", "train_samples", "min_support", "confidence", "gap_share", "method",
        "properties": [Property.to_dict()...], "candidates", "by_class": [row...],
        "across_classes": [row...], "not_ranked", "worst": row | None}``; rows and
        ``not_ranked`` as :func:`rank_slices` (``train_samples``: the original train images
        the train shares count), the viewed ones with ``view`` (saved-view name) and ``examples``
        (``[{"filepath", "prediction"}]``). Also ``"metrics"``: ``worst_slice_error_rate``,
        ``worst_slice_excess`` (None without a ranked slice), ``slices_clearly_worse``,
        ``slices_uncovered_worse`` (ranked rows with ``priority``, both lists).
    """
    gap_share = COVERAGE_GAP_SHARE if gap_share is None else float(gap_share)
    val = split_view(dataset, split).exists(pred_field)
    train = training_view(dataset)[0].match_tags("augmented", bool=False)
    n_train = len(train)
    props = find_properties(dataset, train if n_train else val, options.max_bins, options.exclude)
    gt, pred = val.values(["ground_truth.label", f"{pred_field}.label"])
    wrong = np.array([g != p for g, p in zip(gt, pred)], dtype=bool)
    values = read_values(val, props)
    members = [(p, p.membership(values[p.name])) for p in props]
    cover = None
    if n_train:  # the same bins on the original train images (derived properties have no train share)
        tprops = [p for p in props if p.kind != DERIVED]
        tvalues = read_values(train, tprops)
        cover = (train.values("ground_truth.label"),
                 [p.membership(tvalues[p.name]) if p.kind != DERIVED else None for p in props])
    ranked = rank_slices(gt, wrong, members, classes, options.min_support, options.confidence, cover, gap_share)
    by_class, across = ranked["by_class"][:options.rows], ranked["across_classes"][:options.rows]
    worst_rows = [r for r in by_class if r["errors"] and r["excess"] > 0][:options.views] + \
                 [r for r in across if r["errors"] and r["excess"] > 0][:options.views]
    if pred_field == "predictions":
        _save_views(dataset, worst_rows if options.views else [], {p.name: p for p in props}, options.examples,
                    split)
    worst = by_class[0] if by_class else None
    for row in (by_class[:1] + across[:1]):
        log(f"[validate] worst {'' if split == 'val' else split + ' '}slice: {row['label']}: {row['errors']} of {row['n']} wrong "
            f"({row['error_rate']:.0%}, {int(options.confidence * 100)}% CI {row['ci'][0]:.0%}-{row['ci'][1]:.0%}) vs "
            f"{row['rest_error_rate']:.0%} for the rest ({row['rest_errors']} of {row['rest_n']})"
            + coverage_text(row) + (f"; saved view {row['view']!r}" if row.get("view") else ""))
    if not by_class:
        log(f"[validate] no failure slice has {options.min_support} {split} samples or more, with as many in the rest "
            "of its class (slices.min_support)")
    return {
        "split": split, "num_samples": len(gt), "train_samples": n_train, "min_support": options.min_support,
        "confidence": options.confidence, "gap_share": gap_share,
        "method": "error rate per slice with a Wilson score interval (Wilson 1927); slices worse than the rest of "
                  "their class (one-sided Newcombe bound above 0) whose bin holds under the audit's "
                  "coverage_gap_share of the class's train images come first; then, and within them, ranked by the "
                  "low end of Newcombe's hybrid score interval (Newcombe 1998, method 10) of the excess over the "
                  f"rest of the class (across classes: the rest of the {split} split); slice and rest need "
                  "min_support samples",
        "properties": [p.to_dict() for p in props], "candidates": ranked["candidates"],
        "not_ranked": ranked["not_ranked"],
        "by_class": by_class, "across_classes": across, "worst": worst,
        "metrics": {"worst_slice_error_rate": worst["error_rate"] if worst else None,
                    "worst_slice_excess": worst["excess"] if worst else None,
                    "slices_clearly_worse": sum(r["clear"] for r in ranked["by_class"] + ranked["across_classes"]),
                    "slices_uncovered_worse": sum(r["priority"] for r in ranked["by_class"] + ranked["across_classes"])},
    }
