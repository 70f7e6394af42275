"""Which backbone embeds the images: a weights file, cached pretrained weights, or this run's checkpoint.

The backbone is ``timm.create_model(name, num_classes=0)``: the classifier is removed and
the model returns its pooled features (``model.num_features`` floats per image). Where the
weights come from, in order (:func:`resolve_backbone`):

1. ``weights``: a vetset checkpoint (``best.pt``; its model name and data config are
   used), or a timm/PyTorch state dict / ``.safetensors`` file for ``model_name``;
2. ``model_name``'s pretrained weights, as the train stage's ``pretrained: auto`` gets them
   (:mod:`vetset.plugins.train.weights`: the Hugging Face Hub when it answers, else its local
   cache);
3. this run's trained checkpoint, ``<out>/train/best.pt``.

Without any of them there is no backbone: randomly initialised features describe no image
content, so the embedding checks are skipped with a sentence saying why.

``weights_digest`` (SHA-256 of the weights file, first 16 hex) and the preprocessing go into
the feature store's key, so retrained weights never reuse stale features.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vetset.core.errors import RecipeError

if TYPE_CHECKING:
    from vetset.plugins.embed.options import EmbedOptions

#: The checkpoint the train stage writes, relative to the run folder.
RUN_CHECKPOINT = Path("train") / "best.pt"


@dataclass
class Backbone:
    """A feature extractor and what identifies its features.

    Attributes:
        model: the ``torch.nn.Module`` (``num_classes=0``), in eval mode, on CPU.
        model_name: timm model name.
        source: ``"weights"`` (a file given in the options), ``"pretrained"`` (cached timm
            weights) or ``"checkpoint"`` (this run's ``train/best.pt``).
        weights_file: the file the weights came from.
        weights_digest: first 16 hex of the file's SHA-256.
        data_config: ``timm.data.resolve_data_config`` output (``input_size``,
            ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``), JSON-able.
        trained_on: for a vetset checkpoint, its class list (else ``None``).
    """

    model: Any
    model_name: str
    source: str
    weights_file: str
    weights_digest: str
    data_config: dict[str, Any]
    trained_on: list[str] | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """One line: model, where the weights came from, input size."""
        size = self.data_config.get("input_size", [3, 0, 0])
        origin = {"weights": "weights file", "pretrained": "pretrained weights",
                  "checkpoint": "this run's checkpoint"}[self.source]
        return f"{self.model_name} ({origin} {self.weights_file}, {size[-1]} px, {self.model.num_features}-d features)"


def file_digest(path: str | Path) -> str:
    """First 16 hex characters of the SHA-256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _jsonable(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}


def _data_config(model: Any, base: dict[str, Any] | None, img_size: int | None) -> dict[str, Any]:
    from timm.data import resolve_data_config

    args: dict[str, Any] = dict(base or {})
    if img_size:
        args["input_size"] = (3, int(img_size), int(img_size))
    return _jsonable(resolve_data_config(args=args, model=model))


def load_backbone_file(path: str | Path, model_name: str | None, img_size: int | None = None,
                       option: str = "stages.embed.weights", source: str = "weights") -> Backbone:
    """A :class:`Backbone` from a vetset checkpoint or a state-dict / safetensors file.

    A vetset checkpoint brings its model name, class list and the data config it was
    trained with (its input size and normalisation); other files need ``model_name``.

    Raises:
        RecipeError: the file is missing or unreadable, or its tensors do not fit the model.
    """
    import timm
    import torch

    from vetset.plugins.train.checkpoint import is_vetset_checkpoint, load_weights_into

    p = Path(path).expanduser()
    if not p.is_file():
        raise RecipeError(f"{option}: file {p} does not exist.")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj: Any = load_file(str(p))
    else:
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise RecipeError(f"{option}: {p} cannot be read with torch.load(weights_only=True): {exc}") from None
    base_cfg, classes = None, None
    if is_vetset_checkpoint(obj):
        model_name = obj["model_name"]
        base_cfg = {k: v for k, v in (obj.get("data_config") or {}).items()
                    if k in ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")}
        classes = list(obj.get("classes") or [])
        state = obj["state_dict"]
    else:
        if not model_name:
            raise RecipeError(f"{option}: {p} is a plain state dict; set stages.embed.model_name to its timm model.")
        state = obj.get("state_dict", obj) if isinstance(obj, dict) else obj
    if not timm.is_model(str(model_name).split(".")[0]):
        raise RecipeError(f"{option}: {model_name!r} is not a timm model name.")
    model = timm.create_model(model_name, pretrained=False, num_classes=0)
    missing = load_weights_into(model, state, log=lambda _m: None)
    if len(missing) > len(model.state_dict()) // 2:
        raise RecipeError(f"{option}: {p} does not fit {model_name}: {len(missing)} of "
                          f"{len(model.state_dict())} tensors found no match (e.g. {missing[0]}).")
    return Backbone(model.eval(), str(model_name), source, str(p.resolve()), file_digest(p),
                    _data_config(model, base_cfg, img_size), classes)


def _pretrained(model_name: str, img_size: int | None) -> tuple[Backbone | None, str]:
    """``model_name``'s pretrained weights through the train plugin's resolver
    (:func:`vetset.plugins.train.weights.create_with_weights`, ``pretrained="auto"``: the Hub
    when it answers, else the local cache, else none), or ``None`` and the reason."""
    from vetset.plugins.train.weights import create_with_weights

    model, info = create_with_weights(model_name, 0, pretrained="auto", log=lambda _m: None,
                                      option_prefix="stages.embed.")
    if info.get("source") == "none":
        return None, f"no pretrained weights for {model_name!r} ({info.get('reason')})"
    file = info.get("file")
    digest = file_digest(file) if file and Path(file).is_file() else str(info.get("pretrained_tag"))
    return Backbone(model.eval(), model_name, "pretrained", str(file or info.get("hf_hub_id")), digest,
                    _data_config(model, None, img_size)), ""


def _sources(options: EmbedOptions, out_dir: str | Path | None, tried: list[str]) -> Iterator[tuple[str, Any]]:
    """Where :func:`resolve_backbone` looks for weights, in its order, without loading any:
    ``("file", path)``, ``("pretrained", model name)``, ``("checkpoint", path)``; a place
    that has none adds its sentence to ``tried``."""
    if options.weights:
        yield "file", options.weights
        return
    if options.pretrained and options.model_name:
        from vetset.plugins.train.weights import no_pretrained_weights_here

        nowhere = no_pretrained_weights_here()  # decides without importing timm/torch (seconds) when it can
        if nowhere:
            tried.append(f"no pretrained weights for {options.model_name!r} (pretrained: true, but {nowhere})")
        else:
            yield "pretrained", options.model_name
    if options.use_run_checkpoint and out_dir is not None:
        ckpt = Path(out_dir) / RUN_CHECKPOINT
        if ckpt.is_file():
            yield "checkpoint", ckpt
        else:
            tried.append(f"no trained checkpoint at {ckpt}")


def _last_pretrained_file(out_dir: Path, model_name: str) -> str | None:
    """The pretrained weights file the last run in ``out_dir`` loaded for ``model_name``."""
    import json

    try:
        with open(Path(out_dir) / "result.json", encoding="utf-8") as f:
            used = ((json.load(f).get("stages") or {}).get("embed") or {}).get("backbone") or {}
    except (OSError, ValueError, AttributeError):
        return None
    file = used.get("weights_file")
    if used.get("source") != "pretrained" or used.get("model_name") != model_name or not file \
            or not Path(file).is_file():
        return None
    return str(file)


def _no_backbone(tried: list[str]) -> str:
    return ("no backbone with trained weights (" + "; ".join(tried or ["none allowed by the options"])
            + "): random weights describe no image content, so the embedding checks were skipped; set "
            "stages.embed.weights to a weights file or checkpoint, copy a Hugging Face cache that holds the "
            "pretrained weights (HF_HUB_CACHE), or add a train stage before embed in the recipe.")


def resolve_backbone(options: EmbedOptions, out_dir: str | Path | None) -> tuple[Backbone | None, str]:
    """The backbone the options and the run folder allow, or ``None`` and the reason.

    Args:
        options: ``stages.embed`` options (``weights``, ``model_name``, ``pretrained``,
            ``use_run_checkpoint``, ``img_size``).
        out_dir: the run folder (its ``train/best.pt`` is the last resort).

    Returns:
        ``(backbone, "")`` or ``(None, sentence saying why there is none)``.

    Raises:
        RecipeError: a ``weights`` file that is missing or does not fit.
    """
    tried: list[str] = []
    for kind, where in _sources(options, out_dir, tried):
        if kind == "file":
            return load_backbone_file(where, options.model_name, options.img_size), ""
        if kind == "checkpoint":
            return load_backbone_file(where, None, options.img_size, option="train/best.pt", source="checkpoint"), ""
        bb, why = _pretrained(where, options.img_size)
        if bb is not None:
            return bb, ""
        tried.append(why)
    return None, _no_backbone(tried)


def pretrained_looked_for(model_name: str) -> dict[str, Any] | None:
    """Where :func:`vetset.plugins.train.weights.cached_pretrained_file` looks for
    ``model_name``'s pretrained weights: ``{"model_name", "hub_cache", "torch_hub",
    "paths": [the Hugging Face cache folder of its ``hf_hub_id``, torch hub's file for its
    ``url``, its config ``file``]}``, recorded by an embed stage that skipped for want of
    them so that :func:`reuse_key` can tell without timm whether they arrived; ``None``
    when timm has no pretrained config for it. Imports timm (the caller has)."""
    from vetset.plugins.train.weights import hub_cache_dir, pretrained_cfg_of, torch_hub_dir

    try:
        cfg = pretrained_cfg_of(model_name)
    except RecipeError:
        return None
    if cfg is None:
        return None
    paths = []
    if cfg.get("hf_hub_id"):
        repo = str(cfg["hf_hub_id"]).partition("@")[0]
        paths.append(str(Path(hub_cache_dir()) / ("models--" + repo.replace("/", "--"))))
    if cfg.get("url"):
        paths.append(str(torch_hub_dir() / "checkpoints" / Path(str(cfg["url"]).split("?")[0]).name))
    if cfg.get("file"):
        paths.append(str(Path(cfg["file"]).expanduser()))
    return {"model_name": model_name, "hub_cache": hub_cache_dir(), "torch_hub": str(torch_hub_dir()), "paths": paths}


def _still_missing(out_dir: Path, model_name: str) -> list[str] | None:
    """The places the last run in ``out_dir`` looked for ``model_name``'s pretrained weights
    in vain (:func:`pretrained_looked_for`, in its ``result.json``) when they are all still
    empty, with the same caches and the Hub still not to be asked (``HF_HUB_OFFLINE``, or
    no answer: :func:`vetset.plugins.train.weights.hub_reachable`); else ``None``."""
    import json

    from vetset.plugins.train.weights import hub_cache_dir, hub_offline, hub_reachable, torch_hub_dir

    try:
        with open(Path(out_dir) / "result.json", encoding="utf-8") as f:
            block = (json.load(f).get("stages") or {}).get("embed") or {}
        looked = block.get("pretrained_looked_for") or {}
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(looked, dict) or not block.get("skipped") or looked.get("model_name") != model_name \
            or looked.get("hub_cache") != hub_cache_dir() or looked.get("torch_hub") != str(torch_hub_dir()):
        return None
    paths = looked.get("paths")
    if not isinstance(paths, list) or not paths or any(os.path.exists(str(p)) for p in paths):
        return None
    if not hub_offline() and hub_reachable():
        return None  # timm would download them now
    return [str(p) for p in paths]


def reuse_key(options: EmbedOptions, out_dir: Path) -> dict[str, Any] | None:
    """The embed stage's :attr:`vetset.core.registry.Stage.reuse_key`: the weights
    :func:`resolve_backbone` would load, as ``[path, size, mtime_ns]`` of their file, or
    the sentence it would skip the stage with; ``None`` (the run goes in full) when the
    file is gone.

    Pretrained weights are named by timm's resolver, which imports torch; the key is then
    the file the last run in ``out_dir`` loaded for this model (its ``result.json``), while
    it is still there, or, when the last run found none, the places it looked in
    (:func:`pretrained_looked_for`) while they are still empty (the next source is then
    tried, as :func:`resolve_backbone` does). A newer upload of the same pretrained tag on
    the Hub is not looked for: ``--force`` runs in full.
    """
    tried: list[str] = []
    for kind, where in _sources(options, out_dir, tried):
        if kind == "pretrained":
            file = _last_pretrained_file(out_dir, str(where))
            if file is None:
                missing = _still_missing(out_dir, str(where))
                if missing is None:
                    return None
                tried.append(f"no pretrained weights for {where!r} in {', '.join(missing)}")
                continue
            where = file
        try:
            st = Path(where).expanduser().stat()
        except OSError:
            return None
        return {kind: [str(Path(where).expanduser().resolve()), st.st_size, st.st_mtime_ns]}
    return {"skipped": _no_backbone(tried)}
