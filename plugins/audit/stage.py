"""Built-in plugin: the ``audit`` stage and :func:`run_audit`, which runs every check.

One pass reads and decodes each image once (:func:`vetset.core.images.decode`, with
Pillow's JPEG draft mode for large photos) in worker processes; the worker hashes the
same bytes and calls every selected check's ``compute(image, options)`` on the decoded
array, and sends back only small per-image numbers, in chunks of paths, so memory does
not grow with image size. Then, in registration order, each check's
``evaluate(ctx, options)`` (:class:`~vetset.plugins.audit.context.AuditContext`) turns
the numbers into summaries, fields and tags; all of them reach FiftyOne in one bulk write.

Options: the stage's own (``select``, ``workers``, ``max_side``...) and, under
``checks.<name>``, each registered check's, validated by the check's own model
(:func:`audit_options_model`; the keys of earlier versions are still read, see
:class:`AuditOptions`).

The result block (``run.results["audit"]``) is the contract read by the report and the
augmentation planner::

    {"num_images": int, "images_per_s": float, "options": {..., "checks": {check_name: options}},
     "class_counts": {split: {class: int}},              # readable images; split incl. "all"
     "coverage": {split: {property: {class: {bin: int}}}},
     "checks": {check_name: summary}, "metrics": {...flat numbers for fail_on...}}
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from vetset.core._fiftyone import image_metadata_doc
from vetset.core.dataset import root_dataset
from vetset.core.errors import PluginError, RecipeError
from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Check, Stage
from vetset.plugins.audit._incremental import MAX_IMAGES as MAX_CACHED_IMAGES
from vetset.plugins.audit._incremental import PassCache, cache_key

#: Digests of the values the audit stored for each sample, next to the image pass's records
#: (:func:`vetset.plugins.audit._staging.write_all`).
STORED_FILE = "stored.pkl"

if TYPE_CHECKING:  # pragma: no cover
    from vetset.core.manager import Hooks
    from vetset.core.run import Run

#: Option keys of the built-in checks before they moved under ``checks``
#: (``stages.audit.balance`` is now ``stages.audit.checks.balance``); still read.
LEGACY_CHECK_KEYS = ("balance", "orientation", "colour", "clarity", "exposure", "size", "duplicates", "unreadable")
#: Below this many images the pass runs in-process (starting workers costs more).
MIN_IMAGES_FOR_WORKERS = 64
#: Modules the worker processes' forkserver imports once.
WORKER_PRELOAD = ("vetset.plugins.audit.stage", "numpy", "PIL.Image", "cv2", "imagehash", "scipy.fftpack")


class AuditOptions(BaseModel):
    """``stages.audit`` options. Every threshold has a documented default and source.

    The recipe's audit stage validates against :func:`audit_options_model`, this model
    with ``checks`` holding one field per registered check; this class itself takes
    ``checks`` as a mapping and :func:`select_checks` validates it against the registry.

    Attributes:
        select: check names to run (``recipes plugins`` lists them); ``null`` = every
            registered check.
        checks: each check's options, by check name (``checks.<name>.<option>``), for
            built-in and plugin checks alike; a check left out keeps its defaults.
        workers: worker processes for the per-image pass; ``null`` = every CPU this process
            may use; 0 or 1 = in-process.
        max_side: JPEGs larger than this are decoded with Pillow's draft mode (libjpeg DCT
            scaling by 1/2, 1/4 or 1/8), keeping the longer side at least this and at least
            what a selected check needs (``clarity.size``); ``null`` decodes everything at
            full size. Default 128.
        chunk_size: images per worker task; ``null`` = chunks that shrink toward the end
            (the remaining images / (4 x workers), 8..256; see :func:`pass_chunks`).
        coverage_gap_share: a class has a coverage gap in a bin when under this share of its
            train images fall in it while at least this share of all train images do.
            Default 0.05.

    The keys of earlier versions are still read: ``checks: [names]`` is ``select`` (and
    ``checks: null`` every check),
    ``<built-in check>: {...}`` and ``plugin_options: {<check>: {...}}`` are
    ``checks.<check>``; giving one check's options both ways is refused.
    """

    model_config = ConfigDict(extra="forbid")

    select: list[str] | None = None
    workers: Count | None = Field(None, ge=0)
    max_side: Count | None = Field(128, ge=32)
    chunk_size: Count | None = Field(None, ge=1)
    coverage_gap_share: float = Field(0.05, ge=0.0, lt=1.0)
    checks: dict[str, Any] = {}

    @model_validator(mode="before")
    @classmethod
    def _legacy_keys(cls, data: Any) -> Any:
        """Move the keys of earlier versions to where they are now (see the class docstring)."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "checks" in data and data["checks"] is None:  # the old form of "every check" (select: null)
            data.pop("checks")
        if isinstance(data.get("checks"), (list, tuple)):
            if data.get("select") is not None:
                raise ValueError("checks is a list of check names (the old form of select) and select is given "
                                 "too; keep select and give check options under checks.<name>")
            data["select"] = list(data.pop("checks"))
        checks = data.get("checks")
        moved: dict[str, Any] = {}
        old = {name: data.pop(name) for name in LEGACY_CHECK_KEYS if name in data}
        plugin_options = data.pop("plugin_options", None)
        if plugin_options is not None and not isinstance(plugin_options, dict):
            raise ValueError("plugin_options (now checks) must map check names to their options")
        for where, items in ((None, old), ("plugin_options", plugin_options or {})):
            for name, value in items.items():
                given = f"{where}.{name}" if where else name
                if (isinstance(checks, dict) and name in checks) or name in moved:
                    raise ValueError(f"the options of check {name!r} are given twice; keep them under "
                                     f"checks.{name} only (the old key {given} is read as checks.{name})")
                moved[name] = value
        if moved:
            if checks is not None and not isinstance(checks, dict):
                return data  # the field's own validation names the problem
            data["checks"] = {**(checks or {}), **moved}
        return data

    def check_options(self, name: str) -> Any:
        """The options given for check ``name``: a model, a mapping, or ``None`` when not given."""
        checks = self.checks
        return checks.get(name) if isinstance(checks, dict) else getattr(checks, name, None)


