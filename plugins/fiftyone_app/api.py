"""What the FiftyOne App plugin calls: run stages, read the audit summary, list saved views.

The operators and the panel in ``vetset.plugins.fiftyone_app`` stay thin: they turn App
form values into the arguments of these functions and show what they return. Everything
here works on a dataset *name*, so a delegated operation (run later by
``fiftyone delegated launch`` in another process) calls exactly the same code.

Results live where the command line puts them: ``<out>/result.json`` of the run, whose
folder the run records in ``dataset.info["vetset"]["out_dir"]``. A stage run from the App
reuses that folder and keeps the other stages' blocks in it, so the panel, the report and
``recipes run --resume`` see one consistent result.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vetset.core.errors import ChecksFailed, DataError, RecipeError
from vetset.core.result import RESULT_FILE, read_result

#: Saved views that vetset itself maintains besides the ``audit/<check>`` family.
VETSET_VIEW_PREFIX = "audit/"
#: Name of the one-off recipe built for a run started from the App.
APP_RECIPE = "app"


def load_fo_dataset(name: str) -> Any:
    """The persistent FiftyOne dataset called ``name``.

    Raises:
        DataError: no dataset has that name.
    """
    import fiftyone as fo

    if not name or not fo.dataset_exists(name):
        raise DataError(f"FiftyOne dataset {name!r} does not exist; `fiftyone datasets list` shows the names.")
    return fo.load_dataset(name)


def out_dir_of(dataset: Any) -> Path | None:
    """The run folder recorded in ``dataset.info["vetset"]["out_dir"]``, or ``None``."""
    out = ((dataset.info or {}).get("vetset") or {}).get("out_dir")
    return Path(out) if out else None


def _previous_result(out_dir: Path | None) -> dict[str, Any] | None:
    if out_dir is None or not (out_dir / RESULT_FILE).is_file():
        return None
    try:
        return read_result(out_dir / RESULT_FILE)
    except (OSError, ValueError):
        return None


def stored_result(dataset: Any) -> dict[str, Any]:
    """The run's ``result.json`` for ``dataset`` (via ``dataset.info``), or ``{}`` when there is none."""
    return _previous_result(out_dir_of(dataset)) or {}


def run_stages(dataset_name: str, stages: dict[str, dict[str, Any] | None], view_ids: list[str] | None = None,
               hooks: Any = None, out_dir: str | os.PathLike | None = None,
               log: Callable[[str], Any] = print, fail_on: dict[str, float] | None = None) -> dict[str, Any]:
    """Run registered stages on a FiftyOne dataset (or, for the audit, on some of its samples).

    The stages form a one-off recipe named ``app`` validated by
    :func:`vetset.core.recipe.parse_recipe`, so a bad option gives the same one-sentence
    error as a bad recipe file. On the whole dataset the recipe runs through
    :class:`vetset.core.run.Run` (saved views rebuilt, ``result.json`` written); the other
    stages' blocks of the previous ``result.json`` are kept, in their order.

    With ``view_ids`` only the ``audit`` stage is allowed: it calls
    ``vetset.plugins.audit.stage.run_audit`` on ``dataset.select(view_ids)``, which writes the
    per-sample fields and tags of those samples; the ``audit/...`` saved views are then
    rebuilt from the whole dataset. ``result.json`` is left alone, since it describes the
    dataset, not a subset.

    Args:
        dataset_name: name of a FiftyOne dataset with a ``ground_truth`` Classification field.
        stages: ``{stage name: options mapping}`` in run order (``None`` = defaults).
        view_ids: sample ids to audit, or ``None`` for the whole dataset.
        hooks: the :class:`~vetset.core.manager.Hooks` facade (default: the process-wide one).
        out_dir: run folder; default the one recorded in ``dataset.info``, else
            ``./vetset-runs/<dataset>``.
        log: called with one-line status messages.
        fail_on: a recipe's ``fail_on`` gates (dotted metric path -> threshold), checked
            on the whole-dataset result as ``recipes run`` does; an exceeded gate does not
            raise here (the App shows it): it is listed in the returned ``fail_on``.

    Returns:
        ``{"dataset", "target" ("dataset" | "view"), "num_samples" (samples processed),
        "out_dir", "result_json" (path or ``None``), "stages": {name: block of this run},
        "saved_views": [names on the dataset afterwards], "fail_on": {"failures": [sentence,
        ...], "checked": {metric: {...}}}}`` (``fail_on`` empty for a view).

    Raises:
        RecipeError: an unknown stage or invalid options (named in the message).
        DataError: the dataset does not exist, or ``view_ids`` is empty.
        VetsetError: ``view_ids`` given for a stage other than ``audit``; or a stage's own
            user-facing error.
    """
    from vetset.core.manager import get_hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    hooks = hooks if hooks is not None else get_hooks()
    if not stages:
        raise RecipeError("No stage chosen: pick at least one of " + ", ".join(hooks.stages.names()) + ".")
    recipe = parse_recipe({"name": APP_RECIPE, "description": "started from the FiftyOne App",
                           "data": {"format": "fiftyone"}, "stages": dict(stages), "fail_on": dict(fail_on or {})},
                          hooks.stages, source="from the FiftyOne App")
    dataset = load_fo_dataset(dataset_name)
    out = Path(out_dir) if out_dir else out_dir_of(dataset)
    run = Run(recipe, hooks, data=None, dataset=dataset_name, out_dir=out, log=log)

    if view_ids is not None:
        if list(stages) != ["audit"]:
            raise RecipeError("Only the audit runs on a view or a selection; run "
                              f"{', '.join(s for s in stages if s != 'audit')} on the whole dataset.")
        if not view_ids:
            raise DataError(f"No samples to audit in dataset {dataset_name!r}: the view or selection is empty.")
        from vetset.plugins.audit.stage import run_audit

        view = dataset.select(list(view_ids))
        log(f"[audit] {len(view)} of {len(dataset)} samples")
        block = run_audit(view, recipe.options("audit"), hooks, log=log)
        run.dataset = dataset
        run.save_views("audit")
        return {"dataset": dataset.name, "target": "view", "num_samples": len(view), "out_dir": str(run.out_dir),
                "result_json": None, "stages": {"audit": block}, "saved_views": dataset.list_saved_views(),
                "fail_on": {}}

    previous = _previous_result(out)
    if previous:  # carry every earlier block over, in its order; the stages run now replace theirs
        for name, block in (previous.get("stages") or {}).items():
            run.results[name] = block
            run.stage_times[name] = (previous.get("stage_times_s") or {}).get(name, 0.0)
    try:
        result = run.execute()
    except ChecksFailed:  # result.json is written; the gates' outcome goes back to the App
        result = run.result
        log("[fail_on] " + "; ".join(result["fail_on"]["failures"]))
    ds = run.dataset
    return {"dataset": ds.name, "target": "dataset", "num_samples": len(ds), "out_dir": str(run.out_dir),
            "result_json": str(run.out_dir / RESULT_FILE),
            "stages": {name: result["stages"][name] for name in stages}, "saved_views": ds.list_saved_views(),
            "fail_on": result.get("fail_on") or {}}


