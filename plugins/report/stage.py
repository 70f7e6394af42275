"""Built-in plugin: the ``report`` stage, the overview and recommended-actions sections.

The stage writes three files into its folder (the run's output folder by default):

* ``report.html`` — one self-contained page (see :mod:`vetset.plugins.report.page`) with
  every registered report section, in order;
* ``report.md`` — a short Markdown summary (:mod:`vetset.plugins.report.markdown`);
* ``result.json`` — a copy of the run result, when the folder is not the run's own.

Every number shown comes from the run result. The stage draws the report when it runs;
when the run finishes (``vetset_on_run_finished``) the report is drawn again from the
final result, so it also shows stages that came after it, the run time and the
``fail_on`` gates. ``recipes report --dataset NAME`` redraws it later from the stored
``result.json`` without recomputing anything (:func:`rebuild_report`).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from vetset.core.atomic import atomic_write
from vetset.core.errors import DataError, VetsetError
from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import ReportSection, Stage
from vetset.core.result import RESULT_FILE, SCHEMA_VERSION, read_result

HTML_FILE = "report.html"
MD_FILE = "report.md"


class ReportOptions(BaseModel):
    """``stages.report`` options.

    Attributes:
        out: folder for ``report.html``, ``report.md`` (and a copy of ``result.json``);
            relative paths are relative to the working directory. Default: the run's
            output folder.
        title: page title; default ``Dataset audit: <dataset>``.
        thumb_size: longest side of embedded thumbnails in pixels (JPEG, quality 70:
            about 3 kB each at the default 96).
        max_thumbnails: most thumbnails one section embeds; with the default 24 and ten
            sections, thumbnails stay under about 1 MB whatever the dataset size.
    """

    model_config = {"extra": "forbid"}

    out: Path | None = None
    title: str | None = None
    thumb_size: Count = Field(96, ge=32, le=512)
    max_thumbnails: Count = Field(24, ge=0, le=1000)


def write_report(result: dict[str, Any], out_dir: str | os.PathLike, options: ReportOptions, hooks: Any,
                 dataset: Any = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Render every registered section of ``result`` and write the report files.

    Args:
        result: the run result (``result.json`` as a dict).
        out_dir: folder for the files (created).
        options: the report options.
        hooks: the :class:`~vetset.core.manager.Hooks` facade (its ``report_sections``).
        dataset: the FiftyOne dataset, for sections that want it (``None`` is allowed).
        log: one-line status messages.

    Returns:
        The report stage's result block: ``report_html``, ``report_md``, ``out_dir``,
        ``title``, ``sections`` (name, title, plugin, order, status ``ok``/``empty``/
        ``error``), ``actions`` (ranked), ``thumbnails`` (embedded images),
        ``size_bytes`` (of the HTML) and ``metrics`` (``section_errors``, ``size_mb``).
    """
    from vetset.core.report_kit import ReportContext
    from vetset.plugins.report.actions import recommended_actions
    from vetset.plugins.report.markdown import markdown_summary
    from vetset.plugins.report.page import build_page, render_sections

    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    title = options.title or f"Dataset audit: {result.get('dataset', '?')}"
    ctx = ReportContext(result=result, dataset=dataset, out_dir=out, thumb_size=options.thumb_size,
                        max_thumbnails=options.max_thumbnails, hooks=hooks)
    sections = render_sections(hooks.report_sections, result, ctx, log=log)
    page = build_page(result, sections, title)
    actions = recommended_actions(result, hooks)
    html_path, md_path = out / HTML_FILE, out / MD_FILE
    data = page.encode("utf-8")
    atomic_write(html_path, page)
    atomic_write(md_path, markdown_summary(result, actions, HTML_FILE, title))
    run_dir = result.get("out_dir")
    source = Path(run_dir) / RESULT_FILE if run_dir else None
    if source is not None and source.exists() and source.resolve() != (out / RESULT_FILE).resolve():
        shutil.copyfile(source, out / RESULT_FILE)
    errors = sum(s.status == "error" for s in sections)
    return {
        "report_html": str(html_path), "report_md": str(md_path), "out_dir": str(out), "title": title,
        "sections": [s.info() for s in sections], "actions": [a.to_dict() for a in actions],
        "thumbnails": page.count('src="data:image/'), "size_bytes": len(data),
        "metrics": {"section_errors": errors, "size_mb": round(len(data) / 1e6, 3)},
    }


def _out_dir(run: Any, options: ReportOptions) -> Path:
    return Path(options.out).expanduser().resolve() if options.out else run.out_dir


def run_report(run: Any, options: ReportOptions) -> dict[str, Any]:
    """The ``report`` stage: write the report from the results so far.

    When it is the recipe's last stage the report is drawn once, when the run finishes
    (:func:`vetset_on_run_finished`, with the run time and the ``fail_on`` verdict); until
    then the block names the files it will write, with ``deferred: true``.
    """
    out = _out_dir(run, options)
    if run.recipe.stage_names()[-1] == "report":
        return {"report_html": str(out / HTML_FILE), "report_md": str(out / MD_FILE), "out_dir": str(out),
                "title": options.title or f"Dataset audit: {run.result.get('dataset', '?')}", "sections": [],
                "actions": [], "thumbnails": 0, "size_bytes": 0, "metrics": {}, "deferred": True}
    block = write_report(run.result, out, options, run.hooks, run.dataset, run.log)
    _log_written(run, block)
    return block


