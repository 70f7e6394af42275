"""What the ``augment`` stage and ``recipes plan`` do, step by step.

1. Resolve policies (registered, then recipe-defined) and build every pipeline once, so
   an unknown transform or a bad parameter stops the run before any image is written.
2. Take the audit of the dataset without augmented samples (the recipe's ``audit``
   stage result, or a fresh :func:`vetset.plugins.audit.run_audit`), and the readable
   train samples with their audited bins as sources.
3. Plan (:func:`vetset.plugins.augment_plan.make_plan`), fingerprint the plan, try each
   used policy on one real source, write (:func:`vetset.plugins.augment_write.write_plan`).
4. Audit again and compare every planned cell with its target.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vetset.core.errors import DataError, RecipeError
from vetset.core.executor import default_workers
from vetset.plugins.augment_plan import EPS, Plan, PolicyInfo, Source, make_plan
from vetset.plugins.augment_policies import PROPERTY_BINS, PROPERTY_FIELDS, default_source_bins

from vetset.plugins.augment_store import AUG_TAG
#: With ``workers`` unset, worker processes are used only when the plan's estimated
#: serial time (seconds) is above this: each worker pays a start-up of a few seconds
#: (albumentations imports torch), which a small plan never wins back.
AUTO_PARALLEL_S = 20.0
#: Estimated (decode + transform + encode) / (decode + transform) time of one image.
ENCODE_FACTOR = 1.5


@dataclass
class ResolvedPolicy:
    """A policy ready to plan with and to run."""

    info: PolicyInfo
    pipeline: dict[str, Any]
    description: str
    origin: str
    where: str


@dataclass
class PlanBundle:
    """A plan and everything it was made from."""

    plan: Plan
    policies: dict[str, ResolvedPolicy]
    audit: dict[str, Any]
    cell_policy: dict[tuple[str, str], str | None]
    key: str = ""
    notes: list[str] = field(default_factory=list)


def _cell(text: str) -> tuple[str, str]:
    prop, _, b = text.partition(".")
    return prop, b


def resolve_policies(options: Any, hooks: Any, source: str = "recipe") -> dict[str, ResolvedPolicy]:
    """Registered policies, then the recipe's (which replace registered ones of the same name).

    Raises:
        RecipeError: a pipeline is malformed (see :func:`~vetset.plugins.augment_pipeline.read_pipeline_spec`).
    """
    from vetset.plugins.augment_pipeline import read_pipeline_spec

    out: dict[str, ResolvedPolicy] = {}
    for entry in hooks.policies.entries():
        pol = entry.value
        where = f"policy {pol.name!r} (plugin {entry.plugin})"
        targets = tuple((str(p), str(b)) for p, b in pol.targets)
        info = PolicyInfo(pol.name, targets, {t: default_source_bins(pol.name, *t) for t in targets})
        out[pol.name] = ResolvedPolicy(info, read_pipeline_spec(pol.pipeline, where), pol.description,
                                       entry.plugin, where)
    for name, rp in options.policies.items():
        where = f"Recipe {source}: stages.augment.policies.{name}.pipeline"
        if rp.targets is not None:
            targets = tuple(_cell(t) for t in rp.targets)
        else:
            targets = out[name].info.targets if name in out else ()
        srcs = {t: tuple(rp.sources[f"{t[0]}.{t[1]}"]) if f"{t[0]}.{t[1]}" in rp.sources
                else default_source_bins(name, *t) for t in targets}
        out[name] = ResolvedPolicy(PolicyInfo(name, targets, srcs), read_pipeline_spec(rp.pipeline, where),
                                   rp.description or (out[name].description if name in out else ""), "recipe", where)
    return out


def choose_cell_policies(options: Any, policies: dict[str, ResolvedPolicy], source: str = "recipe"
                         ) -> dict[tuple[str, str], str | None]:
    """``(property, bin) -> policy`` for every targeted cell.

    Raises:
        RecipeError: ``cell_policies`` or ``fill_policy`` names a policy that does not exist.
    """
    known = ", ".join(sorted(policies))
    for cell, name in options.cell_policies.items():
        if name not in policies:
            raise RecipeError(f"Recipe {source}: stages.augment.cell_policies.{cell} names policy {name!r}, "
                              f"which does not exist; known policies: {known}.")
    if options.fill_policy is not None and options.fill_policy not in policies:
        raise RecipeError(f"Recipe {source}: stages.augment.fill_policy {options.fill_policy!r} does not exist; "
                          f"known policies: {known}.")
    ordered = [n for n in policies if policies[n].origin == "recipe"] + \
              [n for n in policies if policies[n].origin != "recipe"]
    out: dict[tuple[str, str], str | None] = {}
    for prop, bins in options.coverage_targets.items():
        for b in bins:
            chosen = options.cell_policies.get(f"{prop}.{b}")
            if chosen is None:
                chosen = next((n for n in ordered if (prop, b) in policies[n].info.targets), None)
            out[(prop, b)] = chosen
    return out


def validate_pipelines(policies: dict[str, ResolvedPolicy], names: set[str], hooks: Any) -> None:
    """Build the pipelines of ``names`` (every recipe policy is always built).

    Raises:
        RecipeError: naming the transform and quoting albumentations' error.
    """
    from vetset.plugins.augment_pipeline import load_pipeline

    for name, pol in policies.items():
        if name in names or pol.origin == "recipe":
            load_pipeline(pol.pipeline, hooks, pol.where)


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
        from vetset.plugins.audit import run_audit
    except ImportError as exc:
        raise DataError("The augment stage needs the audit (vetset.plugins.audit), which is not installed "
                        f"or is blocked: {exc}.") from None
    return run_audit(view, options, run.hooks, log=run.log)


def base_audit(run: Any) -> dict[str, Any]:
    """Audit block of the dataset without augmented samples, to plan from.

    The ``audit`` stage audits exactly that view, so its result is used when the recipe
    ran it; otherwise the audit runs here on the same view. Either way a rerun plans from
    the original data, not from what an earlier run added.
    """
    block = run.results.get("audit")
    if block:
        return block
    run.log("[augment] the recipe has no audit stage; auditing the data (without augmented samples) to plan")
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
        options = options.model_copy(update={"checks": checks})
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


def collect_sources(dataset: Any, exclude_tags: list[str]) -> dict[str, list[Source]]:
    """Readable, non-augmented train samples per class, with their audited bins."""
    from vetset.core.dataset import GT_FIELD, split_view

    view = split_view(dataset, "train").match_tags(AUG_TAG, bool=False)
    if exclude_tags:
        view = view.match_tags(list(exclude_tags), bool=False)
    schema = view.get_field_schema()
    ids, fps, labels = view.values(["id", "filepath", f"{GT_FIELD}.label"])
    bins = {p: view.values(f) if f in schema else [None] * len(ids) for p, f in PROPERTY_FIELDS.items()}
    out: dict[str, list[Source]] = {}
    for i, (sid, fp, label) in enumerate(zip(ids, fps, labels)):
        if label is None:
            continue
        b = {p: bins[p][i] for p in bins if bins[p][i] in PROPERTY_BINS[p]}
        out.setdefault(label, []).append(Source(sid, fp, label, b))
    return out


def build_plan(run: Any, options: Any) -> PlanBundle:
    """Resolve and validate policies, take the base audit, collect sources and plan.

    Raises:
        RecipeError: bad policy, pipeline or option (before anything is written).
    """
    from vetset.plugins.augment_pipeline import fingerprint

    source = run.recipe.source
    policies = resolve_policies(options, run.hooks, source)
    cell_policy = choose_cell_policies(options, policies, source)
    used = {n for n in cell_policy.values() if n} | ({options.fill_policy} if options.fill_policy else set())
    validate_pipelines(policies, used, run.hooks)
    audit = base_audit(run)
    sources = collect_sources(run.dataset, options.exclude_tags)
    plan = make_plan(audit, sources, run.classes, options.coverage_targets,
                     {n: p.info for n, p in policies.items()}, cell_policy, options.fill_policy,
                     options.min_count, options.target_ratio, options.max_per_source, options.seed)
    used_now = sorted({im.policy for im in plan.images})
    key = fingerprint({
        "images": [[im.source.filepath, im.policy, im.index, im.key] for im in plan.images],
        "pipelines": {n: policies[n].pipeline for n in used_now},
        "format": [options.image_format, options.jpeg_quality],
    })
    return PlanBundle(plan, policies, audit, cell_policy, key)


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


def run_augment(run: Any, options: Any) -> dict[str, Any]:
    """The ``augment`` stage (see :mod:`vetset.plugins.augment` for the result block).

    Raises:
        RecipeError: bad policy/pipeline, or a pipeline that fails on a real source image.
        DataError: the output folder overlaps the source data or is not vetset's.
    """
    from vetset.plugins.augment_store import check_output, prepare_output, write_plan
    from vetset.plugins.augment_write import WriterConfig, transform_one

    ds = run.dataset
    folder = Path(options.output_dir) if options.output_dir else run.out_dir / "augment" / "images"
    protected = [(ds.info or {}).get("vetset", {}).get("source"), str(run.data) if run.data else None]
    check_output(folder, protected)
    bundle = build_plan(run, options)
    plan = bundle.plan
    folder = prepare_output(folder, protected)
    custom = {n: run.hooks.transforms[n] for n in run.hooks.transforms}
    used = sorted({im.policy for im in plan.images})
    cfg = WriterConfig({n: bundle.policies[n].pipeline for n in used}, custom, options.jpeg_quality, key=bundle.key)
    seconds: dict[str, float] = {}
    for name in used:  # one real image per policy before writing anything
        first = next(im for im in plan.images if im.policy == name)
        t0 = time.perf_counter()
        image, err = transform_one(cfg, first.source.filepath, name, first.seed)
        seconds[name] = time.perf_counter() - t0
        if image is None:
            raise RecipeError(f"{bundle.policies[name].where}: {err}.")
    workers = options.workers
    if workers is None:
        serial_s = ENCODE_FACTOR * sum(seconds[im.policy] for im in plan.images)
        workers = 1 if serial_s < AUTO_PARALLEL_S else default_workers()
    run.log(f"[augment] plan {bundle.key}: {len(plan.images)} new train images "
            f"({', '.join(f'{k} {v}' for k, v in sorted(plan.by_policy().items())) or 'none needed'}) -> {folder}")
    stats = write_plan(ds, plan.images, folder, bundle.key, cfg, workers, options.image_format,
                       log=run.log)
    stats["workers"] = workers
    after = combine(bundle.audit, audit_new_images(run, folder)) if options.reaudit else None
    cells = evaluate_cells(plan, after)
    targets = {c.label: c.target for c in plan.classes}
    after_counts = (after or {}).get("class_counts", {})
    n_aug = len(ds.match_tags(AUG_TAG))
    metrics = {
        "augmented_images": n_aug,
        "cells_planned": sum(1 for c in plan.cells if c.status == "planned"),
        "cells_below_target": sum(1 for c in cells if c.get("reached") is False and c["status"] != "infeasible"),
        "cells_infeasible": sum(1 for c in plan.cells if c.status == "infeasible"),
        "classes_below_min_after": sum(1 for c, t in targets.items() if after is not None and after_counts.get(c, 0) < t),
        "images_per_s": stats.get("images_per_s") or 0.0,
        "failed_images": stats["failed"],
    }
    return {
        "output_dir": str(folder), "plan_key": bundle.key, "options": options.model_dump(mode="json"),
        "policies": {n: {"targets": [f"{p}={b}" for p, b in pol.info.targets], "description": pol.description,
                         "plugin": pol.origin, "pipeline": {"transform": pol.pipeline}}
                     for n, pol in bundle.policies.items() if n in used or pol.origin == "recipe"},
        "plan": plan.summary(), "write": stats,
        "before": combine(bundle.audit, None), "after": after,
        "cells": cells, "landed": landed(ds, folder), "metrics": metrics,
    }


def cli_plan(recipe: str, data: Any, dataset: str | None, out: Any, hooks: Any, log: Any = print) -> list[Any]:
    """``recipes plan``: load the data, audit it, plan, and return printable tables.

    Nothing is written but the FiftyOne dataset (loaded or updated, audit fields).

    Raises:
        VetsetError: bad recipe, data or policy (one sentence).
    """
    from vetset.core.errors import VetsetError
    from vetset.core.recipe import load_recipe
    from vetset.core.run import Run
    from vetset.plugins.augment import AugmentOptions
    from vetset.plugins.augment_report import plan_tables

    rec = load_recipe(recipe, hooks)
    if data is None and dataset is None:
        raise VetsetError("Pass --data PATH (an ImageFolder root or a CSV manifest) or --dataset NAME.")
    options = rec.options("augment") if "augment" in rec.stages else AugmentOptions()
    if "augment" not in rec.stages:
        log(f"recipe {rec.name!r} has no augment stage; planning with the default augment options")
    run = Run(rec, hooks, data=data, dataset=dataset, out_dir=out, log=log)
    run.load()
    bundle = build_plan(run, options)
    folder = Path(options.output_dir) if options.output_dir else run.out_dir / "augment" / "images"
    log(f"plan {bundle.key}: {len(bundle.plan.images)} new train images would be written to {folder}")
    return plan_tables(bundle.plan.summary(), bundle.policies)
