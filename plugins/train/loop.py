"""The training loop: :func:`fit`, usable without a FiftyOne dataset.

The ``train`` stage, the label-noise K-fold and the benchmarks call it (and
:func:`vetset.plugins.train.inference.predict`) with plain ``(filepath, class_index)`` lists.

Reproducibility: weight init, data order, augmentation and mixup draw from seeds derived
from ``(seed, epoch)`` (see :mod:`vetset.plugins.train.data`), so on CPU two runs with the
same seed give identical weights, and a run resumed from ``last.pt`` ends where an
uninterrupted run would.
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vetset.core.errors import DataError, RecipeError
from vetset.plugins.train import checkpoint as ckpt_io
from vetset.plugins.train.data import (
    ImageDataset,
    build_transforms,
    default_loader_workers,
    make_loader,
    resolve_amp,
    resolve_device,
    to_model_input,
)
from vetset.plugins.train.inference import cpu_threads, cross_entropy, infer_logits
from vetset.plugins.train.model import (
    auto_img_size,
    create_loss,
    create_model_with_info,
    create_optimizer,
    create_scheduler,
    data_config_for,
    head_parameter_names,
)
from vetset.plugins.train.options import TrainOptions, as_options, load_train_transform
from vetset.plugins.train.probe import fit_linear_probe
from vetset.plugins.train.tuning import class_weights, finetune_plan, resolve_class_balance

#: Options that do not change what is learned; a resume may change them.
RUNTIME_OPTIONS = ("workers", "threads", "device", "early_stopping_patience")
HISTORY_KEYS = ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "images_per_s", "epoch_time_s")


@dataclass
class FitOutput:
    """What :func:`fit` returns.

    Attributes:
        model: the ``torch.nn.Module`` in eval mode on ``device`` with the best epoch's
            evaluation weights (EMA weights when ``ema`` is on).
        history: one dict per epoch with :data:`HISTORY_KEYS` (``epoch`` is 1-based;
            losses are mean cross-entropy in nats; accuracies in 0..1; ``lr`` at the end of
            the epoch; ``images_per_s`` training images per wall-clock second including
            data loading; ``val_*`` are ``None`` without val items).
        data_config: the resolved timm data config (JSON-able).
        best_checkpoint: path of ``best.pt`` (``None`` without ``out_dir``).
        last_checkpoint: path of ``last.pt`` (``None`` without ``out_dir``).
        best_epoch: 1-based epoch of the best ``monitor`` value.
        device: e.g. ``"cpu"`` or ``"cuda:0"``.
        amp_dtype: ``"bfloat16"``, ``"float16"`` or ``None``.
        stopped_early: early stopping ended the run before ``epochs``.
        resumed_from: the 1-based epoch ``last.pt`` held when training resumed, else ``None``.
        classes: the class names, index order of the model's outputs.
        weights: where the starting weights came from (``create_with_weights``'s record).
        finetune: the fine-tuning plan used (:func:`vetset.plugins.train.tuning.finetune_plan`)
            plus ``class_balance`` (:func:`vetset.plugins.train.tuning.resolve_class_balance`).
    """

    model: Any
    history: list[dict[str, Any]]
    data_config: dict[str, Any]
    best_checkpoint: str | None = None
    last_checkpoint: str | None = None
    best_epoch: int = 0
    device: str = "cpu"
    amp_dtype: str | None = None
    stopped_early: bool = False
    resumed_from: int | None = None
    classes: list[str] = field(default_factory=list)
    weights: dict[str, Any] = field(default_factory=dict)
    finetune: dict[str, Any] = field(default_factory=dict)


def _check_items(items: Sequence[tuple[str, int]], num_classes: int, what: str) -> None:
    for path, target in items:
        if not 0 <= int(target) < num_classes:
            raise DataError(f"{what} item {path} has class index {target}, outside 0..{num_classes - 1}.")


def _training_signature(options: TrainOptions) -> dict[str, Any]:
    return {k: v for k, v in options.model_dump(mode="json").items() if k not in RUNTIME_OPTIONS}


def _write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    with open(out_dir / "history.jsonl", "w", encoding="utf-8") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    with open(out_dir / "history.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(HISTORY_KEYS))
        writer.writeheader()
        writer.writerows({k: row.get(k) for k in HISTORY_KEYS} for row in history)


def _better(value: float, best: float | None, monitor: str, min_delta: float) -> bool:
    if best is None:
        return True
    return value < best - min_delta if monitor.endswith("loss") else value > best + min_delta


@dataclass
class _Parts:
    """Everything one training run holds between epochs."""

    opts: TrainOptions
    model: Any
    ema: Any
    optimizer: Any
    scheduler: Any
    criterion: Any
    mixup_fn: Any
    scaler: Any
    device: Any
    amp_dtype: Any
    mean: Any
    std: Any
    channels_last: bool
    net: Any = None  # DistributedDataParallel around ``model`` under torchrun, else None
    ctx: Any = None  # train_dist.DistContext under torchrun, else None
    head_epochs: int = 0  # first epochs train the classifier only
    head_names: frozenset = frozenset()  # the classifier's parameter names

    @property
    def eval_model(self) -> Any:
        """The weights that are validated and saved: the EMA's when ``ema`` is on."""
        return self.ema.module if self.ema is not None else self.model

    @property
    def forward_model(self) -> Any:
        """What training batches go through: the DDP wrapper (gradients all-reduced) or the model."""
        return self.net if self.net is not None else self.model

    def train_state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}


