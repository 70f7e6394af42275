"""The embedding pass on the run's executor: worker processes or Ray tasks, each with its own model copy.

Where the pass runs (:func:`pass_executor`):

* a GPU (``device: auto`` with CUDA visible, or ``device: cuda...``): in the run's own
  process, batched on the GPU (:func:`vetset.plugins.embed.compute.embed_batches`);
  workers would each need the device;
* the ``ray`` executor (``recipes run --executor ray``, or the recipe's ``executor:``):
  Ray tasks, one CPU each, ``IN_FLIGHT_PER_CPU`` chunks per CPU at a time
  (:class:`vetset.core.executor_ray.RayExecutor`);
* the ``local`` executor with ``stages.embed.workers`` >= 2: that many worker processes;
* otherwise (the default on one machine) in-process: torch already spreads one batch over
  every core with its own threads, and each worker process would hold another copy of
  the model.

A worker rebuilds the driver's backbone from a :class:`BackboneSpec` (model name, weights
file, input size; a few hundred bytes), not from a pickled model: the weights file (or the
Hugging Face cache of pretrained weights) must be readable on the workers under the same
path, as the image files are. The worker checks the weights digest and the data config
against the driver's and refuses to embed with anything else. It keeps the model for
the next chunk (one build per process), runs torch with one thread (one CPU per task),
and returns only ``float32`` features ``(n, D)`` and an ``ok`` mask per chunk; the driver
writes them to the feature store's shards as they arrive, so its memory holds at most
the chunks in flight plus one shard.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vetset.core.errors import VetsetError
from vetset.core.executor import current_executor, executor_for, setup_worker_once

if TYPE_CHECKING:
    from vetset.core.executor import Executor
    from vetset.plugins.embed.backbone import Backbone
    from vetset.plugins.embed.options import EmbedOptions

#: Chunks per batch: a task embeds ``CHUNK_BATCHES * batch_size`` images.
CHUNK_BATCHES = 4


@dataclass(frozen=True)
class BackboneSpec:
    """What a worker needs to rebuild the driver's :class:`~vetset.plugins.embed.backbone.Backbone`.

    Attributes:
        source: ``weights``, ``checkpoint`` or ``pretrained`` (the backbone's ``source``).
        model_name: timm model name.
        weights_file: the file the weights came from (for ``pretrained``, the cached file).
        weights_digest: its digest on the driver; a worker whose file differs refuses.
        img_size: the ``img_size`` option (``None``: the backbone's own).
        data_config: the driver's preprocessing, as a sorted tuple of items (hashable).
    """

    source: str
    model_name: str
    weights_file: str
    weights_digest: str
    img_size: int | None
    data_config: tuple

    @classmethod
    def of(cls, backbone: Backbone, img_size: int | None) -> BackboneSpec:
        cfg = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in backbone.data_config.items()))
        return cls(backbone.source, backbone.model_name, backbone.weights_file, backbone.weights_digest, img_size, cfg)


_BUILT: dict[BackboneSpec, Any] = {}  # in a worker process: the backbone of each spec, built once


def rebuild(spec: BackboneSpec) -> Backbone:
    """The backbone ``spec`` describes, built once per process.

    Raises:
        VetsetError: the weights here are not the driver's (another digest or preprocessing),
            or the pretrained weights are not in this machine's cache.
    """
    if spec in _BUILT:
        return _BUILT[spec]
    from vetset.plugins.embed.backbone import _pretrained, load_backbone_file

    if spec.source == "pretrained":
        bb, why = _pretrained(spec.model_name, spec.img_size)
        if bb is None:
            raise VetsetError(f"An embedding worker cannot load the pretrained weights of {spec.model_name}: {why}.")
    else:
        bb = load_backbone_file(spec.weights_file, spec.model_name, spec.img_size, source=spec.source)
    here = BackboneSpec.of(bb, spec.img_size)
    if (here.weights_digest, here.data_config) != (spec.weights_digest, spec.data_config):
        raise VetsetError(f"An embedding worker found other weights or preprocessing for {spec.model_name} at "
                          f"{spec.weights_file} (digest {here.weights_digest}, the run's {spec.weights_digest}); "
                          "every worker must read the same weights file.")
    _BUILT[spec] = bb
    return bb


def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)  # one CPU per worker process or Ray task


@dataclass(frozen=True)
class EmbedChunk:
    """The work function: ``paths -> (features float32 (n, D), ok bool (n,))`` on CPU.

    Rows of files that cannot be decoded are NaN with ``ok`` False, as in
    :func:`~vetset.plugins.embed.compute.embed_batches`, which computes them.
    """

    spec: BackboneSpec
    batch_size: int
    flip: bool
    crops: tuple[float, ...] = ()

    def __call__(self, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        from vetset.plugins.embed.compute import embed_batches

        setup_worker_once(_one_torch_thread)
        bb = rebuild(self.spec)
        feats, oks = [], []
        for _start, f, ok in embed_batches(bb, paths, self.batch_size, self.flip, "cpu", threads=1,
                                               crops=self.crops):
            feats.append(f)
            oks.append(ok)
        return np.concatenate(feats), np.concatenate(oks)


def pass_executor(options: EmbedOptions) -> Executor | None:
    """The executor of the CPU pass, or ``None`` to run in-process (module docstring).

    Raises:
        VetsetError: ``ray`` chosen without the ``ray`` package.
    """
    from vetset.plugins.embed.compute import pick_device

    if pick_device(options.device).type != "cpu":
        return None
    name, _address, _workers = current_executor()
    if name == "ray":
        return executor_for(None, options.workers, preload=("torch", "timm"))
    if options.workers is not None and options.workers >= 2:
        return executor_for(None, options.workers, preload=("torch", "timm"))
    return None


def embed_on_executor(executor: Executor, backbone: Backbone, options: EmbedOptions,
                      paths: Sequence[str]) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield ``(start, features, ok)`` per chunk of ``paths``, in order, computed by ``executor``'s workers.

    Same output as :func:`~vetset.plugins.embed.compute.embed_batches` (chunks of
    ``CHUNK_BATCHES * batch_size`` paths instead of batches); the features agree with the
    in-process pass up to float rounding (another batch composition, one torch thread).
    """
    size = CHUNK_BATCHES * options.batch_size
    chunks = [list(paths[i:i + size]) for i in range(0, len(paths), size)]
    fn = EmbedChunk(BackboneSpec.of(backbone, options.img_size), options.batch_size, options.flip,
                    tuple(options.crops))
    for k, (feats, ok) in enumerate(executor.map(fn, chunks, chunksize=1)):
        yield k * size, feats, ok
