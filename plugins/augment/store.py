"""The FiftyOne and file-system side of the augmentation writer.

* The output folder holds a marker file (:data:`MARKER`); vetset deletes files only in a
  folder that carries it, and only files named like its own outputs (:data:`OUTPUT_NAME`).
* :func:`write_plan` makes the augmented set of one output folder match a plan: samples
  of an earlier plan are deleted with their files, images already present are skipped,
  the rest are produced (:mod:`vetset.plugins.augment.writer`) and their samples added
  in bulk by :class:`BulkAdder`, from a background thread so that inserts overlap the
  image work. Every sample is complete when added and each file is renamed into place
  whole, so an interrupted run leaves whole samples or none, and the next run adds the rest.
"""

from __future__ import annotations

import os
import queue
import re
import threading
import time
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any

from vetset.core._fiftyone import classification_doc, insert_samples
from vetset.core.errors import DataError

MARKER = ".vetset-augment"
#: Names vetset gives its outputs: ``<stem>-<policy>-<index>-<10 hex>.<ext>`` (and their temp files,
#: :func:`vetset.core.atomic.temp_path`).
OUTPUT_NAME = re.compile(r"^.+-\d+-[0-9a-f]{10}\.(jpg|png)(\.tmp-\d+(-\d+)?)?$")
#: String fields of every augmented sample (besides ``filepath``, ``tags``, ``ground_truth``
#: and the ``aug_params`` list of ``{"transform", "params"}`` dicts). ``metadata`` is left
#: to the re-audit, which writes it with the rest of the audit's fields.
SAMPLE_FIELDS = ("source_id", "source_filepath", "aug_policy", "aug_target", "aug_plan", "aug_key")
AUG_TAG = "augmented"


def check_output(folder: Path, protected: Iterable[str | None]) -> Path:
    """Refuse an output folder that could hold user data; returns it resolved. Writes nothing.

    Args:
        folder: the output folder.
        protected: paths of the source data (folders, or a CSV manifest whose folder counts).

    Raises:
        DataError: the folder is (inside) a source folder, contains one, or is a non-empty
            folder vetset did not create.
    """
    folder = Path(folder).expanduser().resolve()
    for src in protected:
        if not src:
            continue
        src_path = Path(src).expanduser().resolve()
        src_dir = src_path.parent if src_path.is_file() else src_path
        if folder == src_dir or src_dir in folder.parents or folder in src_dir.parents:
            raise DataError(f"Augmentation output folder {folder} overlaps the source data {src_dir}; "
                            "choose stages.augment.output_dir outside it.")
    if folder.exists() and any(folder.iterdir()) and not (folder / MARKER).exists():
        raise DataError(f"Augmentation output folder {folder} is not empty and was not created by vetset; "
                        "choose an empty or new folder for stages.augment.output_dir.")
    return folder


def prepare_output(folder: Path, protected: Iterable[str | None]) -> Path:
    """:func:`check_output`, then create the folder and its :data:`MARKER`; returns it resolved."""
    folder = check_output(folder, protected)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MARKER).write_text("files here are written and deleted by the vetset augment stage\n")
    return folder


def remove_files(folder: Path, keep: set[str]) -> int:
    """Delete vetset-named files under ``folder`` (which holds :data:`MARKER`) not in ``keep``.

    Returns:
        Number of files deleted. Emptied class folders are removed too.
    """
    if not (folder / MARKER).exists():
        return 0
    removed = 0
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if path not in keep and OUTPUT_NAME.match(name):
                os.unlink(path)
                removed += 1
    for dirpath, _, _ in sorted(os.walk(folder), reverse=True):
        if dirpath != str(folder) and not os.listdir(dirpath):
            os.rmdir(dirpath)
    return removed


def class_folder(label: str) -> str:
    """A folder name for ``label``: the label itself when file-system safe, else a safe form
    with a short hash (so two labels never share a folder)."""
    import hashlib

    safe = re.sub(r"[^\w.-]+", "_", label).strip("._") or "class"
    return safe if safe == label else f"{safe}-{hashlib.sha1(label.encode('utf-8')).hexdigest()[:6]}"


def output_ext(source: str, image_format: str) -> str:
    """``jpg`` or ``png``: ``source`` keeps JPEG sources as JPEG and writes the rest as PNG."""
    if image_format != "source":
        return image_format
    return "jpg" if source.lower().endswith((".jpg", ".jpeg")) else "png"