def _restore(parts: _Parts, last_path: Path, signature: dict[str, Any], classes: list[str], num_train: int,
             log: Callable[[str], Any]) -> dict[str, Any] | None:
    """Load ``last.pt`` into ``parts`` when it belongs to the same training; return it, else ``None``."""
    last = ckpt_io.load_checkpoint(last_path, map_location=parts.device)
    if not (last.get("signature") == signature and last.get("classes") == classes
            and last.get("num_train") == num_train and last.get("train_state")):
        log(f"[train] {last_path} was written with other options, classes or data; training from scratch.")
        return None
    state = last["train_state"]
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.ema is not None and state.get("ema") is not None:
        parts.ema.load_state_dict(state["ema"])
    if state.get("scaler"):
        parts.scaler.load_state_dict(state["scaler"])
    log(f"[train] resuming from {last_path} after epoch {int(last['epoch']) + 1}/{parts.opts.epochs}")
    return last


def _train_epoch(p: _Parts, loader: Any, sampler: Any, epoch: int) -> dict[str, Any]:
    """One pass over the training data; returns the epoch's history row without the val columns."""
    import torch

    from vetset.core.progress import track

    opts = p.opts
    rank = p.ctx.rank if p.ctx is not None else 0
    torch.manual_seed(opts.seed + epoch + 7919 * rank)  # ranks draw different dropout/drop-path masks
    np.random.seed((opts.seed * 1_000_003 + epoch + 7919 * rank) % 2**32)  # timm's Mixup draws from numpy's global RNG
    sampler.set_epoch(epoch)
    head_only = epoch < p.head_epochs
    _set_head_only(p, head_only)
    num_updates = epoch * len(loader)
    loss_sum = torch.zeros((), device=p.device)
    correct = torch.zeros((), device=p.device, dtype=torch.long)
    seen = 0
    t0 = time.perf_counter()
    for images, target in track(loader, total=len(loader), description=f"epoch {epoch + 1}/{opts.epochs}",
                                unit="batch"):
        x = to_model_input(images, p.device, p.mean, p.std, p.channels_last)
        y = target.to(p.device, non_blocking=True)
        y_loss = y
        if p.mixup_fn is not None:
            x, y_loss = p.mixup_fn(x, y)
        with torch.autocast(p.device.type, dtype=p.amp_dtype or torch.float32, enabled=p.amp_dtype is not None):
            logits = p.forward_model(x)
            loss = p.criterion(logits, y_loss)
        p.optimizer.zero_grad(set_to_none=True)
        p.scaler.scale(loss).backward()
        if head_only and p.net is not None:  # under DDP every parameter keeps requires_grad; drop the backbone's grads
            for name, param in p.model.named_parameters():
                if name not in p.head_names:
                    param.grad = None
        if opts.clip_grad is not None:
            p.scaler.unscale_(p.optimizer)
            torch.nn.utils.clip_grad_norm_(p.model.parameters(), opts.clip_grad)
        p.scaler.step(p.optimizer)
        p.scaler.update()
        num_updates += 1
        if p.scheduler is not None:
            p.scheduler.step_update(num_updates=num_updates)
        if p.ema is not None:
            p.ema.update(p.model, step=num_updates)
        seen += y.shape[0]
        loss_sum += loss.detach().float() * y.shape[0]
        correct += (logits.detach().argmax(1) == y).sum()
    if p.scheduler is not None:
        p.scheduler.step(epoch + 1)
    loss_total, correct_total = float(loss_sum), float(correct)
    if p.ctx is not None and p.ctx.distributed:
        from vetset.plugins.train.distributed import all_reduce_sums, sync_batchnorm_stats

        # every rank's share (DistributedSampler pads the last one with repeated images)
        loss_total, correct_total, seen = all_reduce_sums([loss_total, correct_total, seen], p.device)
        sync_batchnorm_stats(p.model, p.ctx.world_size)
        if p.ema is not None:
            sync_batchnorm_stats(p.ema.module, p.ctx.world_size)
    if p.device.type == "cuda":
        torch.cuda.synchronize(p.device)
    secs = time.perf_counter() - t0
    return {"epoch": epoch + 1, "train_loss": loss_total / max(1, seen), "train_acc": correct_total / max(1, seen),
            "val_loss": None, "val_acc": None, "lr": float(p.optimizer.param_groups[0]["lr"]),
            "images_per_s": seen / secs if secs > 0 else None}


