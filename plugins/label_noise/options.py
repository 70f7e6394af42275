"""Options of the ``label_noise`` stage (``stages.label_noise`` in a recipe).

The cleanlab options keep cleanlab's own names and values (``filter_by``, ``frac_noise``,
``min_examples_per_class``, the ``rank_by`` method of
``cleanlab.rank.get_label_quality_scores``), so cleanlab's documentation applies as is.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from vetset.core.recipe import Count

FilterBy = Literal["prune_by_noise_rate", "prune_by_class", "both", "confident_learning",
                   "predicted_neq_given", "low_normalized_margin", "low_self_confidence"]
RankBy = Literal["self_confidence", "normalized_margin", "confidence_weighted_entropy"]

#: ``filter_by: auto`` by how the ``pred_probs`` were made. Models trained on few images
#: (K-fold models from scratch; a backbone vetset trained, e.g. on 10,000 CIFAR-10 test files)
#: give pred_probs of moderate accuracy, where ``low_self_confidence`` had the best F1 on
#: CIFAR-10N ``random1`` (``benchmarks/label_noise_cifar10n.py``; real human noise, 17%
#: wrong): K-fold 0.62 against 0.59 for ``prune_by_noise_rate``; embeddings of such a
#: backbone 0.60 against 0.58. Pretrained-feature pred_probs (issue #20: 2,000 held-out photos,
#: 25% wrong labels) favour cleanlab's default ``prune_by_noise_rate``: 0.942 against 0.845;
#: it is also the choice for a ``pred_probs_file`` from the user's own (presumably strong) model.
FILTER_BY_FOR_SOURCE: dict[str, str] = {"kfold": "low_self_confidence", "embeddings": "low_self_confidence",
                                        "embeddings/pretrained": "prune_by_noise_rate",
                                        "pred_probs_file": "prune_by_noise_rate"}


def default_filter_by(method: str | None, weights: str | None = None) -> str:
    """The ``filter_by`` that ``auto`` means (:data:`FILTER_BY_FOR_SOURCE`).

    Args:
        method: ``kfold``, ``embeddings`` or ``pred_probs_file`` (cleanlab's own default,
            ``prune_by_noise_rate``, for anything else).
        weights: for ``embeddings``, where the backbone's weights came from (the result's
            ``features.weights``: ``pretrained``, ``weights file``, ``checkpoint``, ``random``).
    """
    key = f"{method}/{weights}" if method == "embeddings" and weights == "pretrained" else method or ""
    return FILTER_BY_FOR_SOURCE.get(key, "prune_by_noise_rate")


def light_augmentation() -> dict[str, Any]:
    """The ``fold_augmentation: light`` pipeline in ``A.to_dict`` format.

    ``HorizontalFlip(p=0.5)`` and ``Affine(translate_percent=±0.125)`` with reflected
    borders: the standard CIFAR augmentation (flip, pad 4 of 32 px, random 32 px crop;
    He et al. 2016, "Deep Residual Learning", section 4.2), scaled to any input size.
    """
    import albumentations as A
    import cv2

    shift = (-0.125, 0.125)
    return A.to_dict(A.Compose([A.HorizontalFlip(p=0.5),
                                A.Affine(translate_percent={"x": shift, "y": shift}, border_mode=cv2.BORDER_REFLECT_101,
                                         p=1.0)]))


class EmbeddingOptions(BaseModel):
    """``stages.label_noise.embeddings``: the fast mode (timm features + logistic regression).

    Attributes:
        model_name: timm backbone whose pooled features (``num_classes=0``) are the
            embeddings. Default ``resnet10t`` (the ``train`` stage's default; 512-d
            features): even randomly initialised, its features separate sklearn's digits
            at about 95% cross-validated accuracy.
        weights: local weights file for the backbone: a vetset checkpoint (``best.pt``; it
            brings its own model name and preprocessing) or a timm/PyTorch state dict /
            ``.safetensors`` file for ``model_name``. Wins over the other sources.
        pretrained: without ``weights``, use ``model_name``'s pretrained weights when they
            can be had (the train stage's resolver, :mod:`vetset.plugins.train.weights`:
            the Hugging Face cache, or the Hub when it answers within 3 s).
        use_run_checkpoint: without either, use this run's ``<out>/train/best.pt`` (when the
            recipe trains before ``label_noise``). With none of the three, an explicit
            ``method: embeddings`` embeds with random weights (and says so: such features
            describe little image content); ``method: auto`` picks ``kfold`` instead.
        img_size: square input side in pixels; ``None`` takes the model's default from
            ``timm.data.resolve_data_config``.
        batch_size: images per forward pass.
        flip: features are the mean of the image's and its mirror's (as ``stages.embed.flip``).
        C: inverse L2 regularisation strength of ``sklearn.linear_model.LogisticRegression``
            (its default, 1.0); features are standardised first.
    """

    model_config = {"extra": "forbid"}

    model_name: str = "resnet10t"
    weights: str | None = None
    pretrained: bool = True
    use_run_checkpoint: bool = True
    img_size: Count | None = Field(None, ge=8, le=1024)
    batch_size: Count = Field(64, ge=1)
    flip: bool = True
    C: float = Field(1.0, gt=0)


class LabelNoiseOptions(BaseModel):
    """``stages.label_noise`` options.

    Attributes:
        method: where the out-of-sample ``pred_probs`` come from: ``kfold`` (K timm models
            trained with the ``train`` stage's trainer, each scoring the fold it did not
            see), ``embeddings`` (timm backbone features + cross-validated logistic
            regression; fast), ``pred_probs_file`` (computed elsewhere), or ``auto`` (the
            default): ``pred_probs_file`` when that option is set, else ``embeddings`` when a
            backbone with trained weights is at hand (the embed stage's stored features,
            ``embeddings.weights``, pretrained weights of ``embeddings.model_name``, or this
            run's checkpoint), else ``kfold``; the stage says which it chose and why
            (:func:`vetset.plugins.label_noise.choose.choose_method`).
        n_folds: folds of the stratified K-fold cross-validation (``kfold`` and
            ``embeddings``). Default 5, as cleanlab's ``estimate_cv_predicted_probabilities``.
        seed: seed of the fold assignment.
        splits: sample tags (splits) whose samples are checked; all by default, since a
            wrong label in ``val``/``test`` corrupts the scores as much as one in ``train``.
        include_augmented: also check samples tagged ``augmented`` (copies written by the
            augment stage). Off by default: a copy and its source in different folds would
            let a model see the label it scores.
        filter_by: ``cleanlab.filter.find_label_issues(filter_by=...)``, or ``auto`` (the
            default): the filter measured best for how the ``pred_probs`` were made
            (:data:`FILTER_BY_FOR_SOURCE`, :func:`default_filter_by`): ``low_self_confidence``
            for K-fold models and for embeddings of a backbone that is not pretrained,
            ``prune_by_noise_rate`` for pretrained features and a ``pred_probs_file``.
            ``low_self_confidence`` takes as many samples as confident learning counts off
            the diagonal of the confident joint (``cleanlab.count.num_label_issues``), in
            order of lowest self-confidence (the given label's probability);
            ``prune_by_noise_rate`` (cleanlab's default) removes, per off-diagonal cell of the
            confident joint, that many samples by largest margin of the other class;
            ``both`` flags the intersection of ``prune_by_noise_rate`` and ``prune_by_class``.
        frac_noise: ``find_label_issues(frac_noise=...)``; only for the ``prune_by_*`` and
            ``both`` filters. 1.0 (cleanlab's default) returns every confident issue.
        min_examples_per_class: ``find_label_issues(min_examples_per_class=...)``.
        rank_by: label quality score method of ``cleanlab.rank.get_label_quality_scores``;
            also orders the ``label_issues`` view. cleanlab's default ``self_confidence``.
        adjust_pred_probs: ``get_label_quality_scores(adjust_pred_probs=...)``: subtract
            per-class thresholds first, for imbalanced classes (Northcutt et al. 2021).
        train: ``train``-stage options for every fold model (``kfold``); they update the
            recipe's own ``stages.train`` options when the recipe has that stage.
        fold_augmentation: training-time augmentation of the fold models when no
            ``train_transform`` is set (neither in ``train`` here nor in the recipe's
            ``stages.train``): ``light`` = :func:`light_augmentation`, horizontal flip and a
            random shift by up to 1/8 of the side with reflected borders (the standard
            CIFAR recipe: flip, pad 4 of 32 px and crop; He et al. 2016); ``none`` trains
            on the plain images. Without augmentation fold models memorise the wrong
            labels they are meant to find: on CIFAR-10N ``random1`` (17% wrong; one fold
            model, 4,000 images, accuracy of its held-out fold against the clean labels)
            ``test_resnet`` at 64 px, 20 epochs, reached training accuracy 1.00 and held-out
            0.54 without augmentation, 0.66 and 0.60 with ``light`` (F1 of the flagged set
            0.43 -> 0.50); resnet10t at 32 px, 10 epochs, 0.51 -> 0.54.
        embeddings: options of the ``embeddings`` method.
        pred_probs_file: ``.npy`` of shape ``(N, K)`` (with ``ids_file``) or ``.npz`` with
            arrays ``pred_probs`` and ``sample_ids`` (or ``filepaths``), as this stage saves
            in ``<out>/label_noise/pred_probs.npz``. Columns follow the dataset's sorted
            class list.
        ids_file: text file with one FiftyOne sample id or image path per row of a
            ``.npy`` ``pred_probs_file``.
        datalab: also run ``cleanlab.Datalab`` (outliers; near duplicates when features
            exist) on the same ``pred_probs``; needs ``pip install 'cleanlab[datalab]'``.
        max_report_samples: flagged samples shown (with thumbnails) in the report.
    """

    model_config = {"extra": "forbid"}

    method: Literal["auto", "kfold", "embeddings", "pred_probs_file"] = "auto"
    n_folds: Count = Field(5, ge=2, le=50)
    seed: Count = 0
    splits: list[Literal["train", "val", "test"]] = Field(default_factory=lambda: ["train", "val", "test"],
                                                          min_length=1)
    include_augmented: bool = False
    filter_by: Literal["auto", FilterBy] = "auto"  # one Literal: one error line naming every value
    frac_noise: float = Field(1.0, gt=0, le=1)
    min_examples_per_class: Count = Field(1, ge=0)
    rank_by: RankBy = "self_confidence"
    adjust_pred_probs: bool = False
    train: dict[str, Any] = Field(default_factory=dict)
    fold_augmentation: Literal["light", "none"] = "light"
    embeddings: EmbeddingOptions = Field(default_factory=EmbeddingOptions)
    pred_probs_file: str | None = None
    ids_file: str | None = None
    datalab: bool = False
    max_report_samples: Count = Field(48, ge=0, le=1000)

    @field_validator("train")
    @classmethod
    def _train_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        from pydantic import ValidationError

        from vetset.plugins.train.options import TrainOptions

        try:
            TrainOptions.model_validate(value)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "train"
            raise ValueError(f"train.{where}: {err['msg']} (the train stage's options)") from None
        return value

    @model_validator(mode="after")
    def _file_for_file_method(self) -> LabelNoiseOptions:
        if self.method == "pred_probs_file" and not self.pred_probs_file:
            raise ValueError("method pred_probs_file needs the pred_probs_file option (a .npy or .npz path)")
        if self.frac_noise != 1.0 and self.filter_by not in ("auto", "prune_by_noise_rate", "prune_by_class", "both"):
            raise ValueError(f"frac_noise works only with filter_by prune_by_noise_rate, prune_by_class or both, "
                             f"not {self.filter_by}")
        return self