def plan_augmentation(dataset_name: str, options: dict[str, Any] | None = None, hooks: Any = None,
                      log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Plan the augment stage on a dataset without writing any image.

    Uses the augment plugin's own planner (``vetset.plugins.augment.steps.build_plan``, what
    ``recipes plan`` prints) on the stored audit block of the run's ``result.json`` (the
    planner audits again only when the dataset holds augmented samples or no audit exists).

    Args:
        dataset_name: the FiftyOne dataset.
        options: ``stages.augment`` options mapping (``None`` = defaults).

    Returns:
        ``{"dataset", "plan_key", "images" (new train images planned), "output_dir",
        "plan": {"images", "by_policy", "classes": [...], "cells": [...]}}``.

    Raises:
        RecipeError: invalid options or no augment stage registered; DataError: no dataset.
    """
    from vetset.core.manager import get_hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    hooks = hooks if hooks is not None else get_hooks()
    recipe = parse_recipe({"name": APP_RECIPE, "data": {"format": "fiftyone"}, "stages": {"augment": options or {}}},
                          hooks.stages, source="from the FiftyOne App")
    dataset = load_fo_dataset(dataset_name)
    out = out_dir_of(dataset)
    run = Run(recipe, hooks, data=None, dataset=dataset_name, out_dir=out, log=log)
    previous = _previous_result(out) or {}
    if (previous.get("stages") or {}).get("audit"):
        run.results["audit"] = previous["stages"]["audit"]
    run.load()
    from vetset.plugins.augment.steps import build_plan

    opts = recipe.options("augment")
    bundle = build_plan(run, opts)
    folder = Path(opts.output_dir) if opts.output_dir else run.out_dir / "augment" / "images"
    return {"dataset": dataset_name, "plan_key": bundle.key, "images": len(bundle.plan.images),
            "output_dir": str(folder), "plan": bundle.plan.summary()}


def vetset_views(dataset: Any, hooks: Any = None) -> list[dict[str, Any]]:
    """The saved views on ``dataset`` that vetset maintains, with their sample counts.

    A view counts as vetset's when a plugin registered it (``hooks.views``), or its name
    starts with ``audit/`` or with a registered name and ``/`` (``validation_errors/<class>``).
    Registry order first, then the others sorted by name.

    Returns:
        ``[{"name", "description", "count" (samples in the view), "stage"}]``.
    """
    from vetset.core.manager import get_hooks

    hooks = hooks if hooks is not None else get_hooks()
    present = dataset.list_saved_views()
    registered = {spec.name: spec for spec in hooks.views.values()}
    names = [n for n in registered if n in present]
    families = (VETSET_VIEW_PREFIX, *(f"{n}/" for n in registered))
    names += sorted(n for n in present if n.startswith(families) and n not in registered)
    out = []
    for name in names:
        info = dataset.get_saved_view_info(name)
        spec = registered.get(name)
        out.append({"name": name, "description": info.get("description") or (spec.description if spec else ""),
                    "count": len(dataset.load_saved_view(name)),
                    "stage": spec.stage if spec else _family_stage(name, registered)})
    return out


def _family_stage(name: str, registered: dict[str, Any]) -> str:
    parent = registered.get(name.split("/", 1)[0])
    return parent.stage if parent is not None else "audit"


def audit_summary(dataset_name: str, hooks: Any = None) -> dict[str, Any]:
    """What the App panel shows for a dataset: balance, coverage, issue counts.

    Balance and coverage come from the audit block of the run's ``result.json`` (see the
    audit contract in the project brief); when the dataset was never audited, the class
    counts per split are counted live from the sample tags and ``coverage`` is empty.
    Issue counts are the sizes of vetset's saved views, counted now.

    Returns:
        ``{"dataset", "num_samples", "out_dir", "result_json", "has_audit" (bool),
        "stages_run" ([names]), "finished_at", "class_counts" ({split: {class: int}}),
        "coverage" ({split: {property: {class: {bin: int}}}}), "metrics" (audit metrics),
        "issues" (:func:`vetset_views` rows), "slices" / "test_slices" (the validate stage's
        failure slices of val / test or ``{}``), "drift" (the drift stage's block or ``{}``),
        "iterate" (the iterate stage's block or ``{}``)}``.

    Raises:
        DataError: the dataset does not exist.
    """
    from vetset.core.dataset import split_counts

    dataset = load_fo_dataset(dataset_name)
    out = out_dir_of(dataset)
    result = _previous_result(out) or {}
    audit = (result.get("stages") or {}).get("audit") or {}
    return {
        "dataset": dataset.name,
        "num_samples": len(dataset),
        "out_dir": str(out) if out else None,
        "result_json": str(out / RESULT_FILE) if result else None,
        "has_audit": bool(audit),
        "stages_run": list(result.get("stages") or {}),
        "finished_at": result.get("finished_at"),
        "class_counts": audit.get("class_counts") or split_counts(dataset),
        "coverage": audit.get("coverage") or {},
        "metrics": audit.get("metrics") or {},
        "issues": vetset_views(dataset, hooks),
        "slices": ((result.get("stages") or {}).get("validate") or {}).get("slices") or {},
        "test_slices": ((result.get("stages") or {}).get("validate") or {}).get("test_slices") or {},
        "drift": (result.get("stages") or {}).get("drift") or {},
        "iterate": (result.get("stages") or {}).get("iterate") or {},
    }


def balance_rows(class_counts: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    """Rows ``{"class", <split>: count, ..., "share": "12.5%"}`` of the class balance table.

    ``share`` is the class's share of all images (split ``all``; else the sum of splits).
    Splits come in the order train, val, test, then any others, ``all`` last.
    """
    order = {"train": 0, "val": 1, "test": 2, "all": 99}
    splits = sorted(class_counts, key=lambda s: (order.get(s, 50), s))
    classes: list[str] = []
    for split in splits:
        classes += [c for c in class_counts[split] if c not in classes]
    totals = class_counts.get("all") or {
        c: sum(class_counts[s].get(c, 0) for s in splits) for c in classes}
    grand = sum(totals.values()) or 1
    rows = []
    for c in classes:
        row: dict[str, Any] = {"class": c}
        row.update({s: int(class_counts[s].get(c, 0)) for s in splits})
        row["share"] = f"{100.0 * totals.get(c, 0) / grand:.1f}%"
        rows.append(row)
    return rows


def coverage_rows(coverage: dict[str, Any], split: str = "all") -> tuple[list[str], list[dict[str, Any]]]:
    """The class x property coverage table of one split.

    Args:
        coverage: the audit block's ``coverage`` mapping ``{split: {property: {class: {bin: n}}}}``.
        split: which split to show (``all`` by default).

    Returns:
        ``(columns, rows)``: columns are ``"<property>:<bin>"`` keys in the audit's order;
        each row is ``{"class": name, column: count, ...}`` (0 where the audit has no entry).
    """
    by_prop = coverage.get(split) or {}
    columns: list[str] = []
    classes: list[str] = []
    for prop, per_class in by_prop.items():
        for cls, bins in per_class.items():
            if cls not in classes:
                classes.append(cls)
            for b in bins:
                key = f"{prop}:{b}"
                if key not in columns:
                    columns.append(key)
    rows = []
    for cls in classes:
        row: dict[str, Any] = {"class": cls}
        for key in columns:
            prop, b = key.split(":", 1)
            row[key] = int(((by_prop.get(prop) or {}).get(cls) or {}).get(b, 0))
        rows.append(row)
    return columns, rows