def _defaults_or_none(model: type[BaseModel]) -> BaseModel | None:
    try:
        return model()
    except ValidationError:  # the check's options have required fields: the recipe must give them
        return None


def audit_options_model(hooks: Hooks) -> type[AuditOptions]:
    """The ``stages.audit`` options model for ``hooks``: :class:`AuditOptions` whose
    ``checks`` has one field per registered check, typed by the check's options model.

    So a recipe, ``recipes show``, the App's audit form and ``result.json`` see every
    check's options, with defaults, at ``checks.<name>``, whichever plugin gave the check.

    Raises:
        PluginError: a check name that pydantic models reserve (``model_*``, ``copy``, ``json``...).
    """
    fields: dict[str, Any] = {}
    docs = []
    for entry in hooks.checks.entries():
        check: Check = entry.value
        if entry.name.startswith("model_") or hasattr(BaseModel, entry.name):
            raise PluginError(f"Plugin {entry.plugin!r} registered the check {entry.name!r}, a name pydantic models "
                              "reserve, so its options cannot sit under stages.audit.checks; rename the check.")
        default = _defaults_or_none(check.options)
        annotation = check.options if default is not None else check.options | None
        fields[entry.name] = (annotation, Field(default_factory=check.options) if default is not None else None)
        docs.append(f"    {entry.name}: {check.description} (plugin {entry.plugin})")
    checks_model = create_model(
        "AuditCheckOptions", __config__=ConfigDict(extra="forbid", protected_namespaces=()),
        __doc__="Each registered check's options, by check name.\n\nAttributes:\n" + "\n".join(docs), **fields)
    return create_model("AuditOptions", __base__=AuditOptions, __doc__=AuditOptions.__doc__,
                        checks=(checks_model, Field(default_factory=checks_model)))


def compute_modules(hooks: Hooks) -> tuple[str, ...]:
    """Modules of the registered checks' ``compute`` functions, which the pass's workers import."""
    return tuple(dict.fromkeys(c.compute.__module__ for c in hooks.checks.values() if c.compute is not None))


