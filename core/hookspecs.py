"""Every ``vetset_*`` hook, documented.

Families (after pytest, datasette and llm):

* ``vetset_register_*(register)`` contribute named things. ``register`` is a callable
  bound to the calling plugin, so the registry records which plugin gave what and a
  duplicate name is an error naming both plugins.
* ``vetset_make_*`` choose one thing; they are ``firstresult`` hooks: the first
  implementation (latest registered first, per pluggy) that returns non-``None`` wins.
* ``vetset_on_*`` are lifecycle events; return values are ignored.

Core code never calls ``pm.hook`` directly: it goes through :class:`vetset.core.manager.Hooks`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from vetset.core.run import Run

hookspec = pluggy.HookspecMarker("vetset")
hookimpl = pluggy.HookimplMarker("vetset")


@hookspec
def vetset_register_checks(register: Callable[..., None]) -> None:
    """Contribute dataset checks to the audit, each one self-contained unit.

    Args:
        register: call ``register(check)`` with a :class:`vetset.core.registry.Check`
            for each check; ``check.name`` must be unique across plugins. The check
            carries its options model (``stages.audit.checks.<name>`` in a recipe), its
            ``compute`` and ``evaluate``, and its saved views, report section and
            recommended-action rules, which join the views and sections registries under
            this plugin's name.

    Returns:
        Nothing.
    """


@hookspec
def vetset_register_transforms(register: Callable[..., None]) -> None:
    """Contribute custom albumentations transform classes usable in pipelines.

    Args:
        register: call ``register(name, cls)`` with the class's name as albumentations
            serializes it (``cls.get_class_fullname()``) and the class itself, a subclass
            of ``albumentations.BasicTransform``.

    Returns:
        Nothing.
    """


@hookspec
def vetset_register_policies(register: Callable[..., None]) -> None:
    """Contribute augmentation policies (named albumentations pipelines).

    Args:
        register: call ``register(policy)`` with a :class:`vetset.core.registry.Policy`:
            a name, the pipeline in ``A.to_dict`` format, and the coverage bins it targets.

    Returns:
        Nothing.
    """


@hookspec
def vetset_register_recipes(register: Callable[..., None]) -> None:
    """Contribute named recipes (YAML files).

    Args:
        register: call ``register(name, path)`` with the recipe's name and the path of
            its YAML file.

    Returns:
        Nothing.
    """


@hookspec
def vetset_register_stages(register: Callable[..., None]) -> None:
    """Contribute recipe stages (``audit``, ``train``, ``report``...).

    Args:
        register: call ``register(stage)`` with a :class:`vetset.core.registry.Stage`:
            a name, a pydantic options model and a ``run(run, options) -> dict`` callable.

    Returns:
        Nothing.
    """


@hookspec
def vetset_register_views(register: Callable[..., None]) -> None:
    """Contribute FiftyOne saved views built after a stage finishes (a check's come with its ``Check``).

    Args:
        register: call ``register(view)`` with a :class:`vetset.core.registry.ViewSpec`:
            the saved-view name (e.g. ``"validation_errors"``), the stage after which it
            is saved, and ``build(dataset) -> fo.DatasetView``.

    Returns:
        Nothing.
    """


@hookspec
def vetset_register_report_sections(register: Callable[..., None]) -> None:
    """Contribute sections of the audit report (a check's comes with its ``Check``).

    Args:
        register: call ``register(section)`` with a :class:`vetset.core.registry.ReportSection`:
            a name, a title, an order key and ``render(result, context) -> str`` (HTML).

    Returns:
        Nothing.
    """


@hookspec(firstresult=True)
def vetset_make_trainer(name: str, options: dict[str, Any]) -> Any | None:
    """Return a trainer for ``name``, or ``None`` to let another plugin answer.

    This hook is ``firstresult``: the first non-``None`` answer wins, and pluggy calls the
    latest-registered plugin first, so a third-party plugin can replace the built-in
    timm trainer.

    Args:
        name: the trainer name from the recipe's ``train.trainer`` option (``"timm"``
            by default).
        options: the validated ``train`` stage options as a plain dict.

    Returns:
        An object with ``fit(run, options) -> dict`` (see ``vetset.plugins.train.stage``),
        or ``None``.
    """


@hookspec
def vetset_on_dataset_loaded(run: Run) -> None:
    """Called once the run's FiftyOne dataset is loaded or updated.

    Args:
        run: the :class:`vetset.core.run.Run`; ``run.dataset`` is ready.
    """


@hookspec
def vetset_on_check_finished(run: Run, check: str, summary: dict[str, Any]) -> None:
    """Called after each audit check has written its fields, tags and summary.

    Args:
        run: the current run.
        check: the check's registered name.
        summary: the JSON-able summary the check produced.
    """


@hookspec
def vetset_on_stage_finished(run: Run, stage: str, result: dict[str, Any]) -> None:
    """Called after each recipe stage has finished and its result is stored.

    Args:
        run: the current run.
        stage: the stage name.
        result: the JSON-able result of the stage.
    """


@hookspec
def vetset_on_run_finished(run: Run, result: dict[str, Any]) -> None:
    """Called once at the end of a run, after ``result.json`` has been written.

    Args:
        run: the finished run.
        result: the complete run result (see :mod:`vetset.core.result`).
    """
