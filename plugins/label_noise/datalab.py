"""Optional cleanlab ``Datalab`` pass of the ``label_noise`` stage: outliers, near duplicates.

Runs ``Datalab.find_issues`` on the same out-of-sample ``pred_probs`` (and on the
embeddings when the ``embeddings`` method computed them: near duplicates need features).
Writes ``datalab_outlier_score`` (float in [0, 1], lower = more atypical, cleanlab's score) and the
tags ``datalab_outlier`` / ``datalab_near_duplicate`` in bulk: prefixed, because the ``embed`` stage
writes ``outlier_score`` (higher = more unusual) and ``outlier``, and the audit ``near_duplicate``. Datalab needs the ``datasets`` package
(``pip install 'cleanlab[datalab]'``); without it the pass is skipped with a message.
"""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

OUTLIER_FIELD = "datalab_outlier_score"
OUTLIER_TAG = "datalab_outlier"
NEAR_DUP_TAG = "datalab_near_duplicate"


def datalab_issues(labels: np.ndarray, pred_probs: np.ndarray, features: np.ndarray | None = None
                   ) -> dict[str, Any]:
    """Run ``cleanlab.Datalab`` outlier (and, with features, near-duplicate) checks.

    Args:
        labels: ``int`` ``(N,)``; pred_probs: ``float`` ``(N, K)``; features: ``(N, D)`` or None.

    Returns:
        ``{"summary": [{"issue_type", "score", "num_issues"}], "outlier_score": (N,) float,
        "is_outlier": (N,) bool, "is_near_duplicate": (N,) bool | None,
        "near_duplicate_sets": [[row, ...], ...] | None}``.

    Raises:
        ImportError: Datalab's optional dependencies are missing.
    """
    from cleanlab import Datalab

    issue_types: dict[str, dict] = {"outlier": {}}
    kwargs: dict[str, Any] = {"pred_probs": np.asarray(pred_probs, np.float64)}
    if features is not None:
        issue_types["near_duplicate"] = {}
        kwargs["features"] = np.asarray(features, np.float32)
    lab = Datalab(data={"label": np.asarray(labels)}, label_name="label", verbosity=0)
    with contextlib.redirect_stdout(io.StringIO()):  # Datalab prints progress even at verbosity 0
        lab.find_issues(issue_types=issue_types, **kwargs)
    summary = lab.get_issue_summary()
    out: dict[str, Any] = {
        "summary": [{"issue_type": str(r.issue_type), "score": float(r.score), "num_issues": int(r.num_issues)}
                    for r in summary.itertuples()],
        "outlier_score": None, "is_outlier": None, "is_near_duplicate": None, "near_duplicate_sets": None}
    if "outlier" in set(summary.issue_type):
        issues = lab.get_issues("outlier")
        out["outlier_score"] = issues["outlier_score"].to_numpy(float)
        out["is_outlier"] = issues["is_outlier_issue"].to_numpy(bool)
    if "near_duplicate" in set(summary.issue_type):
        issues = lab.get_issues("near_duplicate")
        out["is_near_duplicate"] = issues["is_near_duplicate_issue"].to_numpy(bool)
        # Datalab lists each sample's own set; merge overlapping sets (union-find) into groups
        parent = list(range(len(issues)))

        def root(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, members in enumerate(issues["near_duplicate_sets"].tolist()):
            for m in members:
                parent[root(int(m))] = root(i)
        groups: dict[int, list[int]] = {}
        for i in np.flatnonzero(out["is_near_duplicate"]):
            groups.setdefault(root(int(i)), []).append(int(i))
        out["near_duplicate_sets"] = sorted((g for g in groups.values() if len(g) > 1), key=len, reverse=True)
    return out


def run_datalab(ds: Any, ids: list[str], labels: np.ndarray, pred_probs: np.ndarray,
                features: np.ndarray | None, say: list[str], max_listed: int = 24) -> dict[str, Any] | None:
    """Datalab on the checked samples; writes fields/tags; returns the JSON block or ``None``."""
    import fiftyone as fo

    for tag in (OUTLIER_TAG, NEAR_DUP_TAG):
        ds.untag_samples(tag)
    if OUTLIER_FIELD not in ds.get_field_schema():
        ds.add_sample_field(OUTLIER_FIELD, fo.FloatField)
    ds.clear_sample_field(OUTLIER_FIELD)
    if len(ids) < 10:
        say.append(f"Datalab skipped: {len(ids)} checked samples are too few for its nearest-neighbour statistics.")
        return None
    try:
        found = datalab_issues(labels, pred_probs, features)
    except ImportError:
        say.append("Datalab skipped: it needs the 'datasets' package; pip install 'cleanlab[datalab]'.")
        return None
    if features is None:
        say.append("Datalab: near duplicates need image features; the embeddings method provides them.")
    fps = dict(zip(*ds.select(ids).values(["id", "filepath"])))
    block: dict[str, Any] = {"summary": found["summary"], "outliers": [], "near_duplicate_sets": []}
    if found["outlier_score"] is not None:
        scores = found["outlier_score"]
        ds.set_values(OUTLIER_FIELD, {sid: float(s) for sid, s in zip(ids, scores)}, key_field="id")
        flagged = np.flatnonzero(found["is_outlier"])
        if len(flagged):
            ds.select([ids[i] for i in flagged]).tag_samples(OUTLIER_TAG)
        for i in flagged[np.argsort(scores[flagged])][:max_listed]:
            block["outliers"].append({"id": ids[i], "filepath": fps[ids[i]], "outlier_score": float(scores[i])})
    if found["is_near_duplicate"] is not None:
        flagged = np.flatnonzero(found["is_near_duplicate"])
        if len(flagged):
            ds.select([ids[i] for i in flagged]).tag_samples(NEAR_DUP_TAG)
        block["num_near_duplicate_groups"] = len(found["near_duplicate_sets"])
        block["near_duplicate_sets"] = [{"size": len(g), "filepaths": [fps[ids[i]] for i in g[:8]]}
                                        for g in found["near_duplicate_sets"][:max_listed]]
    return block
