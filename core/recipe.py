"""Recipes: YAML files that name the stages of a run and their options.

A recipe looks like::

    name: full
    description: load, audit, augment, train, validate, report
    data: {val_fraction: 0.2, seed: 0}
    stages:            # run in this order; each key is a registered stage
      audit: {}
      train: {model_name: resnet10t, epochs: 5}
      report: {}
    fail_on:           # dotted metric path in the run result -> fail when value > threshold
      audit.metrics.leakage_groups: 0
    executor: {name: local}   # where per-image work runs: local processes or ray

Files are read with ``yaml.safe_load`` only. Every problem becomes a
:class:`~vetset.core.errors.RecipeError` naming the file, the key path and what is allowed.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, Field, PrivateAttr, ValidationError, model_validator

from vetset.core.errors import RecipeError


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):  # pydantic's lax mode would take true as 1
        raise ValueError("expected a number, got a boolean")
    return value


#: A whole-number option (a count of workers, threads, processes, epochs, a batch size)
#: that refuses YAML's ``true``/``false``, which pydantic would otherwise read as 1/0.
Count = Annotated[int, BeforeValidator(_not_bool)]
#: A ``fail_on`` threshold: a finite number (NaN would never fail, ``true`` would mean 1).
Threshold = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]


class DataOptions(BaseModel):
    """How the input data is read and split.

    Attributes:
        format: ``auto`` (a ``.csv`` path is a manifest, a folder is an ImageFolder tree,
            anything else a FiftyOne dataset name), ``imagefolder``, ``csv`` or ``fiftyone``.
        val_fraction: share of each class held out as ``val`` when the data has no split
            level, in (0, 1). Default 0.2, the usual 80/20 hold-out.
        seed: seed of the stratified split.
    """

    model_config = {"extra": "forbid"}

    format: Literal["auto", "imagefolder", "csv", "fiftyone"] = "auto"
    val_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    seed: int = 0


class ExecutorOptions(BaseModel):
    """Where the per-image work of a run goes (the audit's image pass, the augmentation writer).

    Attributes:
        name: ``local`` (worker processes on this machine; the default) or ``ray`` (Ray
            tasks on a local Ray instance or a cluster; ``pip install 'vetset[ray]'``).
        address: ``ray`` only. ``null`` starts a local Ray instance (or joins the cluster
            ``RAY_ADDRESS`` names), ``auto`` joins the instance running on this machine,
            ``ray://host:10001`` a remote cluster through Ray Client. ``recipes run
            --address`` overrides it.
        workers: worker processes (``local``) or CPUs of the Ray instance vetset starts
            (``ray``) for stages whose own ``workers`` option is ``null``; ``null`` = every
            CPU this process may use.
    """

    model_config = {"extra": "forbid"}

    name: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: Count | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _address_needs_ray(self) -> ExecutorOptions:
        import importlib.util

        if self.address and self.name != "ray":
            raise ValueError(f"address {self.address!r} is only used by the ray executor; set name: ray or drop it")
        scheme = self.address.split("://", 1)[0].lower() if self.address and "://" in self.address else None
        if scheme is not None and scheme != "ray":
            raise ValueError(f"address {self.address!r}: a {scheme}:// address is the Ray dashboard or job "
                             "submission server, not a cluster to join; use host:6379 (the head node's GCS), "
                             "ray://host:10001 (Ray Client) or auto")
        if self.name == "ray" and importlib.util.find_spec("ray") is None:  # fail before the data is loaded
            raise ValueError("the ray executor needs the 'ray' package: pip install 'vetset[ray]'")
        return self


class Recipe(BaseModel):
    """A validated recipe. Stage options are validated against each stage's model."""

    model_config = {"extra": "forbid"}

    name: str
    description: str = ""
    data: DataOptions = DataOptions()
    stages: dict[str, dict[str, Any] | None] = Field(min_length=1)
    fail_on: dict[str, Threshold] = {}
    executor: ExecutorOptions = ExecutorOptions()

    _stage_options: dict[str, BaseModel] = PrivateAttr(default_factory=dict)
    _source: str = PrivateAttr(default="<mapping>")

    @property
    def source(self) -> str:
        """The file (or ``<mapping>``) the recipe came from."""
        return self._source

    def options(self, stage: str) -> BaseModel:
        """The validated options model of ``stage``.

        Raises:
            KeyError: the recipe has no such stage.
        """
        return self._stage_options[stage]

    def stage_names(self) -> list[str]:
        return list(self.stages)

    def dump(self) -> dict[str, Any]:
        """JSON-able form with every stage's options filled with their defaults."""
        out = self.model_dump(exclude={"stages"})
        out["stages"] = {name: self._stage_options[name].model_dump(mode="json") for name in self.stages}
        out["source"] = self._source
        return out


def with_executor(recipe: Recipe, name: str | None = None, address: str | None = None) -> Recipe:
    """A copy of ``recipe`` whose ``executor`` takes the command line's ``--executor``/``--address``.

    ``None`` keeps the recipe's value; switching to ``local`` drops the recipe's address.

    Raises:
        RecipeError: an unknown executor name, or an address without the ray executor.
    """
    current = recipe.executor
    new_name = current.name if name is None else name
    new_address = address if address is not None else (current.address if new_name == "ray" else None)
    try:
        options = ExecutorOptions(name=new_name, address=new_address, workers=current.workers)
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] != "value_error" and "input" in err:
            msg += f" (got {err['input']!r})"
        raise RecipeError(f"--executor/--address: {msg}.") from None
    return recipe.model_copy(update={"executor": options})


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Field names of the sub-model found at ``loc`` below ``model`` (best effort)."""
    current: Any = model
    for part in loc:
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = field.annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return None


def _explain(exc: ValidationError, model: type[BaseModel], source: str, prefix: str = "") -> RecipeError:
    parts = []
    for err in exc.errors()[:3]:
        loc = tuple(err["loc"])
        path = prefix + ".".join(str(p) for p in loc) if loc else prefix.rstrip(".") or "(top level)"
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(model, loc[:-1])
            msg = "unknown key" + (f"; allowed keys: {', '.join(allowed)}" if allowed else "")
        elif err["type"] == "missing":
            msg = "required key is missing"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
        parts.append(f"{path}: {msg}")
    more = len(exc.errors()) - 3
    tail = f" (and {more} more)" if more > 0 else ""
    return RecipeError(f"Recipe {source} is invalid: " + "; ".join(parts) + tail + ".")


def parse_recipe(data: Any, stages: Any, source: str = "<mapping>") -> Recipe:
    """Validate a recipe mapping against the top-level model and each stage's options.

    Args:
        data: the mapping ``yaml.safe_load`` returned.
        stages: registry of :class:`~vetset.core.registry.Stage` (``hooks.stages``).
        source: file name used in error messages.

    Raises:
        RecipeError: the mapping, an unknown stage or a stage's options are invalid.
    """
    if not isinstance(data, dict):
        raise RecipeError(f"Recipe {source} must be a YAML mapping with at least 'name' and 'stages', got {type(data).__name__}.")
    raw_stages = data.get("stages") if isinstance(data.get("stages"), dict) else {}
    unknown = [f"stages.{name} is not a known stage; known stages: {', '.join(stages.names())}."
               for name in raw_stages if name not in stages]
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        err = _explain(exc, Recipe, source)
        raise (RecipeError(f"{err} Also: {' '.join(unknown)}") if unknown else err) from None
    recipe._source = source
    problems = [f"Recipe {source}: {u}" for u in unknown]
    for name, raw in recipe.stages.items():
        if name not in stages:
            continue
        model = stages[name].options
        try:
            recipe._stage_options[name] = model.model_validate(raw or {})
        except ValidationError as exc:
            problems.append(str(_explain(exc, model, source, prefix=f"stages.{name}.")))
    if problems:  # every stage's problems at once, not one per `recipes validate`
        raise RecipeError(problems[0] + ("" if len(problems) == 1 else " Also: " + " ".join(
            p.split(": ", 1)[1] if p.startswith(f"Recipe {source}") else p for p in problems[1:])))
    for key in recipe.fail_on:
        stage, _, rest = key.partition(".")
        if stage not in recipe.stages or not rest or "" in key.split("."):
            raise RecipeError(f"Recipe {source}: fail_on.{key} must name a value of one of this recipe's stages, "
                              f"as <stage>.metrics.<name> with <stage> one of {', '.join(recipe.stages)}.")
    return recipe


def read_yaml(path: Path) -> Any:
    """``yaml.safe_load`` a file, turning I/O and syntax errors into :class:`RecipeError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"Recipe file {path} does not exist.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"Recipe file {path} cannot be read: {exc}.") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"Recipe file {path} is not valid YAML{where}: {problem}.") from None


def resolve_recipe_path(name_or_file: str, recipes: Any) -> Path:
    """A registered recipe name or a path to a YAML file -> the file's path.

    Raises:
        RecipeError: neither a registered recipe nor an existing file.
    """
    if name_or_file in recipes:
        return Path(recipes[name_or_file])
    path = Path(name_or_file)
    if path.suffix.lower() in {".yaml", ".yml"} or path.exists():
        return path
    close = difflib.get_close_matches(name_or_file, list(recipes.names()), n=1)
    hint = f"; did you mean {close[0]}?" if close else "."
    raise RecipeError(
        f"{name_or_file!r} is neither a recipe name ({', '.join(sorted(recipes.names()))}) nor a recipe file{hint}"
    )


def load_recipe(name_or_file: str, hooks: Any) -> Recipe:
    """Load and validate a recipe by registered name or file path.

    Args:
        name_or_file: e.g. ``"full"`` or ``"my-recipe.yaml"``.
        hooks: the :class:`~vetset.core.manager.Hooks` facade.

    Raises:
        RecipeError: the file is missing, unreadable, not YAML, or fails validation.
    """
    path = resolve_recipe_path(name_or_file, hooks.recipes)
    return parse_recipe(read_yaml(path), hooks.stages, source=str(path))