def bind_to_checks(stage: Stage, hooks: Hooks) -> Stage:
    """The ``audit`` stage completed from the check registry (:attr:`Stage.bind`): options
    from :func:`audit_options_model`, and every check's ``compute`` module among the
    modules a run's forkserver preloads."""
    return dataclasses.replace(stage, options=audit_options_model(hooks),
                               worker_modules=stage.worker_modules + compute_modules(hooks))


def select_checks(hooks: Hooks, options: AuditOptions) -> list[tuple[str, Check, BaseModel]]:
    """``(name, Check, validated options)`` of the checks to run, in registration order.

    Raises:
        RecipeError: an unknown check name in ``select`` or ``checks``, or invalid check
            options (the message names ``stages.audit.checks.<name>.<option>``).
    """
    registry = hooks.checks
    known = registry.names()
    wanted = known if options.select is None else list(dict.fromkeys(options.select))
    given = list(options.checks) if isinstance(options.checks, dict) else []
    for name, where in [(n, "select") for n in wanted] + [(n, "checks") for n in given]:
        if name not in registry:
            raise RecipeError(f"stages.audit.{where}: {name!r} is not a registered check; "
                              f"registered checks: {', '.join(known)}.")
    selected = []
    for name in known:
        if name not in wanted:
            continue
        check = registry[name]
        raw = options.check_options(name)
        if isinstance(raw, check.options):
            opts = raw
        else:
            if isinstance(raw, BaseModel):  # options validated against another registry's model
                raw = raw.model_dump()
            try:
                opts = check.options.model_validate(raw if raw is not None else {})
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                raise RecipeError(f"stages.audit.checks.{name}{'.' + where if where else ''}: "
                                  f"{str(err['msg']).removeprefix('Value error, ')}.") from None
        selected.append((name, check, opts))
    return selected


def decode_side(options: AuditOptions, selected: list[tuple[str, Check, BaseModel]]) -> int | None:
    """The longer side the pass decodes JPEGs down to: ``max_side``, raised to what any
    selected check's ``decode_side`` asks for; ``None`` (full size) when ``max_side`` is."""
    if options.max_side is None:
        return None
    asked = [check.decode_side(opts) for _, check, opts in selected if check.decode_side is not None]
    return max([options.max_side, *(int(a) for a in asked if a)])


# -- the per-image pass (runs in worker processes) ---------------------------------------
def _one_opencv_thread() -> None:
    """One OpenCV thread per worker process, as there is one process per core."""
    import cv2

    cv2.setNumThreads(1)


def audit_image(path: str, max_side: int | None, computes: tuple) -> tuple:
    """Read one image once, decode it once, and run every check's ``compute`` on the result.

    Args:
        path: the image file.
        max_side: draft-decoding side (see :class:`AuditOptions`).
        computes: ``((check name, compute function, options), ...)``.

    Returns:
        ``(width, height, file_size, mode, format, exif_orientation, n_frames, error,
        results)``; ``results`` holds one dict per compute (``{"__error__": msg}`` when it
        raised), empty when the image is unreadable.
    """
    from vetset.core.images import decode, read_file

    data, reason = read_file(path)
    img = decode(path, max_side, data=data) if data is not None else None
    if img is None:
        return (0, 0, 0, "", "", 1, 1, reason, ())
    results = []
    if img.array is not None:
        img.info["bytes"] = data
        for _name, fn, opts in computes:
            try:
                results.append(fn(img, opts))
            except Exception as exc:  # a check's bug or an odd image must not stop the audit
                results.append({"__error__": f"{type(exc).__name__}: {exc}"})
    return (img.width, img.height, img.file_size, img.mode, img.format, img.exif_orientation,
            img.n_frames, img.error, tuple(results))


def audit_chunk(spec: tuple, paths: list[str]) -> list[tuple]:
    """:func:`audit_image` for each path of one worker task; ``spec = (max_side, computes)``."""
    from vetset.core.executor import setup_worker_once

    setup_worker_once(_one_opencv_thread)
    max_side, computes = spec
    return [audit_image(p, max_side, computes) for p in paths]


def pass_executor(n: int, workers: int | None, computes: tuple, executor: Any = None) -> Any:
    """The executor of an image pass over ``n`` images: in-process below :data:`MIN_IMAGES_FOR_WORKERS`,
    else :func:`vetset.core.executor.executor_for` (an :class:`Executor` instance is used as it is)."""
    from vetset.core.executor import executor_for

    preload = WORKER_PRELOAD + tuple(sorted({fn.__module__ for _, fn, _ in computes}))
    return executor_for(executor, 0 if n < MIN_IMAGES_FOR_WORKERS else workers, preload=preload)