def _log_written(run: Any, block: dict[str, Any]) -> None:
    run.log(f"[report] {block['report_html']} ({block['size_bytes'] / 1e6:.2f} MB, "
            f"{sum(s['status'] == 'ok' for s in block['sections'])} sections)")


def rebuild_report(dataset_name: str, out: str | os.PathLike | None, hooks: Any,
                   log: Callable[[str], None] = print) -> dict[str, Any]:
    """Redraw the report of a dataset's last run from its stored ``result.json``.

    The run folder is ``dataset.info["vetset"]["out_dir"]``; nothing is recomputed and
    ``result.json`` is only read. The report options are those the run's recipe used,
    with ``out`` replaced when given.

    Raises:
        DataError: the FiftyOne dataset does not exist.
        VetsetError: the dataset has no stored run or its ``result.json`` is missing,
            unreadable or of another schema version.
    """
    import fiftyone as fo

    from vetset.core.result_schema import ResultSchemaError, schema_errors, validate_result

    if not fo.dataset_exists(dataset_name):
        raise DataError(f"FiftyOne dataset {dataset_name!r} does not exist; `fiftyone datasets list` shows the names.")
    dataset = fo.load_dataset(dataset_name)
    run_dir = ((dataset.info or {}).get("vetset") or {}).get("out_dir")
    hint = f"run a recipe on it first, e.g. `recipes run audit --dataset {dataset_name}`"
    if not run_dir:
        raise VetsetError(f"Dataset {dataset_name!r} has no stored vetset result; {hint}.")
    path = Path(run_dir) / RESULT_FILE
    if not path.exists():
        raise VetsetError(f"Dataset {dataset_name!r} has no stored vetset result: {path} does not exist; {hint}.")
    try:
        result = read_result(path)
    except (OSError, ValueError) as exc:
        raise VetsetError(f"{path} cannot be read as JSON ({exc}); rerun the recipe to write it again.") from None
    try:
        validate_result(result, str(path))
    except ResultSchemaError as exc:
        if result.get("schema_version") != SCHEMA_VERSION:
            raise
        log(f"[report] warning: {len(schema_errors(result))} schema deviations in {path}: {exc}")
    raw = ((result.get("recipe") or {}).get("stages") or {}).get("report") or {}
    try:
        options = ReportOptions.model_validate(raw)
    except ValidationError:
        options = ReportOptions()
    target = Path(out) if out else (options.out or Path(run_dir))
    block = write_report(result, target, options, hooks, dataset, log)
    log(f"[report] {block['report_html']} ({block['size_bytes'] / 1e6:.2f} MB) rebuilt from {path}")
    return block


def reuse_key(options: ReportOptions, out_dir: Path) -> dict[str, Any] | None:
    """The report stage's :attr:`vetset.core.registry.Stage.reuse_key`: ``{}`` when the
    report is written into the run folder (its files are among the run's outputs); with
    ``out`` elsewhere, ``{"files": [[path, size, mtime_ns], ...]}`` of the report, the
    summary and the copy of ``result.json`` there, or ``None`` (the run goes in full) when
    one of them is missing."""
    if not options.out:
        return {}
    out = Path(options.out).expanduser().resolve()
    if out == Path(out_dir).resolve():
        return {}
    rows = []
    for name in (HTML_FILE, MD_FILE, RESULT_FILE):
        try:
            st = (out / name).stat()
        except OSError:
            return None
        rows.append([str(out / name), st.st_size, st.st_mtime_ns])
    return {"files": rows}


@hookimpl
def vetset_register_stages(register):
    register(Stage("report", run_report, ReportOptions,
                   "Write the self-contained HTML report, a Markdown summary and result.json",
                   reuse_key=reuse_key))  # the results, the dataset and the report's own files decide


@hookimpl
def vetset_register_report_sections(register):
    from vetset.plugins.report.actions import render_actions
    from vetset.plugins.report.overview import render_overview

    register(ReportSection("overview", "Overview", render_overview, order=0))
    register(ReportSection("actions", "Recommended actions", render_actions, order=1000))


@hookimpl
def vetset_on_run_finished(run, result):
    """Draw the report from the final result (later stages, run time, ``fail_on`` gates):
    the first time when the report stage was the last one, else again."""
    if "report" not in run.recipe.stage_names() or "report" not in run.results:
        return
    options = run.recipe.options("report")
    deferred = bool(run.results["report"].get("deferred"))
    t = time.perf_counter()
    run.results["report"] = write_report(result, _out_dir(run, options), options, run.hooks, run.dataset, run.log)
    if deferred:  # drawn only now (run_report): timed and said as the stage would have been
        run.stage_times["report"] = round(run.stage_times.get("report", 0.0) + time.perf_counter() - t, 3)
        _log_written(run, run.results["report"])
    run.save()
    block = run.results["report"]
    if Path(block["out_dir"]) != run.out_dir:  # keep the copy next to the report in step with the final save
        shutil.copyfile(run.out_dir / RESULT_FILE, Path(block["out_dir"]) / RESULT_FILE)
