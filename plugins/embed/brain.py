"""FiftyOne brain runs on the features: the similarity index and the embedding map for the App.

Both use FiftyOne brain's public API with precomputed ``embeddings`` (no model is run by
FiftyOne): ``fob.compute_similarity(..., backend="sklearn")`` registers brain key
:data:`SIMILARITY_KEY` (the App's "sort by similarity"), and ``fob.compute_visualization``
registers :data:`VISUALIZATION_KEY` (the App's Embeddings panel). A rerun replaces both.

The sklearn backend keeps the embeddings in the database and, up to 15,000 samples,
a full distance matrix in memory when queried; for 10^6-10^7 images use a vector-search
backend instead (README, "Embeddings at scale").
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

from vetset.core.errors import RecipeError

SIMILARITY_KEY = "vetset_similarity"
VISUALIZATION_KEY = "vetset_embeddings"


def _replace(samples: Any, key: str) -> None:
    if key in samples.list_brain_runs():
        samples.delete_brain_run(key)


def map_method(n: int, max_tsne: int) -> str:
    """``umap`` when ``umap-learn`` imports, else ``tsne`` up to ``max_tsne`` samples, else ``pca``."""
    try:
        import umap  # noqa: F401

        return "umap"
    except ImportError:
        return "tsne" if n <= max_tsne else "pca"


#: The package each non-sklearn backend needs (what ``fiftyone.brain``'s backend checks with
#: ``fou.ensure_package``), as ``(import name, pip name)``.
BACKEND_PACKAGES = {"lancedb": ("lancedb", "'vetset[lancedb]'"), "qdrant": ("qdrant_client", "qdrant-client"),
                    "milvus": ("pymilvus", "pymilvus")}


def check_backend(backend: str) -> None:
    """Raise :class:`~vetset.core.errors.RecipeError` when ``backend``'s package is not installed
    (found with ``importlib.util.find_spec``, nothing imported), so a run stops before the
    embedding pass instead of with FiftyOne's traceback after it."""
    module, pip_name = BACKEND_PACKAGES.get(backend, (None, None))
    if module and importlib.util.find_spec(module) is None:
        raise RecipeError(f"stages.embed.similarity_backend: {backend} needs the Python package {module}, which is "
                          f"not installed (pip install {pip_name}); or use similarity_backend: sklearn.")


def register_similarity(view: Any, embeddings: np.ndarray, backend: str = "sklearn",
                        config: dict[str, Any] | None = None) -> str:
    """Register ``embeddings`` (``(len(view), D)``, rows in the view's order) as brain key
    :data:`SIMILARITY_KEY` (cosine metric); returns the key.

    Args:
        backend: a FiftyOne brain similarity backend: ``sklearn`` (in the database; up to
            about 10^5 images), ``lancedb`` (embedded, files under ``config["uri"]``),
            ``qdrant`` or ``milvus`` (servers; ``config`` gives their ``url``/``uri``, and
            optionally ``collection_name``). See README "Embeddings at scale".
        config: keyword arguments of the backend's config (``fob.compute_similarity``).
    """
    import fiftyone.brain as fob

    _replace(view, SIMILARITY_KEY)
    fob.compute_similarity(view, embeddings=np.asarray(embeddings, np.float32), backend=backend, metric="cosine",
                           brain_key=SIMILARITY_KEY, progress=False, **(config or {}))
    return SIMILARITY_KEY


def register_visualization(view: Any, embeddings: np.ndarray, method: str, seed: int = 0) -> str:
    """Compute the 2-d map of ``embeddings`` (``(len(view), D)``) with ``method`` (``umap``, ``tsne``,
    ``pca``) as brain key :data:`VISUALIZATION_KEY`, printing nothing; returns the key.

    t-SNE: perplexity ``min(30, (n - 1) / 3)`` (sklearn's default 30 needs more than 30
    samples) and the PCA pre-reduction to 50 dimensions only when ``min(n, D) > 50``.
    """
    import fiftyone.brain as fob

    _replace(view, VISUALIZATION_KEY)
    kwargs: dict[str, Any] = {"seed": seed}
    if method in ("tsne", "umap"):  # their configs log every iteration batch to stdout by default
        kwargs["verbose"] = False
    n, dim = np.shape(embeddings)
    if method == "tsne":
        # fob's t-SNE first reduces to pca_dims=50 with PCA, which needs min(n, D) >= 50; and
        # sklearn's TSNE needs perplexity < n (default 30)
        kwargs["pca_dims"] = 50 if min(n, dim) > 50 else None
        kwargs["perplexity"] = min(30.0, max(1.0, (n - 1) / 3))
    fob.compute_visualization(view, embeddings=np.asarray(embeddings, np.float32), method=method,
                              brain_key=VISUALIZATION_KEY, progress=False, **kwargs)
    return VISUALIZATION_KEY