def pass_chunks(paths: list[str], workers: int, chunk_size: int | None = None) -> list[list[str]]:
    """The image pass's worker tasks, in order: ``chunk_size`` paths each, or by default
    chunks that shrink toward the end.

    The default is guided self-scheduling (Polychronopoulos and Kuck, "Guided
    Self-Scheduling", IEEE Trans. Computers, 1987), with a factor of 4: each chunk takes the
    remaining paths / (4 x ``workers``), at least 8 and at most 256. Large chunks first
    keep the messages few; small ones last let the workers finish within a few images of
    each other, where equal chunks of 25 hymenoptera photos (50 ms each) left one worker
    idle for up to a chunk at the end of a 0.4 s pass.
    """
    n = len(paths)
    if chunk_size:
        return [paths[i:i + chunk_size] for i in range(0, n, chunk_size)]
    chunks, i, share = [], 0, 4 * max(1, workers)
    while i < n:
        size = min(256, max(8, math.ceil((n - i) / share)))
        chunks.append(paths[i:i + size])
        i += size
    return chunks


def image_pass(paths: list[str], max_side: int | None, computes: tuple, workers: int | None,
               chunk_size: int | None = None, executor: Any = None) -> Any:
    """Yield :func:`audit_image` records for ``paths`` in order, computed by worker processes.

    ``executor``: see :func:`vetset.core.executor.executor_for` (``None`` = the run's choice,
    else local worker processes).
    """
    executor = pass_executor(len(paths), workers, computes, executor)
    chunks = pass_chunks(paths, executor.workers, chunk_size)
    for records in executor.map(functools.partial(audit_chunk, (max_side, computes)), chunks, chunksize=1):
        yield from records


# -- the driver --------------------------------------------------------------------------
def _metadata(w: int, h: int, size: int, mode: str, fmt: str) -> dict[str, Any] | None:
    """``fo.ImageMetadata`` in the form FiftyOne stores (:func:`vetset.core._fiftyone.image_metadata_doc`)."""
    if not w:
        return None
    mime, channels = _mime_channels(mode, fmt)
    return image_metadata_doc(size, mime, w, h, channels)


class _MetadataColumn:
    """``fo.ImageMetadata`` dicts of the audited images, built per slice (one write batch at a
    time) from the image pass's columns, so the driver never holds one dict per image."""

    def __init__(self, cols: Any):
        self.cols = cols

    def __len__(self) -> int:
        return len(self.cols.error)

    def __getitem__(self, s: slice) -> list[dict[str, Any] | None]:
        c = self.cols
        return [_metadata(w, h, size, m, f) if e is None else None for w, h, size, m, f, e in
                zip(c.width[s].tolist(), c.height[s].tolist(), c.file_size[s].tolist(), c.mode[s], c.format[s], c.error[s])]


@functools.lru_cache(maxsize=256)
def _mime_channels(mode: str, fmt: str) -> tuple[str | None, int | None]:
    from PIL import Image

    if fmt and fmt not in Image.MIME:
        # Pillow fills Image.MIME as its format plugins load, on the first open: a driver that
        # reused every record decoded nothing here (it stored mime_type None, then rewrote every sample)
        Image.init()
    return Image.MIME.get(fmt), (Image.getmodebands(mode) if mode else None)


def _coverage_gaps(coverage: dict[str, Any], share: float) -> list[dict[str, Any]]:
    """Cells (class, property, bin) of the train split (else all) rare in the class but not overall."""
    split = "train" if "train" in coverage else "all"
    gaps = []
    for prop, table in coverage.get(split, {}).items():
        totals: dict[str, int] = {}
        for row in table.values():
            for b, v in row.items():
                totals[b] = totals.get(b, 0) + v
        grand = sum(totals.values())
        for b, tot in totals.items():
            if not grand or tot / grand < share:
                continue
            for cls, row in table.items():
                n = sum(row.values())
                if n and row[b] / n < share:
                    gaps.append({"split": split, "class": cls, "property": prop, "bin": b,
                                 "share": round(row[b] / n, 4), "overall_share": round(tot / grand, 4)})
    return gaps


