"""The JSON Schema of ``result.json`` and a validator for it.

The schema (``core/schema/result.schema.json``, JSON Schema draft 2020-12) is strict at
the top level and loose inside stage blocks: the keys the contract between plugins fixes
(the audit block, the train block, the report block, every stage's flat ``metrics``) are
typed, anything else a stage adds is allowed. ``docs/result-schema.md`` describes it.
"""

from __future__ import annotations

import functools
import json
from importlib import resources
from typing import Any

from vetset.core.errors import VetsetError
from vetset.core.result import SCHEMA_VERSION

SCHEMA_RESOURCE = "schema/result.schema.json"


class ResultSchemaError(VetsetError):
    """A run result does not match the result schema."""


@functools.lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The result schema as a dict (read once from the package data)."""
    text = resources.files("vetset.core").joinpath(SCHEMA_RESOURCE).read_text(encoding="utf-8")
    return json.loads(text)


def _validator() -> Any:
    from jsonschema import Draft202012Validator

    schema = load_schema()
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def schema_errors(result: Any) -> list[str]:
    """Every way ``result`` breaks the schema, as ``"path: message"`` lines (empty when valid).

    Paths are dotted (``stages.audit.metrics.leakage_groups``); ``(top level)`` for the root.
    Errors are sorted by path so the output is stable.
    """
    errors = sorted(_validator().iter_errors(result), key=lambda e: [str(p) for p in e.absolute_path])
    out = []
    for err in errors:
        path = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        out.append(f"{path}: {err.message}")
    return out


def validate_result(result: Any, source: str = "result") -> None:
    """Raise when ``result`` does not match the schema of its ``schema_version``.

    Args:
        result: a parsed ``result.json``.
        source: name used in the message (e.g. the file path).

    Raises:
        ResultSchemaError: wrong ``schema_version`` (the file was written by another
            vetset), or up to three schema violations with their paths.
    """
    version = result.get("schema_version") if isinstance(result, dict) else None
    if version != SCHEMA_VERSION:
        raise ResultSchemaError(
            f"{source} has schema_version {version!r}; this vetset reads versions 1 to {SCHEMA_VERSION} "
            f"(read_result turns 1 into {SCHEMA_VERSION}), so rebuild it with the vetset that wrote it "
            f"or rerun the recipe to write it again.")
    errors = schema_errors(result)
    if errors:
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise ResultSchemaError(f"{source} does not match the result schema: " + "; ".join(errors[:3]) + more + ".")
