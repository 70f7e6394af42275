"""Review loop for label issues: reviewer tags in FiftyOne -> corrected labels in a new folder.

A reviewer opens the saved view ``label_issues`` and tags each sample they looked at:

* ``label_confirmed``: the given label is wrong; the ``suggested_label`` is taken;
* ``label_rejected``: the given label is right; it is kept.

A string field ``corrected_label`` set on a sample (e.g. from Python or an annotation
run) wins over both. :func:`export_labels` then writes a CSV of every label decision and a
copy of the images in the ImageFolder layout ``<out>/<split>/<label>/<file>`` with the
corrected labels. The source images are copied, never moved, linked or changed.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from vetset.core.atomic import atomic_write
from vetset.core.errors import DataError, VetsetError

CONFIRMED_TAG = "label_confirmed"
REJECTED_TAG = "label_rejected"
CORRECTED_FIELD = "corrected_label"
MARKER = ".vetset-export.json"
CSV_COLUMNS = ("sample_id", "filepath", "split", "given_label", "final_label", "changed", "review", "label_issue",
               "label_quality", "suggested_label", "suggested_prob", "exported_path")
Unreviewed = Literal["keep", "suggested", "drop"]


@dataclass
class Decision:
    """The label decision for one sample (one CSV row)."""

    sample_id: str
    filepath: str
    split: str
    given_label: str
    final_label: str | None
    changed: bool
    review: str
    label_issue: bool
    label_quality: float | None
    suggested_label: str | None
    suggested_prob: float | None
    exported_path: str = ""


def decide(dataset: Any, unreviewed: Unreviewed = "keep") -> tuple[list[Decision], dict[str, int]]:
    """Final label of every readable, labelled, non-augmented sample.

    Args:
        dataset: the FiftyOne dataset (or view) after the ``label_noise`` stage.
        unreviewed: what to do with ``label_issue`` samples nobody tagged: ``keep`` the
            given label, take the ``suggested`` one, or ``drop`` the sample from the export.

    Returns:
        ``(decisions, counts)``; ``review`` is ``confirmed``, ``rejected``, ``corrected``,
        ``conflict`` (both tags: the given label is kept), ``unreviewed`` (flagged, not
        tagged) or ``""``; ``final_label`` is ``None`` for dropped samples. ``counts``
        tallies the reviews plus ``changed`` and ``dropped``.
    """
    view = dataset.match_tags(["unreadable", "augmented"], bool=False).exists("ground_truth.label")
    schema = view.get_field_schema()
    fields = ["id", "filepath", "tags", "ground_truth.label"]
    has_suggested = "suggested_label" in schema
    has_quality = "label_quality" in schema
    has_corrected = CORRECTED_FIELD in schema
    cols = view.values(fields)
    suggested = view.values("suggested_label.label") if has_suggested else [None] * len(view)
    sprob = view.values("suggested_label.confidence") if has_suggested else [None] * len(view)
    quality = view.values("label_quality") if has_quality else [None] * len(view)
    corrected = view.values(CORRECTED_FIELD) if has_corrected else [None] * len(view)
    out, counts = [], {k: 0 for k in ("confirmed", "rejected", "corrected", "conflict", "unreviewed",
                                      "changed", "dropped")}
    for sid, fp, tags, given, sug, prob, q, corr in zip(*cols, suggested, sprob, quality, corrected):
        split = next((t for t in ("train", "val", "test") if t in tags), "")
        issue = "label_issue" in tags
        conf, rej = CONFIRMED_TAG in tags, REJECTED_TAG in tags
        final, review = given, ""
        if isinstance(corr, str) and corr.strip():
            final, review = corr.strip(), "corrected"
        elif conf and rej:
            review = "conflict"
        elif conf:
            review = "confirmed"
            final = sug or given
        elif rej:
            review = "rejected"
        elif issue:
            review = "unreviewed"
            final = {"keep": given, "suggested": sug or given, "drop": None}[unreviewed]
        if review:
            counts[review] += 1
        counts["changed"] += int(final is not None and final != given)
        counts["dropped"] += int(final is None)
        out.append(Decision(sid, fp, split, given, final, final is not None and final != given, review, issue,
                            q, sug, prob))
    return out, counts


def _check_out(out: Path, dataset: Any, decisions: list[Decision]) -> None:
    for d in decisions:
        if out in Path(d.filepath).resolve().parents:
            raise VetsetError(f"--out {out} holds source images (e.g. {d.filepath}); choose a new folder "
                              "(the source is never written to).")
    source = (dataset.info or {}).get("vetset", {}).get("source")
    if source:
        src = Path(source).resolve()
        if out == src or src in out.parents or (src.is_dir() and out in src.parents):
            raise VetsetError(f"--out {out} overlaps the source folder {src}; choose a folder outside it "
                              "(the source is never written to).")
    if out.exists() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise VetsetError(f"--out {out} exists and is not empty; choose a new folder (only a folder written by "
                          "a previous export-labels is replaced).")


def _safe_name(label: str) -> str:
    if not label or label in (".", "..") or "/" in label or "\\" in label or "\x00" in label:
        raise DataError(f"label {label!r} cannot be a folder name; fix the corrected_label field.")
    return label


def _check_has_results(dataset: Any) -> None:
    """Refuse to export a dataset with neither label-noise results nor review decisions (a copy
    of it with "0 changed" would look like a clean bill of health)."""
    schema = dataset.get_field_schema()
    if "label_quality" in schema and len(dataset.exists("label_quality")):
        return
    if CORRECTED_FIELD in schema and len(dataset.exists(CORRECTED_FIELD)):
        return
    if len(dataset.match_tags([CONFIRMED_TAG, REJECTED_TAG])):
        return
    raise VetsetError(f"Dataset {dataset.name!r} has no label-noise results and no review decisions: run the "
                      f"label_noise stage first (recipes run label_noise --dataset {dataset.name}); nothing was exported.")


def export_labels(dataset: Any, out: str | os.PathLike | None = None, csv_path: str | os.PathLike | None = None,
                  unreviewed: Unreviewed = "keep", splits: bool = True) -> dict[str, Any]:
    """Write the corrected labels as a CSV and as a new ImageFolder tree.

    Args:
        dataset: FiftyOne dataset after ``label_noise`` (and a review).
        out: new folder for ``<split>/<label>/<file>`` copies (``<label>/<file>`` when
            ``splits`` is false) plus ``labels.csv``; a folder written by an earlier
            export is replaced as a whole (written to a temporary folder first, so an
            interrupted export leaves the earlier one intact). ``None``: CSV only.
        csv_path: where to write the CSV (default ``<out>/labels.csv``).
        unreviewed: see :func:`decide`.

    Returns:
        ``{"out", "csv", "exported", "counts", "left_out"}``; ``left_out`` counts the samples
        that are in neither the CSV nor the folder: ``unreadable`` files and ``augmented``
        images (vetset's own, not the user's data).

    Raises:
        VetsetError: neither ``out`` nor ``csv_path``, ``out`` overlapping the source
            folder, or a non-empty ``out`` that no earlier export wrote.
    """
    from vetset.core.progress import track

    if out is None and csv_path is None:
        raise VetsetError("Pass --out DIR (ImageFolder copy + labels.csv) and/or --csv FILE.")
    _check_has_results(dataset)
    decisions, counts = decide(dataset, unreviewed)
    exported = 0
    out_dir = Path(out).expanduser().resolve() if out is not None else None
    if out_dir is not None:
        _check_out(out_dir, dataset, decisions)
        tmp = out_dir.with_name(out_dir.name + ".tmp-export")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        used: set[Path] = set()
        for d in track(decisions, total=len(decisions), description="exporting images"):
            if d.final_label is None:
                continue
            rel = Path(d.split or "train") / _safe_name(d.final_label) if splits else Path(_safe_name(d.final_label))
            src = Path(d.filepath)
            target = rel / src.name
            if target in used:
                target = rel / f"{src.stem}-{d.sample_id}{src.suffix}"
            used.add(target)
            (tmp / target).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, tmp / target)
            d.exported_path = str(out_dir / target)
            exported += 1
        (tmp / MARKER).write_text(json.dumps({"dataset": dataset.name, "counts": counts, "unreviewed": unreviewed},
                                             indent=2), encoding="utf-8")
        _write_csv(tmp / "labels.csv", decisions)
        old = out_dir.with_name(out_dir.name + ".old-export")
        if out_dir.exists():
            out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old, ignore_errors=True)
    csv_file = Path(csv_path).expanduser().resolve() if csv_path else (out_dir / "labels.csv")
    if csv_path:
        _write_csv(csv_file, decisions)
    left_out = {"unreadable": len(dataset.match_tags("unreadable").match_tags("augmented", bool=False)),
                "augmented": len(dataset.match_tags("augmented"))}
    return {"out": str(out_dir) if out_dir else None, "csv": str(csv_file), "exported": exported, "counts": counts,
            "left_out": left_out}


def _write_csv(path: Path, decisions: list[Decision]) -> None:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=CSV_COLUMNS)
    writer.writeheader()
    for d in decisions:
        row = asdict(d)
        row["final_label"] = "" if d.final_label is None else d.final_label
        writer.writerow({k: ("" if row[k] is None else row[k]) for k in CSV_COLUMNS})
    atomic_write(path, text.getvalue(), mkdir=True)