def run_audit(dataset_or_view: Any, options: AuditOptions | None = None, hooks: Hooks | None = None, *,
              run: Run | None = None, log: Callable[[str], None] | None = None, executor: Any = None,
              cache_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Audit every sample of a FiftyOne dataset or view; write fields, tags; return the block.

    Args:
        dataset_or_view: the samples to audit (unreadable ones included: they are reported).
        options: :class:`AuditOptions` (default: all defaults), or the recipe's
            (:func:`audit_options_model`).
        hooks: the :class:`~vetset.core.manager.Hooks` facade (default: the process-wide one).
        run: the current run, if any; ``vetset_on_check_finished`` fires for each check
            once the write is done.
        log: one-line message callable (default ``run.log`` or ``print``).
        executor: where the image pass runs: ``None`` (the enclosing
            :func:`~vetset.core.executor.use_executor` choice, which a run sets from its
            recipe; else local worker processes), ``"local"``, ``"ray"``, an
            ``ExecutorOptions``/mapping with ``name``/``address``/``workers``, or an executor
            instance (:func:`vetset.core.executor.executor_for`).
        cache_dir: folder of the image pass's records (``<run folder>/audit`` in a run):
            files whose size and modification time are unchanged since the audit that wrote
            it are not decoded again (:mod:`vetset.plugins.audit._incremental`); ``None``
            decodes every file.

    Returns:
        The audit result block (module docstring); JSON-able.

    Raises:
        RecipeError: unknown check names or invalid check options.
        PluginError: a check's ``evaluate`` failed or returned something other than a dict.
    """
    from vetset.core.manager import get_hooks
    from vetset.core.progress import track
    from vetset.plugins.audit.context import AuditContext, collect_records, read_columns, write_all

    options = options or AuditOptions()
    hooks = hooks or get_hooks()
    log = log or (run.log if run is not None else print)
    t0 = time.perf_counter()
    selected = select_checks(hooks, options)
    view = dataset_or_view
    computes = tuple((name, chk.compute, opts) for name, chk, opts in selected if chk.compute is not None)
    side = decode_side(options, selected)
    ids, filepaths, labels, splits, sample_tags = read_columns(view)
    t_read = time.perf_counter()
    cache = None
    if cache_dir is not None and len(filepaths) <= MAX_CACHED_IMAGES:
        cache = PassCache(cache_dir, cache_key(side, computes))
    used: list[Any] = []

    def run_pass(paths: list[str]) -> Any:
        pool = pass_executor(len(paths), options.workers, computes, executor)
        used.append((pool, len(paths)))
        return track(image_pass(paths, side, computes, options.workers, options.chunk_size, pool),
                     total=len(paths), description="audit", unit="img")

    records = cache.records(filepaths, run_pass) if cache is not None else run_pass(filepaths)
    cols = collect_records(records, filepaths, [name for name, _, _ in computes])
    pool, n_read = used[0]
    reused = cache.reused if cache is not None else 0
    t_pass = time.perf_counter()
    ds = root_dataset(view)
    classes = sorted(set(ds.default_classes or []) | {lab for lab in labels if lab is not None})

    n = len(filepaths)
    failures = cols.failures
    ctx = AuditContext.from_pass(cols, view=view, ids=ids, filepaths=filepaths, labels=labels, splits=splits,
                                 classes=classes, sample_tags=sample_tags, options=options, log=log)
    ctx.set_field("metadata", _MetadataColumn(cols), "metadata")

    summaries: dict[str, dict[str, Any]] = {}
    metrics: dict[str, Any] = {"num_images": n, "num_readable": int(ctx.readable.sum())}
    for name, check, opts in selected:
        t = time.perf_counter()
        try:
            summary = check.evaluate(ctx, opts)
        except (PluginError, RecipeError):
            raise
        except Exception as exc:
            plugin = hooks.checks.plugin_of(name)
            raise PluginError(f"Check {name!r} (plugin {plugin!r}) failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(summary, dict):
            raise PluginError(f"Check {name!r} (plugin {hooks.checks.plugin_of(name)!r}) returned "
                              f"{type(summary).__name__}, not a dict.")
        summary["seconds"] = round(time.perf_counter() - t, 4)
        if name in failures:
            summary["compute_failures"] = {"count": len(failures[name]), "examples": failures[name][:5]}
        for key, value in (summary.get("metrics") or {}).items():
            metrics[key if key not in metrics else f"{name}_{key}"] = value
        summaries[name] = summary
    t_eval = time.perf_counter()

    info = dict(ds.info or {})
    vinfo = dict(info.get("vetset") or {})
    written = write_all(ctx, vinfo.get("audit_tags", []), vinfo.get("audit_write"),
                        digests_file=Path(cache_dir) / STORED_FILE if cache_dir is not None else None)
    vinfo["audit_write"] = written["state"]
    vinfo["audit_tags"] = sorted((set(vinfo.get("audit_tags", [])) | set(ctx.tags)) - {"unreadable"})
    # the fields each check wrote, by kind: failure slices and drift find their properties here
    vinfo["audit_fields"] = {**(vinfo.get("audit_fields") or {}),
                             **{name: kind for name, (_, kind) in ctx.fields.items() if kind != "metadata"}}
    vinfo.update(ctx.info)
    info["vetset"] = vinfo
    ds.info = info
    ds.save()
    if cache is not None:
        cache.save()  # after the write: an interrupted audit reads its files again next time
    t_write = time.perf_counter()

    gaps = _coverage_gaps(ctx.coverage, options.coverage_gap_share)
    metrics["coverage_gaps"] = len(gaps)
    total = t_write - t0
    block = {
        "num_images": n, "num_readable": int(ctx.readable.sum()),
        "images_per_s": round(n / total, 2) if total > 0 else None,
        "executor": {"name": pool.name, "workers": pool.workers if pool.name != "local" or len(
            pass_chunks(filepaths[:n_read], pool.workers, options.chunk_size)) > 1 else 0},  # one chunk runs in-process
        "images_read": n_read, "images_reused": reused, "samples_written": written["samples_written"],
        "seconds": {"read_samples": round(t_read - t0, 3), "image_pass": round(t_pass - t_read, 3),
                    "evaluate": round(t_eval - t_pass, 3), "write": round(t_write - t_eval, 3), "total": round(total, 3)},
        "options": _dump_options(options, selected), "checks_run": [name for name, _, _ in selected],
        "class_counts": ctx.count_by_class(ctx.readable), "coverage": ctx.coverage, "coverage_gaps": gaps,
        "tags": written["tags"], "checks": summaries, "metrics": metrics,
    }
    if run is not None:
        for name in summaries:
            hooks.on_check_finished(run, name, summaries[name])
    unchanged = f"; {reused} unchanged since the last audit in this run folder, not read again" if reused else ""
    log(f"[audit] {n} images ({block['num_readable']} readable) in {total:.1f} s ({block['images_per_s'] or 0:,.0f} img/s)"
        f"{unchanged}")
    return block


def _dump_options(options: AuditOptions, selected: list[tuple[str, Check, BaseModel]]) -> dict[str, Any]:
    """The options as run, JSON-able: every check's given options, the selected ones validated."""
    dumped = options.model_dump(mode="json")
    dumped["checks"] = {**(dumped.get("checks") or {}), **{n: o.model_dump(mode="json") for n, _, o in selected}}
    return dumped


def _audit_stage(run: Run, options: AuditOptions) -> dict[str, Any]:
    """The ``audit`` stage: audit the run's dataset without samples tagged ``augmented``."""
    view = run.dataset.match_tags("augmented", bool=False)
    skipped = len(run.dataset) - len(view)
    block = run_audit(view, options, run.hooks, run=run, log=run.log, cache_dir=run.stage_dir("audit"))
    if skipped:
        block["skipped_augmented"] = skipped
    return block


@hookimpl
def vetset_register_stages(register):
    register(Stage("audit", _audit_stage, AuditOptions,
                   "audit balance, coverage (orientation/colour/clarity), quality, duplicates/leakage, unreadable files",
                   worker_modules=WORKER_PRELOAD, bind=bind_to_checks,
                   reuse_key=lambda options, out_dir: {}))  # the files, the dataset and the options decide
