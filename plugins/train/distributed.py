"""Rank-side pieces of multi-process training: process group, device, sampler, reductions.

:func:`vetset.plugins.train.loop.fit` uses them when it runs under ``torchrun``
(``torch.distributed.run``), which starts one process per GPU (or per CPU share) and sets
``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``. Then:

* the process group uses NCCL on CUDA and gloo on CPU, and rank ``r`` trains on
  ``cuda:LOCAL_RANK`` (:func:`ddp_device`);
* the model is wrapped in ``DistributedDataParallel``; the training set is split by
  :class:`DistributedEpochSampler` (``torch.utils.data.DistributedSampler``, seeded, so the
  same seed gives the same run);
* the validation set is split without padding (``items[rank::world_size]``), each rank sums
  its loss and correct count, and :func:`all_reduce_sums` adds them up: the reported
  accuracy is exactly that of one process evaluating every image once (the padding of
  ``DistributedSampler`` would count some images twice);
* BatchNorm running statistics are averaged across ranks after each epoch with
  ``timm.utils.distribute_bn`` (timm's ``--dist-bn reduce``), so every rank validates and
  rank 0 saves the same weights.

This module imports torch at import time; the training loop imports it lazily.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from vetset.core.errors import RecipeError

#: Longest wait of one collective (e.g. the gradient all-reduce) for a rank that stopped
#: answering; then the waiting rank fails and torchrun stops the others (torch's default
#: is 10 min for NCCL, 30 min for gloo; one value for both keeps behaviour predictable).
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in a (possibly single-process) training.

    Attributes:
        world_size: number of training processes (1 without torchrun).
        rank: this process's global rank, ``0..world_size-1``; rank 0 writes checkpoints,
            history and logs.
        local_rank: rank on this machine; the CUDA device index.
    """

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def primary(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def in_torchrun() -> bool:
    """Whether this process was started by torchrun (or SLURM) with ``WORLD_SIZE`` > 1.

    Uses ``timm.utils.is_distributed_env``.
    """
    from timm.utils import is_distributed_env

    return bool(is_distributed_env())


def ddp_device(option: str, local_rank: int, cuda_count: int, mps_available: bool = False) -> tuple[str, str]:
    """Device and process-group backend of the rank with ``local_rank``.

    Args:
        option: the ``device`` train option (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).
        local_rank: the rank's index on this machine (``LOCAL_RANK``).
        cuda_count: ``torch.cuda.device_count()``.
        mps_available: whether Apple MPS is available (``auto`` never picks it here).

    Returns:
        ``(device, backend)``: ``("cuda:<local_rank>", "nccl")`` when ``option`` is ``auto``
        and CUDA devices exist, or ``option`` asks for CUDA (an index in ``cuda:N`` is
        replaced by ``local_rank``, as ``timm.utils.init_distributed_device`` does: one GPU
        per process); else ``("cpu", "gloo")``.

    Raises:
        RecipeError: ``mps`` (torch.distributed has no MPS backend); CUDA asked for but
            absent; more processes on this machine than CUDA devices (NCCL needs one GPU
            per process).
    """
    kind = option.split(":", 1)[0]
    if kind == "auto":
        kind = "cuda" if cuda_count > 0 else "cpu"
    if kind == "mps":
        raise RecipeError("stages.train.device: mps cannot train on several processes (torch.distributed has no "
                          "MPS backend); use nproc: 1 or device: cpu.")
    if kind == "cuda":
        if cuda_count == 0:
            raise RecipeError(f"stages.train.device: {option!r} asked for, but CUDA is not available here; use auto or cpu.")
        if local_rank >= cuda_count:
            raise RecipeError(f"stages.train.nproc: {local_rank + 1} or more processes on this machine, but it has "
                              f"{cuda_count} CUDA device(s); use at most nproc: {cuda_count} (one GPU per process) "
                              "or device: cpu.")
        return f"cuda:{local_rank}", "nccl"
    if kind != "cpu":
        raise RecipeError(f"stages.train.device: {option!r} is not a device; use auto, cpu, cuda, cuda:N or mps.")
    return "cpu", "gloo"


def init_distributed(option: str) -> tuple[Any, DistContext]:
    """Join the torchrun process group (once) and pick this rank's device.

    Rank, world size and local rank come from ``timm.utils.world_info_from_env``. The
    group is set up with ``init_method="env://"`` (``MASTER_ADDR``/``MASTER_PORT`` from
    torchrun) and :data:`COLLECTIVE_TIMEOUT`; an existing group is reused.

    Args:
        option: the ``device`` train option.

    Returns:
        ``(torch.device, DistContext)``.

    Raises:
        RecipeError: see :func:`ddp_device`.
    """
    from timm.utils import world_info_from_env

    local_rank, rank, world_size = world_info_from_env()
    mps = getattr(torch.backends, "mps", None)
    device, backend = ddp_device(option, local_rank, torch.cuda.device_count() if torch.cuda.is_available() else 0,
                                 bool(mps is not None and mps.is_available()))
    if device.startswith("cuda"):
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=COLLECTIVE_TIMEOUT)
    ctx = DistContext(dist.get_world_size(), dist.get_rank(), local_rank)
    return torch.device(device), ctx


