"""Registries for everything plugins contribute, and the records they hold.

Core owns every registry; plugins only call the ``register`` callable a hook hands them.
Each entry remembers the plugin that registered it, and registering a name twice is a
:class:`~vetset.core.errors.PluginError` naming both plugins (unlike timm's
warning-only model registry).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel

from vetset.core.errors import PluginError

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from vetset.core.manager import Hooks
    from vetset.core.report_kit import Action

T = TypeVar("T")


class NoOptions(BaseModel):
    """Options model for things that take none; unknown keys are rejected."""

    model_config = {"extra": "forbid"}


@dataclass(frozen=True)
class Policy:
    """A named augmentation policy.

    Attributes:
        name: unique policy name (``orientation``, ``colour``, ``clarity``, ``light``...).
        pipeline: the pipeline as ``A.to_dict(compose)`` returns it.
        targets: coverage bins the policy adds, as ``{"property": "bin"}`` pairs
            (e.g. ``{"orientation": "portrait"}``); empty for general policies.
        description: one line for ``recipes plan`` and the report.
    """

    name: str
    pipeline: dict[str, Any]
    targets: tuple[tuple[str, str], ...] = ()
    description: str = ""


@dataclass(frozen=True)
class Stage:
    """A recipe stage.

    Attributes:
        name: the key used under ``stages:`` in a recipe.
        run: ``run(run, options) -> dict``; the returned JSON-able dict is stored as
            ``result["stages"][name]``.
        options: pydantic model validating the stage's mapping in the recipe.
        description: one line for ``recipes plugins``.
        worker_modules: modules the stage's worker processes import (local executor). A
            run starts the forkserver with them while it loads the dataset
            (:func:`vetset.core.executor.prestart`), so the stage's workers start in
            milliseconds instead of importing them (0.5-1.3 s) when the stage begins.
        bind: optional ``bind(stage, hooks) -> Stage`` that completes the stage from the
            registries; :attr:`vetset.core.manager.Hooks.stages` holds its answer (the
            audit's options model gets every registered check's options under ``checks``,
            its ``worker_modules`` every check's ``compute`` module).
        reuse_key: optional ``reuse_key(options, out_dir) -> JSON-able | None``: what,
            besides the stage's options, the source files and the dataset, decides the
            stage's result (``{}`` when nothing does), computed without importing FiftyOne or
            torch; ``None`` when it cannot say. A run whose recipe has only stages with a
            key reuses the previous result when nothing it read has changed
            (:mod:`vetset.core.rerun`); a stage without one (training) makes its recipe run
            in full every time.
    """

    name: str
    run: Callable[..., dict[str, Any]]
    options: type[BaseModel] = NoOptions
    description: str = ""
    worker_modules: tuple[str, ...] = ()
    bind: Callable[[Stage, Hooks], Stage] | None = None
    reuse_key: Callable[[Any, Path], Any] | None = None


@dataclass(frozen=True)
class ViewSpec:
    """A FiftyOne saved view that vetset maintains.

    Attributes:
        name: saved-view name, e.g. ``validation_errors`` or ``audit/blurry``.
        stage: the stage after which the view is (re)saved.
        build: ``build(dataset) -> fo.DatasetView``.
        description: stored as the saved view's description.
    """

    name: str
    stage: str
    build: Callable[..., Any]
    description: str = ""


@dataclass(frozen=True)
class ReportSection:
    """A section of the HTML report.

    Attributes:
        name: unique section id (used as the HTML anchor).
        title: heading shown in the report.
        render: ``render(result, context) -> str | None``; HTML for the section, or
            ``None`` when the run result has nothing for it.
        order: sort key; lower comes first (overview is 0).
    """

    name: str
    title: str
    render: Callable[..., str | None]
    order: int = 100


@dataclass(frozen=True)
class Check:
    """A dataset check run by the ``audit`` stage: one self-contained unit.

    Everything a check contributes is declared here and registered with one
    ``register(Check(...))`` from ``vetset_register_checks`` (after cleanlab's
    ``IssueManager``: name, description, options, per-item compute, evaluation, report
    and actions together). A third-party check takes the same road as a built-in one.

    Attributes:
        name: unique check name; its options sit under ``stages.audit.checks.<name>`` in
            a recipe, its summary under ``result["stages"]["audit"]["checks"][name]``, and
            its saved views are by convention named ``audit/<issue>``.
        description: one line shown by ``recipes plugins``, the App and the report.
        evaluate: ``evaluate(ctx, options) -> dict`` runs on the driver after the
            per-image pass; ``ctx`` is a :class:`vetset.plugins.audit.context.AuditContext`
            (stage fields with ``ctx.set_field``, tags with ``ctx.tag``); returns a JSON-able
            summary whose flat ``metrics`` mapping joins ``audit.metrics`` (``fail_on``).
        compute: optional ``compute(image, options) -> dict`` run once per decoded image
            in a worker process; must be a picklable module-level function. ``image`` is
            a :class:`vetset.core.images.DecodedImage`; the dict's values (numbers,
            strings or ``None``) become ``ctx.computed[name][key]`` columns.
        options: pydantic model of the check's options (``extra="forbid"`` recommended);
            every field needs a default unless the recipe must always set it.
        views: saved views the check maintains; each is (re)saved after its ``stage``
            (``"audit"``) and registered under the check's plugin.
        report: the check's report section, ``render(result, ctx) -> str | None`` reading
            ``result["stages"]["audit"]`` (``None`` when the run has nothing for it).
        actions: recommended-action rules, ``rule(result) -> Action | None`` with
            :class:`vetset.core.report_kit.Action`; the report ranks them with every
            other rule.
        decode_side: optional ``decode_side(options) -> int``: the longest side, in
            pixels, the check's ``compute`` needs; the image pass decodes at least that
            large (JPEG draft mode scales down otherwise).
    """

    name: str
    description: str
    evaluate: Callable[..., dict[str, Any]]
    compute: Callable[..., dict[str, Any]] | None = None
    options: type[BaseModel] = NoOptions
    views: tuple[ViewSpec, ...] = ()
    report: ReportSection | None = None
    actions: tuple[Callable[[dict[str, Any]], Action | None], ...] = ()
    decode_side: Callable[[Any], int | None] | None = None


@dataclass
class Entry(Generic[T]):
    """One registered object and the plugin that gave it."""

    name: str
    value: T
    plugin: str


@dataclass
class Registry(Generic[T]):
    """Name -> object mapping that records the registering plugin.

    Args:
        kind: what is registered ("check", "stage"...), used in error messages.
    """

    kind: str
    _entries: dict[str, Entry[T]] = field(default_factory=dict)

    def add(self, name: str, value: T, plugin: str) -> None:
        """Register ``value`` under ``name`` for ``plugin``.

        Raises:
            PluginError: ``name`` is already registered (by this or another plugin).
        """
        if not isinstance(name, str) or not name:
            raise PluginError(f"Plugin {plugin!r} registered a {self.kind} without a name.")
        if name in self._entries:
            other = self._entries[name].plugin
            raise PluginError(
                f"The {self.kind} {name!r} is registered twice: by plugin {other!r} and by plugin {plugin!r}."
            )
        self._entries[name] = Entry(name, value, plugin)

    def __getitem__(self, name: str) -> T:
        return self._entries[name].value

    def get(self, name: str, default: Any = None) -> T | Any:
        entry = self._entries.get(name)
        return entry.value if entry else default

    def plugin_of(self, name: str) -> str:
        return self._entries[name].plugin

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return [e.value for e in self._entries.values()]

    def entries(self) -> list[Entry[T]]:
        return list(self._entries.values())
