"""Loaders: ImageFolder trees, CSV manifests and existing FiftyOne datasets.

Every loader produces a persistent FiftyOne dataset in which

* each sample's ``filepath`` is the absolute path of a source file (never copied or moved);
* the class is a ``fo.Classification`` in the ``ground_truth`` field;
* the split is a sample tag (``train``, ``val``, ``test``), as FiftyOne's own loaders do;
* files that cannot be opened carry the tag ``unreadable`` and a ``unreadable_reason``
  string field; they are recorded, never fatal.

Loading the same source again updates the dataset in place (keyed by ``filepath``): new
files are added, changed labels are updated, files that vanished from the source are
removed from the dataset, and existing split tags are kept so the split is stable.
"""

from __future__ import annotations

import csv
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vetset.core._fiftyone import classification_doc, declare_sample_fields, insert_samples
from vetset.core.errors import DataError
from vetset.core.images import IMG_EXTENSIONS, decode, probe

SPLITS = ("train", "val", "test")
#: Folder names accepted for each split (``valid``/``validation`` are common aliases).
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "test": "test", "testing": "test"}
GT_FIELD = "ground_truth"
UNREADABLE_TAG = "unreadable"
#: Sample fields with the source file's size (bytes) and modification time (epoch seconds)
#: when it was loaded: a rerun reads only files whose size or time changed.
SIZE_FIELD, MTIME_FIELD, CTIME_FIELD = "file_size", "file_mtime", "file_ctime"
#: Samples per ``insert_many`` when a folder is loaded.
INSERT_BATCH = 2000


@dataclass
class Item:
    filepath: str
    label: str
    split: str | None


@dataclass
class LoadSummary:
    """What a load did. Counts are numbers of files/samples; ``reread`` counts files already in
    the dataset whose size or modification time changed (probed again), ``skipped_hidden``
    the hidden folders left out."""

    dataset: str
    source: str
    format: str
    classes: list[str]
    num_samples: int = 0
    added: int = 0
    updated: int = 0
    removed: int = 0
    unreadable: int = 0
    skipped_non_image: int = 0
    skipped_hidden: int = 0
    reread: int = 0
    split_made: bool = False
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_dataset_name(source: str | os.PathLike) -> str:
    """``vetset-<folder or file stem>``, lower-case, safe for FiftyOne."""
    p = Path(source).resolve()
    stem = p.stem if p.is_file() else p.name
    return "vetset-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-").lower() or "data")


#: Characters FiftyOne keeps (or turns into ``-``) when it makes a dataset's slug
#: (``fiftyone.core.utils.to_slug``); any other character is dropped from the slug.
_NAME_OK = re.compile(r"[A-Za-z0-9 _.+-]+")
#: ``to_slug``'s length limit (``fiftyone.core.utils._NAME_LENGTH_RANGE``).
_NAME_MAX = 1551


def check_dataset_name(name: str) -> str:
    """Refuse a ``--dataset`` name FiftyOne would store under a name-mangled slug.

    FiftyOne keys datasets by name and by slug (``fiftyone.core.utils.to_slug``), which drops
    every character but letters, digits, whitespace and ``+_.-``: ``a/b`` and ``ab`` would
    share the slug ``ab`` and the second ends in a FiftyOne ``ValueError``.

    Returns:
        ``name`` unchanged.

    Raises:
        DataError: an empty name, a character outside ``A-Z a-z 0-9 space _ . + -``, no letter
            or digit, or more than 1551 characters.
    """
    if not name or not name.strip():
        raise DataError("--dataset: the dataset name is empty.")
    bad = sorted(set(_NAME_OK.sub("", name)))
    if bad:
        raise DataError(f"--dataset {name!r}: FiftyOne dataset names may hold letters, digits, spaces and _ . + - only, "
                        f"not {' '.join(repr(c) for c in bad)}.")
    if not re.search(r"[A-Za-z0-9]", name):
        raise DataError(f"--dataset {name!r}: a FiftyOne dataset name needs at least one letter or digit.")
    if len(name) > _NAME_MAX:
        raise DataError(f"--dataset: a FiftyOne dataset name has at most {_NAME_MAX} characters, not {len(name)}.")
    return name


