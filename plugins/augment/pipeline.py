"""Albumentations pipelines from recipes: load, validate, and describe what was applied.

A pipeline is stored in the format ``A.to_dict(compose)`` returns (and ``A.save`` writes)::

    {"__version__": "2.0.8",
     "transform": {"__class_fullname__": "Compose", "p": 1.0,
                   "transforms": [{"__class_fullname__": "ToGray", "p": 1.0}, ...]}}

The bare inner mapping (``{"__class_fullname__": ...}``) and a path to a JSON/YAML file
written by ``A.save`` are accepted too. :func:`load_pipeline` rebuilds the ``A.Compose``
itself instead of calling ``A.from_dict`` so that every problem names the transform at
fault and albumentations' own message, and so that custom transform classes registered
through ``vetset_register_transforms`` resolve by name. The trainer uses the same function
for its ``train_transform`` option.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import sys
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vetset.core.errors import RecipeError

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


def import_albumentations() -> Any:
    """Import albumentations, without its optional PyTorch helpers when it is not loaded yet.

    ``albumentations/__init__`` imports ``albumentations.pytorch`` (``ToTensorV2``) inside
    ``suppress(ImportError)``, and that imports torch: about 1.2 s of the 2 s a fresh
    process spends importing albumentations (``python -X importtime``). Worker processes
    that write images never need ``ToTensorV2``, so this blocks that one optional import
    while albumentations initialises and unblocks it right after, so an explicit
    ``import albumentations.pytorch`` (or :func:`resolve_transform` meeting ``ToTensorV2``)
    still works later. In a process that already imported albumentations it changes nothing.

    Returns:
        the ``albumentations`` module.
    """
    if "albumentations" in sys.modules:
        return sys.modules["albumentations"]
    blocked = "albumentations.pytorch" not in sys.modules
    if blocked:
        sys.modules["albumentations.pytorch"] = None  # type: ignore[assignment]  # makes the import raise ImportError
    try:
        import albumentations
    finally:
        if blocked and sys.modules.get("albumentations.pytorch", 0) is None:
            del sys.modules["albumentations.pytorch"]
    return albumentations


def resolve_transform(name: str, custom: Mapping[str, type], where: str) -> type:
    """The class for a serialized transform name: custom (plugin) classes first, then albumentations.

    Raises:
        RecipeError: unknown name (the message lists close matches).
    """
    from albumentations.core.serialization import SERIALIZABLE_REGISTRY, shorten_class_name

    if name in custom:
        return custom[name]
    short = shorten_class_name(name)
    if short not in SERIALIZABLE_REGISTRY and "albumentations.pytorch" not in sys.modules:
        # a writer worker imports albumentations without its PyTorch helpers (see
        # import_albumentations); a pipeline naming one of them (ToTensorV2) loads them now
        try:
            import albumentations.pytorch  # noqa: F401
        except ImportError:
            pass
    if short in SERIALIZABLE_REGISTRY:
        return SERIALIZABLE_REGISTRY[short]
    known = sorted(set(SERIALIZABLE_REGISTRY) | set(custom))
    close = difflib.get_close_matches(short, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else \
        "; use an albumentations transform name or register a custom one through vetset_register_transforms."
    raise RecipeError(f"{where}: unknown transform {name!r}{hint}")


def _build(node: Mapping[str, Any], custom: Mapping[str, type], where: str, path: str) -> Any:
    import albumentations as A

    if not isinstance(node, Mapping) or "__class_fullname__" not in node:
        raise RecipeError(f"{where}: {path} is not a transform mapping with '__class_fullname__'.")
    name = str(node["__class_fullname__"])
    cls = resolve_transform(name, custom, f"{where} ({path})")
    args = {k: v for k, v in node.items() if k != "__class_fullname__"}
    if "transforms" in args:
        if not isinstance(args["transforms"], list):
            raise RecipeError(f"{where}: {path}.transforms of {name} must be a list of transforms.")
        args["transforms"] = [_build(t, custom, where, f"{path}.transforms[{i}]")
                              for i, t in enumerate(args["transforms"])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = cls(**args)
        except Exception as exc:  # albumentations raises ValueError (pydantic) or TypeError
            raise RecipeError(f"{where}: transform {name} ({path}) rejected its parameters: {_condense(exc)}.") from None
    for w in caught:
        msg = str(w.message)
        if "are not valid for transform" in msg:
            raise RecipeError(f"{where}: transform {name} ({path}): {msg}.")
    if not isinstance(obj, (A.BasicTransform, A.BaseCompose)):
        raise RecipeError(f"{where}: {name} ({path}) is not an albumentations transform.")
    return obj


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
    obj = _build(inner, dict(custom or {}), where, "transform")
    if isinstance(obj, A.Compose) and not save_applied_params:
        return obj
    if isinstance(obj, A.Compose):
        # rebuild the top level with save_applied_params; children are reused as they are
        args = {k: v for k, v in inner.items() if k not in ("__class_fullname__", "transforms")}
        args["save_applied_params"] = True
        try:
            return A.Compose(obj.transforms, **args)
        except Exception as exc:
            raise RecipeError(f"{where}: Compose rejected its parameters: {_condense(exc)}.") from None
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
    """Applied transform parameters as BSON/JSON-safe Python values.

    numpy scalars become Python numbers, small arrays lists, tuples lists, dict keys
    strings, non-finite floats ``None``, integers beyond BSON's 64 bits their decimal
    string, ``str`` subclasses (a ``(str, Enum)`` member) their value; arrays with more
    than :data:`MAX_PARAM_ELEMENTS` elements become ``{"shape", "dtype"}`` summaries and
    longer lists ``{"length"}``; anything else its ``str``. Dispatches on the exact type
    first: 7 us for the ``light`` policy's parameters, where a ``json`` round trip took
    33 us (1% of an image).
    """
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else None
    if kind is str or kind is bool or value is None:
        return value
    if kind is int:  # MongoDB stores at most 8-byte integers (bson raises OverflowError)
        return value if -0x8000000000000000 <= value <= 0x7FFFFFFFFFFFFFFF else str(value)
    if kind is dict:
        return {k if type(k) is str else _key(k): jsonable_params(v) for k, v in value.items()}
    if kind is tuple or kind is list:
        if len(value) > MAX_PARAM_ELEMENTS:
            return {"length": len(value)}
        return [jsonable_params(v) for v in value]
    import numpy as np

    if isinstance(value, np.ndarray):
        if value.size > MAX_PARAM_ELEMENTS:
            return {"shape": list(value.shape), "dtype": str(value.dtype)}
        return jsonable_params(value.tolist())
    if isinstance(value, np.generic):
        return jsonable_params(value.item())
    for plain in (bool, int, float, str):  # subclasses (IntEnum, np.float64 handled above)
        if isinstance(value, plain):
            # str.__str__: a (str, Enum) member's value ("red"), where str() gives "Colour.RED"
            return jsonable_params(str.__str__(value) if plain is str else plain(value))
    if isinstance(value, Mapping):
        return jsonable_params(dict(value))
    if isinstance(value, (list, tuple)):
        return jsonable_params(list(value))
    return str(value)


def _key(key: Any) -> str:
    """A dict key as ``str``: a ``str`` subclass's value (as ``json`` writes it), else ``str(key)``."""
    return str.__str__(key) if isinstance(key, str) else str(key)
