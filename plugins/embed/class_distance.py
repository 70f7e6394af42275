"""Outlier scores from the dataset's classes: cosine distance to class centroids, Mahalanobis distance.

Both read the given labels: an image that is far from every class's centre does not look
like any class of the dataset. Unlike a k-nearest-neighbour distance, a class centre is the
mean of hundreds of images, so a planted group of foreign images (a folder of scans, a
batch of another dataset) does not make its own neighbourhood look normal.

:func:`centroid_scores`: distance of an image's features to the nearest class centre, the
nearest-class-mean rule (Mensink et al., TPAMI 2013), i.e. Lee et al.'s score below with the
identity for covariance: squared Euclidean on the raw pooled features, or cosine on centred
L2-normalised features (as in Sun et al., ICML 2022, "Out-of-Distribution Detection with
Deep Nearest Neighbors").

:func:`mahalanobis_scores`: Lee, Lee, Lee and Shin, "A Simple Unified Framework for
Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018: one Gaussian per class with the class's mean
and a covariance shared by all classes (estimated on the features minus their class mean);
an image's score is its Mahalanobis distance to the closest class mean. Here the class means
come from the dataset's own (given) labels, and the shared covariance is the Ledoit-Wolf
shrinkage estimate (``sklearn.covariance.LedoitWolf``; Ledoit and Wolf 2004), which stays
invertible when the feature dimension exceeds the images per class. A group of foreign
images that all deviate in one direction inflates the shared covariance along it and hides
itself ("masking", Rousseeuw and van Zomeren, JASA 1990); see the README's outlier figures.

Memory grows with N x D (the features, read in chunks of rows) plus D x D for the
covariance and N x C for the distances to C class means; never N x N.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Rows used to fit the covariance (a seeded random subset above this many images): the
#: D x D estimate is stable long before, and the fit's cost grows with N x D^2.
MAX_FIT_ROWS = 50_000
#: Rows scored at once (bounds the whitened copy of the features).
CHUNK_ROWS = 65_536


def label_codes(labels: Sequence[str | None]) -> np.ndarray:
    """``int64`` ``(N,)``: each label's index among the sorted distinct labels; ``-1`` for ``None``."""
    names = sorted({lab for lab in labels if lab is not None})
    code = {lab: i for i, lab in enumerate(names)}
    return np.array([code.get(lab, -1) if lab is not None else -1 for lab in labels], dtype=np.int64)


def _class_slots(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, classes)``: labels as given (all zero when fewer than two rows are labelled), sorted class codes."""
    labels = np.asarray(labels, dtype=np.int64)
    if (labels >= 0).sum() < 2:
        labels = np.zeros(len(labels), dtype=np.int64)
    return labels, np.unique(labels[labels >= 0])


def _check(n: int, labels: np.ndarray, mode: str, name: str) -> None:
    if len(labels) != n:
        raise ValueError(f"{name}: {n} feature rows but {len(labels)} labels.")
    if mode not in ("nearest", "given"):
        raise ValueError(f"{name}: mode must be 'nearest' or 'given', not {mode!r}.")


def _pick(d: np.ndarray, y: np.ndarray, slot: np.ndarray, mode: str) -> np.ndarray:
    """Per row of ``d`` (rows x classes): the minimum, or the given class's column (``given``; unlabelled: minimum)."""
    nearest = d.min(axis=1)
    if mode == "nearest":
        return nearest
    own = np.where(y >= 0, slot[np.maximum(y, 0)], -1)
    return np.where(own >= 0, d[np.arange(len(d)), np.maximum(own, 0)], nearest)


