"""Recommended actions, ranked by impact, from the metrics the other stages produced.

Each rule reads only what is present in the run result (a stage that did not run, or a
metric a plugin does not produce, simply yields no action) and turns one problem into one
action. Ranking:

1. **severity**, by what the problem does to a model trained on the data:
   ``high`` (3) makes the evaluation wrong — train/val leakage inflates validation
   scores, and copies of one image with different labels contradict each other;
   ``medium`` (2) degrades training — wrong labels, classes with too few images, a model
   that overfits; ``low`` (1) costs robustness or hygiene — coverage gaps, unreadable files.
2. within a severity, the **share** of the dataset affected (0..1; unknown counts as 0);
3. then the rule's position in :data:`RULES` (a stable tie-break).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from vetset.core.report_kit import ReportContext, esc, note
from vetset.core.result import lookup

SEVERITY = {"high": 3, "medium": 2, "low": 1}


@dataclass
class Action:
    """One recommended action.

    Attributes:
        id: stable rule id (``leakage``, ``label_issues``...).
        severity: ``high``, ``medium`` or ``low`` (see the module docstring).
        title: one imperative sentence with the count.
        detail: why it matters and how to do it.
        metric: dotted metric path (under ``stages``) the action comes from.
        value: that metric's value.
        share: fraction of ``share_of`` affected, 0..1, or ``None`` when unknown.
        views: FiftyOne saved-view name fragments where the affected samples are.
        share_of: what ``share`` is a fraction of: ``images`` or ``classes``.
    """

    id: str
    severity: str
    title: str
    detail: str
    metric: str
    value: float | int
    share: float | None = None
    views: list[str] = field(default_factory=list)
    share_of: str = "images"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _num(result: dict[str, Any], *paths: str) -> tuple[str, float | int] | None:
    """The first of ``paths`` (dotted, under ``stages``) whose value is a number."""
    for path in paths:
        value = lookup(result, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return path, value
    return None


def _images(result: dict[str, Any]) -> int | None:
    found = _num(result, "audit.num_images")
    if found:
        return int(found[1])
    n = (result.get("load") or {}).get("num_samples")
    return n if isinstance(n, int) else None


def _share(count: float | None, total: int | None) -> float | None:
    if count is None or not total:
        return None
    return max(0.0, min(1.0, float(count) / total))


def _leakage(result: dict[str, Any]) -> Action | None:
    found = _num(result, "audit.metrics.leakage_groups")
    if not found or found[1] <= 0:
        return None
    samples = _num(result, "audit.metrics.leakage_samples")
    share = _num(result, "audit.metrics.leakage_fraction")
    return Action("leakage", "high", f"Remove train/val leakage: {found[1]:,} groups of the same image span splits.",
                  "While one image sits in both train and validation, validation scores are inflated and "
                  "say little about new data. Keep every group in one split, or drop the extra copies.",
                  found[0], found[1], share[1] if share else _share(samples[1] if samples else None, _images(result)),
                  ["leakage"])


def _conflicts(result: dict[str, Any]) -> Action | None:
    found = _num(result, "audit.metrics.conflicting_label_groups")
    if not found or found[1] <= 0:
        return None
    samples = _num(result, "audit.metrics.conflicting_label_samples")
    return Action("conflicting_duplicates", "high",
                  f"Resolve {found[1]:,} groups of duplicate images that carry different labels.",
                  "The model is trained (or scored) on the same picture with two answers; pick the right "
                  "label for each group and relabel or remove the others.",
                  found[0], found[1], _share(samples[1] if samples else None, _images(result)), ["conflict"])


def _label_issues(result: dict[str, Any]) -> Action | None:
    found = _num(result, "label_noise.metrics.label_issues")
    if not found or found[1] <= 0:
        return None
    rate = _num(result, "label_noise.metrics.label_issue_rate")
    checked = _num(result, "label_noise.metrics.label_checked")
    share = rate[1] if rate else _share(found[1], int(checked[1]) if checked else _images(result))
    pct = f" ({share:.1%} of the images checked)" if share is not None else ""
    return Action("label_issues", "medium", f"Review {found[1]:,} likely label errors{pct}.",
                  "cleanlab ranks these by label quality; confirm or correct each given label (the suggested "
                  "label is the out-of-sample prediction), worst first.",
                  found[0], found[1], share, ["label_issues"])


def _small_classes(result: dict[str, Any]) -> Action | None:
    found = _num(result, "audit.metrics.classes_below_min")
    if not found or found[1] <= 0:
        return None
    counts = (lookup(result, "audit.class_counts") or {})
    n_classes = len(counts.get("all") or counts.get("train") or {}) or None
    after = _num(result, "augment.metrics.classes_below_min_after")
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
                  found[0], found[1], _share(found[1], n_classes), ["small_classes"], "classes")


def _fit_verdict(result: dict[str, Any]) -> Action | None:
    gap = lookup(result, "validate.gap")
    verdict = gap.get("verdict") if isinstance(gap, dict) else None
    over = _num(result, "validate.metrics.overfitting")
    if verdict is None and over:
        verdict = "overfitting" if over[1] else None
    acc_gap = _num(result, "validate.metrics.train_val_acc_gap")
    if verdict == "overfitting":
        gap_text = f" (train accuracy exceeds val accuracy by {acc_gap[1]:.1%})" if acc_gap else ""
        return Action("overfitting", "medium", f"Reduce overfitting{gap_text}.",
                      "The model memorises the train split: add data or augmentation, regularise more, stop "
                      "earlier or use a smaller model.",
                      acc_gap[0] if acc_gap else "validate.metrics.overfitting", acc_gap[1] if acc_gap else 1,
                      None, ["validation_errors"])
    if verdict == "underfitting":
        train_acc = _num(result, "validate.metrics.train_accuracy")
        acc_text = f" (train accuracy {train_acc[1]:.1%})" if train_acc else ""
        return Action("underfitting", "medium", f"Fit the training data better{acc_text}.",
                      "The model does not fit its own training images: train longer, use a larger model or "
                      "pretrained weights, or lower regularisation and augmentation strength.",
                      train_acc[0] if train_acc else "validate.metrics.underfitting", train_acc[1] if train_acc else 1,
                      None, ["validation_errors"])
    return None


def _coverage(result: dict[str, Any]) -> Action | None:
    below = _num(result, "augment.metrics.cells_below_target")
    if below is not None:  # augmentation ran: what is left after it
        infeasible = _num(result, "augment.metrics.cells_infeasible")
        left = below[1] + (infeasible[1] if infeasible else 0)
        if left <= 0:
            return None
        extra = f", {infeasible[1]:,} of them with no policy able to fill them" if infeasible and infeasible[1] else ""
        return Action("coverage_gaps", "low",
                      f"Fill {left:,} class x property cells still below their coverage target after augmentation{extra}.",
                      "A class never seen portrait, in grayscale or blurred will be misread when it appears that "
                      "way; collect such images, or register a policy that produces them.",
                      below[0], left, None)
    found = _num(result, "audit.metrics.coverage_gaps")
    if not found or found[1] <= 0:
        return None
    return Action("coverage_gaps", "low", f"Fill {found[1]:,} coverage gaps (class x orientation, colour or clarity).",
                  "A class never seen portrait, in grayscale or blurred will be misread when it appears that "
                  "way; add such images, or run the augment recipe to fill the gaps with albumentations.",
                  found[0], found[1], None)


def _unreadable(result: dict[str, Any]) -> Action | None:
    found = _num(result, "audit.metrics.unreadable")
    if not found:
        n = (result.get("load") or {}).get("unreadable")
        found = ("load.unreadable", n) if isinstance(n, int) else None
    if not found or found[1] <= 0:
        return None
    return Action("unreadable", "low", f"Fix or remove {found[1]:,} unreadable files.",
                  "Every stage skips them, so they are missing from training and evaluation; a data loader "
                  "outside vetset may crash on them.",
                  found[0], found[1], _share(found[1], _images(result)), ["unreadable"])


#: Rules in tie-break order; each returns an :class:`Action` or ``None``.
RULES: tuple[Callable[[dict[str, Any]], Action | None], ...] = (
    _leakage, _conflicts, _label_issues, _small_classes, _fit_verdict, _coverage, _unreadable)


def recommended_actions(result: dict[str, Any]) -> list[Action]:
    """Every action the run's metrics call for, most impact first (see the module docstring).

    A rule that fails on an unexpected value is skipped rather than failing the report.
    """
    found = []
    for pos, rule in enumerate(RULES):
        try:
            action = rule(result)
        except (TypeError, ValueError, AttributeError, KeyError):
            action = None
        if action is not None:
            found.append((pos, action))
    found.sort(key=lambda pa: (-SEVERITY[pa[1].severity], -(pa[1].share or 0.0), pa[0]))
    return [a for _, a in found]


def _views_for(action: Action, views: list[str], limit: int = 3) -> list[str]:
    """Saved views named like the action's fragments: exact names first, else up to ``limit`` containing one."""
    exact = [v for v in views if v in action.views or v.rsplit("/", 1)[-1] in action.views]
    if exact:
        return exact[:limit]
    return [v for v in views if any(frag in v for frag in action.views)][:limit]


