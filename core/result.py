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
from collections.abc import Mapping
from functools import partial
from pathlib import Path, PurePath
from typing import Any

import numpy as np

from vetset.core.atomic import atomic_write

SCHEMA_VERSION = 2
RESULT_FILE = "result.json"


def to_jsonable(value: Any, *, max_elements: int | None = None, strict: bool = False) -> Any:
    """``value`` as plain JSON (and BSON) types: what vetset writes to ``result.json`` and to
    FiftyOne fields. The one JSON-safety function of vetset.

    numpy scalars become Python numbers and arrays (and anything with ``tolist()``, such as
    pandas arrays) lists; tuples and sets lists; dict keys strings (a ``str`` subclass's
    value, as ``json`` writes it); ``Path`` its string; a ``str`` subclass (a ``(str, Enum)``
    member) its value; NaN, infinities and pandas' ``NA`` ``None``; integers beyond 64 bits
    their decimal string (MongoDB stores at most 8-byte integers; bson raises
    ``OverflowError``). Dispatches on the exact type first, so plain values cost a type check.

    Args:
        value: any value.
        max_elements: arrays with more elements become ``{"shape", "dtype"}`` and longer
            lists or tuples ``{"length"}``; ``None``: no limit.
        strict: raise ``TypeError`` for a value of another type, instead of its ``str``
            (as ``json.dumps``'s ``default`` hook must).

    Raises:
        TypeError: ``strict`` and a value of a type not listed.
    """
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:
        return value if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF else str(value)
    if kind is dict:
        return {k if type(k) is str else _key(k): to_jsonable(v, max_elements=max_elements, strict=strict)
                for k, v in value.items()}
    if kind is tuple or kind is list or kind is set or kind is frozenset:
        if max_elements is not None and len(value) > max_elements:
            return {"length": len(value)}
        return [to_jsonable(v, max_elements=max_elements, strict=strict) for v in value]
    if isinstance(value, np.ndarray):
        if max_elements is not None and value.size > max_elements:
            return {"shape": list(value.shape), "dtype": str(value.dtype)}
        return to_jsonable(value.tolist(), max_elements=max_elements, strict=strict)
    if isinstance(value, np.generic):
        return to_jsonable(value.item(), max_elements=max_elements, strict=strict)
    for plain in (bool, int, float, str):  # subclasses (IntEnum, a (str, Enum) member)
        if isinstance(value, plain):
            # str.__str__: a (str, Enum) member's value ("red"), where str() gives "Colour.RED"
            return to_jsonable(str.__str__(value) if plain is str else plain(value), max_elements=max_elements,
                               strict=strict)
    if kind.__name__ == "NAType":  # pandas.NA, without importing pandas
        return None
    if isinstance(value, Mapping):
        return to_jsonable(dict(value), max_elements=max_elements, strict=strict)
    if isinstance(value, (list, tuple, set, frozenset)):
        return to_jsonable(list(value), max_elements=max_elements, strict=strict)
    if isinstance(value, PurePath):
        return str(value)
    if callable(getattr(value, "tolist", None)):  # array-likes (pandas arrays)
        return to_jsonable(value.tolist(), max_elements=max_elements, strict=strict)
    if strict:
        raise TypeError(f"Object of type {kind.__name__} is not JSON serializable")
    return str(value)


def _key(key: Any) -> str:
    """A dict key as ``str``: a ``str`` subclass's value (as ``json`` writes it), else ``str(key)``."""
    return str.__str__(key) if isinstance(key, str) else str(key)


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON (:func:`to_jsonable` for what ``json`` cannot write), atomically
    (:func:`vetset.core.atomic.atomic_write`), creating the folder."""
    text = json.dumps(obj, indent=2, default=partial(to_jsonable, strict=True), allow_nan=False)
    atomic_write(path, text, mkdir=True)


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read a ``result.json`` (a file or a run folder containing one).

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not JSON, or its JSON is not an object (e.g. a list written by hand).
    """
    p = Path(path)
    if p.is_dir():
        p = p / RESULT_FILE
    with open(p, encoding="utf-8") as f:
        result = json.load(f)
    if not isinstance(result, dict):
        raise ValueError(f"{p} holds a JSON {type(result).__name__}, not an object")
    return upgrade_result(result)


#: The version-1 audit options of the pass itself; every other key but ``checks`` and
#: ``plugin_options`` held a built-in check's options (``docs/result-schema.md``, version 2).
_V1_AUDIT_PASS_KEYS = ("workers", "max_side", "chunk_size", "coverage_gap_share")


def _audit_options_v1_to_v2(options: Any) -> Any:
    """Version-1 audit options in the version-2 layout: ``checks`` (a list of names, or
    ``null`` for every check) becomes ``select``; each built-in check's block and each
    ``plugin_options.<check>`` becomes ``checks.<check>``."""
    if not isinstance(options, dict) or isinstance(options.get("checks"), dict):
        return options
    out = {k: v for k, v in options.items() if k in _V1_AUDIT_PASS_KEYS}
    out["select"] = options.get("checks")
    checks = {k: v for k, v in options.items()
              if k not in (*_V1_AUDIT_PASS_KEYS, "select", "checks", "plugin_options")}
    plugin_options = options.get("plugin_options")
    checks.update(plugin_options if isinstance(plugin_options, dict) else {})
    out["checks"] = checks
    return out


def upgrade_result(result: Any) -> Any:
    """``result`` (a parsed ``result.json``) in the current layout when an earlier
    ``schema_version`` wrote it: version 1 differs only in the audit's options
    (``recipe.stages.audit`` and ``stages.audit.options``, see
    :func:`_audit_options_v1_to_v2`), so it is read as version 2. Other versions, and
    anything that is not a result, are returned as they are (the schema check names them).
    """
    if not isinstance(result, dict) or result.get("schema_version") != 1:
        return result
    result = dict(result, schema_version=SCHEMA_VERSION)
    recipe = result.get("recipe")
    if isinstance(recipe, dict) and isinstance(recipe.get("stages"), dict) and "audit" in recipe["stages"]:
        stages = dict(recipe["stages"], audit=_audit_options_v1_to_v2(recipe["stages"]["audit"]))
        result["recipe"] = dict(recipe, stages=stages)
    blocks = result.get("stages")
    if isinstance(blocks, dict) and isinstance(blocks.get("audit"), dict) and "options" in blocks["audit"]:
        audit = dict(blocks["audit"], options=_audit_options_v1_to_v2(blocks["audit"]["options"]))
        result["stages"] = dict(blocks, audit=audit)
    return result


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