def _recorded_source(name: str) -> str | None:
    """The folder or manifest whose images the dataset ``name`` holds; ``None`` when it does
    not exist, is empty, or records none (such a dataset can take any folder)."""
    import fiftyone as fo

    if not fo.dataset_exists(name):
        return None
    ds = fo.load_dataset(name)
    return ((ds.info or {}).get("vetset") or {}).get("source") if len(ds) else None


def default_dataset_names(src: str | os.PathLike) -> tuple[str, str]:
    """The two names a folder or manifest loaded without ``--dataset`` can get (no FiftyOne
    import): :func:`default_dataset_name`, and that name with the first 6 hex digits of the
    SHA-1 of the resolved path (when the first holds another folder's images)."""
    import hashlib

    base = default_dataset_name(src)
    return base, f"{base}-{hashlib.sha1(str(Path(src).resolve()).encode('utf-8')).hexdigest()[:6]}"


def _default_name_for(src: Path) -> tuple[str, str | None]:
    """``(dataset name, note)`` for ``src`` loaded without ``--dataset``.

    :func:`default_dataset_name` unless that dataset holds another folder's images (two
    checkouts' ``vetset-demo/digits``, two projects' ``train``): then the same name with
    the first 6 hex digits of the SHA-1 of this folder's resolved path, so each folder
    keeps a dataset of its own across reruns without a name to remember; ``note`` says so.
    An explicit ``--dataset`` in use by another folder is still refused.
    """
    source = str(src.resolve())
    base, own = default_dataset_names(src)
    if _recorded_source(own) == source:
        return own, None
    holder = _recorded_source(base)
    if holder in (None, source):
        return base, None
    return own, f"dataset {base!r} holds the images of {holder}; this folder uses dataset {own!r}"


@dataclass
class Skipped:
    """Files and folders a folder scan left out: non-image files and hidden folders."""

    non_image: int = 0
    hidden_folders: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, kind: str, path: str) -> None:
        if kind == "folder":
            self.hidden_folders += 1
        else:
            self.non_image += 1
        if len(self.examples) < 3:
            self.examples.append(path)

    def sentence(self) -> str | None:
        """One line for the console and the report, or ``None`` when nothing was left out."""
        parts = []
        if self.non_image:
            parts.append(f"{self.non_image} non-image file{'s' if self.non_image != 1 else ''}")
        if self.hidden_folders:
            parts.append(f"{self.hidden_folders} hidden folder{'s' if self.hidden_folders != 1 else ''}")
        if not parts:
            return None
        return f"skipped {' and '.join(parts)} (e.g. {', '.join(self.examples)}); image extensions: " \
               f"{' '.join(IMG_EXTENSIONS)}"


#: The folder ``recipes run`` writes into by default, under the current folder
#: (:data:`vetset.core.run.DEFAULT_RUNS_DIR`); never read as data, so a run started inside
#: the data folder (``cd data && recipes run audit --data .``) does not turn its own output
#: into a class (or, beside ``train``/``val``, make every split folder a class).
RUNS_DIR = "vetset-runs"


def left_out_folder(name: str) -> bool:
    """Whether a folder of this name is never read as data: hidden (a leading ``.``) or
    :data:`RUNS_DIR`."""
    return name.startswith(".") or name == RUNS_DIR


def _list_images(folder: Path, skipped: Skipped | None = None) -> tuple[list[str], int]:
    """Image files below ``folder`` (sorted), and the number of non-image files skipped.

    Hidden files and folders (a leading ``.``: ``.DS_Store``, ``.ipynb_checkpoints``) are
    left out; hidden folders and non-image files are counted in ``skipped``. Symlinked
    directories are not followed, so a symlink loop cannot hang the walk.
    """
    files, n_skipped = [], 0
    skipped = skipped if skipped is not None else Skipped()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for d in dirnames:
            if d.startswith("."):
                skipped.add("folder", os.path.join(dirpath, d))
        dirnames[:] = sorted(d for d in dirnames if not left_out_folder(d))
        absdir = os.path.abspath(dirpath)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            if name.lower().endswith(IMG_EXTENSIONS):
                files.append(os.path.join(absdir, name))
            else:
                n_skipped += 1
                skipped.add("file", os.path.join(dirpath, name))
    return files, n_skipped


