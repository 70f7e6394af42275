"""Linear probe: the backbone frozen, only the classifier trained, on features computed once.

Every image goes through the evaluation transform and the frozen backbone once
(``forward_features`` then ``forward_head(pre_logits=True)``: the pooled features the
classifier reads, shape ``(N, D)``); the classifier (``model.get_classifier()``, a
``torch.nn.Linear``) then trains on those cached features for ``epochs`` epochs with the
same optimizer, schedule, loss and class balance as full training. Features are
standardised with the training features' mean and standard deviation while training (as
MAE's linear probe puts a BatchNorm without affine parameters before the classifier, He et
al. 2022), and that scaling is folded into the classifier's weights afterwards
(``W' = W / s``, ``b' = b - W' m``), so the saved model is the plain timm model. There is no image
augmentation (features are computed once), so an epoch costs a matrix product: on CPU the
whole probe is about one inference pass over the data.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vetset.core.errors import RecipeError
from vetset.plugins.train import checkpoint as ckpt_io
from vetset.plugins.train.data import (
    BalancedEpochSampler,
    ImageDataset,
    build_transforms,
    default_loader_workers,
    make_loader,
    to_model_input,
)
from vetset.plugins.train.inference import cross_entropy
from vetset.plugins.train.model import create_loss, create_scheduler
from vetset.plugins.train.options import TrainOptions
from vetset.plugins.train.tuning import class_weights


def pooled_features(model: Any, items: Sequence[tuple[str, int]], data_config: dict[str, Any], opts: TrainOptions,
                    device: Any, amp_dtype: Any) -> tuple[Any, Any]:
    """Pre-logits features ``(N, D)`` float32 and targets ``(N,)`` int64 of ``items`` (eval transform), in order."""
    import torch

    if not items:
        return torch.zeros((0, 0)), torch.zeros((0,), dtype=torch.long)
    side = int(data_config["input_size"][-1])
    ds = ImageDataset(items, build_transforms(data_config, train=False), max_side=2 * side)
    workers = default_loader_workers(device) if opts.workers is None else opts.workers
    loader, _ = make_loader(ds, opts.batch_size, min(workers, len(items) // opts.batch_size), False,
                            pin_memory=device.type == "cuda")
    mean = torch.tensor(data_config["mean"], device=device).view(1, 3, 1, 1) * 255.0
    std = torch.tensor(data_config["std"], device=device).view(1, 3, 1, 1) * 255.0
    feats, targets = [], []
    model.eval()
    with torch.inference_mode(), torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                                enabled=amp_dtype is not None):
        for images, target in loader:
            x = to_model_input(images, device, mean, std, False)
            feats.append(model.forward_head(model.forward_features(x), pre_logits=True).float())
            targets.append(target.to(device))
    return torch.cat(feats), torch.cat(targets)


def fit_linear_probe(model: Any, train_items: Sequence[tuple[str, int]], val_items: Sequence[tuple[str, int]],
                     classes: list[str], opts: TrainOptions, data_config: dict[str, Any], device: Any, amp_dtype: Any,
                     out: Path | None, log: Callable[[str], Any], meta: dict[str, Any],
                     balance_mode: str) -> dict[str, Any]:
    """Train ``model``'s classifier on cached features; checkpoints as full training writes them.

    Returns:
        ``{"history", "best_epoch", "best_state", "stopped_early", "best_checkpoint",
        "last_checkpoint"}`` (history rows as :data:`vetset.plugins.train.loop.HISTORY_KEYS`;
        ``images_per_s`` counts feature rows per second of the classifier's training).

    Raises:
        RecipeError: the model's classifier is not a single linear layer.
    """
    import torch
    from timm.optim import create_optimizer_v2

    head = model.get_classifier()
    if not isinstance(head, torch.nn.Linear):
        raise RecipeError(f"stages.train.finetune: linear_probe needs a linear classifier; {opts.model_name}'s is "
                          f"{type(head).__name__}; use finetune: full.")
    model.to(device)
    t0 = time.perf_counter()
    x_train, y_train = pooled_features(model, train_items, data_config, opts, device, amp_dtype)
    x_val, y_val = pooled_features(model, val_items, data_config, opts, device, amp_dtype)
    log(f"[train] features {tuple(x_train.shape)} computed in {time.perf_counter() - t0:.1f} s")
    k = len(classes)
    mu = x_train.mean(0)
    sd = x_train.std(0).clamp_min(1e-6) if len(x_train) > 1 else torch.ones_like(mu)
    x_train, x_val = (x_train - mu) / sd, ((x_val - mu) / sd if len(x_val) else x_val)
    probe = torch.nn.Linear(x_train.shape[1], k).to(device)
    with torch.no_grad():  # the same function as the model's classifier, on standardised features
        probe.weight.copy_(head.weight * sd)
        probe.bias.copy_(head.bias + head.weight @ mu)

    def fold() -> None:
        with torch.no_grad():
            head.weight.copy_(probe.weight / sd)
            head.bias.copy_(probe.bias - (probe.weight / sd) @ mu)

    optimizer = create_optimizer_v2(probe, opt=opts.opt, lr=opts.lr, weight_decay=opts.weight_decay,
                                    momentum=opts.momentum)
    n = len(train_items)
    steps = max(1, -(-n // opts.batch_size))
    scheduler = create_scheduler(optimizer, opts, steps)
    weight = class_weights([c for _, c in train_items], k, device) if balance_mode == "loss" else None
    criterion, _ = create_loss(opts.model_copy(update={"mixup": 0.0, "cutmix": 0.0}), k, weight)
    sampler = BalancedEpochSampler([c for _, c in train_items], seed=opts.seed) if balance_mode == "sampler" else None
    monitor = opts.monitor if val_items else "train_loss"
    history: list[dict[str, Any]] = []
    best_value, best_epoch, best_state, stale, stopped_early = None, 0, None, 0, False
    best_path = out / ckpt_io.BEST if out is not None else None
    last_path = out / ckpt_io.LAST if out is not None else None
    updates = 0
    for epoch in range(opts.epochs):
        t_epoch = time.perf_counter()
        probe.train()
        if sampler is not None:
            sampler.set_epoch(epoch)
            order = torch.tensor([i for i, _ in sampler], device=device)
        else:
            order = torch.from_numpy(np.random.default_rng([opts.seed & 0xFFFFFFFF, epoch, 0x11E]).permutation(n)).to(device)
        loss_sum, correct = 0.0, 0
        for b in range(steps):
            idx = order[b * opts.batch_size:(b + 1) * opts.batch_size]
            logits = probe(x_train[idx])
            loss = criterion(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            updates += 1
            if scheduler is not None:
                scheduler.step_update(num_updates=updates)
            loss_sum += float(loss.detach()) * len(idx)
            correct += int((logits.detach().argmax(1) == y_train[idx]).sum())
        if scheduler is not None:
            scheduler.step(epoch + 1)
        secs = time.perf_counter() - t_epoch
        row = {"epoch": epoch + 1, "train_loss": loss_sum / n, "train_acc": correct / n, "val_loss": None,
               "val_acc": None, "lr": float(optimizer.param_groups[0]["lr"]), "images_per_s": n / secs if secs else None}
        fold()
        if val_items:
            probe.eval()
            with torch.inference_mode():
                v = probe(x_val).float().cpu().numpy()
            yv = y_val.cpu().numpy()
            row["val_loss"], row["val_acc"] = cross_entropy(v, yv), float((v.argmax(1) == yv).mean())
        row["epoch_time_s"] = time.perf_counter() - t_epoch
        history.append(row)
        value = row[monitor]
        better = best_value is None or (value < best_value - opts.min_delta if monitor.endswith("loss")
                                        else value > best_value + opts.min_delta)
        if better:
            best_value, best_epoch, stale = value, epoch + 1, 0
            best_state = {kk: v.detach().to("cpu", copy=True) for kk, v in model.state_dict().items()}
            if best_path is not None:
                ckpt_io.save_checkpoint(best_path, {**meta, "epoch": epoch, "history": history, "state_dict": best_state,
                                                    "best": {"monitor": monitor, "value": value, "epoch": epoch + 1},
                                                    "train_state": None})
        else:
            stale += 1
        patience = opts.early_stopping_patience
        stopped_early = bool(patience and val_items and stale >= patience and epoch + 1 < opts.epochs)
        if last_path is not None:
            ckpt_io.save_checkpoint(last_path, {**meta, "epoch": epoch, "history": history, "state_dict": model.state_dict(),
                                                "stopped_early": stopped_early, "train_state": None,
                                                "best": {"monitor": monitor, "value": best_value, "epoch": best_epoch,
                                                         "stale": stale}})
        log(f"[train] epoch {epoch + 1}/{opts.epochs}  train loss {row['train_loss']:.4f} acc {row['train_acc']:.3f}"
            + (f"  val loss {row['val_loss']:.4f} acc {row['val_acc']:.3f}" if row["val_loss"] is not None else "")
            + f"  lr {row['lr']:.2e}" + ("  *" if better else ""))
        if stopped_early:
            break
    return {"history": history, "best_epoch": best_epoch, "best_state": best_state, "stopped_early": stopped_early,
            "best_checkpoint": str(best_path) if best_path is not None and best_path.is_file() else None,
            "last_checkpoint": str(last_path) if last_path is not None and last_path.is_file() else None}
