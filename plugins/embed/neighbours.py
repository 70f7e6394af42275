"""k-nearest neighbours of image features, and what is read from them: near-duplicate pairs and outlier scores.

One ``sklearn.neighbors.NearestNeighbors`` search (brute force over unit vectors, which
sklearn runs in chunks of ``working_memory``) gives each image its ``k`` nearest
neighbours: memory grows with N x k, never N x N.
"""

from __future__ import annotations

import numpy as np


def unit_rows(features: np.ndarray, center: bool = True) -> np.ndarray:
    """``float32`` ``(N, D)``: rows minus the column mean (when ``center``), scaled to unit length.

    Rows of zero length stay zero.
    """
    x = np.asarray(features, dtype=np.float32)
    if center and len(x):
        x = x - x.mean(axis=0, keepdims=True)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norm > 0, norm, 1.0)


def knn(unit: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest other rows of each row of unit vectors, by cosine similarity.

    Args:
        unit: ``float32`` ``(N, D)`` unit rows (:func:`unit_rows`).
        k: neighbours per row (capped at ``N - 1``).

    Returns:
        ``(similarity, index)``: ``float32`` ``(N, k)`` cosine similarities in [-1, 1],
        highest first, and ``int64`` ``(N, k)`` row indices; the row itself is left out.
    """
    from sklearn.neighbors import NearestNeighbors

    n = len(unit)
    k = min(int(k), n - 1)
    if k < 1:
        return np.zeros((n, 0), np.float32), np.zeros((n, 0), np.int64)
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean").fit(unit)
    dist, idx = nn.kneighbors()  # no query: each row's neighbours without itself
    sim = 1.0 - dist.astype(np.float32) ** 2 / 2.0  # |a - b|^2 = 2 - 2 cos for unit vectors
    return sim, idx.astype(np.int64)


def similar_pairs(sim: np.ndarray, idx: np.ndarray, threshold: float, rule: str = "threshold") -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of near duplicates among the kNN lists.

    Args:
        sim, idx: :func:`knn` output.
        threshold: minimum cosine similarity.
        rule: ``threshold``: every listed pair at or over the threshold; ``mutual``: only
            pairs that are also each other's nearest neighbour (the rank-based rule of
            mutual nearest neighbours).

    Returns:
        ``int64`` ``(m, 2)``, rows sorted and unique.
    """
    if not sim.size:
        return np.zeros((0, 2), np.int64)
    rows = np.repeat(np.arange(len(idx)), idx.shape[1])
    cols = idx.ravel()
    keep = sim.ravel() >= threshold
    if rule == "mutual":
        first = idx[:, 0]
        keep &= (first[cols] == rows) & (first[rows] == cols)
    pairs = np.sort(np.stack([rows[keep], cols[keep]], axis=1), axis=1)
    return np.unique(pairs, axis=0) if len(pairs) else np.zeros((0, 2), np.int64)


def outlier_scores(sim: np.ndarray, k: int) -> np.ndarray:
    """``float64`` ``(N,)``: mean cosine distance (1 - similarity, 0..2) to the ``k`` nearest neighbours.

    The feature-based score of cleanlab's ``OutOfDistribution`` and Datalab's outlier
    issue manager (before their ``exp(-d / median)`` rescaling, which keeps the order).
    """
    if not sim.size:
        return np.zeros(len(sim))
    return (1.0 - sim[:, :k].astype(np.float64)).mean(axis=1)


def outlier_fence(scores: np.ndarray, threshold: float = 0.37037) -> float:
    """Datalab's outlier cut-off: ``Q3 + (1 / threshold - 1) * IQR`` of ``scores``.

    Source: ``cleanlab.datalab.internal.issue_manager.outlier.OutlierIssueManager``
    (default ``threshold`` 0.37037, i.e. Tukey's fence with factor 1.7).
    """
    if not len(scores):
        return float("inf")
    q1, q3 = np.percentile(scores, [25, 75])
    return float(q3 + (1.0 / threshold - 1.0) * (q3 - q1))
