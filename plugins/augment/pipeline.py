"""Albumentations pipelines from recipes: load, validate, and describe what was applied.

A pipeline is stored in the format ``A.to_dict(compose)`` returns (and ``A.save`` writes)::

    {"__version__": "2.0.8",
     "transform": {"__class_fullname__": "Compose", "p": 1.0,
                   "transforms": [{"__class_fullname__": "ToGray", "p": 1.0}, ...]}}

The bare inner mapping (``{"__class_fullname__": ...}``) and a path to a JSON/YAML file
written by ``A.save`` are accepted too. :func:`load_pipeline` builds the ``A.Compose`` with
``A.from_dict``; first it checks every node of the spec and resolves each name (custom
transform classes registered through ``vetset_register_transforms`` first, then
albumentations' own), so that a problem names the transform at fault, with close matches
or albumentations' own message. A custom class reaches ``A.from_dict`` through
albumentations' own registration: every subclass of its transforms is registered under
``cls.get_class_fullname()`` when it is defined. The trainer uses the same function for
its ``train_transform`` option.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import inspect
import json
import sys
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from vetset.core.errors import RecipeError
from vetset.core.result import to_jsonable

#: Arrays (or lists) with more elements than this are stored as a shape/dtype summary in
#: ``aug_params``: an ElasticTransform's displacement field is one value per pixel.
MAX_PARAM_ELEMENTS = 64


def _condense(exc: BaseException) -> str:
    """albumentations' error in one line (pydantic's 'For further information' links dropped)."""
    lines = [ln.strip() for ln in str(exc).splitlines()
             if ln.strip() and not ln.strip().startswith("For further information")]
    if len(lines) > 1 and "validation error" in lines[0]:
        lines = lines[1:]
        # pydantic prints "field" then "  message": join them as "field: message"
        pairs = [f"{lines[i]}: {lines[i + 1]}" if i + 1 < len(lines) else lines[i] for i in range(0, len(lines), 2)]
        return "; ".join(pairs[:3])
    return "; ".join(lines[:3]) or type(exc).__name__


def read_pipeline_spec(spec: Any, where: str) -> dict[str, Any]:
    """Normalise a pipeline spec to the inner ``{"__class_fullname__": ...}`` mapping.

    Args:
        spec: an ``A.to_dict`` mapping (with or without the ``transform`` wrapper), or a
            path (``str``/``Path``) to a ``.json``/``.yaml``/``.yml`` file ``A.save`` wrote.
        where: what to name in error messages (e.g. ``"recipe.yaml: stages.augment.policies.gray.pipeline"``).

    Raises:
        RecipeError: missing/unreadable file, or not a transform mapping.
    """
    if isinstance(spec, (str, Path)):
        path = Path(spec).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise RecipeError(f"{where}: pipeline file {path} cannot be read ({exc.strerror or exc}).") from None
        try:
            if path.suffix.lower() == ".json":
                spec = json.loads(text)
            else:
                import yaml

                spec = yaml.safe_load(text)
        except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError are ValueErrors/YAMLErrors
            raise RecipeError(f"{where}: pipeline file {path} is not valid JSON/YAML: {exc}.") from None
        except Exception as exc:
            raise RecipeError(f"{where}: pipeline file {path} is not valid JSON/YAML: {exc}.") from None
    if not isinstance(spec, Mapping):
        raise RecipeError(f"{where}: a pipeline must be an A.to_dict mapping or a file A.save wrote, "
                          f"got {type(spec).__name__}.")
    inner = spec.get("transform", spec)
    if not isinstance(inner, Mapping) or "__class_fullname__" not in inner:
        raise RecipeError(f"{where}: not an albumentations pipeline; expected the A.to_dict format "
                          "{'transform': {'__class_fullname__': 'Compose', 'transforms': [...]}}.")
    return dict(inner)


@contextlib.contextmanager
def without_albumentations_pytorch() -> Iterator[None]:
    """Within the block, ``import albumentations.pytorch`` raises ``ImportError`` (unless it
    is imported already), so albumentations' optional PyTorch helpers do not import torch.

    ``albumentations/__init__`` imports ``albumentations.pytorch`` (``ToTensorV2``) inside
    ``suppress(ImportError)``, and ``A.from_dict`` imports it too
    (``register_additional_transforms``); that imports torch, most of what a fresh process
    spends importing albumentations (``benchmarks/augment_throughput.py`` prints both
    import times). Writer workers never need ``ToTensorV2``; an explicit
    ``import albumentations.pytorch`` after the block works.
    """
    blocked = "albumentations.pytorch" not in sys.modules
    if blocked:
        sys.modules["albumentations.pytorch"] = None  # type: ignore[assignment]  # makes the import raise ImportError
    try:
        yield
    finally:
        if blocked and sys.modules.get("albumentations.pytorch", 0) is None:
            del sys.modules["albumentations.pytorch"]


def import_albumentations() -> Any:
    """Import albumentations without its optional PyTorch helpers when it is not loaded yet
    (:func:`without_albumentations_pytorch`); in a process that already imported it, this changes nothing.

    Returns:
        the ``albumentations`` module.
    """
    if "albumentations" in sys.modules:
        return sys.modules["albumentations"]
    with without_albumentations_pytorch():
        import albumentations
    return albumentations


def _transform_classes(module: Any) -> dict[str, type]:
    """The transform and composition classes a module exports, by name."""
    import albumentations as A

    return {n: c for n, c in vars(module).items()
            if isinstance(c, type) and issubclass(c, (A.BasicTransform, A.BaseCompose))}


def resolve_transform(name: str, custom: Mapping[str, type], where: str) -> type:
    """The class for a serialized transform name: custom (plugin) classes first, then albumentations'
    (``A.<Name>``, ``albumentations.pytorch.<Name>``), or a ``module.Class`` name of an imported
    module (how ``A.to_dict`` names a class defined outside albumentations).

    Raises:
        RecipeError: unknown name (the message lists close matches).
    """
    import albumentations as A

    if name in custom:
        return custom[name]
    short = name.rsplit(".", 1)[-1] if name.startswith("albumentations.") else name
    module, _, attr = short.rpartition(".")
    if module:
        found = _transform_classes(sys.modules[module]).get(attr) if module in sys.modules else None
    else:
        found = _transform_classes(A).get(short)
        if found is None:
            # a writer worker imports albumentations without its PyTorch helpers (see
            # import_albumentations); a pipeline naming one of them (ToTensorV2) loads them now
            try:
                import albumentations.pytorch as AP

                found = _transform_classes(AP).get(short)
            except ImportError:
                pass
    if found is not None:
        return found
    close = difflib.get_close_matches(short, sorted(set(_transform_classes(A)) | set(custom)), n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        "; use an albumentations transform name or register a custom one through vetset_register_transforms."
    raise RecipeError(f"{where}: unknown transform {name!r}{hint}")


def _resolved(node: Any, custom: Mapping[str, type], where: str, path: str) -> dict[str, Any]:
    """``node`` as ``A.from_dict`` reads it: each name its class's ``get_class_fullname()``
    (the name albumentations registered it under), and a missing ``p`` the class's default
    (``A.from_dict`` would use 0.5).

    Raises:
        RecipeError: not a transform mapping, an unknown name, or ``transforms`` not a list.
    """
    if not isinstance(node, Mapping) or "__class_fullname__" not in node:
        raise RecipeError(f"{where}: {path} is not a transform mapping with '__class_fullname__'.")
    name = str(node["__class_fullname__"])
    cls = resolve_transform(name, custom, f"{where} ({path})")
    out = dict(node)
    out["__class_fullname__"] = cls.get_class_fullname()
    default_p = inspect.signature(cls).parameters.get("p")
    if "p" not in out and default_p is not None and default_p.default is not inspect.Parameter.empty:
        out["p"] = default_p.default
    if "transforms" in out:
        if not isinstance(out["transforms"], list):
            raise RecipeError(f"{where}: {path}.transforms of {name} must be a list of transforms.")
        out["transforms"] = [_resolved(t, custom, where, f"{path}.transforms[{i}]")
                             for i, t in enumerate(out["transforms"])]
    return out


def _from_dict(node: dict[str, Any]) -> tuple[Any, str | None]:
    """``A.from_dict`` of one resolved node: ``(transform, None)``, or ``(None, why)`` when its
    class (or a child's) rejects the parameters: it raised, or warned that they are not valid."""
    import albumentations as A

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            with without_albumentations_pytorch():
                obj = A.from_dict({"transform": node})
        except Exception as exc:  # albumentations raises ValueError (pydantic) or TypeError
            return None, f"rejected its parameters: {_condense(exc)}"
    for w in caught:
        if "are not valid for transform" in str(w.message):
            return None, str(w.message)
    return obj, None


def _fault(written: Mapping[str, Any], node: dict[str, Any], path: str) -> tuple[str, str, str]:
    """The first node that fails on its own (children before their parent, the order in which
    ``A.from_dict`` builds): ``(its name as written, path, why)``."""
    for i, (w, child) in enumerate(zip(written.get("transforms", []), node.get("transforms", []))):
        if _from_dict(child)[1] is not None:
            return _fault(w, child, f"{path}.transforms[{i}]")
    return str(written["__class_fullname__"]), path, _from_dict(node)[1] or "failed"


def build_pipeline(spec: Any, custom: Mapping[str, type] | None = None, where: str = "pipeline",
                   save_applied_params: bool = False) -> Any:
    """Build an ``A.Compose`` from a spec, with custom transform classes given directly.

    This is :func:`load_pipeline` without the plugin manager, for worker processes that
    receive the ``{name: class}`` mapping instead of hooks.

    Args:
        spec: see :func:`read_pipeline_spec`.
        custom: serialized name -> transform class.
        where: prefix of error messages.
        save_applied_params: build the ``Compose`` with ``save_applied_params=True`` so a
            call returns ``applied_transforms`` (list of ``(name, params)``).

    Raises:
        RecipeError: see :func:`load_pipeline`.
    """
    import albumentations as A

    inner = read_pipeline_spec(spec, where)
    node = _resolved(inner, dict(custom or {}), where, "transform")
    is_compose = node["__class_fullname__"] == A.Compose.get_class_fullname()
    if is_compose and save_applied_params:
        node["save_applied_params"] = True
    obj, _ = _from_dict(node)
    if obj is None:
        name, path, why = _fault(inner, node, "transform")
        raise RecipeError(f"{where}: transform {name} ({path}){' ' if why.startswith('rejected') else ': '}{why}.")
    if not isinstance(obj, (A.BasicTransform, A.BaseCompose)):
        raise RecipeError(f"{where}: {inner['__class_fullname__']} is not an albumentations transform.")
    if is_compose:
        return obj
    return A.Compose([obj], save_applied_params=save_applied_params)


def load_pipeline(spec: Any, hooks: Any, where: str = "pipeline", save_applied_params: bool = False) -> Any:
    """Load and validate an albumentations pipeline from a recipe.

    Args:
        spec: an ``A.to_dict`` mapping, its inner ``transform`` mapping, or a path to a file
            ``A.save`` wrote (JSON or YAML).
        hooks: the :class:`vetset.core.manager.Hooks` facade; custom transform classes
            registered through ``vetset_register_transforms`` are resolved by name before
            albumentations' own registry.
        where: names the recipe/field in error messages.
        save_applied_params: see :func:`build_pipeline`.

    Returns:
        An ``A.Compose`` (a single top-level transform is wrapped in one).

    Raises:
        RecipeError: unknown transform (with close matches), invalid or unknown parameter
            (naming the transform and quoting albumentations' error), or a malformed spec.
    """
    custom = {name: hooks.transforms[name] for name in hooks.transforms} if hooks is not None else {}
    return build_pipeline(spec, custom, where, save_applied_params)


def pipeline_dict(spec: Any, where: str = "pipeline") -> dict[str, Any]:
    """The spec in the full ``A.to_dict`` form (``{"__version__", "transform"}``), JSON-able."""
    import albumentations as A

    return {"__version__": A.__version__, "transform": read_pipeline_spec(spec, where)}


def fingerprint(obj: Any) -> str:
    """First 16 hex digits of the SHA-256 of ``obj`` as canonical JSON (sorted keys)."""
    text = json.dumps(obj, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def jsonable_params(value: Any) -> Any:
    """Applied transform parameters as BSON/JSON-safe Python values:
    :func:`vetset.core.result.to_jsonable` with arrays of more than
    :data:`MAX_PARAM_ELEMENTS` elements as ``{"shape", "dtype"}`` summaries and longer
    lists as ``{"length"}``.
    """
    return to_jsonable(value, max_elements=MAX_PARAM_ELEMENTS)
