"""App form helpers shared by vetset's operators: pydantic options -> form fields and back.

Every stage validates its options with a pydantic model (``extra="forbid"``); the App form
shows the fields of that model with their defaults, and ``resolve_input`` validates what
the user typed against the same model, marking the offending field invalid with the
pydantic message (the way FiftyOne's own plugins flag inputs), so a bad value never
reaches ``execute``. Lists of strings (or of fixed choices) are multi-select
autocomplete fields, as FiftyOne's own plugins do for tags; nested models get their own
fields; mappings keep their defaults (recipes set those).
"""

from __future__ import annotations

import logging
import types as pytypes
import typing
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, Literal

import fiftyone.operators.types as types

from vetset.core.result import to_jsonable

logger = logging.getLogger("vetset.app")

#: Separator between a stage prefix and a field name in form parameter names.
SEP = "__"
_SIMPLE = {bool: "bool", int: "int", float: "float", str: "str", PurePath: "str", Path: "str"}


def _kind(annotation: Any) -> tuple[str | None, list[Any]]:
    """The widget kind for a field annotation and, for enums, its choices."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, pytypes.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _kind(args[0]) if len(args) == 1 else (None, [])
    if origin is Literal:
        return "enum", list(typing.get_args(annotation))
    if origin is typing.Annotated:
        return _kind(typing.get_args(annotation)[0])
    if origin is list:
        args = typing.get_args(annotation)
        item, choices = _kind(args[0]) if args else (None, [])
        if item == "str":
            return "list", []
        if item == "enum" and all(isinstance(c, str) for c in choices):
            return "list", choices
        return None, []
    return _SIMPLE.get(annotation), []


def _json_default(value: Any) -> Any:
    """A field's default as the form shows it: a JSON scalar or a list of them, else ``None``."""
    value = to_jsonable(value)
    if isinstance(value, list):
        return [v for v in value if isinstance(v, (bool, int, float, str))]
    return value if isinstance(value, (bool, int, float, str)) else None


def field_docs(model: type) -> dict[str, str]:
    """Descriptions of a model's fields: ``Field(description=...)``, else the class
    docstring's Google-style ``Attributes:`` entries (how vetset documents options)."""
    import inspect

    docs: dict[str, str] = {}
    lines = (inspect.getdoc(model) or "").splitlines()
    in_attrs, current, indent = False, None, None
    for line in lines:
        stripped = line.strip()
        if stripped in ("Attributes:", "Args:"):
            in_attrs, current, indent = True, None, None
            continue
        if not in_attrs:
            continue
        if not stripped:
            current = None
            continue
        lead = len(line) - len(line.lstrip())
        if indent is None:
            indent = lead
        if lead < indent:
            in_attrs = False
            continue
        name, sep, text = stripped.partition(":")
        if lead == indent and sep and name.isidentifier():
            current = name
            docs[name] = text.strip()
        elif current:
            docs[current] += " " + stripped
    for name, field in model.model_fields.items():
        if field.description:
            docs[name] = field.description
    return docs