def _set_head_only(p: _Parts, head_only: bool) -> None:
    """Train mode; with ``head_only`` the backbone is frozen (eval mode: BatchNorm statistics kept).

    In one process the backbone's ``requires_grad`` is switched off (no backward through
    it); under DDP, whose parameter set is fixed, its gradients are dropped after backward.
    """
    p.model.train()
    if not p.head_names:
        return
    if head_only:
        p.model.eval()
        p.model.get_classifier().train()
    if p.net is None:
        for name, param in p.model.named_parameters():
            param.requires_grad_(not head_only or name in p.head_names)


def _quiet(msg: str) -> None:
    """Log callback of ranks other than 0 (rank 0 speaks for all)."""


def fit(train_items: Sequence[tuple[str, int]], val_items: Sequence[tuple[str, int]], classes: Sequence[str],
        options: Any = None, out_dir: str | Path | None = None, log: Callable[[str], Any] = print,
        resume: bool = False, recipe: dict[str, Any] | None = None) -> FitOutput:
    """Train a timm classifier on image files.

    Args:
        train_items: ``(filepath, class_index)`` pairs, class indices in ``0..K-1``.
        val_items: the same for validation (may be empty: then ``monitor`` uses the
            training loss and no early stopping happens).
        classes: the ``K`` class names, index order.
        options: :class:`TrainOptions`, a mapping of its fields, or ``None`` for defaults.
        out_dir: folder for ``best.pt``, ``last.pt``, ``history.jsonl``/``.csv``; ``None``
            keeps everything in memory (K-fold use).
        log: one-line status callback.
        resume: continue from ``out_dir/last.pt`` when it exists and was written with the
            same training options; otherwise start fresh (and say why).
        recipe: the run's recipe, stored in the checkpoints.

    Returns:
        A :class:`FitOutput`.

    Worker processes start from a ``forkserver``: a script calling this must guard its
    entry point with ``if __name__ == "__main__":`` (or pass ``workers=0``).

    Several processes: started by ``torchrun`` (``WORLD_SIZE`` > 1), every process calls
    this with the same arguments and trains with DistributedDataParallel (see
    :mod:`vetset.plugins.train.distributed`): ``batch_size`` is per process, rank 0 writes the
    files and logs, every rank returns the same history. The ``nproc`` option is not read
    here: :func:`vetset.plugins.train.ddp.launch_fit` (the train stage with ``nproc`` > 1)
    starts torchrun.

    Raises:
        DataError: no training items, fewer than 2 classes, a class index out of range,
            or an image that cannot be decoded.
        RecipeError: an option is invalid (model name, optimizer, scheduler, device,
            amp, train_transform).
    """
    opts = as_options(options)
    with cpu_threads(opts.threads):
        return _fit(train_items, val_items, classes, opts, out_dir, log, resume, recipe)


