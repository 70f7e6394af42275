"""The run engine: load the data, run a recipe's stages in order, keep every result.

One :class:`Run` carries the dataset, the validated recipe and each stage's results;
stages read earlier results from ``run.results`` and never from each other's internals.
After every stage the result is written atomically to ``<out>/result.json`` and the
stage's saved views are (re)built, so an interrupted run leaves a consistent result and
``resume=True`` skips stages that already finished with the same options.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path
from typing import Any

from vetset.core import __version__, rerun
from vetset.core._fiftyone import save_views
from vetset.core.dataset import RUNS_DIR, LoadSummary, load_dataset
from vetset.core.errors import ChecksFailed, VetsetError
from vetset.core.executor import prestart, use_executor
from vetset.core.manager import Hooks
from vetset.core.recipe import Recipe
from vetset.core.result import RESULT_FILE, SCHEMA_VERSION, evaluate_fail_on, read_result, write_json_atomic

#: Folder used when ``--out`` is not given: ``./vetset-runs/<dataset name>``.
DEFAULT_RUNS_DIR = RUNS_DIR  # never read as data (core.dataset.left_out_folder)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class Run:
    """One execution of a recipe.

    Args:
        recipe: the validated recipe.
        hooks: the plugin facade.
        data: ImageFolder root or CSV manifest; ``None`` to use ``dataset`` as it is.
        dataset: FiftyOne dataset name (default derived from ``data``).
        out_dir: folder for ``result.json``, checkpoints, the report (default
            ``./vetset-runs/<dataset>``).
        resume: skip stages whose result is already in ``out_dir/result.json`` with
            the same options, and let stages that support it (training) continue.
        log: callable used for one-line status messages (default: print).
    """

    def __init__(self, recipe: Recipe, hooks: Hooks, data: str | os.PathLike | None = None,
                 dataset: str | None = None, out_dir: str | os.PathLike | None = None,
                 resume: bool = False, log: Any = print):
        self.recipe = recipe
        self.hooks = hooks
        self.data = data
        self.dataset_name = dataset
        self.resume = resume
        self.log = log
        self.dataset: Any = None
        self.load_summary: LoadSummary | None = None
        self._out_dir = Path(out_dir).expanduser().resolve() if out_dir else None
        self.results: dict[str, dict[str, Any]] = {}
        self.stage_times: dict[str, float] = {}
        self.result: dict[str, Any] = {}

    # -- paths -----------------------------------------------------------------------
    @property
    def out_dir(self) -> Path:
        if self._out_dir is None:
            name = self.dataset.name if self.dataset is not None else (self.dataset_name or "run")
            self._out_dir = (Path.cwd() / DEFAULT_RUNS_DIR / name).resolve()
        return self._out_dir

    def stage_dir(self, stage: str) -> Path:
        """``<out>/<stage>``, created on first use."""
        path = self.out_dir / stage
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def classes(self) -> list[str]:
        """The dataset's class list: ``default_classes``, else (a FiftyOne dataset made outside
        vetset) the sorted distinct ``ground_truth`` labels, as the loader reports them."""
        known = list(self.dataset.default_classes or [])
        if known:
            return known
        from vetset.core.dataset import GT_FIELD

        return sorted(str(c) for c in self.dataset.distinct(f"{GT_FIELD}.label") if c is not None)

    # -- execution -------------------------------------------------------------------
    def load(self) -> Any:
        """Load or update the dataset and fire ``vetset_on_dataset_loaded``."""
        opts = self.recipe.data
        self.dataset, self.load_summary = load_dataset(
            self.data, name=self.dataset_name, fmt=opts.format, val_fraction=opts.val_fraction, seed=opts.seed)
        for warning in self.load_summary.warnings:
            self.log(f"[load] {warning}")
        info = dict(self.dataset.info or {})
        info.setdefault("vetset", {})["out_dir"] = str(self.out_dir)
        self.dataset.info = info
        self.dataset.save()
        self.hooks.on_dataset_loaded(self)
        return self.dataset

    def _previous(self) -> dict[str, Any] | None:
        path = self.out_dir / RESULT_FILE
        if not (self.resume and path.exists()):
            return None
        try:
            return read_result(path)
        except (OSError, ValueError):
            return None

    def execute(self) -> dict[str, Any]:
        """Load, run every stage, save views, write ``result.json``, check ``fail_on``.

        Per-image work runs on the recipe's executor (``executor:``, see
        :func:`vetset.core.executor.use_executor`); a Ray instance the run started is shut
        down when it ends.

        Returns:
            The complete run result (see :mod:`vetset.core.result`).

        Raises:
            VetsetError: a user-fixable problem in a stage.
            ChecksFailed: a ``fail_on`` threshold was exceeded (after the result is written).
        """
        with use_executor(self.recipe.executor):
            return self._execute()

    def _execute(self) -> dict[str, Any]:
        started, t0 = _now(), time.perf_counter()
        prestart([m for name in self.recipe.stage_names() if name in self.hooks.stages
                  for m in self.hooks.stages[name].worker_modules])
        if self.dataset is None:
            self.load()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        previous = self._previous()
        dumped = self.recipe.dump()
        self.result = {
            "schema_version": SCHEMA_VERSION, "vetset_version": __version__, "dataset": self.dataset.name,
            "source": self.load_summary.source if self.load_summary else None, "out_dir": str(self.out_dir),
            "recipe": dumped, "started_at": started, "finished_at": None, "duration_s": None,
            "load": self.load_summary.to_dict() if self.load_summary else {},
            "stages": self.results, "stage_times_s": self.stage_times, "fail_on": {},
        }
        for name in self.recipe.stage_names():
            stage = self.hooks.stages[name]
            options = self.recipe.options(name)
            if previous and name in previous.get("stages", {}) and \
                    previous.get("recipe", {}).get("stages", {}).get(name) == dumped["stages"][name]:
                self.results[name] = previous["stages"][name]
                self.stage_times[name] = 0.0  # nothing ran now (the earlier run's time is in its log)
                self.log(f"[{name}] already done in {self.out_dir / RESULT_FILE}; skipped (resume)")
                continue
            self.log(f"[{name}] {stage.description or 'running'}")
            t = time.perf_counter()
            try:
                out = stage.run(self, options)
            except VetsetError:
                raise
            if not isinstance(out, dict):
                raise VetsetError(
                    f"Stage {name!r} (plugin {self.hooks.stages.plugin_of(name)!r}) returned "
                    f"{type(out).__name__}, not a dict.")
            self.results[name] = out
            self.stage_times[name] = round(time.perf_counter() - t, 3)
            self.save_views(name)
            self.save()
            self.hooks.on_stage_finished(self, name, out)
        self.result["finished_at"] = _now()
        self.result["duration_s"] = round(time.perf_counter() - t0, 3)
        self.result["fail_on"] = evaluate_fail_on(self.result, self.recipe.fail_on)
        self.save()
        self.hooks.on_run_finished(self, self.result)
        inputs = rerun.record(self.recipe, self.hooks, self.data, self.dataset.name, self.out_dir)
        if inputs is not None:  # what the next run compares to reuse this result (vetset.core.rerun)
            inputs["result"] = rerun.result_digest(self.result)
            self.result["inputs"] = inputs
            self.save()
        if self.result["fail_on"]["failures"]:
            raise ChecksFailed(self.result["fail_on"]["failures"])
        return self.result

    def save(self) -> Path:
        """Write ``<out>/result.json`` atomically; returns its path."""
        path = self.out_dir / RESULT_FILE
        write_json_atomic(path, self.result)
        return path

    def save_views(self, stage: str) -> list[str]:
        """Save every registered view that belongs to ``stage``; returns their names.

        Only views whose stored stages or description changed are written
        (:func:`vetset.core._fiftyone.save_views`, which reloads the dataset's saved-view
        list first: FiftyOne writes the whole list when one view is saved, so a stale
        in-memory list would drop views that another process saved since this run loaded it).
        """
        built = []
        for spec in self.hooks.views.values():
            if spec.stage != stage:
                continue
            view = spec.build(self.dataset)
            if view is not None:
                built.append((spec.name, view, spec.description or None))
        save_views(self.dataset, built)
        return [name for name, _, _ in built]