def scan_imagefolder(root: Path, skipped: Skipped | None = None) -> tuple[list[Item], list[str], int]:
    """Read ``root/<class>/*`` or ``root/<split>/<class>/*``; hidden folders and
    :data:`RUNS_DIR` are left out.

    Args:
        skipped: filled with the non-image files and hidden folders left out.

    Returns:
        (items, classes, skipped_non_image). ``classes`` is sorted (torchvision's
        ``ImageFolder`` order) and includes class folders that hold no image.

    Raises:
        DataError: ``root`` is missing, not a folder, or holds no class folders.
    """
    if not root.exists():
        raise DataError(f"Data folder {root} does not exist.")
    if not root.is_dir():
        raise DataError(f"Data path {root} is not a folder; pass an ImageFolder tree or a .csv manifest.")
    skipped = skipped if skipped is not None else Skipped()
    for d in root.iterdir():
        if d.is_dir() and d.name.startswith("."):
            skipped.add("folder", str(d))
    subdirs = sorted(d for d in root.iterdir() if d.is_dir() and not left_out_folder(d.name))
    if not subdirs:
        raise DataError(f"Data folder {root} has no class sub-folders; expected {root}/<class>/<image> files.")
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    items: list[Item] = []
    classes: set[str] = set()
    n_skipped = 0
    if split_dirs and len(split_dirs) == len(subdirs):
        layout = [(SPLIT_ALIASES[d.name.lower()], d) for d in split_dirs]
    else:
        layout = [(None, root)]
    for split, base in layout:
        for entry in sorted(base.iterdir()):
            if split is not None and entry.is_dir() and entry.name.startswith("."):
                skipped.add("folder", str(entry))
            elif entry.is_file() and not entry.name.startswith("."):
                n_skipped += 1
                skipped.add("file", str(entry))
        for class_dir in sorted(d for d in base.iterdir() if d.is_dir() and not left_out_folder(d.name)):
            classes.add(class_dir.name)
            files, n_skip = _list_images(class_dir, skipped)
            n_skipped += n_skip
            items.extend(Item(f, class_dir.name, split) for f in files)
    if not classes:
        raise DataError(f"Data folder {root} has no class sub-folders inside its split folders.")
    return items, sorted(classes), n_skipped


def scan_csv(path: Path, notes: list[str] | None = None) -> tuple[list[Item], list[str]]:
    """Read a manifest with columns ``filepath,label[,split]``.

    Relative file paths are relative to the manifest's folder. A file listed twice with
    the same label and split is kept once (a line is appended to ``notes``); the split is
    made after this deduplication.

    Raises:
        DataError: missing file or columns, an empty label, an unknown split value, or the
            same file listed with two labels or two splits (the message names the rows).
    """
    if not path.is_file():
        raise DataError(f"Manifest {path} does not exist.")
    items: list[Item] = []
    seen: dict[str, tuple[int, Item]] = {}
    duplicates: list[int] = []
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"filepath", "label"} <= cols:
            raise DataError(f"Manifest {path} needs the columns filepath,label[,split]; it has {sorted(cols)}.")
        for row_no, row in enumerate(reader, start=2):
            fp, label = (row.get("filepath") or "").strip(), (row.get("label") or "").strip()
            if not fp:
                raise DataError(f"Manifest {path}, row {row_no}: empty filepath.")
            if not label:
                raise DataError(f"Manifest {path}, row {row_no}: empty label for {fp}.")
            split = (row.get("split") or "").strip().lower() or None
            if split is not None and split not in SPLIT_ALIASES:
                raise DataError(f"Manifest {path}, row {row_no}: split {split!r} is not one of train, val, test.")
            # normalised (abspath drops ./, ../ and doubled /), as FiftyOne stores it: one file, one key
            full = os.path.abspath(os.path.join(path.parent, fp))
            item = Item(full, label, SPLIT_ALIASES[split] if split else None)
            first = seen.get(full)
            if first is None:
                seen[full] = (row_no, item)
                items.append(item)
                continue
            if (first[1].label, first[1].split) != (item.label, item.split):
                what = (f"labels {first[1].label!r} and {label!r}" if first[1].label != label
                        else f"splits {first[1].split or '(none)'} and {item.split or '(none)'}")
                raise DataError(f"Manifest {path}: rows {first[0]} and {row_no} list {fp} with {what}; keep one row.")
            duplicates.append(row_no)
    if not items:
        raise DataError(f"Manifest {path} has no rows.")
    if duplicates and notes is not None:
        rows = ", ".join(map(str, duplicates[:5])) + (" ..." if len(duplicates) > 5 else "")
        notes.append(f"manifest {path.name}: {len(duplicates)} rows repeat an earlier row (same file, label and split) "
                     f"and were counted once (rows {rows})")
    return items, sorted({i.label for i in items})


