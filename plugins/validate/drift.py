"""Built-in plugin: the ``drift`` stage, train vs val/test distribution of each slice property.

Run it after the audit and before training (the ``full`` recipe does). For each slice
property (:mod:`.properties`: the audit's categorical fields, numeric fields cut at train
terciles, image size; each issue tag as tagged / not tagged) it compares the share of
images per bin in the train split (the user's images, augmented ones left out) with the
val and test splits:

* **effect size**: total variation distance ``TVD = 1/2 * sum |p_bin - q_bin|`` (0..1:
  the share of images that would have to change bin to make the two equal), and
  Cramér's V of the split x bin table (``scipy.stats.contingency.association``);
* **test**: Pearson's chi-square test of homogeneity (``scipy.stats.chi2_contingency``;
  Pearson 1900), or Fisher's exact test (``scipy.stats.fisher_exact``; Fisher 1922) for a
  2 x 2 table with an expected count under 5 (Cochran's rule, 1954);
* **verdict**: drift when ``TVD >= tvd_threshold`` and ``p < alpha``, in plain words
  from the bin that moved most: "val has 33% grayscale images (colour_mode); train has none".

The same comparison runs per class when both splits hold at least ``min_class_support``
images of it. Result block (``result["stages"]["drift"]``)::

    {"reference": "train", "splits": ["val", ...], "thresholds": {...}, "properties": [...],
     "rows": [{"split", "class" (None: all classes), "property", "kind", "bins",
               "train_counts", "counts", "train_shares", "shares", "tvd", "cramers_v",
               "test" ("chi-square"|"fisher"), "p_value", "drift" (bool), "verdict"}],
     "drifted": [row, ...] (drift true, largest TVD first),
     "metrics": {"drift_properties", "drift_class_cells", "max_tvd"}}
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from vetset.core.dataset import split_view
from vetset.core.errors import VetsetError
from vetset.plugins.validate.properties import TAG, Property, find_properties, read_values

if TYPE_CHECKING:
    from vetset.core.run import Run


class DriftOptions(BaseModel):
    """``stages.drift`` options.

    Attributes:
        splits: splits compared with ``train`` (those present).
        tvd_threshold: drift needs a total variation distance at least this. Default 0.10
            (a tenth of the images in another bin); a rule of thumb, stricter than
            Deepchecks' default drift condition (Cramér's V 0.15), which is reported beside.
        alpha: and a test p-value below this. Default 0.01.
        min_class_support: per-class rows need this many images of the class in both
            splits. Default 20.
        max_bins: categorical fields with more distinct values are not properties. Default 12.
        exclude: property names to leave out.
    """

    model_config = {"extra": "forbid"}

    splits: list[str] = ["val", "test"]
    tvd_threshold: float = Field(0.10, gt=0.0, le=1.0)
    alpha: float = Field(0.01, gt=0.0, lt=1.0)
    min_class_support: int = Field(20, ge=1)
    max_bins: int = Field(12, ge=2)
    exclude: list[str] = []


def compare_counts(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
    """Compare two count vectors over the same bins.

    Args:
        a, b: int arrays of shape ``(B,)``: images per bin in the reference and other split.

    Returns:
        ``{"tvd", "cramers_v", "test", "p_value"}``; ``p_value`` 1.0 and ``test`` ``None``
        when fewer than two bins hold images.
    """
    from scipy.stats import chi2_contingency, fisher_exact
    from scipy.stats.contingency import association

    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    pa, pb = a / max(1, a.sum()), b / max(1, b.sum())
    tvd = 0.5 * float(np.abs(pa - pb).sum())
    keep = (a + b) > 0
    table = np.vstack([a[keep], b[keep]])
    if table.shape[1] < 2 or a.sum() == 0 or b.sum() == 0:
        return {"tvd": round(tvd, 4), "cramers_v": 0.0, "test": None, "p_value": 1.0}
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    if table.shape == (2, 2) and expected.min() < 5:
        test, p = "fisher", float(fisher_exact(table).pvalue)
    else:
        test, p = "chi-square", float(chi2_contingency(table, correction=False).pvalue)
    v = float(association(table, method="cramer", correction=False))
    return {"tvd": round(tvd, 4), "cramers_v": round(v, 4), "test": test, "p_value": float(f"{p:.3g}")}


def _pct(x: float) -> str:
    return "none" if x == 0 else f"{100 * x:.0f}%" if x >= 0.01 else f"{100 * x:.1f}%"


def verdict(split: str, prop: Property, bins: list[str], p: np.ndarray, q: np.ndarray, cls: str | None) -> str:
    """Plain words from the bin that gained most share over train (a tag: the tagged share):
    ``"val has 33% grayscale images (colour_mode); train has none"``, prefixed ``"frog: "`` per class."""
    j = 0 if prop.kind == TAG else int(np.argmax(q - p))
    what = f"images tagged {bins[j]}" if prop.kind == TAG else f"{prop.bin_text(bins[j])} images ({prop.name})"
    return f"{cls + ': ' if cls else ''}{split} has {_pct(q[j])} {what}; train has {_pct(p[j])}"


def _tables(prop: Property, member: np.ndarray) -> list[tuple[list[str], np.ndarray]]:
    """``(bins, membership)`` pairs to compare: one table for a property, one per tag (tagged / not)."""
    if prop.kind != TAG:
        return [(prop.bins, member)]
    return [([b, f"not {b}"], np.stack([member[:, j], ~member[:, j]], axis=1)) for j, b in enumerate(prop.bins)]


def property_drift(dataset: Any, options: DriftOptions, log: Any = print) -> dict[str, Any]:
    """Compare each slice property between train and the other splits (module docstring).

    Raises:
        VetsetError: the dataset has no train split, or no other split to compare.
    """
    train = split_view(dataset, "train").match_tags("augmented", bool=False)
    if not len(train):
        raise VetsetError("The drift stage needs train samples; load data with a train split.")
    splits = [s for s in options.splits if len(split_view(dataset, s))]
    if not splits:
        raise VetsetError(f"The drift stage found no {' or '.join(options.splits)} samples to compare with train "
                          "(stages.drift.splits).")
    props = find_properties(dataset, train, options.max_bins, options.exclude, derived=False)
    views = {"train": train, **{s: split_view(dataset, s) for s in splits}}
    data = {}
    for name, view in views.items():
        values = read_values(view, props)
        data[name] = (np.array([g or "" for g in view.values("ground_truth.label")], dtype=object),
                      {p.name: p.membership(values[p.name]) for p in props})
    classes = sorted({c for labels, _ in data.values() for c in labels if c})
    rows = []
    for prop in props:
        ref_tables = _tables(prop, data["train"][1][prop.name])
        for split in splits:
            labels, member = data[split]
            for (bins, ref), (_, other) in zip(ref_tables, _tables(prop, member[prop.name])):
                groups = [(None, np.ones(len(data["train"][0]), bool), np.ones(len(labels), bool))]
                groups += [(c, data["train"][0] == c, labels == c) for c in classes]
                for cls, rmask, omask in groups:
                    if cls is not None and min(rmask.sum(), omask.sum()) < options.min_class_support:
                        continue
                    a, b = ref[rmask].sum(0), other[omask].sum(0)
                    if a.sum() == 0 or b.sum() == 0:
                        continue
                    stats = compare_counts(a, b)
                    p, q = a / a.sum(), b / b.sum()
                    drift = stats["tvd"] >= options.tvd_threshold and stats["p_value"] < options.alpha
                    rows.append({"split": split, "class": cls, "property": prop.name if prop.kind != TAG else
                                 f"tag {bins[0]}", "kind": prop.kind, "bins": bins,
                                 "train_counts": a.astype(int).tolist(), "counts": b.astype(int).tolist(),
                                 "train_shares": p.round(4).tolist(), "shares": q.round(4).tolist(), **stats,
                                 "drift": bool(drift), "verdict": verdict(split, prop, bins, p, q, cls)})
    drifted = sorted((r for r in rows if r["drift"]), key=lambda r: -r["tvd"])
    for r in [r for r in drifted if r["class"] is None][:5]:
        log(f"[drift] {r['verdict']} (TVD {r['tvd']:.2f}, {r['test']} p={r['p_value']:.2g})")
    per_class = [r for r in drifted if r["class"] is not None]
    if per_class:
        log(f"[drift] {len(per_class)} class x property cells drift; worst: {per_class[0]['verdict']} "
            f"(TVD {per_class[0]['tvd']:.2f})")
    if not drifted:
        log(f"[drift] no property differs between train and {', '.join(splits)} by TVD >= {options.tvd_threshold:g}")
    overall = [r for r in rows if r["class"] is None]
    return {
        "reference": "train", "splits": splits, "num_samples": {k: len(v) for k, v in views.items()},
        "thresholds": {"tvd": options.tvd_threshold, "alpha": options.alpha,
                       "min_class_support": options.min_class_support},
        "properties": [p.to_dict() for p in props], "rows": rows, "drifted": drifted,
        "metrics": {"drift_properties": len({(r["split"], r["property"]) for r in drifted if r["class"] is None}),
                    "drift_class_cells": len(per_class),
                    "max_tvd": max((r["tvd"] for r in overall), default=0.0)},
    }


def drift_stage(run: Run, options: DriftOptions) -> dict[str, Any]:
    """The ``drift`` stage: :func:`property_drift` on the run's dataset."""
    return property_drift(run.dataset, options, run.log)
