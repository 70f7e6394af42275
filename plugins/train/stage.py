"""Built-in plugin: the ``train`` stage and the timm trainer behind ``vetset_make_trainer``.

The stage asks the ``vetset_make_trainer`` hook (``firstresult``) for the trainer named by
``stages.train.trainer`` and returns what its ``fit(run, options)`` returns; this module
answers for ``timm``. A third-party plugin answering the same hook replaces it (pluggy
calls the latest-registered implementation first).

Reusable pieces, importable without a run or a FiftyOne dataset::

    from vetset.plugins.train.stage import fit, predict, TrainOptions
    out = fit(train_items, val_items, classes, {"model_name": "resnet10t", "epochs": 3})
    probs, logits = predict(out.model, filepaths, out.data_config, options)

Train result block (``result["stages"]["train"]``)::

    {"trainer": "timm", "model_name", "classes", "checkpoint" (best.pt), "last_checkpoint",
     "history": [{"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr",
                  "images_per_s", "epoch_time_s"}, ...],
     "history_files": {"jsonl", "csv"}, "best_epoch", "device", "amp", "data_config",
     "num_train", "num_val", "stopped_early", "resumed_from", "options",
     "weights": {"source": "hub"|"hub_cache"|"file"|"checkpoint"|"none", "model_name",
                 "pretrained_tag", "hf_hub_id", "file", "head", ["reason", "advice"] when none},
     "finetune": {"finetune", "head_epochs", "backbone_lr_scale", "layer_decay",
                  "class_balance": {"mode", "requested", "ratio", "threshold", "note"}},
     "metrics": {"best_val_acc", "best_val_loss", "final_train_acc", "final_train_loss",
                 "images_per_s", "epochs_run", "pretrained_weights" (1: started from hub, file or
                 checkpoint weights, 0: random initialisation)}}
"""

from __future__ import annotations

from typing import Any

from vetset.core.hookspecs import hookimpl
from vetset.core.registry import Stage
from vetset.plugins.train.inference import cross_entropy, predict, softmax
from vetset.plugins.train.loop import FitOutput, fit
from vetset.plugins.train.options import TrainOptions, as_options
from vetset.plugins.train.tuning import resolve_class_balance

__all__ = ["FitOutput", "TimmTrainer", "TrainOptions", "as_options", "check_options", "cross_entropy", "fit", "items_of",
           "predict", "softmax"]


def items_of(view: Any, classes: list[str], label_field: str = "ground_truth") -> list[tuple[str, int]]:
    """``(filepath, class_index)`` pairs of a FiftyOne view; samples without a known label are left out.

    Args:
        view: a FiftyOne dataset or view.
        classes: class names; the index is the position in this list.
        label_field: the ``fo.Classification`` field holding the class.
    """
    index = {c: i for i, c in enumerate(classes)}
    paths, labels = view.values(["filepath", f"{label_field}.label"])
    return [(p, index[lab]) for p, lab in zip(paths, labels) if lab in index]