def centroid_scores(features: np.ndarray, labels: np.ndarray, mode: str = "nearest",
                    metric: str = "cosine") -> np.ndarray:
    """Distance of each row to the nearest class centre (or its own class's).

    Args:
        features: ``float32`` ``(N, D)``: for ``cosine``, unit rows (centred and
            L2-normalised: :func:`vetset.plugins.embed.neighbours.unit_rows`); for
            ``euclidean``, the raw pooled features.
        labels: ``int64`` ``(N,)`` class index per row, ``-1`` for unlabelled rows (scored,
            but part of no centre). With fewer than two labelled rows all rows form one class.
        mode: ``nearest`` (the closest centre: unlike every class, whatever the label) or
            ``given`` (the row's own class; also high for images that look like another class).
        metric: ``cosine``: 1 - cosine similarity to the class's mean unit row scaled to unit
            length, in [0, 2]; ``euclidean``: squared Euclidean distance to the class mean
            (Lee et al.'s Mahalanobis score with the identity for covariance), >= 0, in squared
            feature units.

    Returns:
        ``float64`` ``(N,)``; higher = farther from the class centres.

    Raises:
        ValueError: ``features`` and ``labels`` differ in length, or ``mode`` or ``metric`` is unknown.
    """
    from sklearn.metrics.pairwise import euclidean_distances

    n = len(features)
    _check(n, np.asarray(labels), mode, "centroid_scores")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"centroid_scores: metric must be 'cosine' or 'euclidean', not {metric!r}.")
    if n == 0:
        return np.zeros(0)
    labels, classes = _class_slots(labels)
    sums = np.zeros((int(classes.max()) + 1, features.shape[1]), dtype=np.float64)
    for start in range(0, n, CHUNK_ROWS):
        y = labels[start:start + CHUNK_ROWS]
        m = y >= 0
        np.add.at(sums, y[m], np.asarray(features[start:start + CHUNK_ROWS], dtype=np.float64)[m])
    counts = np.bincount(labels[labels >= 0], minlength=len(sums))
    centres = sums[classes] / counts[classes, None]
    if metric == "cosine":
        norm = np.linalg.norm(centres, axis=1, keepdims=True)
        centres = centres / np.where(norm > 0, norm, 1.0)
    slot = np.full(len(sums), -1)
    slot[classes] = np.arange(len(classes))
    out = np.empty(n)
    for start in range(0, n, CHUNK_ROWS):
        x = np.asarray(features[start:start + CHUNK_ROWS], dtype=np.float64)
        d = 1.0 - x @ centres.T if metric == "cosine" else euclidean_distances(x, centres, squared=True)
        out[start:start + len(d)] = _pick(d, labels[start:start + CHUNK_ROWS], slot, mode)
    return np.clip(out, 0.0, 2.0) if metric == "cosine" else out


def mahalanobis_scores(features: np.ndarray, labels: np.ndarray, mode: str = "nearest",
                       seed: int = 0) -> np.ndarray:
    """Squared Mahalanobis distance of each row to its class mean, with a shared covariance.

    Args:
        features: ``float32`` ``(N, D)`` feature rows (e.g. the store's memory-mapped array).
        labels: ``int64`` ``(N,)`` class index per row, ``-1`` for unlabelled rows (they are
            scored, but fit nothing). With fewer than two labelled rows every row counts as
            one class.
        mode: ``nearest``: distance to the closest class mean (Lee et al. 2018: an image
            that fits no class scores high, whatever its label); ``given``: distance to the
            mean of the row's own label (unlabelled rows: ``nearest``), which also scores
            images that look like another class.
        seed: seed of the row subset the covariance is fitted on (above :data:`MAX_FIT_ROWS`).

    Returns:
        ``float64`` ``(N,)``, >= 0; higher = less like the dataset's classes. Units: squared
        standard deviations of the shrunk shared covariance; squared feature units when no
        class has two distinct images (identity covariance).

    Raises:
        ValueError: ``features`` and ``labels`` differ in length, or ``mode`` is unknown.
    """
    from sklearn.covariance import LedoitWolf
    from sklearn.metrics.pairwise import euclidean_distances

    n = len(features)
    _check(n, np.asarray(labels), mode, "mahalanobis_scores")
    if n == 0:
        return np.zeros(0)
    labels, classes = _class_slots(labels)
    means = np.zeros((int(classes.max()) + 1, features.shape[1]), dtype=np.float64)
    counts = np.zeros(len(means))
    for start in range(0, n, CHUNK_ROWS):  # class means in one pass over the rows
        x = np.asarray(features[start:start + CHUNK_ROWS], dtype=np.float64)
        y = labels[start:start + CHUNK_ROWS]
        m = y >= 0
        np.add.at(means, y[m], x[m])
        counts += np.bincount(y[m], minlength=len(means))
    means = means[classes] / counts[classes, None]
    slot = np.full(len(counts), -1)
    slot[classes] = np.arange(len(classes))
    fit_rows = np.flatnonzero(labels >= 0)
    if len(fit_rows) > MAX_FIT_ROWS:
        fit_rows = np.sort(np.random.default_rng(seed).choice(fit_rows, MAX_FIT_ROWS, replace=False))
    residual = np.asarray(features[fit_rows], dtype=np.float64) - means[slot[labels[fit_rows]]]
    if not np.any(residual):
        # every labelled class is one image (or identical images): no within-class spread to
        # fit, so the identity covariance, i.e. class_mean's squared Euclidean distance
        # (LedoitWolf's covariance would be zero and its precision not positive definite)
        whiten = np.eye(features.shape[1])
    else:
        precision = LedoitWolf(assume_centered=True).fit(residual).precision_
        # (x - mu)^T P (x - mu) = |(x - mu) L|^2 with P = L L^T: whiten once, then Euclidean
        # distances to the whitened class means (BLAS, N x C) instead of one cdist per class.
        whiten = np.linalg.cholesky((precision + precision.T) / 2)
    centres = means @ whiten
    out = np.empty(n)
    for start in range(0, n, CHUNK_ROWS):
        z = np.asarray(features[start:start + CHUNK_ROWS], dtype=np.float64) @ whiten
        d = euclidean_distances(z, centres, squared=True)
        out[start:start + len(z)] = _pick(d, labels[start:start + CHUNK_ROWS], slot, mode)
    return out