def wrap_ddp(model: Any, device: Any) -> Any:
    """``torch.nn.parallel.DistributedDataParallel`` around ``model`` (already on ``device``)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


class DistributedEpochSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(index, epoch)`` pairs (see ``train_data.ImageDataset``).

    Each rank gets ``ceil(N / world_size)`` indices of a permutation seeded with
    ``seed + epoch`` (torch's own scheme; padded by repeating indices so every rank runs
    the same number of batches, which DDP needs). Call :meth:`set_epoch` before each epoch.
    """

    def __iter__(self):
        return iter([(int(i), self.epoch) for i in super().__iter__()])


def shard(items: Sequence[Any], ctx: DistContext) -> list[Any]:
    """This rank's part of ``items`` without padding: ``items[rank::world_size]`` (lengths differ by at most 1)."""
    return list(items[ctx.rank::ctx.world_size])


def all_reduce_sums(values: Sequence[float], device: Any) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64, exact for counts below 2**53).

    ``timm.utils.reduce_tensor`` averages instead, which is only right when every rank
    holds the same number of images; sums divided by the summed count are always right.
    """
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return [float(v) for v in t.tolist()]


def reduced_val_metrics(logits: Any, targets: Any, expected: int, device: Any) -> tuple[float, float]:
    """``(val_loss, val_acc)`` over every rank's shard: summed loss and correct count over the summed count.

    Args:
        logits: this rank's ``(n, K)`` float32 logits (``n`` may be 0).
        targets: this rank's ``(n,)`` int64 class indices.
        expected: number of validation images over all ranks.

    Returns:
        Mean cross-entropy in nats and accuracy in 0..1, the same on every rank; the
        accuracy equals one process's ``correct / N`` bit for bit.

    Raises:
        RuntimeError: the ranks together evaluated another number of images than
            ``expected`` (a sharding bug; the metrics would be wrong).
    """
    from vetset.plugins.train.inference import cross_entropy

    n = len(targets)
    loss_sum = cross_entropy(logits, targets) * n if n else 0.0
    correct = int((logits.argmax(1) == targets).sum()) if n else 0
    loss_sum, correct, total = all_reduce_sums([loss_sum, correct, n], device)
    if int(total) != expected:
        raise RuntimeError(f"validation covered {int(total)} images across ranks, expected {expected}")
    return loss_sum / total, correct / total


def sync_batchnorm_stats(model: Any, world_size: int) -> None:
    """Average BatchNorm running mean/var over ranks (``timm.utils.distribute_bn(reduce=True)``)."""
    from timm.utils import distribute_bn

    distribute_bn(model, world_size, reduce=True)


def shutdown() -> None:
    """Leave the process group (after a successful run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def rank_from_env() -> int:
    """``RANK`` of this process (0 outside torchrun)."""
    return int(os.environ.get("RANK", "0"))
