"""Reuse the last run's result when nothing it read has changed.

A run whose recipe has only stages with a :attr:`vetset.core.registry.Stage.reuse_key`
(the bundled ``audit`` recipe: audit, embed, report) records under ``"inputs"`` in its
``result.json`` what decided its result:

* ``code``: vetset's own files (path, size, modification time) and the name and version of
  every plugin distribution pluggy loaded;
* ``recipe``: the validated recipe (``result["recipe"]`` already holds it);
* ``source``: every file and folder under the ImageFolder root (relative path, size,
  modification and change time: a copy, an edit, a ``touch`` or a rename all count), or a
  CSV manifest and each file it lists;
* ``stages``: each stage's reuse key (e.g. which weights the embed stage would load, or
  the sentence it skipped with);
* ``dataset``: the FiftyOne dataset's stored state (:func:`vetset.core._fiftyone.dataset_stamps`:
  its document, saved views, sample count and latest sample change), read after the run's
  last write;
* ``outputs``: every file under the run folder but ``result.json`` (path, size, modification
  time);
* ``result``: the result itself without ``inputs`` (:func:`result_digest`), so a
  ``result.json`` edited by hand runs in full.

The next ``recipes run`` with the same recipe, source, dataset name and output folder
computes the same record before it imports FiftyOne or torch, and when every part is
equal it prints the recorded result instead of running the stages again: what ``make``
does for a target newer than its inputs. ``--force`` runs in full; ``--resume`` keeps its
own meaning (skip finished stages, continue training). The record is only taken where the
database URI is known before FiftyOne is imported (vetset's shared server or
``FIFTYONE_DATABASE_URI``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vetset.core.manager import Hooks
    from vetset.core.recipe import Recipe

#: Version of the ``inputs`` record; a record of another version is never reused.
INPUTS_VERSION = 1

_CODE_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".html", ".js", ".css", ".jinja", ".j2", ".txt"}


#: Digests a failed :func:`reusable` check computed in this process, for :func:`record` to
#: take instead of computing them again: ``{(kind, argument): digest}``. Taken before the
#: run reads anything, a source digest can only be older than what the run read, so a file
#: changed meanwhile makes the next comparison fail (a full run), never pass.
_computed: dict[tuple[str, str], Any] = {}


def _digest(rows: Any) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True, default=str).encode()).hexdigest()


def vetset_files_digest() -> str:
    """sha256 of vetset's own files (relative path, size, mtime in ns; ``__pycache__`` left
    out): changes with any edit or upgrade of vetset's code."""
    import vetset.core

    root = Path(vetset.core.__file__).resolve().parent.parent  # the folder holding core/, plugins/, recipes/
    rows: list[Any] = []
    for pkg in ("core", "plugins", "recipes"):
        for dirpath, dirnames, filenames in os.walk(root / pkg):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__")
            for f in sorted(filenames):
                if os.path.splitext(f)[1] in _CODE_SUFFIXES:
                    st = os.stat(os.path.join(dirpath, f))
                    rows.append([os.path.relpath(os.path.join(dirpath, f), root), st.st_size, st.st_mtime_ns])
    return _digest(rows)


def module_stamp(obj: Any) -> list[Any] | None:
    """``[path, size, mtime_ns]`` of the file defining ``obj`` (a function, class or module),
    or ``None`` when it has none: an edit or a reinstall of that file changes it."""
    import inspect

    try:
        path = inspect.getsourcefile(obj) or inspect.getfile(obj)
        st = os.stat(path)
    except (TypeError, OSError):
        return None
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


def code_digest(hooks: Hooks) -> str:
    """sha256 of vetset's own files (:func:`vetset_files_digest`), of the ``(name,
    version)`` of every plugin distribution ``hooks`` loaded, and of the file of every
    plugin module (:func:`module_stamp`: an edited third-party plugin whose version did not
    change)."""
    import inspect

    dists = sorted({(d.project_name, d.version) for _, d in hooks.pm.list_plugin_distinfo()})
    modules = sorted({str(module_stamp(m)) for p in hooks.pm.get_plugins() if (m := inspect.getmodule(p)) is not None})
    return _digest([vetset_files_digest(), dists, modules])


