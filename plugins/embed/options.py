"""Options of the ``embed`` stage (``stages.embed`` in a recipe)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from vetset.core.recipe import Count


class SimilarDuplicateOptions(BaseModel):
    """``stages.embed.duplicates``: near duplicates by cosine similarity of the features.

    Attributes:
        threshold: two images are near duplicates when the cosine similarity of their
            centred features (the dataset mean subtracted) is at least this. Default 0.94:
            on ``benchmarks/near_duplicates.py`` (planted copies among CIFAR-10 photos,
            a backbone vetset trained on other images, the default ``flip`` and ``crops``,
            ``mutual`` rule) the lowest threshold of its trade-off table whose false pairs
            among the originals stay under what a peer with ImageNet features makes
            (issue #20); figures in the README. A pretrained backbone separates better:
            read the benchmark's trade-off table before lowering it.
        rule: ``mutual`` (pairs over the threshold that are each other's nearest neighbour;
            a fraction of the plain rule's false pairs for the same recall on the
            benchmark) or ``threshold`` (every pair over the threshold among each image's
            ``k`` nearest neighbours; finds groups of three or more).
        k: neighbours searched per image (sklearn ``NearestNeighbors``; memory grows with
            N x k, never N x N). Groups larger than ``k + 1`` may be split.
        max_groups_listed: groups written into the run result (leakage and label conflicts
            first); every group is tagged and has an ``embed_group`` value.
    """

    model_config = {"extra": "forbid"}

    enabled: bool = True
    threshold: float = Field(0.94, gt=0.0, le=1.0)
    rule: Literal["threshold", "mutual"] = "mutual"
    k: Count = Field(10, ge=1, le=100)
    max_groups_listed: Count = Field(50, ge=0)


class OutlierOptions(BaseModel):
    """``stages.embed.outliers``: images unlike the rest of the dataset.

    Attributes:
        method: the score (``outlier_score``; higher = more unusual):

            * ``class_mean`` (default): squared Euclidean distance of the image's pooled
              features to a class mean (the nearest-class-mean rule; Lee et al., NeurIPS
              2018, with the identity for covariance). Class means are averages over whole
              classes, so a planted group of foreign images cannot make its own
              neighbourhood look normal.
            * ``centroid``: the same with cosine distance on centred unit features, in [0, 2].
            * ``mahalanobis``: Lee et al.'s class-conditional Mahalanobis distance (class
              means and one shared Ledoit-Wolf covariance, ``sklearn.covariance``), squared.
              A group of foreign images that deviates in one direction inflates the
              covariance along it and hides itself (masking).
            * ``knn``: mean cosine distance to the ``k`` nearest neighbours (cleanlab's
              ``OutOfDistribution`` feature score and Datalab's outlier issue manager use
              the same statistic, default k = 10); finds lone images, not groups of more
              than ``k``.

            The default is chosen on ``benchmarks/outliers.py`` (README, "Outliers").
        classes: ``nearest`` (default): distance to the closest class centre whatever the
            label, so only images unlike every class score high; ``given``: distance to the
            centre of the image's own label, which also raises every wrongly labelled image
            (with 10% wrong labels on the benchmark, planted images drowned among them).
            Unlabelled images use ``nearest``; with fewer than two labelled images all
            images form one class. Not used by ``knn``.
        k: neighbours for ``method: knn``.
        threshold: Datalab's outlier threshold (``OutlierIssueManager``, default 0.37037):
            an image is an outlier when its score exceeds
            ``Q3 + (1 / threshold - 1) * IQR`` of all scores (Tukey's fence with factor 1.7).
            Smaller flags fewer.
        max_listed: outliers shown in the run result and the report.
    """

    model_config = {"extra": "forbid"}

    enabled: bool = True
    method: Literal["class_mean", "centroid", "mahalanobis", "knn"] = "class_mean"
    classes: Literal["nearest", "given"] = "nearest"
    k: Count = Field(10, ge=1, le=100)
    threshold: float = Field(0.37037, gt=0.0, le=1.0)
    max_listed: Count = Field(48, ge=0)


class EmbedOptions(BaseModel):
    """``stages.embed`` options.

    Attributes:
        model_name: timm model whose cached pretrained weights are used when
            ``pretrained`` (a ``.tag`` picks the weights, e.g. ``resnet50.a1_in1k``); with
            a plain state-dict ``weights`` file, the model it belongs to. A vetset
            checkpoint brings its own model name.
        pretrained: use ``model_name``'s pretrained weights when they can be had (the train
            stage's ``pretrained: auto`` resolver: the Hub when it answers, else the local cache).
        weights: a local weights file: a vetset checkpoint (``best.pt`` of any run, e.g.
            trained on other images) or a timm/PyTorch state dict / ``.safetensors``.
            Takes precedence over the other sources.
        use_run_checkpoint: without ``weights`` or cached pretrained weights, use this
            run's ``<out>/train/best.pt`` (put ``embed`` after ``train`` in the recipe).
        img_size: square input side; ``None`` = the backbone's own (its checkpoint's data
            config, or ``timm.data.resolve_data_config``).
        batch_size: images per forward pass.
        device: ``auto`` (the GPU when there is one), ``cpu`` or a torch device name.
        workers: the CPU pass on worker processes (``local`` executor: this many, when 2
            or more) or Ray tasks (``ray`` executor: ``null`` = the instance's CPUs), each
            with its own model copy and one torch thread; ``null`` with the local executor
            runs in-process, where torch's threads already use every core. A GPU pass
            always runs in-process (:mod:`vetset.plugins.embed.workers`).
        flip: features are the mean of the image's and its left-right mirror's (twice the
            compute); mirrored copies then look alike (see ``benchmarks/near_duplicates.py``).
        crops: central fractions of the preprocessed input (each in (0, 1)) whose features
            are averaged in too (mirrored as well with ``flip``): cropped copies then look
            more alike. Default ``[0.8]``, chosen on ``benchmarks/near_duplicates.py`` (more
            crops and re-encodes found at fewer false pairs than ``flip`` alone; ``[0.9,
            0.8]`` added little); each fraction costs one more pass (two with ``flip``);
            ``[]`` turns it off.
        center: subtract the dataset's mean feature before cosine similarity (pooled ReLU
            features share a large common component; FiftyOne brain's sklearn backend
            centres too).
        shard_size: features are written to the store every this many images, so an
            interrupted pass keeps what it finished.
        duplicates, outliers: the checks built on the features.
        similarity_index: register the features as a FiftyOne brain similarity index
            (brain key ``vetset_similarity``, sklearn backend) so the App can sort by
            similarity.
        similarity_backend: FiftyOne brain backend of that index: ``sklearn`` (stored in the
            database, exact search; fine to about 10^5 images), ``lancedb`` (embedded files,
            ``pip install 'vetset[lancedb]'``), ``qdrant`` or ``milvus`` (servers) for
            10^6-10^7 images (README, "Embeddings at scale").
        similarity_config: the backend's config keywords (``fob.compute_similarity``), e.g.
            ``{uri: /data/lancedb}`` (lancedb) or ``{url: http://qdrant:6333}`` (qdrant).
        visualization: compute a 2-d map of the features (brain key ``vetset_embeddings``)
            for the App's Embeddings panel: UMAP when ``umap-learn`` is installed, else
            t-SNE up to ``visualization_max_tsne`` images, else PCA.
        visualization_max_tsne: above this many images the map uses PCA (t-SNE's cost
            grows as N log N with a large constant).
    """

    model_config = {"extra": "forbid"}

    model_name: str | None = "resnet50.a1_in1k"
    pretrained: bool = True
    weights: str | None = None
    use_run_checkpoint: bool = True
    img_size: Count | None = Field(None, ge=8, le=1024)
    batch_size: Count = Field(32, ge=1)
    device: str = "auto"
    workers: Count | None = Field(None, ge=0)
    flip: bool = True
    crops: list[float] = Field(default_factory=lambda: [0.8], max_length=4)
    center: bool = True
    shard_size: Count = Field(4096, ge=16)
    duplicates: SimilarDuplicateOptions = SimilarDuplicateOptions()
    outliers: OutlierOptions = OutlierOptions()
    similarity_index: bool = True
    similarity_backend: Literal["sklearn", "lancedb", "qdrant", "milvus"] = "sklearn"
    similarity_config: dict[str, Any] = {}
    visualization: bool = True
    visualization_max_tsne: Count = Field(5000, ge=0)

    @field_validator("crops")
    @classmethod
    def _crops_in_range(cls, v: list[float]) -> list[float]:
        bad = [c for c in v if not 0.0 < c < 1.0]
        if bad:
            raise ValueError(f"each crop fraction must be between 0 and 1 (exclusive), got {bad}")
        return v