def stratified_split(labels: list[str], val_fraction: float, seed: int) -> list[str]:
    """Seeded per-class hold-out: ``round(n * val_fraction)`` of each class goes to val.

    A class with a single image stays in train (it cannot be validated); a class with two
    or more keeps at least one image in each split.

    Returns:
        A split name (``"train"``/``"val"``) for each label, in input order.
    """
    rng = np.random.default_rng(seed)
    out = ["train"] * len(labels)
    by_class: dict[str, list[int]] = {}
    for i, lab in enumerate(labels):
        by_class.setdefault(lab, []).append(i)
    for lab in sorted(by_class):
        idx = np.array(by_class[lab])
        if len(idx) < 2:
            continue
        n_val = min(len(idx) - 1, max(1, int(round(len(idx) * val_fraction))))
        for i in rng.permutation(idx)[:n_val]:
            out[int(i)] = "val"
    return out


def load_dataset(
    source: str | os.PathLike | None,
    name: str | None = None,
    fmt: str = "auto",
    val_fraction: float = 0.2,
    seed: int = 0,
) -> tuple[Any, LoadSummary]:
    """Create or update the persistent FiftyOne dataset for ``source``.

    Args:
        source: an ImageFolder root, a ``.csv`` manifest, or ``None`` with ``name`` of an
            existing FiftyOne dataset.
        name: dataset name; default :func:`default_dataset_name` of ``source``.
        fmt: ``auto``, ``imagefolder``, ``csv`` or ``fiftyone``.
        val_fraction: share of each class held out as ``val`` when no split is given.
        seed: seed of that split.

    Returns:
        ``(dataset, summary)``.

    Raises:
        DataError: the source cannot be used (named in the message).
    """
    import fiftyone as fo

    if fmt == "fiftyone" or (source is None and name):
        ds_name = name or str(source)
        if not fo.dataset_exists(ds_name):
            raise DataError(f"FiftyOne dataset {ds_name!r} does not exist; `fiftyone datasets list` shows the names.")
        ds = fo.load_dataset(ds_name)
        if GT_FIELD not in ds.get_field_schema():
            raise DataError(f"FiftyOne dataset {ds_name!r} has no {GT_FIELD!r} Classification field.")
        classes = ds.default_classes or sorted(ds.distinct(f"{GT_FIELD}.label"))
        summary = LoadSummary(ds_name, ds_name, "fiftyone", list(classes), num_samples=len(ds))
        summary.counts = split_counts(ds)
        return ds, summary
    if source is None:
        raise DataError("No data given: pass --data PATH or --dataset NAME.")
    src = Path(source).expanduser()
    notes: list[str] = []
    left_out = Skipped()
    if name is not None:
        check_dataset_name(name)
    if fmt == "csv" or (fmt == "auto" and src.suffix.lower() == ".csv"):
        items, classes = scan_csv(src, notes)
        skipped, kind = 0, "csv"
    else:
        items, classes, skipped = scan_imagefolder(src, left_out)
        kind = "imagefolder"
        if not items:
            raise DataError(f"Data folder {src} has class folders but no image files in them"
                            + (f" ({skipped} other files skipped)" if skipped else "") + "; expected "
                            f"{src}/<class>/<image> files with image extensions ({' '.join(IMG_EXTENSIONS)}).")
    ds_name, note = (name, None) if name else _default_name_for(src)
    summary = LoadSummary(ds_name, str(src.resolve()), kind, classes, skipped_non_image=skipped,
                          skipped_hidden=left_out.hidden_folders)
    if note:
        summary.warnings.append(note)
    summary.warnings.extend(notes)
    if left_out.sentence():
        summary.warnings.append(left_out.sentence())

    ds = _open_or_create(ds_name)
    recorded = ((ds.info or {}).get("vetset") or {}).get("source")
    if recorded and recorded != summary.source and len(ds):
        raise DataError(f"Dataset {ds_name!r} holds the images of {recorded}, not {summary.source}; pass "
                        f"another --dataset NAME to load this folder into a dataset of its own (or delete the old one: "
                        f"fiftyone datasets delete {ds_name}).")
    ds.persistent = True
    deduped = _unique_filepaths(ds)
    if deduped:
        summary.warnings.append(f"removed {deduped} duplicate samples of files loaded twice by concurrent runs")
    schema = ds.get_field_schema()
    wanted = {GT_FIELD: fo.EmbeddedDocumentField(fo.Classification), "unreadable_reason": fo.StringField(),
              SIZE_FIELD: fo.IntField(), MTIME_FIELD: fo.FloatField(), CTIME_FIELD: fo.FloatField()}
    declare_sample_fields(ds, {k: v for k, v in wanted.items() if k not in schema})
    # id, tags, label, size, mtime, ctime
    existing: dict[str, tuple[str, list[str], str | None, int | None, float | None, float | None]] = {}
    if len(ds):
        columns = ds.values(["id", "filepath", "tags", f"{GT_FIELD}.label", SIZE_FIELD, MTIME_FIELD, CTIME_FIELD])
        existing = {row[1]: (row[0], *row[2:]) for row in zip(*columns)}

    # splits: given by the layout/manifest, else a seeded stratified split of new files
    given = all(it.split for it in items)
    if not given:
        new_items = [it for it in items if it.filepath not in existing and not it.split]
        for it, split in zip(new_items, stratified_split([i.label for i in new_items], val_fraction, seed)):
            it.split = split
        summary.split_made = True

    # a file whose size, modification time and inode change time are those stored is not read
    # again (the change time catches a rewrite that kept size and mtime: touch -d, cp -p)
    stats = [_stat(it.filepath) for it in items]
    new_samples, new_fields = [], []
    update_ids, update_labels = [], []
    changed: list[tuple[str, str, tuple[int, float, float] | None]] = []  # (id, filepath, stat) of files to probe again
    for it, st in zip(items, stats):
        prev = existing.get(it.filepath)
        if prev is None:
            reason = probe(it.filepath)
            new_samples.append(fo.Sample(filepath=it.filepath, tags=[it.split or "train"] +
                                         ([UNREADABLE_TAG] if reason else [])))
            new_fields.append({GT_FIELD: classification_doc(it.label), "unreadable_reason": reason,
                               SIZE_FIELD: st[0] if st else None, MTIME_FIELD: st[1] if st else None,
                               CTIME_FIELD: st[2] if st else None})
            continue
        if prev[2] != it.label:
            update_ids.append(prev[0])
            update_labels.append(it.label)
        if st is None or (prev[3], prev[4], prev[5]) != st:
            changed.append((prev[0], it.filepath, st))
    if new_samples:
        _add_missing(ds, new_samples, new_fields)
    summary.added = len(new_samples)
    if update_ids:
        view = ds.select(update_ids, ordered=True)
        view.set_values(GT_FIELD, [fo.Classification(label=lab) for lab in update_labels])
        summary.updated = len(update_ids)
    if existing:
        seen = {it.filepath for it in items}
        gone = [v[0] for fp, v in existing.items() if fp not in seen and fp.startswith(summary.source + os.sep)
                and "augmented" not in v[1]]
        if gone:
            ds.delete_samples(gone)
            summary.removed = len(gone)
    if changed:
        # refresh the unreadable state of changed files (they may have been fixed or broken)
        reasons = []
        for _sid, fp, _st in changed:
            reason = probe(fp)
            # the header probe cannot see what only a full decode finds (a truncated file,
            # which the audit tags): a file tagged unreadable is decoded again before it is cleared
            if reason is None and UNREADABLE_TAG in (existing[fp][1] or []):
                reason = decode(fp).error
            reasons.append(reason)
        ids = [c[0] for c in changed]
        view = ds.select(ids, ordered=True)
        view.set_values("unreadable_reason", reasons)
        view.set_values(SIZE_FIELD, [c[2][0] if c[2] else None for c in changed])
        view.set_values(MTIME_FIELD, [c[2][1] if c[2] else None for c in changed])
        view.set_values(CTIME_FIELD, [c[2][2] if c[2] else None for c in changed])
        bad = [sid for sid, r in zip(ids, reasons) if r]
        good = [sid for sid, r in zip(ids, reasons) if not r]
        if bad:
            ds.select(bad).tag_samples(UNREADABLE_TAG)
        if good:
            ds.select(good).untag_samples(UNREADABLE_TAG)
    summary.reread = len(changed)

    known = list(ds.default_classes or [])
    ds.default_classes = sorted(set(known) | set(classes))
    summary.classes = list(ds.default_classes)
    info = dict(ds.info or {})
    info.setdefault("vetset", {})
    info["vetset"].update({"source": summary.source, "format": kind})
    ds.info = info
    ds.save()
    summary.num_samples = len(ds)
    summary.unreadable = len(ds.match_tags(UNREADABLE_TAG))
    summary.counts = split_counts(ds)
    singles = [c for c, n in summary.counts.get("all", {}).items()
               if n == 1 and (summary.counts.get("train") or {}).get(c) == 1]
    if singles:
        summary.warnings.append(f"classes with a single image (kept in train, cannot be validated): {', '.join(singles)}")
    summary.warnings.extend(split_gaps(summary.counts, skip=singles))
    return ds, summary