def declare_fields(dataset: Any) -> None:
    """Add the augmented-sample fields to ``dataset``'s schema (once)."""
    import fiftyone as fo

    schema = dataset.get_field_schema()
    if "ground_truth" not in schema:
        dataset.add_sample_field("ground_truth", fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    for name in SAMPLE_FIELDS:
        if name not in schema:
            dataset.add_sample_field(name, fo.StringField)
    if "aug_params" not in schema:
        dataset.add_sample_field("aug_params", fo.ListField, subfield=fo.DictField)


class BulkAdder:
    """Add samples to a dataset in batches, from one background thread.

    ``add(item)`` queues an item; every ``batch_size`` items the thread builds the
    ``(fo.Sample, plain fields)`` pairs with ``make`` and inserts them with one
    :func:`vetset.core._fiftyone.insert_samples`. ``close()``
    adds the rest, waits, and re-raises an error of the thread. Used as a context manager,
    an exception in the ``with`` block still adds the complete items queued so far.
    """

    def __init__(self, dataset: Any, make: Callable[[Any], Any], batch_size: int = 256):
        self.dataset, self.make, self.batch_size = dataset, make, batch_size
        self.added = 0
        self._buffer: list[Any] = []
        self._queue: queue.Queue = queue.Queue(maxsize=8)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="vetset-augment-add", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            if self._error is not None:
                continue
            try:
                made = [self.make(x) for x in batch]
                insert_samples(self.dataset, [m[0] for m in made], [m[1] for m in made])
                self.added += len(batch)
            except BaseException as exc:  # re-raised in the calling thread by close()
                self._error = exc

    def add(self, item: Any) -> None:
        if self._error is not None:
            raise self._error
        self._buffer.append(item)
        if len(self._buffer) >= self.batch_size:
            self._queue.put(self._buffer)
            self._buffer = []

    def close(self) -> None:
        if self._buffer:
            self._queue.put(self._buffer)
            self._buffer = []
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BulkAdder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception:
            pass  # the original exception matters more


def _sample(plan_key: str, item: tuple[Any, Any, dict[str, Any]]) -> tuple[Any, dict[str, Any]]:
    """The new sample of one written image: a ``fo.Sample`` with its filepath and tags, and
    its other fields in stored form for :func:`vetset.core._fiftyone.insert_samples`."""
    import fiftyone as fo

    im, task, res = item
    sample = fo.Sample(filepath=task.out_path, tags=["train", AUG_TAG])
    return sample, {"ground_truth": classification_doc(im.source.label), "source_id": im.source.id,
                    "source_filepath": im.source.filepath, "aug_policy": im.policy,
                    "aug_target": f"{im.target[0]}={im.target[1]}" if im.target else None,
                    "aug_plan": plan_key, "aug_key": im.key,
                    "aug_params": res["params"]}  # JSON-safe already (jsonable_params)


def write_plan(dataset: Any, images: list[Any], folder: Path, plan_key: str, cfg: Any,
               workers: int | None = None, image_format: str = "source", batch_size: int = 256,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Make the augmented set of ``folder`` match the plan, writing only what is missing.

    1. Samples of ``folder`` from another plan (``aug_plan`` differs) are deleted, with
       every vetset-named file of ``folder`` the plan does not name.
    2. Planned images whose sample exists are skipped; the others are produced (a file
       left by an interrupted run is kept, its parameters redrawn with the same seed) and
       their samples added in batches of ``batch_size``.

    Args:
        dataset: the FiftyOne dataset.
        images: the plan's :class:`~vetset.plugins.augment.plan.PlannedImage` list.
        folder: output folder prepared by :func:`prepare_output`.
        plan_key: the plan fingerprint stored in ``aug_plan``.
        cfg: :class:`~vetset.plugins.augment.writer.WriterConfig`.
        workers: worker processes (``None``: every CPU this process may use; 0/1: in-process).
        image_format: ``source``, ``jpg`` or ``png``.

    Returns:
        Counts: ``planned``, ``written`` (new files), ``recovered`` (files kept from an
        interrupted run), ``skipped`` (samples already present), ``deleted_samples``,
        ``deleted_files``, ``failed``, ``errors`` (first five), ``seconds``, ``images_per_s``.
    """
    from fiftyone import ViewField as F

    from vetset.core.progress import track
    from vetset.plugins.augment.writer import Task, run_tasks

    t0 = time.perf_counter()
    declare_fields(dataset)
    mine = dataset.match_tags(AUG_TAG).match(F("filepath").starts_with(str(folder) + os.sep))
    ids, fps, plans = mine.values(["id", "filepath", "aug_plan"]) if len(mine) else ([], [], [])
    paths = [os.path.join(folder, class_folder(im.source.label), im.filename(output_ext(im.source.filepath, image_format)))
             for im in images]
    wanted = set(paths)
    stale = [i for i, fp, key in zip(ids, fps, plans) if key != plan_key or fp not in wanted]
    if stale:
        dataset.delete_samples(stale)
        log(f"[augment] removed {len(stale)} augmented samples of an earlier plan from {folder}")
    present = {fp for fp, key in zip(fps, plans) if key == plan_key and fp in wanted}
    deleted_files = remove_files(folder, wanted)
    todo = []
    for im, path in zip(images, paths):
        if path not in present:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            todo.append((im, Task(im.source.filepath, path, im.policy, im.seed, write=not os.path.exists(path))))
    stats: dict[str, Any] = {"planned": len(images), "written": 0, "recovered": 0, "skipped": len(images) - len(todo),
                             "deleted_samples": len(stale), "deleted_files": deleted_files, "failed": 0, "errors": []}
    progress = partial(track, description="augment", unit="img")
    with BulkAdder(dataset, partial(_sample, plan_key), batch_size) as adder:
        results = run_tasks([t for _, t in todo], cfg, workers, progress=progress)
        for (im, task), (_, res) in zip(todo, results):
            if res["error"]:
                stats["failed"] += 1
                if len(stats["errors"]) < 5:
                    stats["errors"].append(res["error"])
                continue
            stats["written" if task.write else "recovered"] += 1
            adder.add((im, task, res))
    seconds = time.perf_counter() - t0
    stats["seconds"] = round(seconds, 3)
    stats["images_per_s"] = round(len(todo) / seconds, 2) if todo and seconds > 0 else None
    return stats
