"""The versioned JSON run result that every report and view is built from.

Layout (``SCHEMA_VERSION`` 2; ``docs/result-schema.md`` lists what each version changed)::

    {
      "schema_version": 2,
      "vetset_version": "0.1.0",
      "dataset": "vetset-digits",
      "source": "/abs/path/to/data",
      "out_dir": "/abs/path/to/out",
      "recipe": {...validated recipe, defaults filled...},
      "started_at": "2026-11-29T23:59:00+00:00", "finished_at": ..., "duration_s": 12.3,
      "load": {...LoadSummary...},
      "stages": {"audit": {...}, "train": {...}, ...},   # each stage's own JSON
      "stage_times_s": {"audit": 1.2, ...},
      "fail_on": {"failures": [...], "checked": {...}}
    }

Each stage documents its own block; a stage may put numbers meant for ``fail_on`` under
``stages.<stage>.metrics``.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 2
RESULT_FILE = "result.json"


def _default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return None if not math.isfinite(float(obj)) else float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    if callable(getattr(obj, "tolist", None)):  # array-likes such as the audit's NumericColumn
        return [None if isinstance(v, float) and not math.isfinite(v) else v for v in obj.tolist()]
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON via a temp file and ``os.replace`` so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=2, default=_default, allow_nan=False)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``result.json`` (a file or a run folder containing one)."""
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    with open(p, encoding="utf-8") as f:
        return json.load(f)


def lookup(result: dict[str, Any], dotted: str) -> Any:
    """Value at ``stages.<dotted>`` (e.g. ``audit.metrics.leakage_groups``), or ``None``."""
    node: Any = result.get("stages", {})
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _metric_paths(result: dict[str, Any]) -> list[str]:
    """Every ``<stage>.metrics.<name>`` the run computed, for "did you mean" hints."""
    return [f"{stage}.metrics.{name}" for stage, block in (result.get("stages") or {}).items()
            if isinstance(block, dict) for name in (block.get("metrics") or {})]


def evaluate_fail_on(result: dict[str, Any], fail_on: dict[str, float]) -> dict[str, Any]:
    """Compare each ``fail_on`` metric with its threshold; fail when value > threshold.

    Returns:
        ``{"failures": [sentence, ...], "checked": {metric: {"value", "threshold", "failed"}}}``.
        A metric the run did not compute is a failure (the gate cannot be checked).
    """
    failures, checked = [], {}
    for metric, threshold in fail_on.items():
        value = lookup(result, metric)
        if isinstance(value, bool):
            value = int(value)
        if not isinstance(value, (int, float)):
            near = difflib.get_close_matches(metric, _metric_paths(result), n=1, cutoff=0.8)
            hint = f"; did you mean {near[0]}?" if near else " (check the recipe's stages and the metric name)"
            failures.append(f"{metric} was not computed by this run{hint}")
            checked[metric] = {"value": None, "threshold": threshold, "failed": True}
            continue
        failed = value > threshold
        if failed:
            failures.append(f"{metric} = {value:g} exceeds {threshold:g}")
        checked[metric] = {"value": value, "threshold": threshold, "failed": failed}
    return {"failures": failures, "checked": checked}