def render_actions(result: dict[str, Any], ctx: ReportContext) -> str:
    """HTML of the recommended-actions section (order 1000); always present."""
    actions = recommended_actions(result)
    ran = ", ".join(f"<code>{esc(s)}</code>" for s in (result.get("stages") or {}) if s != "report") or "none"
    if not actions:
        if ran == "none":
            return note("No analysis stage ran in this recipe, so there is nothing to recommend.", "info")
        return note(f"No action needed: none of the stages that ran ({ran}) found a problem.", "good")
    views = ctx.saved_views()
    items = []
    for a in actions:
        share = f' <span class="muted">· {a.share:.1%} of the {a.share_of}</span>' if a.share is not None else ""
        where = _views_for(a, views)
        view_html = (' <span class="muted">Saved view' + ("s" if len(where) > 1 else "") + ": " +
                     ", ".join(f"<code>{esc(v)}</code>" for v in where) + "</span>") if where else ""
        items.append(f'<li data-action="{esc(a.id)}"><span class="badge {a.severity}">{a.severity}</span> '
                     f'<span class="title">{esc(a.title)}</span>{share}<br>{esc(a.detail)} '
                     f'<span class="muted">From <code>{esc(a.metric)}</code> = {esc(a.value)}.</span>{view_html}</li>')
    return (f'<p class="muted">Ranked by impact: problems that make the evaluation wrong first, then those that '
            f'degrade training, then robustness; within each, by the share of data affected. Checked: {ran}.</p>'
            f'<ol class="actions">{"".join(items)}</ol>')
