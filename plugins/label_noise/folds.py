"""The options every K-fold model of ``method: kfold`` trains with, and the sentence that says them.

Precedence, lowest first: the train stage's defaults (:class:`~vetset.plugins.train.options.TrainOptions`),
:data:`FOLD_DEFAULTS`, the recipe's ``stages.train`` (the options it sets), then
``stages.label_noise.train``. :data:`FOLD_DEFAULTS` apply only while neither names a model
(``model_name``, ``weights`` or ``pretrained``): a model someone chose keeps its own input
size. ``fold_augmentation: light`` fills in ``train_transform`` where neither sets one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vetset.core.errors import RecipeError

if TYPE_CHECKING:
    from vetset.core.recipe import Recipe
    from vetset.plugins.label_noise.options import LabelNoiseOptions
    from vetset.plugins.train.options import TrainOptions

#: The fold models' defaults, sized so that 5 folds over 2,500 photos finish in under 15
#: minutes on 2 CPU cores: 5 x 2,000 x 12 = 120,000 training passes. timm's 0.37 M-parameter
#: ``test_resnet`` at 64 px cost 5.7 ms of CPU per training image on the ants/bees photos
#: (decoding included, one thread, a shared machine), ``resnet10t`` at 64 px 13.5 ms and at
#: 224 px (the train stage's ``max_img_size``, which fold models inherited before) about 20
#: times that. The same model, size and epochs are ``benchmarks/label_noise_cifar10n.py``'s
#: K-fold defaults (with its ``lr`` 2e-3 and no label smoothing), chosen there on CIFAR-10N
#: against ``resnet10t`` at 32 px (out-of-fold accuracy 0.60 against 0.54 for equal cost).
FOLD_DEFAULTS: dict[str, Any] = {"model_name": "test_resnet", "img_size": 64, "epochs": 12, "lr": 2e-3,
                                 "label_smoothing": 0.0}
#: Options that name a model; when the recipe sets one of them, FOLD_DEFAULTS step aside.
_MODEL_KEYS = ("model_name", "weights", "pretrained")


def fold_train_options(recipe: Recipe, options: LabelNoiseOptions) -> tuple[TrainOptions, list[str]]:
    """The fold models' effective :class:`~vetset.plugins.train.options.TrainOptions` and notes.

    Args:
        recipe: the validated recipe (its ``stages.train``, when present, is the base).
        options: ``stages.label_noise`` options.

    Returns:
        ``(train_options, notes)``: ``notes`` are sentences about options changed here
        (``nproc`` set to 1: fold models train one after another in the run's process).

    Raises:
        RecipeError: a bad option, named as ``stages.label_noise.train.<option>``.
    """
    from vetset.plugins.label_noise.options import light_augmentation
    from vetset.plugins.train.options import as_options, check_model_name, load_train_transform

    base: dict[str, Any] = {}
    user_set = set(options.train)
    if "train" in recipe.stages:
        recipe_train = recipe.options("train")
        base = recipe_train.model_dump(exclude_unset=True)
        user_set |= recipe_train.model_fields_set
    notes = []
    merged = {**base, **options.train}
    if not user_set & set(_MODEL_KEYS):
        merged = {**{k: v for k, v in FOLD_DEFAULTS.items() if k not in user_set}, **merged}
    if options.fold_augmentation == "light" and "train_transform" not in user_set:
        merged["train_transform"] = light_augmentation()
    if (merged.get("nproc") or 1) > 1:  # K small fold models: one process each, in turn
        notes.append(f"fold models train in this process; nproc {merged['nproc']} applies to the train stage only")
        merged["nproc"] = 1
    try:
        opts = as_options(merged)
        check_model_name(opts.model_name)
        load_train_transform(opts.train_transform)
    except RecipeError as exc:
        raise RecipeError(str(exc).replace("stages.train.", "stages.label_noise.train.")) from None
    return opts, notes


def describe_fold_options(opts: TrainOptions, options: LabelNoiseOptions, n_samples: int | None = None) -> str:
    """One sentence: the fold models' model, weights, input size, epochs and augmentation,
    and with ``n_samples`` the number of training passes they make."""
    from vetset.plugins.label_noise.options import light_augmentation

    weights = (f"weights {opts.weights}" if opts.weights else "pretrained weights when they can be had"
               if opts.pretrained == "auto" else "pretrained weights" if opts.pretrained else "from scratch")
    size = f"{opts.img_size} px" if opts.img_size else f"the data's size up to {opts.max_img_size} px"
    aug = ("light augmentation (flip, shift)" if opts.train_transform == light_augmentation() else
           "no augmentation" if not opts.train_transform else "the recipe's train_transform")
    text = (f"{options.n_folds} fold models: {opts.model_name} {weights} at {size}, {opts.epochs} epochs, batch "
            f"{opts.batch_size}, lr {opts.lr:g}, {aug}")
    if n_samples:
        per_fold = n_samples - n_samples // options.n_folds
        text += (f"; {options.n_folds} x {per_fold:,} images x {opts.epochs} epochs = "
                 f"{options.n_folds * per_fold * opts.epochs:,} training passes")
    return text + " (stages.label_noise.train changes them; `recipes show` prints them all)."


def fold_options_for_show(recipe: Recipe) -> dict[str, Any] | None:
    """``{"summary": sentence, "options": {...}}`` for ``recipes show``: what the fold models of
    ``recipe``'s ``label_noise`` stage would train with, or ``None`` without that stage."""
    if "label_noise" not in recipe.stages:
        return None
    options = recipe.options("label_noise")
    from vetset.plugins.label_noise.options import light_augmentation

    opts, _notes = fold_train_options(recipe, options)
    shown = opts.model_dump(mode="json")
    if opts.train_transform == light_augmentation():  # 60 lines of A.to_dict: say what it is
        shown["train_transform"] = ("fold_augmentation light: HorizontalFlip(p=0.5), Affine(translate_percent=-0.125..0.125, "
                                    "border_mode=BORDER_REFLECT_101)")
    return {"summary": describe_fold_options(opts, options), "options": shown}