def split_gaps(counts: dict[str, dict[str, int]], skip: list[str] = ()) -> list[str]:
    """Warnings for classes a split leaves out, from :func:`split_counts`' ``counts``.

    A class with train images but none in val cannot be validated; a class with val or
    test images but none in train cannot be learnt. Classes in ``skip`` (already named) and
    splits the data does not have are left out.

    Returns:
        Zero to two sentences naming the classes.
    """
    train, val, test = (counts.get(s) or {} for s in SPLITS)
    out = []
    if "val" in counts:
        no_val = [c for c, n in train.items() if n and not val.get(c) and c not in skip]
        if no_val:
            out.append(f"classes with train images but no val images (they cannot be validated): {', '.join(no_val)}")
    held_out = sorted({c for split in (val, test) for c, n in split.items() if n})
    no_train = [c for c in held_out if not train.get(c) and c not in skip]
    if no_train and ("train" in counts or held_out):
        out.append(f"classes only in val/test, with no train images (a model cannot learn them): {', '.join(no_train)}")
    return out


def _open_or_create(name: str) -> Any:
    """Load dataset ``name``, or create it; another process creating it at the same moment is fine."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        return fo.load_dataset(name)
    try:
        return fo.Dataset(name)
    except Exception as exc:  # created by a concurrent run in between (ValueError or pymongo's DuplicateKeyError)
        if fo.dataset_exists(name):
            return fo.load_dataset(name)
        if isinstance(exc, ValueError) and "slug" in str(exc):
            raise DataError(f"--dataset {name!r}: FiftyOne refuses the name ({exc}); pass another --dataset NAME.") from None
        raise


def _unique_filepaths(ds: Any) -> int:
    """Give ``filepath`` a unique index (one sample per file), as the loader keys samples by file.

    Two runs loading the same folder into the same dataset at once (a shared database)
    would otherwise both add every file. Samples that already share a filepath (left by
    such runs before this index existed) are reduced to the oldest one. Returns how many
    samples were removed.
    """
    info = ds.get_index_information().get("filepath") or {}
    if info.get("unique"):
        return 0
    ids, fps = ds.values(["id", "filepath"])
    seen: set[str] = set()
    extra = []
    for sid, fp in sorted(zip(ids, fps)):  # ObjectIds sort by creation time: keep the oldest
        if fp in seen:
            extra.append(sid)
        seen.add(fp)
    if extra:
        ds.delete_samples(extra)
    import logging

    quiet = logging.getLogger("fiftyone.core.collections")
    level = quiet.level
    for attempt in range(3):
        try:
            quiet.setLevel(logging.WARNING)  # not "Converting existing index 'filepath' to unique" on every load
            ds.create_index("filepath", unique=True)
            break
        except Exception:  # a concurrent run converting the same index (IndexKeySpecsConflict)
            if (ds.get_index_information().get("filepath") or {}).get("unique"):
                break
            if attempt == 2:
                raise
            time.sleep(0.5)
        finally:
            quiet.setLevel(level)
    return len(extra)


def _stat(path: str) -> tuple[int, float, float] | None:
    """``(size in bytes, modification time, inode change time)`` of a file (times in epoch
    seconds), ``None`` when it cannot be read."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime, st.st_ctime


