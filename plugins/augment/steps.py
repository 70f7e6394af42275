"""What the ``augment`` stage and ``recipes plan`` do, step by step.

1. Resolve policies (registered, then recipe-defined) and build every pipeline once, so
   an unknown transform or a bad parameter stops the run before any image is written.
2. Take the audit of the dataset without augmented samples
   (:func:`vetset.plugins.augment._audit.base_audit`), and the readable train samples
   with their audited bins as sources.
3. Plan (:func:`vetset.plugins.augment.plan.make_plan`), fingerprint the plan, try each
   used policy on one real source, write (:func:`vetset.plugins.augment.store.write_plan`).
4. Audit the new images and compare every planned cell with its target
   (:mod:`vetset.plugins.augment._audit`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vetset.core.errors import RecipeError
from vetset.core.executor import default_workers
from vetset.plugins.augment._audit import audit_new_images, base_audit, combine, evaluate_cells, landed
from vetset.plugins.augment.plan import Plan, PolicyInfo, Source, make_plan
from vetset.plugins.augment.policies import PROPERTY_BINS, PROPERTY_FIELDS, default_source_bins
from vetset.plugins.augment.store import AUG_TAG

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


def _cell(text: str) -> tuple[str, str]:
    prop, _, b = text.partition(".")
    return prop, b


def resolve_policies(options: Any, hooks: Any, source: str = "recipe") -> dict[str, ResolvedPolicy]:
    """Registered policies, then the recipe's (which replace registered ones of the same name).

    Raises:
        RecipeError: a pipeline is malformed (see :func:`~vetset.plugins.augment.pipeline.read_pipeline_spec`).
    """
    from vetset.plugins.augment.pipeline import read_pipeline_spec

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
    cells = [(prop, b) for prop, bins in options.coverage_targets.items() for b in bins]
    cells += [(prop, b) for per_class in getattr(options, "class_targets", {}).values()
              for prop, bins in per_class.items() for b in bins]
    for prop, b in dict.fromkeys(cells):
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
    from vetset.plugins.augment.pipeline import load_pipeline

    for name, pol in policies.items():
        if name in names or pol.origin == "recipe":
            load_pipeline(pol.pipeline, hooks, pol.where)


def collect_sources(dataset: Any, exclude_tags: list[str]) -> dict[str, list[Source]]:
    """Readable, non-augmented train samples per class, with their audited bins.

    Samples with a tag in ``exclude_tags`` are left out, and so are samples the audit gave
    no bin at all (it could not decode them).
    """
    from vetset.core.dataset import GT_FIELD, split_view

    view = split_view(dataset, "train").match_tags(AUG_TAG, bool=False)
    if exclude_tags:
        view = view.match_tags(list(exclude_tags), bool=False)
    schema = view.get_field_schema()
    ids, fps, labels = view.values(["id", "filepath", f"{GT_FIELD}.label"])
    audited = [p for p, f in PROPERTY_FIELDS.items() if f in schema]
    bins = {p: view.values(PROPERTY_FIELDS[p]) for p in audited}
    out: dict[str, list[Source]] = {}
    for i, (sid, fp, label) in enumerate(zip(ids, fps, labels)):
        b = {p: bins[p][i] for p in audited if bins[p][i] in PROPERTY_BINS[p]}
        if label is None or (audited and not b):  # no bin at all: the audit could not decode it
            continue
        out.setdefault(label, []).append(Source(sid, fp, label, b))
    return out


def build_plan(run: Any, options: Any) -> PlanBundle:
    """Resolve and validate policies, take the base audit, collect sources and plan.

    Raises:
        RecipeError: bad policy, pipeline or option (before anything is written).
    """
    from vetset.plugins.augment.pipeline import fingerprint

    source = run.recipe.source
    policies = resolve_policies(options, run.hooks, source)
    cell_policy = choose_cell_policies(options, policies, source)
    used = {n for n in cell_policy.values() if n} | ({options.fill_policy} if options.fill_policy else set())
    validate_pipelines(policies, used, run.hooks)
    audit = base_audit(run)
    sources = collect_sources(run.dataset, options.exclude_tags)
    plan = make_plan(audit, sources, run.classes, options.coverage_targets,
                     {n: p.info for n, p in policies.items()}, cell_policy, options.fill_policy,
                     options.min_count, options.target_ratio, options.max_per_source, options.seed,
                     class_shares=getattr(options, "class_targets", None))
    used_now = sorted({im.policy for im in plan.images})
    key = fingerprint({
        "images": [[im.source.filepath, im.policy, im.index, im.key] for im in plan.images],
        "pipelines": {n: policies[n].pipeline for n in used_now},
        "format": [options.image_format, options.jpeg_quality],
    })
    return PlanBundle(plan, policies, audit, cell_policy, key)


def run_augment(run: Any, options: Any) -> dict[str, Any]:
    """The ``augment`` stage (see :mod:`vetset.plugins.augment.stage` for the result block).

    Raises:
        RecipeError: bad policy/pipeline, or a pipeline that fails on a real source image.
        DataError: the output folder overlaps the source data or is not vetset's.
    """
    from vetset.plugins.augment.store import check_output, prepare_output, write_plan
    from vetset.plugins.augment.writer import WriterConfig, transform_one

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
    _record_folder(ds, folder)
    after = combine(bundle.audit, audit_new_images(run, folder)) if options.reaudit else None
    cells = evaluate_cells(plan, after)
    targets = {c.label: c.target for c in plan.classes}
    after_counts = (after or {}).get("class_counts", {})
    from fiftyone import ViewField as F

    n_aug = len(ds.match_tags(AUG_TAG).match(F("filepath").starts_with(str(folder) + os.sep)))
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


def _record_folder(ds: Any, folder: Path) -> None:
    """Note ``folder`` as the dataset's latest augmentation (see :func:`vetset.core.dataset.training_view`)."""
    from vetset.core.dataset import AUGMENT_FOLDER_KEY

    info = dict(ds.info or {})
    info["vetset"] = {**(info.get("vetset") or {}), AUGMENT_FOLDER_KEY: str(folder)}
    ds.info = info
    ds.save()


def cli_plan(recipe: str, data: Any, dataset: str | None, out: Any, hooks: Any, log: Any = print) -> list[Any]:
    """``recipes plan``: load the data, audit it, plan, and return printable tables.

    Nothing is written but the FiftyOne dataset (loaded or updated, audit fields).

    Raises:
        VetsetError: bad recipe, data or policy (one sentence).
    """
    from vetset.core.errors import VetsetError
    from vetset.core.recipe import load_recipe
    from vetset.core.run import Run
    from vetset.plugins.augment.report import plan_tables
    from vetset.plugins.augment.stage import AugmentOptions

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