def _tree_rows(root: Path, skip: Path | None = None,
               skip_dirs: Callable[[str], bool] | None = None) -> list[list[Any]]:
    """One row per entry under ``root``, sorted: folders as ``[rel, "dir"]``, files as
    ``[rel, size, mtime_ns, ctime_ns]``, a symbolic link with its target appended, a
    broken one as ``[rel, None, target]``.

    Symbolically linked folders are followed, as the ImageFolder loader follows linked class
    and split folders (:func:`vetset.core.dataset.scan_imagefolder`); a folder already seen
    (a link loop, or two links to one folder) is listed once, as ``[rel, "seen"]``. Folders
    for which ``skip_dirs(name)`` is true are left out.
    """
    rows: list[list[Any]] = []
    seen: set[tuple[int, int]] = set()
    stack = [(str(root), ".")]
    while stack:
        path, rel = stack.pop()
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) in seen:
                rows.append([rel, "seen"])
                continue
            seen.add((st.st_dev, st.st_ino))
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            rows.append([rel, "unreadable"])
            continue
        rows.append([rel, "dir"])  # an empty folder is an entry too (its mtime is not: writing result.json sets it)
        subdirs = []
        for entry in entries:
            if skip is not None and entry.path == str(skip):
                continue
            erel = os.path.join(rel, entry.name)
            link = None
            if entry.is_symlink():
                try:
                    link = os.readlink(entry.path)
                except OSError:
                    link = ""
            try:
                is_dir = entry.is_dir()  # follows a link
                st = None if is_dir else entry.stat()
            except OSError:  # a broken link: its name and target are still inputs
                rows.append([erel, None, link])
                continue
            if is_dir:
                if skip_dirs is not None and skip_dirs(entry.name):
                    continue
                if link is not None:
                    rows.append([erel, "link", link])
                subdirs.append((entry.path, erel))
                continue
            row = [erel, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
            rows.append(row if link is None else [*row, link])
        stack.extend(reversed(subdirs))  # depth first, in name order
    return rows


def source_digest(data: str | os.PathLike | None, fmt: str = "auto") -> str | None:
    """sha256 of what the loader reads from ``data``: every entry under an ImageFolder root,
    or a CSV manifest and each file it lists (size, mtime and ctime in ns); ``None`` for no
    source (an existing dataset by name) or one that cannot be read (a full run says why)."""
    if data is None:
        return None
    src = Path(data).expanduser().resolve()
    try:
        if fmt == "csv" or (fmt == "auto" and src.suffix.lower() == ".csv"):
            from vetset.core.dataset import scan_csv
            from vetset.core.errors import VetsetError

            st = src.stat()
            try:
                items, _ = scan_csv(src, [])
            except VetsetError:
                return None
            rows: list[Any] = [[str(src), st.st_size, st.st_mtime_ns, st.st_ctime_ns]]
            for item in items:
                try:
                    fst = os.stat(item.filepath)
                except OSError:  # a listed file that is missing: the run reports it unreadable
                    rows.append([item.filepath, item.label, item.split, None])
                    continue
                rows.append([item.filepath, item.label, item.split, fst.st_size, fst.st_mtime_ns, fst.st_ctime_ns])
            return _digest(rows)
        if not src.is_dir():
            return None
        from vetset.core.dataset import RUNS_DIR  # numpy and Pillow (already loaded by the CLI's checks)

        # a run folder inside the data folder is left out, as the loader leaves it out
        return _digest([str(src), _tree_rows(src, skip_dirs=lambda name: name == RUNS_DIR)])
    except OSError:
        return None


def outputs_digest(out_dir: Path) -> str | None:
    """sha256 of every file under ``out_dir`` but its ``result.json``, or ``None`` when
    the folder is missing."""
    from vetset.core.result import RESULT_FILE

    if not out_dir.is_dir():
        return None
    return _digest(_tree_rows(out_dir, skip=out_dir / RESULT_FILE))


def result_digest(result: dict[str, Any]) -> str:
    """sha256 of a run result without its ``inputs``, as ``result.json`` stores it (the
    in-memory result goes through the writer's JSON conversion first, so the digest of a
    result and of the file written from it are equal): a hand-edited ``result.json`` is
    never kept."""
    from functools import partial

    from vetset.core.result import to_jsonable

    rest = {k: v for k, v in result.items() if k != "inputs"}
    return _digest(json.loads(json.dumps(rest, default=partial(to_jsonable, strict=True), allow_nan=False)))


def stage_keys(recipe: Recipe, hooks: Hooks, out_dir: Path) -> dict[str, Any] | None:
    """Each stage's reuse key, or ``None`` when a stage has none (the recipe always runs in full)."""
    keys: dict[str, Any] = {}
    for name in recipe.stage_names():
        stage = hooks.stages.get(name)
        if stage is None or stage.reuse_key is None:
            return None
        key = stage.reuse_key(recipe.options(name), out_dir)
        if key is None:
            return None
        keys[name] = key
    return keys


def dataset_state(dataset: str) -> dict[str, Any] | None:
    """:func:`vetset.core._fiftyone.dataset_stamps` of ``dataset`` on the server
    ``FIFTYONE_DATABASE_URI`` names; ``None`` without a URI, without the dataset, or when
    the server does not answer."""
    uri = os.environ.get("FIFTYONE_DATABASE_URI")
    if not uri:
        return None
    from pymongo.errors import PyMongoError

    from vetset.core._fiftyone import dataset_stamps
    from vetset.core.database import database_name

    try:
        return dataset_stamps(uri, database_name(), dataset)
    except PyMongoError:
        return None


def record(recipe: Recipe, hooks: Hooks, data: str | os.PathLike | None, dataset: str,
           out_dir: Path) -> dict[str, Any] | None:
    """The ``inputs`` record of a run that has just written everything (module docstring),
    or ``None`` when the recipe has a stage without a reuse key or the database URI is
    unknown before FiftyOne is imported."""
    keys = stage_keys(recipe, hooks, out_dir)
    state = dataset_state(dataset) if keys is not None else None
    if keys is None or state is None:
        return None
    code = _computed.pop(("code", ""), None) or code_digest(hooks)
    src_key = ("source", f"{data}|{recipe.data.format}")
    source = _computed.pop(src_key) if src_key in _computed else source_digest(data, recipe.data.format)
    if data is not None and source is None:  # a source that cannot be described cannot be compared
        return None
    return {"version": INPUTS_VERSION, "code": code, "source": source,
            "stages": keys, "dataset": state, "outputs": outputs_digest(out_dir)}


def reusable(recipe: Recipe, hooks: Hooks, data: str | os.PathLike | None, dataset: str,
             out_dir: Path, wait_for_database: Any = None) -> dict[str, Any] | None:
    """The previous result in ``out_dir`` when nothing it read has changed, else ``None``.

    The cheap parts are compared first (the file, the recipe, vetset's files, the source,
    the outputs, each stage's key); the database is asked last, after
    ``wait_for_database()`` (the server may still be starting).

    Args:
        recipe, hooks: the validated recipe and the plugin facade.
        data: the ``--data`` path, or ``None``.
        dataset: the dataset name the run uses.
        out_dir: the run folder.
        wait_for_database: called before the database is read; optional.
    """
    from vetset.core.result import RESULT_FILE, SCHEMA_VERSION, read_result

    path = out_dir / RESULT_FILE
    if not path.is_file():
        return None
    try:
        previous = read_result(path)
    except (OSError, ValueError):
        return None
    inputs = previous.get("inputs")
    if not isinstance(inputs, dict) or inputs.get("version") != INPUTS_VERSION \
            or previous.get("schema_version") != SCHEMA_VERSION or previous.get("finished_at") is None \
            or previous.get("dataset") != dataset or previous.get("recipe") != recipe.dump():
        return None
    src = None if data is None else str(Path(data).expanduser().resolve())
    if (previous.get("source") or None) != src and data is not None:
        return None
    if inputs.get("result") != result_digest(previous):
        return None
    if inputs.get("outputs") != outputs_digest(out_dir) or inputs.get("stages") != stage_keys(recipe, hooks, out_dir):
        return None
    source = _computed[("source", f"{data}|{recipe.data.format}")] = source_digest(data, recipe.data.format)
    code = _computed[("code", "")] = code_digest(hooks)
    if inputs.get("source") != source or inputs.get("code") != code:
        return None
    if wait_for_database is not None:
        wait_for_database()
    if inputs.get("dataset") != dataset_state(dataset):
        return None
    return previous
