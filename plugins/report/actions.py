"""Recommended actions, ranked by impact, from the metrics the stages and checks produced.

Each rule reads only what is present in the run result (a stage that did not run, or a
metric a plugin does not produce, simply yields no action) and turns one problem into one
:class:`~vetset.core.report_kit.Action`. The rules are each registered check's own
(:attr:`vetset.core.registry.Check.actions`: leakage and label conflicts in
``duplicates``, small classes in ``balance``, unreadable files in ``unreadable``) and the
stage-wide ones here (:data:`RULES`: label issues, the fit verdict, coverage gaps, which
read more than one stage). Ranking:

1. **severity**, by what the problem does to a model trained on the data:
   ``high`` (3) makes the evaluation wrong — train/val leakage inflates validation
   scores, and copies of one image with different labels contradict each other;
   ``medium`` (2) degrades training — wrong labels, classes with too few images, a model
   that overfits; ``low`` (1) costs robustness or hygiene — coverage gaps, unreadable files.
2. within a severity, the **share** of the dataset affected (0..1; unknown counts as 0);
3. then the rule's position (a stable tie-break): the checks' rules in check
   registration order, then :data:`RULES`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from vetset.core.manager import Hooks, get_hooks
from vetset.core.report_kit import SEVERITY, Action, ReportContext, esc, metric, note, num_images, share
from vetset.core.result import lookup

__all__ = ["RULES", "Action", "recommended_actions", "render_actions", "rules_of"]


def _label_issues(result: dict[str, Any]) -> Action | None:
    found = metric(result, "label_noise.metrics.label_issues")
    if not found or found[1] <= 0:
        return None
    rate = metric(result, "label_noise.metrics.label_issue_rate")
    checked = metric(result, "label_noise.metrics.label_checked")
    frac = rate[1] if rate else share(found[1], int(checked[1]) if checked else num_images(result))
    pct = f" ({frac:.1%} of the images checked)" if frac is not None else ""
    return Action("label_issues", "medium", f"Review {found[1]:,} likely label errors{pct}.",
                  "cleanlab ranks these by label quality; confirm or correct each given label (the suggested "
                  "label is the out-of-sample prediction), worst first.",
                  found[0], found[1], frac, ["label_issues"])


def _fit_verdict(result: dict[str, Any]) -> Action | None:
    gap = lookup(result, "validate.gap")
    verdict = gap.get("verdict") if isinstance(gap, dict) else None
    over = metric(result, "validate.metrics.overfitting")
    if verdict is None and over:
        verdict = "overfitting" if over[1] else None
    acc_gap = metric(result, "validate.metrics.train_val_acc_gap")
    if verdict == "overfitting":
        gap_text = f" (train accuracy exceeds val accuracy by {acc_gap[1]:.1%})" if acc_gap else ""
        return Action("overfitting", "medium", f"Reduce overfitting{gap_text}.",
                      "The model memorises the train split: add data or augmentation, regularise more, stop "
                      "earlier or use a smaller model.",
                      acc_gap[0] if acc_gap else "validate.metrics.overfitting", acc_gap[1] if acc_gap else 1,
                      None, ["validation_errors"])
    if verdict == "underfitting":
        train_acc = metric(result, "validate.metrics.train_accuracy")
        acc_text = f" (train accuracy {train_acc[1]:.1%})" if train_acc else ""
        weights = lookup(result, "train.weights")
        scratch = isinstance(weights, dict) and weights.get("source") == "none"
        how = ("start from pretrained weights (stages.train.pretrained: true, or stages.train.weights: FILE "
               "offline), train longer, " if scratch else "train longer (stages.train.epochs), ")
        return Action("underfitting", "medium", f"Fit the training data better{acc_text}.",
                      f"The model does not fit its own training images: {how}use a larger model or lower "
                      "regularisation and augmentation strength.",
                      train_acc[0] if train_acc else "validate.metrics.underfitting", train_acc[1] if train_acc else 1,
                      None, ["validation_errors"])
    return None


def _coverage(result: dict[str, Any]) -> Action | None:
    below = metric(result, "augment.metrics.cells_below_target")
    if below is not None:  # augmentation ran: what is left after it
        infeasible = metric(result, "augment.metrics.cells_infeasible")
        left = below[1] + (infeasible[1] if infeasible else 0)
        if left <= 0:
            return None
        extra = f", {infeasible[1]:,} of them with no policy able to fill them" if infeasible and infeasible[1] else ""
        return Action("coverage_gaps", "low",
                      f"Fill {left:,} class x property cells still below their coverage target after augmentation{extra}.",
                      "A class never seen portrait, in grayscale or blurred will be misread when it appears that "
                      "way; collect such images, or register a policy that produces them.",
                      below[0], left, None)
    found = metric(result, "audit.metrics.coverage_gaps")
    if not found or found[1] <= 0:
        return None
    return Action("coverage_gaps", "low", f"Fill {found[1]:,} coverage gaps (class x orientation, colour or clarity).",
                  "A class never seen portrait, in grayscale or blurred will be misread when it appears that "
                  "way; add such images, or run the augment recipe to fill the gaps with albumentations.",
                  found[0], found[1], None)


def _no_pretrained(result: dict[str, Any]) -> Action | None:
    weights = lookup(result, "train.weights")
    if not isinstance(weights, dict) or weights.get("source") != "none" or weights.get("reason") == "pretrained: false":
        return None
    return Action("pretrained_weights", "medium",
                  f"Train from pretrained weights ({weights.get('pretrained_tag') or weights.get('model_name')}): "
                  "this run trained from scratch.",
                  f"{weights.get('reason')}: {weights.get('advice')}.", "train.metrics.pretrained_weights", 0)


#: The stage-wide rules, in tie-break order (after the checks' own); each returns an
#: :class:`Action` or ``None``.
RULES: tuple[Callable[[dict[str, Any]], Action | None], ...] = (_label_issues, _fit_verdict, _no_pretrained,
                                                                _coverage)


def rules_of(hooks: Hooks | None = None) -> list[Callable[[dict[str, Any]], Action | None]]:
    """Every action rule: each registered check's (registration order), then :data:`RULES`.

    Args:
        hooks: the :class:`~vetset.core.manager.Hooks` facade; ``None`` = the process-wide one.
    """
    hooks = hooks if hooks is not None else get_hooks()
    return [rule for check in hooks.checks.values() for rule in check.actions] + list(RULES)


def recommended_actions(result: dict[str, Any], hooks: Hooks | None = None) -> list[Action]:
    """Every action the run's metrics call for, most impact first (see the module docstring).

    Args:
        result: the run result (``result.json`` as a dict).
        hooks: whose checks' rules to apply (default: the process-wide facade).

    Returns:
        The actions, ranked. A rule that raises (on an unexpected value, or a plugin's
        bug) is skipped rather than failing the report.
    """
    found = []
    for pos, rule in enumerate(rules_of(hooks)):
        try:
            action = rule(result)
        except Exception:  # a rule (a plugin's too) that fails on an unexpected value costs its action only
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
    actions = recommended_actions(result, ctx.hooks)
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