def _is_duplicate(exc: BaseException) -> bool:
    """Whether an insert failed on the unique ``filepath`` index (MongoDB error E11000)."""
    details = getattr(exc, "details", None) or {}
    return "E11000" in str(exc) or getattr(exc, "code", None) == 11000 or \
        any(e.get("code") == 11000 for e in details.get("writeErrors", []))


def _add_missing(ds: Any, samples: list[Any], fields: list[dict[str, Any]], attempts: int = 5) -> None:
    """Insert those of ``samples`` (with their stored-form ``fields``) whose file is not in ``ds`` yet,
    in bulk (:func:`vetset.core._fiftyone.insert_samples`: the documents ``add_samples`` stores).

    A concurrent run adding the same files makes the insert fail on the unique
    ``filepath`` index; the files it added are then skipped and the rest retried.
    """
    for _ in range(attempts):
        try:
            for i in range(0, len(samples), INSERT_BATCH):
                insert_samples(ds, samples[i:i + INSERT_BATCH], fields[i:i + INSERT_BATCH])
            return
        except Exception as exc:
            if not _is_duplicate(exc):
                raise
        present = set(ds.values("filepath"))
        keep = [(s, f) for s, f in zip(samples, fields) if s.filepath not in present]
        if not keep:
            return
        samples, fields = [k[0] for k in keep], [k[1] for k in keep]
    insert_samples(ds, samples, fields)


