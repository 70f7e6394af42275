"""The plugin manager, the built-in plugin list, and the typed facade over every hook.

Registration order (pluggy calls the latest-registered implementation first):

1. built-in plugins, in the order of :data:`BUILTIN_PLUGINS`;
2. third-party plugins from the ``vetset`` entry-point group, in the order
   ``importlib.metadata`` lists them.

So a third-party ``vetset_make_trainer`` answers before the built-in timm trainer.

Environment switches:

* ``VETSET_BLOCK_PLUGINS`` — comma-separated plugin names not to load. A built-in may be
  named by its dotted module (``vetset.plugins.train.stage``) or its short name (``train`` for the
  train stage, ``balance`` or ``audit.checks.balance`` for a check, ``bundled`` for the recipes).
* ``VETSET_LOAD_PLUGINS`` — when set, only these third-party (entry-point) plugins load;
  set it to an empty string to load none.

Every hook call site of core is a method of :class:`Hooks`, so one file shows them all.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata as md
import os
from collections.abc import Callable
from functools import cached_property
from typing import Any

import pluggy

from vetset.core import hookspecs
from vetset.core.errors import PluginError
from vetset.core.registry import Check, Policy, Registry, ReportSection, Stage, ViewSpec

ENTRY_POINT_GROUP = "vetset"

#: Built-in plugins, registered exactly like third-party ones.
BUILTIN_PLUGINS: tuple[str, ...] = (
    "vetset.recipes.bundled",
    "vetset.plugins.audit.stage",
    "vetset.plugins.audit.checks.balance",
    "vetset.plugins.audit.checks.coverage",
    "vetset.plugins.audit.checks.quality",
    "vetset.plugins.audit.checks.duplicates",
    "vetset.plugins.audit.checks.unreadable",
    "vetset.plugins.augment.stage",
    "vetset.plugins.train.stage",
    "vetset.plugins.validate.stage",
    "vetset.plugins.iterate.stage",
    "vetset.plugins.embed.stage",
    "vetset.plugins.label_noise.stage",
    "vetset.plugins.report.stage",
)

#: The built-in plugins that register recipes (``recipes list`` imports only these, and the
#: entry-point plugins).
RECIPE_PLUGINS: tuple[str, ...] = ("vetset.recipes.bundled",)


def _split_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _short_names(name: str) -> set[str]:
    """Short names a built-in answers to: ``train`` for ``vetset.plugins.train.stage``,
    ``audit.checks.balance`` and ``balance`` for a check, ``bundled`` for the recipes."""
    short = name.removeprefix("vetset.plugins.").removeprefix("vetset.").removesuffix(".stage")
    return {short, short.rsplit(".", 1)[-1]}


def _is_blocked(name: str, blocked: set[str]) -> bool:
    return name in blocked or bool(_short_names(name) & blocked)


def build_plugin_manager(
    builtins: tuple[str, ...] = BUILTIN_PLUGINS, entry_points: bool = True
) -> pluggy.PluginManager:
    """Create the plugin manager with built-ins and entry-point plugins registered.

    Args:
        builtins: dotted module names of built-in plugins; a module that does not exist
            yet is skipped silently only if it is a ``vetset.plugins`` module missing from
            this installation (never for third-party names).
        entry_points: load the ``vetset`` entry-point group.

    Raises:
        PluginError: a plugin failed to import; the message names it.
    """
    pm = pluggy.PluginManager("vetset")
    pm.add_hookspecs(hookspecs)
    blocked = _split_env("VETSET_BLOCK_PLUGINS") or set()
    for dotted in builtins:
        if _is_blocked(dotted, blocked):
            pm.set_blocked(dotted)
            continue
        try:
            module = importlib.import_module(dotted)
        except ModuleNotFoundError as exc:
            if exc.name == dotted and dotted.startswith(("vetset.plugins.", "vetset.recipes.")):
                continue
            raise PluginError(f"Built-in plugin {dotted!r} failed to import: {exc}") from exc
        except Exception as exc:
            raise PluginError(f"Built-in plugin {dotted!r} failed to import: {exc}") from exc
        pm.register(module, name=dotted)
    if entry_points:
        allowed = _split_env("VETSET_LOAD_PLUGINS")
        for ep in md.entry_points(group=ENTRY_POINT_GROUP):
            if _is_blocked(ep.name, blocked) or (allowed is not None and ep.name not in allowed):
                continue
            if pm.get_plugin(ep.name) is not None or pm.is_blocked(ep.name):
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                raise PluginError(f"Plugin {ep.name!r} (entry point {ep.value}) failed to import: {exc}") from exc
            pm.register(plugin, name=ep.name)
            dist = getattr(ep, "dist", None)
            if dist is not None:
                pm._plugin_distinfo.append((plugin, dist))  # same bookkeeping as load_setuptools_entrypoints
    return pm


class Hooks:
    """Typed facade over the plugin manager: the only place core calls hooks.

    Registries are collected once per :class:`Hooks` instance and cached.
    """

    def __init__(self, pm: pluggy.PluginManager | None = None):
        self.pm = pm if pm is not None else build_plugin_manager()

    # -- helpers ---------------------------------------------------------------------
    def _collect(self, hook_name: str, kind: str, adapt: Callable[..., tuple[str, Any]]) -> Registry:
        """Call every implementation of a ``vetset_register_*`` hook with a bound ``register``."""
        registry: Registry = Registry(kind)
        hook = getattr(self.pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            plugin = impl.plugin_name

            def register(*args: Any, _plugin: str = plugin, **kwargs: Any) -> None:
                try:
                    name, value = adapt(*args, **kwargs)
                except (PluginError, TypeError) as exc:
                    raise PluginError(f"Plugin {_plugin!r} registered a bad {kind}: {exc}.") from None
                registry.add(name, value, _plugin)

            try:
                impl.function(register)
            except PluginError:
                raise
            except Exception as exc:
                raise PluginError(f"Plugin {plugin!r} failed in {hook_name}: {type(exc).__name__}: {exc}") from exc
        return registry

    def _collect_typed(self, hook_name: str, kind: str, cls: type,
                       extra: Callable[[Registry], None] | None = None,
                       finish: Callable[[Any], Any] | None = None) -> Registry:
        """A registry of ``cls`` objects from ``hook_name``; ``extra(registry)`` adds more
        first (the checks' own views or sections), ``finish(obj)`` completes each one."""
        def adapt(obj: Any) -> tuple[str, Any]:
            if not isinstance(obj, cls):
                raise PluginError(f"expected a {cls.__name__}, got {type(obj).__name__}")
            return obj.name, finish(obj) if finish is not None else obj

        registry = self._collect(hook_name, kind, adapt)
        if extra is None:
            return registry
        combined: Registry = Registry(kind)
        extra(combined)
        for entry in registry.entries():
            combined.add(entry.name, entry.value, entry.plugin)
        return combined

    def _from_checks(self, attr: str, cls: type) -> Callable[[Registry], None]:
        """Add each registered check's ``views`` or ``report`` to a registry, under the check's plugin."""
        def add(registry: Registry) -> None:
            for entry in self.checks.entries():
                value = getattr(entry.value, attr)
                for obj in (value if isinstance(value, tuple) else (value,) if value is not None else ()):
                    if not isinstance(obj, cls):
                        raise PluginError(f"Plugin {entry.plugin!r} registered a bad check: {entry.name!r}.{attr} "
                                          f"holds a {type(obj).__name__}, expected a {cls.__name__}.")
                    registry.add(obj.name, obj, entry.plugin)
        return add

    # -- registries ------------------------------------------------------------------
    @cached_property
    def checks(self) -> Registry[Check]:
        """Every registered :class:`Check`, in registration order."""
        return self._collect_typed("vetset_register_checks", "check", Check)

    @cached_property
    def stages(self) -> Registry[Stage]:
        """Every registered recipe :class:`Stage`, each with ``bind`` completed by these hooks
        (the audit's options model then holds every registered check's options)."""
        def bind(stage: Stage) -> Stage:
            if stage.bind is None:
                return stage
            bound = stage.bind(stage, self)
            if not isinstance(bound, Stage):
                raise PluginError(f"stage {stage.name!r}: bind returned a {type(bound).__name__}, not a Stage")
            return dataclasses.replace(bound, bind=None)

        return self._collect_typed("vetset_register_stages", "stage", Stage, finish=bind)

    @cached_property
    def policies(self) -> Registry[Policy]:
        """Every registered augmentation :class:`Policy`."""
        return self._collect_typed("vetset_register_policies", "policy", Policy)

    @cached_property
    def views(self) -> Registry[ViewSpec]:
        """Every saved :class:`ViewSpec`: each check's ``views`` (check order), then ``vetset_register_views``'."""
        return self._collect_typed("vetset_register_views", "view", ViewSpec, extra=self._from_checks("views", ViewSpec))

    @cached_property
    def report_sections(self) -> Registry[ReportSection]:
        """Every :class:`ReportSection`: each check's ``report``, then ``vetset_register_report_sections``'."""
        return self._collect_typed("vetset_register_report_sections", "report section", ReportSection,
                                   extra=self._from_checks("report", ReportSection))

    @cached_property
    def recipes(self) -> Registry[str]:
        """Recipe name -> path of its YAML file."""

        def adapt(name: str, path: Any) -> tuple[str, str]:
            return name, str(path)

        return self._collect("vetset_register_recipes", "recipe", adapt)

    @cached_property
    def transforms(self) -> Registry[type]:
        """Custom albumentations transform name -> class."""

        def adapt(name: str, cls: type) -> tuple[str, type]:
            if not isinstance(cls, type):
                raise PluginError(f"transform {name!r} must be a class, got {type(cls).__name__}")
            return name, cls

        return self._collect("vetset_register_transforms", "transform", adapt)

    # -- single choices --------------------------------------------------------------
    def make_trainer(self, name: str, options: dict[str, Any]) -> Any:
        """Ask plugins for the trainer called ``name`` (``firstresult``).

        Raises:
            PluginError: no plugin provides it, or the answer has no ``fit`` method.
        """
        try:
            trainer = self.pm.hook.vetset_make_trainer(name=name, options=options)
        except PluginError:
            raise
        except Exception as exc:
            raise PluginError(f"A plugin failed in vetset_make_trainer for trainer {name!r}: {exc}") from exc
        if trainer is None:
            raise PluginError(f"No plugin provides the trainer {name!r}; check train.trainer in the recipe.")
        if not callable(getattr(trainer, "fit", None)):
            raise PluginError(f"The trainer returned for {name!r} ({type(trainer).__name__}) has no fit() method.")
        return trainer

    # -- lifecycle events ------------------------------------------------------------
    def on_dataset_loaded(self, run: Any) -> None:
        self.pm.hook.vetset_on_dataset_loaded(run=run)

    def on_check_finished(self, run: Any, check: str, summary: dict[str, Any]) -> None:
        self.pm.hook.vetset_on_check_finished(run=run, check=check, summary=summary)

    def on_stage_finished(self, run: Any, stage: str, result: dict[str, Any]) -> None:
        self.pm.hook.vetset_on_stage_finished(run=run, stage=stage, result=result)

    def on_run_finished(self, run: Any, result: dict[str, Any]) -> None:
        self.pm.hook.vetset_on_run_finished(run=run, result=result)

    # -- introspection ---------------------------------------------------------------
    def plugins_info(self) -> list[dict[str, Any]]:
        """Name, version and implemented hooks of every registered plugin."""
        dists = {id(p): d for p, d in self.pm.list_plugin_distinfo()}
        info = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            hooks = sorted(h.name for h in self.pm.get_hookcallers(plugin) or [])
            dist = dists.get(id(plugin))
            if dist is not None:
                version = dist.version
            elif name.startswith("vetset."):
                from vetset.core import __version__ as version
            else:
                version = getattr(plugin, "__version__", "")
            info.append({"name": name, "version": version, "hooks": hooks, "builtin": name in BUILTIN_PLUGINS})
        return info


_default: Hooks | None = None


def get_hooks(refresh: bool = False) -> Hooks:
    """The process-wide :class:`Hooks` (built on first use)."""
    global _default
    if _default is None or refresh:
        _default = Hooks()
    return _default