def _fit(train_items: Sequence[tuple[str, int]], val_items: Sequence[tuple[str, int]], classes: Sequence[str],
         opts: TrainOptions, out_dir: str | Path | None, log: Callable[[str], Any], resume: bool,
         recipe: dict[str, Any] | None) -> FitOutput:
    import torch

    from vetset.plugins.train.checkpoint import load_weights_into

    classes = [str(c) for c in classes]
    k = len(classes)
    if k < 2:
        raise DataError(f"Training needs at least 2 classes, got {k}: {classes}.")
    if not train_items:
        raise DataError("Training needs at least one train sample; the train split is empty.")
    _check_items(train_items, k, "train")
    _check_items(val_items, k, "val")
    from vetset.plugins.train import distributed as train_dist

    ctx = None
    if train_dist.in_torchrun():
        device, ctx = train_dist.init_distributed(opts.device)
        if not ctx.primary:
            log = _quiet
    else:
        device = resolve_device(opts.device)
    primary = ctx is None or ctx.primary
    amp_dtype = resolve_amp(opts.amp, device)
    train_tf = load_train_transform(opts.train_transform)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)

    from vetset.plugins.train.weights import describe

    model, weights_info = create_model_with_info(opts, k, log=log)
    log(f"[train] {describe(weights_info)}")
    size = opts.img_size
    if size is None and weights_info["source"] == "none":
        size = auto_img_size([p for p, _ in train_items], opts.max_img_size, seed=opts.seed)
    data_config = data_config_for(model, opts, size, weights_info)
    plan = finetune_plan(opts, weights_info["source"] != "none")
    balance = resolve_class_balance(opts, [c for _, c in train_items], k, distributed=ctx is not None)
    plan["class_balance"] = balance
    if balance["note"]:
        log(f"[train] {balance['note']}")
    meta = {"model_name": opts.model_name, "classes": classes, "num_classes": k, "data_config": data_config,
            "options": opts.model_dump(mode="json"), "signature": _training_signature(opts), "recipe": recipe,
            "num_train": len(train_items), "weights": _jsonable_weights(weights_info)}
    if opts.finetune == "linear_probe":
        if ctx is not None:
            raise RecipeError("stages.train.finetune: linear_probe trains in one process; set nproc: 1.")
        log(f"[train] linear probe: {opts.model_name} frozen, classifier trained on features computed once "
            f"per image ({len(train_items)} train / {len(val_items)} val)")
        got = fit_linear_probe(model, train_items, val_items, classes, opts, data_config, device, amp_dtype, out,
                               log, meta, balance["mode"])
        if out is not None:
            _write_history(out, got["history"])
        if got["best_state"] is not None:
            model.load_state_dict(got["best_state"])
        model.eval()
        return FitOutput(model=model, history=got["history"], data_config=data_config,
                         best_checkpoint=got["best_checkpoint"], last_checkpoint=got["last_checkpoint"],
                         best_epoch=got["best_epoch"], device=str(device),
                         amp_dtype=str(amp_dtype).replace("torch.", "") if amp_dtype else None,
                         stopped_early=got["stopped_early"], classes=classes,
                         weights=_jsonable_weights(weights_info), finetune=plan)
    if plan["head_epochs"] or plan["backbone_lr_scale"] != 1.0 or opts.layer_decay:
        log(f"[train] fine-tuning: classifier alone for {plan['head_epochs']} epoch(s), then every layer; backbone lr "
            f"{plan['backbone_lr_scale']:g} x lr" + (f", layer decay {opts.layer_decay:g}" if opts.layer_decay else ""))
    channels_last = opts.channels_last and device.type == "cuda"
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1) * 255.0

    side = int(data_config["input_size"][-1])
    workers = default_loader_workers(device) if opts.workers is None else opts.workers
    train_ds = ImageDataset(train_items, build_transforms(data_config, train_tf, train=True), max_side=2 * side,
                            seed=opts.seed)
    mixing = opts.mixup > 0 or opts.cutmix > 0
    world = ctx.world_size if ctx is not None else 1
    if ctx is not None:
        workers = workers if opts.workers is not None else max(0, workers // world)
    n_local = -(-len(train_ds) // world)  # per rank: DistributedSampler pads to ceil(N / world)
    drop_last = n_local > opts.batch_size and (mixing or n_local % opts.batch_size == 1)
    pin = device.type == "cuda"
    train_loader, train_sampler = make_loader(train_ds, opts.batch_size, workers, True, opts.seed, pin, drop_last,
                                              num_replicas=world, rank=ctx.rank if ctx is not None else 0,
                                              balanced=balance["mode"] == "sampler")
    val_loader = None
    if val_items:
        own_val = train_dist.shard(val_items, ctx) if ctx is not None else val_items
        val_ds = ImageDataset(own_val, build_transforms(data_config, train=False), max_side=2 * side)
        val_loader, _ = make_loader(val_ds, opts.batch_size, min(workers, max(0, len(own_val) // opts.batch_size)),
                                    False, pin_memory=pin)

    optimizer = create_optimizer(model, opts, plan["backbone_lr_scale"])
    criterion, mixup_fn = create_loss(opts, k, class_weights([c for _, c in train_items], k, device)
                                      if balance["mode"] == "loss" else None)
    ema = None
    if opts.ema:
        from timm.utils import ModelEmaV3

        ema = ModelEmaV3(model, decay=opts.ema_decay)
    parts = _Parts(opts, model, ema, optimizer, create_scheduler(optimizer, opts, len(train_loader)), criterion,
                   mixup_fn, torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16 and device.type == "cuda"),
                   device, amp_dtype, mean, std, channels_last, ctx=ctx, head_epochs=plan["head_epochs"],
                   head_names=frozenset(head_parameter_names(model)))
    if ctx is not None:
        parts.net = train_dist.wrap_ddp(model, device)
        log(f"[train] DistributedDataParallel on {world} processes ({device.type}, "
            f"{'nccl' if device.type == 'cuda' else 'gloo'}), batch {opts.batch_size} per process")

    history: list[dict[str, Any]] = []
    stopped_early = False
    start_epoch, best_value, best_epoch, best_state, stale, resumed_from = 0, None, 0, None, 0, None
    monitor = opts.monitor if val_loader is not None else "train_loss"
    signature = _training_signature(opts)
    last_path = out / ckpt_io.LAST if out is not None else None
    best_path = out / ckpt_io.BEST if out is not None else None
    if resume and last_path is not None and last_path.is_file():
        last = _restore(parts, last_path, signature, classes, len(train_items), log)
        if last is not None:
            history = list(last["history"])
            best_value, best_epoch, stale = last["best"]["value"], last["best"]["epoch"], last["best"]["stale"]
            start_epoch = resumed_from = int(last["epoch"]) + 1
            if best_path.is_file():
                best_state = ckpt_io.load_checkpoint(best_path)["state_dict"]
            if last.get("stopped_early"):
                start_epoch, stopped_early = opts.epochs, True

    for epoch in range(start_epoch, opts.epochs):
        t0 = time.perf_counter()
        row = _train_epoch(parts, train_loader, train_sampler, epoch)
        if val_loader is not None:
            v_logits, v_targets = infer_logits(parts.eval_model, val_loader, device, amp_dtype, mean, std, channels_last)
            if ctx is None:
                row["val_loss"] = cross_entropy(v_logits, v_targets)
                row["val_acc"] = float((v_logits.argmax(1) == v_targets).mean())
            else:
                row["val_loss"], row["val_acc"] = train_dist.reduced_val_metrics(v_logits, v_targets, len(val_items),
                                                                                 device)
        row["epoch_time_s"] = time.perf_counter() - t0
        history.append(row)
        value = row[monitor]
        improved = _better(value, best_value, monitor, opts.min_delta)
        if improved:
            best_value, best_epoch, stale = value, epoch + 1, 0
            best_state = {kk: v.detach().to("cpu", copy=True) for kk, v in parts.eval_model.state_dict().items()}
            if best_path is not None and primary:
                ckpt_io.save_checkpoint(best_path, {**meta, "epoch": epoch, "history": history,
                                                    "best": {"monitor": monitor, "value": value, "epoch": epoch + 1},
                                                    "state_dict": best_state, "train_state": None})
        else:
            stale += 1
        patience = opts.early_stopping_patience
        stopped_early = bool(patience and val_loader is not None and stale >= patience and epoch + 1 < opts.epochs)
        if out is not None and primary:
            ckpt_io.save_checkpoint(last_path, {
                **meta, "epoch": epoch, "history": history, "stopped_early": stopped_early,
                "best": {"monitor": monitor, "value": best_value, "epoch": best_epoch, "stale": stale},
                "state_dict": parts.eval_model.state_dict(), "train_state": parts.train_state()})
            _write_history(out, history)
        log(f"[train] epoch {epoch + 1}/{opts.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"
            + (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}" if row["val_loss"] is not None else "")
            + f"  lr {row['lr']:.2e}  {row['images_per_s'] or 0:.0f} img/s" + ("  *" if improved else ""))
        if stopped_early:
            log(f"[train] early stop: {monitor} did not improve for {patience} epochs (best at epoch {best_epoch})")
            break
    final = parts.eval_model
    if best_state is not None:
        load_weights_into(final, best_state, log=log)
    final.eval()
    return FitOutput(
        model=final, history=history, data_config=data_config,
        best_checkpoint=str(best_path) if best_path is not None and best_path.is_file() else None,
        last_checkpoint=str(last_path) if last_path is not None and last_path.is_file() else None,
        best_epoch=best_epoch, device=str(device), amp_dtype=str(amp_dtype).replace("torch.", "") if amp_dtype else None,
        stopped_early=stopped_early,
        resumed_from=resumed_from, classes=classes, weights=_jsonable_weights(weights_info), finetune=plan)


def _jsonable_weights(info: dict[str, Any]) -> dict[str, Any]:
    """The weights record without the stored checkpoint config (it is in ``data_config`` already)."""
    return {k: v for k, v in info.items() if k != "checkpoint_data_config"}