def _mean(values: list[Any]) -> float | None:
    vals = [float(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def result_block(out: FitOutput, opts: TrainOptions, num_train: int, num_val: int,
                 out_dir: Any = None) -> dict[str, Any]:
    """The JSON train result block (see the module docstring) for a :class:`FitOutput`."""
    history = out.history
    val_losses = [h["val_loss"] for h in history if h.get("val_loss") is not None]
    val_accs = [h["val_acc"] for h in history if h.get("val_acc") is not None]
    best = history[out.best_epoch - 1] if out.best_epoch and len(history) >= out.best_epoch else {}
    files = {}
    if out_dir is not None:
        files = {"jsonl": str(out_dir / "history.jsonl"), "csv": str(out_dir / "history.csv")}
    return {
        "trainer": "timm", "model_name": opts.model_name, "classes": list(out.classes),
        "checkpoint": out.best_checkpoint, "last_checkpoint": out.last_checkpoint,
        "history": history, "history_files": files, "best_epoch": out.best_epoch, "device": out.device,
        "amp": out.amp_dtype, "data_config": out.data_config, "num_train": num_train, "num_val": num_val,
        "stopped_early": out.stopped_early, "resumed_from": out.resumed_from,
        "options": opts.model_dump(mode="json"), "weights": out.weights, "finetune": out.finetune,
        "metrics": {
            "best_val_acc": best.get("val_acc", max(val_accs) if val_accs else None),
            "best_val_loss": best.get("val_loss", min(val_losses) if val_losses else None),
            "final_train_acc": history[-1]["train_acc"] if history else None,
            "final_train_loss": history[-1]["train_loss"] if history else None,
            "images_per_s": _mean([h.get("images_per_s") for h in history]),
            "epochs_run": len(history),
            "pretrained_weights": int((out.weights or {}).get("source", "none") != "none"),
        },
    }


class TimmTrainer:
    """The built-in trainer: :func:`fit` on the dataset's ``train`` and ``val`` splits."""

    name = "timm"

    def fit(self, run: Any, options: Any) -> dict[str, Any]:
        """Train on ``run.dataset`` and return the train result block.

        Unreadable samples (tag ``unreadable``) are left out; ``run.resume`` continues
        from ``<out>/train/last.pt``. With ``nproc`` > 1 the training runs under torchrun
        (:func:`vetset.plugins.train.ddp.launch_fit`) while this process keeps the dataset.

        Raises:
            DataError: the train split is empty or has fewer than 2 classes.
            RecipeError: an option is invalid.
        """
        from vetset.core.dataset import split_view, training_view

        opts = as_options(options)
        classes = run.classes
        train_view, left_out = training_view(run.dataset)
        if left_out:
            run.log(f"[train] leaving out {left_out} augmented samples of earlier augmentation folders "
                    "(only the latest augment run's images are used)")
        train_items = items_of(train_view, classes)
        val_items = items_of(split_view(run.dataset, "val"), classes)
        out_dir = run.stage_dir("train")
        if opts.class_balance == "auto":
            balance = (run.results.get("audit") or {}).get("checks", {}).get("balance") or None
            threshold = _audit_threshold(run)
            chosen = resolve_class_balance(opts, [c for _, c in train_items], len(classes), threshold=threshold,
                                           audit=balance, distributed=opts.nproc > 1)
            if chosen["note"]:
                run.log(f"[train] {chosen['note']}")
            opts = opts.model_copy(update={"class_balance": chosen["mode"]})
        run.log(f"[train] {opts.model_name}: {len(train_items)} train / {len(val_items)} val images, "
                f"{len(classes)} classes, {opts.epochs} epochs" + (f", {opts.nproc} processes" if opts.nproc > 1 else ""))
        if opts.nproc > 1:
            from vetset.plugins.train.ddp import launch_fit

            out = launch_fit(train_items, val_items, classes, opts, out_dir, log=run.log, resume=run.resume,
                             recipe=run.recipe.dump())
        else:
            out = fit(train_items, val_items, classes, opts, out_dir=out_dir, log=run.log, resume=run.resume,
                      recipe=run.recipe.dump())
        return result_block(out, opts, len(train_items), len(val_items), out_dir)


def _audit_threshold(run: Any) -> float | None:
    """The audit's ``checks.balance.max_imbalance_ratio`` of this run's recipe, when it audits."""
    if "audit" not in run.recipe.stage_names():
        return None
    audit = run.recipe.options("audit")
    checks = getattr(audit, "checks", None)
    balance = checks.get("balance") if isinstance(checks, dict) else getattr(checks, "balance", None)
    value = getattr(balance, "max_imbalance_ratio", None)
    return float(value) if value else None


def check_options(options: Any) -> TrainOptions:
    """Check the options that need timm/albumentations/torch: model name, optimizer,
    scheduler, device, amp, ``nproc``, ``train_transform``, and that the weights asked for
    can be had (a ``weights`` file exists; ``pretrained: true`` weights are cached or the
    Hub answers within :data:`vetset.plugins.train.weights.PROBE_TIMEOUT_S`).

    Returns:
        The validated :class:`TrainOptions`.

    Raises:
        RecipeError: the first invalid option, named.
    """
    from vetset.core.errors import RecipeError
    from vetset.plugins.train._catalog import known_model, known_optimizer
    from vetset.plugins.train.options import check_model_name, load_train_transform

    # timm's names are looked up in its cached name lists first (_catalog), and torch is
    # imported only for a device or precision other than auto/off: with the defaults,
    # `recipes validate` and the checks before a run import neither torch nor timm
    opts = as_options(options)
    if opts.trainer != "timm":
        return opts
    if not known_model(opts.model_name):
        check_model_name(opts.model_name)
    load_train_transform(opts.train_transform)
    if opts.device != "auto" or opts.amp not in ("auto", "off"):  # "auto" on "auto" never fails
        from vetset.plugins.train.data import resolve_amp, resolve_device

        resolve_amp(opts.amp, resolve_device(opts.device))
    from vetset.plugins.train.ddp import check_nproc

    check_nproc(opts)
    if not known_optimizer(opts.opt):
        from timm.optim import list_optimizers

        if opts.opt.lower() not in list_optimizers():
            raise RecipeError(f"stages.train.opt: {opts.opt!r} is not a timm optimizer; e.g. adamw, sgd, lamb, adan.")
    if opts.finetune == "linear_probe" and opts.nproc > 1:
        raise RecipeError("stages.train.finetune: linear_probe trains in one process; set nproc: 1.")
    check_weights(opts)
    return opts


def check_weights(opts: TrainOptions) -> None:
    """Raise when the weights the options ask for cannot be had (nothing is loaded or downloaded).

    Raises:
        RecipeError: ``weights`` names no file, the model tag does not exist, or
            ``pretrained: true`` finds the weights neither cached nor on a reachable Hub
            (:func:`vetset.plugins.train.weights.unavailable_message`).
    """
    from pathlib import Path

    from vetset.core.errors import RecipeError
    from vetset.plugins.train._catalog import known_model
    from vetset.plugins.train.weights import pretrained_cfg_of, pretrained_status, unavailable_message

    if opts.weights:
        if not Path(opts.weights).expanduser().is_file():
            raise RecipeError(f"stages.train.weights: file {Path(opts.weights).expanduser()} does not exist.")
        return
    if not known_model(opts.model_name):  # a tag timm's cached list lacks: timm decides
        pretrained_cfg_of(opts.model_name)  # an unknown tag fails here
    if opts.pretrained is True:
        status = pretrained_status(opts.model_name)
        if not status["available"]:
            raise RecipeError(unavailable_message(opts.model_name, status))


def _run_stage(run: Any, options: TrainOptions) -> dict[str, Any]:
    trainer = run.hooks.make_trainer(options.trainer, options.model_dump(mode="json"))
    return trainer.fit(run, options)


@hookimpl
def vetset_register_stages(register):
    register(Stage("train", _run_stage, TrainOptions,
                   "Train a timm classifier on the train split (val for model selection); checkpoints and history."))


@hookimpl
def vetset_on_dataset_loaded(run):
    """Check the train options as soon as the data is loaded, before earlier stages run."""
    if "train" in run.recipe.stages:
        check_options(run.recipe.options("train"))


@hookimpl
def vetset_make_trainer(name, options):
    return TimmTrainer() if name == "timm" else None
