"""Helpers for the label-noise tests: real images with a known set of flipped labels.

Labels are flipped in a CSV manifest (``filepath,label,split``) that points at the
original files, so no image is copied or changed.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def imagefolder_rows(root: Path, per_class: int | None = None, seed: int = 0) -> list[dict]:
    """``[{"filepath", "label", "split"}]`` of ``root/<split>/<class>/*`` (or ``root/<class>/*``),
    at most ``per_class`` per class (seeded choice), sorted by file path."""
    rng = np.random.default_rng(seed)
    by_class: dict[str, list[dict]] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in (".png", ".jpg", ".jpeg"):
            continue
        rel = path.relative_to(root).parts
        split = rel[0] if len(rel) == 3 else "train"
        by_class.setdefault(path.parent.name, []).append({"filepath": str(path), "label": path.parent.name,
                                                          "split": split})
    rows = []
    for cls in sorted(by_class):
        items = by_class[cls]
        if per_class is not None and len(items) > per_class:
            items = [items[i] for i in sorted(rng.choice(len(items), per_class, replace=False))]
        rows.extend(items)
    return rows


def flip_labels(rows: list[dict], n_flip: int, seed: int = 0) -> set[str]:
    """Give ``n_flip`` seeded rows a different (random) class, in place; returns their file paths."""
    rng = np.random.default_rng(seed)
    classes = sorted({r["label"] for r in rows})
    flipped = set()
    for i in rng.choice(len(rows), n_flip, replace=False):
        others = [c for c in classes if c != rows[i]["label"]]
        rows[i]["label"] = others[int(rng.integers(len(others)))]
        flipped.add(rows[i]["filepath"])
    return flipped


def write_manifest(rows: list[dict], path: Path) -> Path:
    """Write the rows as a ``filepath,label,split`` CSV manifest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["filepath", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def fresh(name: str) -> str:
    """Delete the FiftyOne dataset ``name`` if an earlier test session left it; returns ``name``."""
    import fiftyone as fo

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    return name


def run_stages(stages: dict, data: Path | None, dataset: str, out: Path, resume: bool = False, logs: list | None = None):
    """Run a recipe made of ``stages`` on ``data`` (a new dataset ``dataset`` when ``data`` is
    given); returns the finished :class:`Run`."""
    from vetset.core.manager import Hooks
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    if data is not None:
        fresh(dataset)
    hooks = Hooks()
    recipe = parse_recipe({"name": "label-noise-test", "stages": stages}, hooks.stages)
    run = Run(recipe, hooks, data=data, dataset=dataset, out_dir=out, resume=resume,
              log=(logs.append if logs is not None else (lambda m: None)))
    run.execute()
    return run


def pixel_pred_probs(filepaths: list[str], labels: list[str], classes: list[str]) -> np.ndarray:
    """Out-of-fold probabilities of a logistic regression on the 8x8 pixels, (N, K)."""
    from PIL import Image

    from vetset.plugins.label_noise.pred_probs import embedding_pred_probs

    x = np.stack([np.asarray(Image.open(p).convert("L"), dtype=np.float32).ravel() for p in filepaths])
    y = np.array([classes.index(lab) for lab in labels])
    return embedding_pred_probs(x, y, len(classes), n_folds=5, seed=0, C=0.1)


def recall_precision(flagged: set[str], truth: set[str]) -> tuple[float, float]:
    """Recall and precision of a flagged set of file paths against the flipped set."""
    hit = len(flagged & truth)
    return hit / len(truth), (hit / len(flagged) if flagged else 0.0)