def split_counts(ds: Any) -> dict[str, dict[str, int]]:
    """``{split: {class: count}}`` plus ``"all"``, from sample tags and ``ground_truth``."""
    out: dict[str, dict[str, int]] = {}
    classes = list(ds.default_classes or [])
    for split in SPLITS:
        view = ds.match_tags(split)
        if len(view):
            counts = view.count_values(f"{GT_FIELD}.label")
            out[split] = {c: int(counts.get(c, 0)) for c in classes} | {
                str(k): int(v) for k, v in counts.items() if k is not None and k not in classes}
    counts = ds.count_values(f"{GT_FIELD}.label")
    out["all"] = {c: int(counts.get(c, 0)) for c in classes}
    return out


def split_view(ds: Any, split: str, readable_only: bool = True) -> Any:
    """Samples of one split (tag), by default without ``unreadable`` ones."""
    view = ds.match_tags(split)
    if readable_only:
        view = view.match_tags(UNREADABLE_TAG, bool=False)
    return view


#: ``dataset.info["vetset"]`` key of the folder the latest augment stage wrote.
AUGMENT_FOLDER_KEY = "augment_folder"


def training_view(ds: Any) -> tuple[Any, int]:
    """The train split to fit on: readable samples, with augmented ones only from the latest augmentation.

    Each augment run records its output folder in ``dataset.info["vetset"]["augment_folder"]``.
    Augmented samples in other folders (an earlier run with another ``--out``) stay in the
    dataset but are left out, so runs do not stack one augmented set on another.

    Returns:
        ``(view, n_left_out)``: the view and how many augmented samples it leaves out.
    """
    from fiftyone import ViewField as F

    view = split_view(ds, "train")
    folder = ((ds.info or {}).get("vetset") or {}).get(AUGMENT_FOLDER_KEY)
    if not folder:
        return view, 0
    prefix = str(folder).rstrip(os.sep) + os.sep
    keep = view.match(~F("tags").contains("augmented") | F("filepath").starts_with(prefix))
    return keep, len(view) - len(keep)


def root_dataset(collection: Any) -> Any:
    """The ``fo.Dataset`` behind a dataset or view (``collection`` itself when it is a dataset).

    Through the public ``fo.load_dataset(collection.dataset_name)``, which returns the
    dataset object already loaded in this process (FiftyOne keeps one per name).
    """
    import fiftyone as fo

    if isinstance(collection, fo.Dataset):
        return collection
    return fo.load_dataset(collection.dataset_name)