def _submodel(annotation: Any) -> type | None:
    """The pydantic model class of a (possibly optional) nested-model field, else ``None``."""
    from pydantic import BaseModel

    origin = typing.get_origin(annotation)
    if origin in (typing.Union, pytypes.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = args[0] if len(args) == 1 else None
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def model_inputs(inputs: types.Object, model: type, prefix: str, skip: tuple[str, ...] = (),
                 _path: str = "") -> dict[str, Any]:
    """Add one form field per simple field of a pydantic ``model`` (nested models included).

    Args:
        inputs: the form.
        model: a pydantic model class (a stage's options).
        prefix: the stage name; parameter names are ``<prefix>__<field>`` (and
            ``<prefix>__<field>__<subfield>`` for a nested model's fields).
        skip: field names not to show; a nested model's fields as ``field.subfield``.

    Returns:
        ``{"field" or "field.subfield": Property}`` of the fields added (to flag them later).
    """
    props: dict[str, Any] = {}
    docs = field_docs(model)
    for name, field in model.model_fields.items():
        if f"{_path}{name}" in skip:
            continue
        pname = f"{prefix}{SEP}{name}"
        sub = _submodel(field.annotation)
        if sub is not None:
            inputs.view(f"{pname}{SEP}header", types.Header(
                label=f"{name.replace('_', ' ').capitalize()} options", description=docs.get(name) or None))
            props.update(model_inputs(inputs, sub, pname, skip, _path=f"{_path}{name}."))
            continue
        kind, choices = _kind(field.annotation)
        if kind is None:
            continue
        label = name.replace("_", " ").capitalize()
        default = None if field.is_required() else field.get_default(call_default_factory=True)
        kwargs = {"label": label, "description": docs.get(name) or None, "default": _json_default(default)}
        key = f"{_path}{name}"
        if kind == "bool":
            props[key] = inputs.bool(pname, view=types.CheckboxView(), **kwargs)
        elif kind == "int":
            props[key] = inputs.int(pname, **kwargs)
        elif kind == "float":
            props[key] = inputs.float(pname, **kwargs)
        elif kind == "str":
            props[key] = inputs.str(pname, **kwargs)
        elif kind == "list":
            # fixed choices (a list of Literal) or free text; the default's items are offered too
            offered = list(dict.fromkeys([*choices, *(kwargs["default"] or [])]))
            view = types.AutocompleteView(allow_user_input=not choices, allow_duplicates=False)
            for choice in offered:
                view.add_choice(choice, label=str(choice))
            props[key] = inputs.list(pname, types.String(), view=view, **kwargs)
        else:
            dropdown = types.DropdownView()
            for choice in choices:
                dropdown.add_choice(choice, label=str(choice))
            props[key] = inputs.enum(pname, dropdown.values(), view=dropdown, **kwargs)
    return props


def options_from_params(params: dict[str, Any], model: type, prefix: str) -> dict[str, Any]:
    """The options mapping for ``model`` from form ``params`` (unset fields are left out)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        if sub is not None:
            nested = options_from_params(params, sub, f"{prefix}{SEP}{name}")
            if nested:
                out[name] = nested
            continue
        value = params.get(f"{prefix}{SEP}{name}")
        if value is not None and value != "":
            out[name] = value
    return out


def validate_options(inputs: types.Object, model: type, values: dict[str, Any], props: dict[str, Any],
                     title: str) -> Any | None:
    """Validate ``values`` with ``model``; on failure flag the fields and add a warning.

    Returns:
        The validated model, or ``None`` when invalid (the form then cannot be submitted).
    """
    from pydantic import ValidationError

    try:
        return model.model_validate(values)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(part) for part in err["loc"])
            msg = err["msg"]
            lines.append(f"{field}: {msg}" if field else msg)
            # an item of a list option ("splits.0") flags the list's field
            field = ".".join(str(part) for part in err["loc"] if not isinstance(part, int))
            if field in props:
                props[field].invalid = True
                props[field].error_message = msg
        warn = inputs.view(f"{title}_invalid", types.Warning(
            label=f"Invalid {title} options", description="; ".join(lines)))
        warn.invalid = True
        return None


def warning(inputs: types.Object, name: str, label: str, description: str = "", block: bool = False) -> Any:
    """Add a warning to the form; ``block=True`` also prevents submitting it."""
    prop = inputs.view(name, types.Warning(label=label, description=description or None))
    if block:
        prop.invalid = True
    return prop


def stage_or_warning(inputs: types.Object, hooks: Any, stage: str) -> Any | None:
    """The registered stage ``stage``, or ``None`` after adding a blocking warning."""
    if stage in hooks.stages:
        return hooks.stages[stage]
    warning(inputs, f"no_{stage}", f"No plugin provides the '{stage}' stage",
            "`recipes plugins` lists the plugins that are loaded; VETSET_BLOCK_PLUGINS may block it.",
            block=True)
    return None


def is_delegated(ctx: Any) -> bool:
    """Whether this execution runs as a delegated (scheduled) operation, away from the App."""
    return bool(getattr(ctx, "delegated", False))


@contextmanager
def reporting(ctx: Any) -> Iterator[Callable[[str], None]]:
    """Yield a ``log(msg)`` for ``run_stages`` and forward progress to the App.

    Delegated runs report each stage message and each ``vetset.core.progress.track`` loop
    (done / total) with ``ctx.set_progress``, which the App shows on the run's page.
    Immediate runs log to the server's logger (the App waits for the result).
    """
    from vetset.core.progress import listen

    if not is_delegated(ctx):
        yield logger.info
        return
    current = {"label": ""}

    def log(msg: str) -> None:
        current["label"] = str(msg)
        ctx.set_progress(label=current["label"])

    def on_progress(description: str, done: int, total: int | None) -> None:
        frac = (done / total) if total else None
        ctx.set_progress(progress=frac, label=f"{current['label']} - {description}: {done}/{total or '?'}")

    with listen(on_progress):
        yield log


def reload_app(ctx: Any) -> None:
    """Ask the App to reload the dataset (new fields, tags, saved views); only when it is listening."""
    if not is_delegated(ctx) and getattr(ctx, "executor", None) is not None:
        ctx.trigger("reload_dataset")


def summary_output(ctx: Any, title: str) -> types.Property:
    """The output form of a stage run: samples, result file, metrics, saved views."""
    outputs = types.Object()
    outputs.int("num_samples", label="Samples processed")
    outputs.str("result_json", label="Results written to")
    outputs.obj("metrics", label="Metrics", view=types.JSONView())
    outputs.list("saved_views", types.String(), label="Saved views on the dataset")
    outputs.obj("fail_on_failures", label="fail_on gates exceeded (empty: all passed)", view=types.JSONView())
    return types.Property(outputs, view=types.View(label=title))


def stage_form(inputs: types.Object, hooks: Any, stage: str, params: dict[str, Any],
               skip: tuple[str, ...] = ()) -> tuple[Any, dict[str, Any]] | None:
    """Add ``stage``'s options to the form and validate them; ``None`` if unavailable/invalid."""
    spec = stage_or_warning(inputs, hooks, stage)
    if spec is None:
        return None
    props = model_inputs(inputs, spec.options, stage, skip=skip)
    values = options_from_params(params, spec.options, stage)
    if validate_options(inputs, spec.options, values, props, stage) is None:
        return None
    return props, values


def open_view_input(inputs: types.Object, view: str) -> None:
    """A checkbox: load ``view`` in the App when an immediate run finishes."""
    inputs.bool("open_view", default=True, label=f"Open the '{view}' view when done",
                description="Only for runs that are not scheduled (delegated).", view=types.CheckboxView())
