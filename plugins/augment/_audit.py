"""The audit around the ``augment`` stage: the numbers it plans from and the re-audit.

* :func:`base_audit` — the audit of the data without augmented samples (the ``audit``
  stage's result, or a fresh :func:`vetset.plugins.audit.stage.run_audit` on that view).
* :func:`audit_new_images` — the audit's coverage checks on the new samples only, so the
  original samples keep the fields and issue tags the ``audit`` stage gave them.
* :func:`combine` — the train-split table of the data plus the new images;
  :func:`evaluate_cells` compares each planned cell with its target, :func:`landed`
  checks each new image against the cell its policy was meant to fill.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from vetset.core.errors import DataError
from vetset.plugins.augment.plan import EPS, Plan
from vetset.plugins.augment.policies import PROPERTY_FIELDS
from vetset.plugins.augment.store import AUG_TAG


def audit_options(run: Any) -> Any:
    """The recipe's ``audit`` options, or the audit stage's defaults."""
    if "audit" in run.recipe.stages:
        return run.recipe.options("audit")
    stage = run.hooks.stages.get("audit")
    return stage.options() if stage is not None else None


#: Audit checks whose per-image bins make the coverage table; the re-audit runs only these.
COVERAGE_CHECKS = ("orientation", "colour", "clarity")


def _run_audit(run: Any, view: Any, options: Any) -> dict[str, Any]:
    try:
        from vetset.plugins.audit.stage import run_audit
    except ImportError as exc:
        raise DataError("The augment stage needs the audit (vetset.plugins.audit.stage), which is not installed "
                        f"or is blocked: {exc}.") from None
    return run_audit(view, options, run.hooks, log=run.log)


def base_audit(run: Any) -> dict[str, Any]:
    """Audit block of the dataset without augmented samples, to plan from.

    The ``audit`` stage audits exactly that view, so its result is used when the recipe
    ran it; otherwise the audit runs here on the same view. Either way a rerun plans from
    the original data, not from what an earlier run added.
    """
    block = run.results.get("audit")
    missing = [c for c in COVERAGE_CHECKS if c in run.hooks.checks and c not in (block or {}).get("checks_run", [])]
    if block and not missing:
        return block
    if block:  # the recipe's audit left out coverage checks: the sources would have no bins
        run.log(f"[augment] the audit stage did not run {', '.join(missing)}; running them on the data "
                "(without augmented samples) to plan")
        options = audit_options(run)
        if options is not None and hasattr(options, "model_copy"):
            options = options.model_copy(update={"select": sorted(set(block.get("checks_run", [])) | set(missing))})
        return _run_audit(run, run.dataset.match_tags(AUG_TAG, bool=False), options)
    stages = getattr(getattr(run, "recipe", None), "stages", None) or {}
    why = "the audit stage did not run in this run" if "audit" in stages else "the recipe has no audit stage"
    run.log(f"[augment] {why}; auditing the data (without augmented samples) to plan")
    return _run_audit(run, run.dataset.match_tags(AUG_TAG, bool=False), audit_options(run))


def audit_new_images(run: Any, folder: Path) -> dict[str, Any] | None:
    """Run the audit's coverage checks on the augmented samples of ``folder``.

    Only these samples are audited, so the issue tags and fields of the original samples
    stay as the ``audit`` stage wrote them (a full re-audit would tag every blurred or
    grayscale copy and its source as near-duplicates). The thresholds are the recipe's.

    Returns:
        The audit block of the new samples, or ``None`` when there are none.
    """
    from fiftyone import ViewField as F

    view = run.dataset.match_tags(AUG_TAG).match(F("filepath").starts_with(str(folder) + os.sep))
    if not len(view):
        return None
    options = audit_options(run)
    checks = [c for c in COVERAGE_CHECKS if c in run.hooks.checks]
    if options is not None and hasattr(options, "model_copy"):
        options = options.model_copy(update={"select": checks})
    return _run_audit(run, view, options)


def combine(before: dict[str, Any], new: dict[str, Any] | None, split: str = "train") -> dict[str, Any]:
    """Train-split class counts and coverage of the data plus the new images.

    Every coverage bin is decided per image (orientation from the size, colour from the
    pixels, clarity against fixed thresholds), so counts add: the table of the
    augmented dataset is the table of the original data plus the table of the new images.

    Returns:
        ``{"class_counts": {class: n}, "coverage": {property: {class: {bin: n}}}}``.
    """
    counts = dict(before.get("class_counts", {}).get(split, {}))
    coverage = {p: {c: dict(bins) for c, bins in table.items()}
                for p, table in before.get("coverage", {}).get(split, {}).items()}
    if new:
        for c, n in new.get("class_counts", {}).get(split, {}).items():
            counts[c] = counts.get(c, 0) + int(n)
        for p, table in new.get("coverage", {}).get(split, {}).items():
            for c, bins in table.items():
                row = coverage.setdefault(p, {}).setdefault(c, {})
                for b, n in bins.items():
                    row[b] = row.get(b, 0) + int(n)
    return {"class_counts": counts, "coverage": coverage}


def evaluate_cells(plan: Plan, after: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Every planned cell with its re-audited count and share, and whether it reached its target.

    Args:
        after: :func:`combine` output, or ``None`` when there was no re-audit.
    """
    rows = []
    cov = (after or {}).get("coverage", {})
    for cell in plan.cells:
        row = cell.to_dict()
        if after is not None:
            bins = cov.get(cell.property, {}).get(cell.label, {})
            total = int(sum(bins.values()))
            count = int(bins.get(cell.bin, 0))
            share = count / total if total else 0.0
            row.update(after_count=count, after_total=total, after_share=round(share, 4),
                       reached=bool(share >= cell.target_share - EPS))
        rows.append(row)
    return rows


def landed(dataset: Any, folder: Path) -> dict[str, dict[str, int]]:
    """Per policy: augmented samples of ``folder`` with a target cell, and how many the
    re-audit put in that cell (the policy moved the property it was meant to move)."""
    from fiftyone import ViewField as F

    view = dataset.match_tags(AUG_TAG).match(F("filepath").starts_with(str(folder) + os.sep))
    view = view.exists("aug_target")
    if not len(view):
        return {}
    schema = view.get_field_schema()
    policies, targets = view.values(["aug_policy", "aug_target"])
    values = {p: view.values(f) if f in schema else [None] * len(targets) for p, f in PROPERTY_FIELDS.items()}
    out: dict[str, dict[str, int]] = {}
    for i, (pol, tgt) in enumerate(zip(policies, targets)):
        prop, _, b = tgt.partition("=")
        row = out.setdefault(pol, {"targeted": 0, "landed": 0})
        row["targeted"] += 1
        row["landed"] += int(values.get(prop, [None] * len(targets))[i] == b)
    return out
