"""Built-in plugin: the ``augment`` stage — close the audit's coverage gaps with albumentations.

The stage reads the audit's train-split class counts and coverage table, plans per class
how many new images each policy must write (:mod:`vetset.plugins.augment.plan`), builds
and tries every pipeline before writing anything (:mod:`vetset.plugins.augment.pipeline`),
writes the images (:mod:`vetset.plugins.augment.writer`) and their FiftyOne samples
(:mod:`vetset.plugins.augment.store`), and audits the new images to show each planned cell
before and after (:mod:`vetset.plugins.augment._audit`, report section in
:mod:`vetset.plugins.augment.report`). Only ``train`` samples are sources and only
``train`` samples are added: augmenting val or test would leak. The whole run is in
:mod:`vetset.plugins.augment.steps`; ``recipes plan`` prints the plan without writing.

This plugin also registers the bundled policies (:mod:`vetset.plugins.augment.policies`),
the ``AtWorkingSize`` transform (:mod:`vetset.plugins.augment.transforms`), the saved
view ``augmented`` and the report section ``augmentation`` (order 70).
:func:`load_pipeline` is the one way to turn a recipe's pipeline into an ``A.Compose``.

Result block (``run.results["augment"]``)::

    {"output_dir": str, "plan_key": str, "options": {...},
     "policies": {name: {"targets": ["orientation=portrait", ...], "description", "plugin", "pipeline"}},
     "plan": {"images", "by_policy", "classes": [...], "cells": [...]},   # see augment_plan
     "write": {"planned", "written", "recovered", "skipped", "deleted_samples", "deleted_files",
               "failed", "errors", "seconds", "images_per_s", "workers"},
     "before": {"class_counts": {class: n}, "coverage": {property: {class: {bin: n}}}},  # train
     "after": {... the same for the data plus the new images ...} | None,
     "cells": [{...plan cell..., "after_count", "after_total", "after_share", "reached"}],
     "landed": {policy: {"targeted": n, "landed": n}},
     "metrics": {"augmented_images", "cells_planned", "cells_below_target", "cells_infeasible",
                 "classes_below_min_after", "images_per_s", "failed_images"}}
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from vetset.core.errors import RecipeError
from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Stage, ViewSpec
from vetset.plugins.augment.pipeline import load_pipeline  # noqa: F401  (re-exported for the trainer)
from vetset.plugins.augment.policies import PROPERTY_BINS


def _parse_cell(text: str, what: str) -> tuple[str, str]:
    prop, _, b = str(text).partition(".")
    if prop not in PROPERTY_BINS or b not in PROPERTY_BINS[prop]:
        cells = ", ".join(f"{p}.{x}" for p, bins in PROPERTY_BINS.items() for x in bins)
        raise ValueError(f"{what} {text!r} is not a coverage cell; use one of {cells}")
    return prop, b


class RecipePolicy(BaseModel):
    """A policy defined in a recipe (``stages.augment.policies.<name>``).

    Attributes:
        pipeline: the albumentations pipeline as ``A.to_dict`` returns it, or the path of a
            file ``A.save`` wrote (JSON or YAML).
        targets: cells the policy adds, as ``property.bin`` (e.g. ``colour.grayscale``);
            default: the targets of the registered policy of the same name, if any.
        sources: ``property.bin`` -> bins of source images the pipeline turns into that
            bin; default: the bundled rule for that policy name, else every other bin.
        description: one line for ``recipes plan`` and the report.
    """

    model_config = {"extra": "forbid"}

    pipeline: dict[str, Any] | str
    targets: list[str] | None = None
    sources: dict[str, list[str]] = {}
    description: str = ""

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: list[str] | None) -> list[str] | None:
        for t in v or []:
            _parse_cell(t, "target")
        return v

    @field_validator("sources")
    @classmethod
    def _sources(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        for cell, bins in v.items():
            prop, _ = _parse_cell(cell, "sources key")
            bad = [b for b in bins if b not in PROPERTY_BINS[prop]]
            if bad:
                raise ValueError(f"sources.{cell}: {bad} are not {prop} bins ({', '.join(PROPERTY_BINS[prop])})")
        return v


class AugmentOptions(BaseModel):
    """``stages.augment`` options.

    Attributes:
        output_dir: folder for the new images (``<dir>/<class>/<file>``); default
            ``<run out>/augment/images``. Must not overlap the source data.
        min_count: lift every class with fewer train images up to this many (default
            200; 0 turns class lifting off).
        target_ratio: also lift every class to this share of the largest class's train
            count, in (0, 1]; default off.
        coverage_targets: ``{property: {bin: share}}``: lift every class whose share of
            train images in the bin is lower to this share. Properties and bins are the
            audit's (orientation: landscape/portrait/square; colour: colour/grayscale/bw;
            clarity: blurry/normal/sharp). The shares must sum to less than 1.
        class_targets: ``{class: {property: {bin: share}}}``: the same for one class,
            over ``coverage_targets`` (the ``iterate`` stage sets it from the failing slices).
        policies: recipe-defined policies (:class:`RecipePolicy`); a name that is also
            registered replaces the registered pipeline for this run.
        cell_policies: ``property.bin`` -> policy name, to choose which policy fills a
            cell (default: the first recipe policy, then registered one, targeting it).
        fill_policy: policy that lifts class counts (``null``: lift only cells).
        max_per_source: at most this many new images from one source per policy.
        exclude_tags: train samples with any of these tags are never sources
            (``leakage``: a near copy of a val/test image; ``label_issue``).
        seed: plan seed; every image's seed derives from it.
        workers: worker processes; default: one process when the plan's estimated serial
            time is under 20 s (workers start slowly), else every CPU this process may use.
        image_format: ``source`` (JPEG sources stay JPEG, others PNG), ``jpg`` or ``png``.
        jpeg_quality: OpenCV JPEG quality 50-100 (default 95).
        reaudit: audit the dataset again after writing and compare each cell with its target.
    """

    model_config = {"extra": "forbid"}

    output_dir: Path | None = None
    min_count: Count = Field(200, ge=0)
    target_ratio: float | None = Field(None, gt=0.0, le=1.0)
    coverage_targets: dict[str, dict[str, float]] = {
        "orientation": {"portrait": 0.2}, "colour": {"grayscale": 0.1}, "clarity": {"blurry": 0.1}}
    class_targets: dict[str, dict[str, dict[str, float]]] = {}
    policies: dict[str, RecipePolicy] = {}
    cell_policies: dict[str, str] = {}
    fill_policy: str | None = "light"
    max_per_source: Count = Field(5, ge=1)
    exclude_tags: list[str] = ["leakage", "label_issue"]
    seed: Count = 0
    workers: Count | None = Field(None, ge=0)
    image_format: Literal["source", "jpg", "png"] = "source"
    jpeg_quality: Count = Field(95, ge=50, le=100)
    reaudit: bool = True

    @field_validator("coverage_targets")
    @classmethod
    def _coverage(cls, v: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        total = 0.0
        for prop, bins in v.items():
            if prop not in PROPERTY_BINS:
                raise ValueError(f"{prop!r} is not an audited property ({', '.join(PROPERTY_BINS)})")
            for b, share in bins.items():
                if b not in PROPERTY_BINS[prop]:
                    raise ValueError(f"{prop}.{b} is not a bin ({', '.join(PROPERTY_BINS[prop])})")
                if not 0.0 < float(share) < 1.0:
                    raise ValueError(f"{prop}.{b} share must be in (0, 1), got {share}")
                total += float(share)
        if total >= 1.0:
            raise ValueError(f"the target shares sum to {total:g}; they must sum to less than 1")
        return v

    @field_validator("class_targets")
    @classmethod
    def _class_targets(cls, v: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, dict[str, float]]]:
        for label, targets in v.items():
            try:
                cls._coverage(targets)
            except ValueError as exc:
                raise ValueError(f"class {label!r}: {exc}") from None
        return v

    @field_validator("cell_policies")
    @classmethod
    def _cells(cls, v: dict[str, str]) -> dict[str, str]:
        for cell in v:
            _parse_cell(cell, "cell_policies key")
        return v


def _augment_stage(run: Any, options: AugmentOptions) -> dict[str, Any]:
    from vetset.plugins.augment.steps import run_augment

    return run_augment(run, options)


@hookimpl
def vetset_register_stages(register):
    from vetset.plugins.audit.stage import WORKER_PRELOAD, compute_modules
    from vetset.plugins.augment.writer import PRELOAD

    register(Stage(name="augment", run=_augment_stage, options=AugmentOptions,
                   description="plan albumentations augmentation for the audit's gaps, write new train images, re-audit",
                   worker_modules=PRELOAD + WORKER_PRELOAD,  # it audits again: with the checks' compute modules
                   bind=lambda stage, hooks: replace(stage, worker_modules=stage.worker_modules + compute_modules(hooks))))


@hookimpl
def vetset_register_transforms(register):
    from vetset.plugins.augment.transforms import TRANSFORMS

    for name, cls in TRANSFORMS.items():
        register(name, cls)


@hookimpl
def vetset_register_policies(register):
    from vetset.plugins.augment.policies import register_bundled

    register_bundled(register)


def _augmented_view(dataset: Any) -> Any:
    return dataset.match_tags("augmented")


@hookimpl
def vetset_register_views(register):
    register(ViewSpec(name="augmented", stage="augment", build=_augmented_view,
                      description="train images written by the augment stage (tag augmented)"))


@hookimpl
def vetset_register_report_sections(register):
    from vetset.core.registry import ReportSection
    from vetset.plugins.augment.report import render_section

    register(ReportSection(name="augmentation", title="Augmentation", render=render_section, order=70))


__all__ = ["AugmentOptions", "RecipePolicy", "load_pipeline", "RecipeError"]
