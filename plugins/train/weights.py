"""Where a model's weights come from: the Hugging Face Hub through timm, its local cache, a
local file, or a vetset checkpoint; or nowhere (random initialisation).

:func:`create_with_weights` is the one entry point (the train stage, and any pass that needs
a backbone: ``num_classes=0`` gives pooled features); :func:`pretrained_status` answers
"can this tag's weights be had here?" without building a model.

timm's own path for ``pretrained=True`` (timm 1.0, ``timm/models/_builder.py`` and
``_hub.py``), which ``pretrained: true`` follows::

    timm.create_model(name, pretrained=True)
      -> build_model_with_cfg -> load_pretrained(model, pretrained_cfg, num_classes)
      -> _resolve_pretrained_source(cfg): cfg["file"] if set ("file"), else cfg["hf_hub_id"]
         ("hf-hub"; every current timm weight has one: "timm/<arch>.<tag>"), else cfg["url"]
      -> load_state_dict_from_hf(hf_hub_id): huggingface_hub.hf_hub_download of
         "model.safetensors" (else "pytorch_model.bin", read with weights_only=True)
      -> classifier weights dropped when num_classes differs from the tag's (1000 for
         ImageNet-1k), then model.load_state_dict(strict=False for that case)

``hf_hub_download`` keeps files in the standard cache, ``HF_HUB_CACHE`` (default
``$HF_HOME/hub``, ``HF_HOME`` default ``~/.cache/huggingface``), laid out as
``models--timm--<arch>.<tag>/snapshots/<commit>/model.safetensors`` with
``refs/main`` holding ``<commit>``. Online it asks the Hub for the current commit (a HEAD
request) and downloads what is missing; with ``HF_HUB_OFFLINE=1`` it returns the cached
file or fails at once. A tagged name (``resnet18.a1_in1k``) picks that tag, an untagged one
the architecture's default tag (timm's ``get_pretrained_cfg``).

What vetset adds around it, so that deciding never stalls an offline machine:
``huggingface_hub`` reads ``HF_HUB_OFFLINE`` once, at import; without it, a machine with no
network retries each request five times with exponential backoff before giving up. So unless
``HF_HUB_OFFLINE`` is set, one HEAD request to ``HF_ENDPOINT`` (default
``https://huggingface.co``, proxies from the environment as ``huggingface_hub`` uses them)
decides, bounded by :data:`PROBE_TIMEOUT_S` and run in a daemon thread (name resolution
has no timeout of its own); its answer is kept for :data:`PROBE_TTL_S`. Reachable: timm's
path above, unchanged. Not reachable but cached: the cached file is handed to timm as
``pretrained_cfg_overlay=dict(file=...)`` (the same loader, without the network).
Neither: no weights (``pretrained: auto`` trains from scratch; ``pretrained: true`` fails
in one sentence naming the tag and both ways out).

Files are read without unpickling arbitrary objects: ``safetensors``, or
``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from vetset.core.errors import RecipeError

#: Seconds one reachability check of the Hub may take (connect + first response).
PROBE_TIMEOUT_S = 3.0
#: Seconds a reachability answer is reused within one process.
PROBE_TTL_S = 300.0
#: Hub filenames timm looks for, in its order (``_hub.load_state_dict_from_hf``).
HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")

Pretrained = bool | Literal["auto"]
_probe_cache: dict[str, tuple[float, bool]] = {}
#: Requests :func:`start_hub_probe` began: endpoint -> (thread, its answer list, deadline).
_probe_pending: dict[str, tuple[threading.Thread, list[bool], float]] = {}


def _hub_constants() -> Any:
    from huggingface_hub import constants

    return constants


def hub_offline() -> bool:
    """Whether ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, as ``huggingface_hub`` reads it."""
    return bool(_hub_constants().HF_HUB_OFFLINE)


def hub_cache_dir() -> str:
    """The Hugging Face hub cache folder in use (``HF_HUB_CACHE``, default ``$HF_HOME/hub``)."""
    return str(_hub_constants().HF_HUB_CACHE)


def start_hub_probe(timeout: float = PROBE_TIMEOUT_S) -> None:
    """Begin :func:`hub_reachable`'s request now, in its daemon thread, without waiting for it.

    A later :func:`hub_reachable` in this process takes the answer (waiting at most what is
    left of ``timeout`` + 0.5 s), so the request overlaps with other work (the embed stage
    starts it when the dataset is loaded, and needs the answer only after the audit). Does
    nothing when ``HF_HUB_OFFLINE`` is set, when an answer is cached, or when a request is
    already under way.
    """
    if hub_offline():
        return
    endpoint = str(_hub_constants().ENDPOINT)
    hit = _probe_cache.get(endpoint)
    if (hit is not None and time.monotonic() - hit[0] < PROBE_TTL_S) or endpoint in _probe_pending:
        return
    answer: list[bool] = []

    def probe() -> None:
        try:
            from huggingface_hub.utils import get_session

            get_session().head(endpoint, timeout=timeout, follow_redirects=False)
            answer.append(True)
        except Exception:
            answer.append(False)

    thread = threading.Thread(target=probe, name="vetset-hub-probe", daemon=True)
    _probe_pending[endpoint] = (thread, answer, time.monotonic() + timeout + 0.5)
    thread.start()


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the Hugging Face Hub answers an HTTP request within ``timeout`` seconds.

    ``False`` without asking when ``HF_HUB_OFFLINE`` is set. Any HTTP answer (even an error
    status) counts as reachable; a DNS failure, refused connection, or no answer in time
    does not. The request runs in a daemon thread, so a resolver that hangs cannot hold
    the caller past ``timeout`` + 0.5 s; a request :func:`start_hub_probe` began earlier is
    waited for instead of asking again. Answers are cached per endpoint for
    :data:`PROBE_TTL_S` seconds.
    """
    if hub_offline():
        return False
    endpoint = str(_hub_constants().ENDPOINT)
    hit = _probe_cache.get(endpoint)
    if hit is not None and time.monotonic() - hit[0] < PROBE_TTL_S:
        return hit[1]
    start_hub_probe(timeout)
    thread, answer, deadline = _probe_pending.pop(endpoint)
    thread.join(max(0.0, deadline - time.monotonic()))
    ok = bool(answer and answer[0])
    _probe_cache[endpoint] = (time.monotonic(), ok)
    return ok


def pretrained_cfg_of(model_name: str) -> dict[str, Any] | None:
    """timm's pretrained config of ``model_name`` (its tag, or the default tag) as a dict, or ``None``.

    Raises:
        RecipeError: the tag does not exist for the architecture.
    """
    import timm.models

    try:
        cfg = timm.models.get_pretrained_cfg(model_name)
    except RuntimeError as exc:  # timm: "Invalid pretrained tag (x) for arch."
        tags = timm.list_pretrained(model_name.split(".")[0] + ".*")
        raise RecipeError(f"stages.train.model_name: {exc} Tags: {', '.join(tags) or 'none'}.") from None
    if cfg is None:
        return None
    return cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)


def pretrained_tag(model_name: str) -> str | None:
    """``<arch>.<tag>`` of the weights ``pretrained=True`` would load (``resnet18`` -> ``resnet18.a1_in1k``)."""
    from timm.models import split_model_name_tag

    cfg = pretrained_cfg_of(model_name)
    if cfg is None:
        return None
    arch, tag = split_model_name_tag(model_name)
    return f"{arch}.{tag or cfg.get('tag') or ''}".rstrip(".")


def cached_pretrained_file(model_name: str) -> str | None:
    """Path of ``model_name``'s pretrained weights if already on this machine, else ``None``.

    Looks where timm would read them: the Hugging Face hub cache for the config's
    ``hf_hub_id`` (revision after ``@``, else ``main``; ``model.safetensors`` then
    ``pytorch_model.bin``, or the config's ``hf_hub_filename``), then torch hub's
    ``checkpoints`` folder for a config ``url``. Never touches the network.
    """
    cfg = pretrained_cfg_of(model_name)
    if cfg is None:
        return None
    if cfg.get("file") and Path(cfg["file"]).is_file():
        return str(cfg["file"])
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import try_to_load_from_cache

        repo, _, revision = hub_id.partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HUB_FILENAMES)
        for filename in names:
            try:
                found = try_to_load_from_cache(repo, filename, revision=revision or None)
            except Exception:  # an unreadable cache folder is a cache miss
                found = None
            if isinstance(found, str) and os.path.isfile(found):
                return found
    url = cfg.get("url")
    if url:
        import torch.hub

        cached = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if cached.is_file():
            return str(cached)
    return None


def torch_hub_dir() -> Path:
    """torch hub's folder without importing torch: ``$TORCH_HOME/hub``, ``TORCH_HOME`` default
    ``$XDG_CACHE_HOME/torch`` (``~/.cache/torch``), as ``torch.hub.get_dir()`` computes it
    when ``torch.hub.set_dir`` was not called."""
    home = os.getenv("TORCH_HOME", os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch"))
    return Path(os.path.expanduser(home)) / "hub"


def no_pretrained_weights_here(probe_timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why no pretrained weights of any model can be had here, or ``None`` when some might.

    Decided without importing timm or torch (several seconds), so a stage that only wants
    weights when they exist can skip cheaply. Conservative: ``None`` as soon as the Hugging
    Face hub cache (:func:`hub_cache_dir`) holds any ``models--*`` repository or torch hub's
    ``checkpoints`` folder (:func:`torch_hub_dir`) any file, whichever model they belong
    to, or the Hub answers (:func:`hub_reachable`); :func:`pretrained_status` then decides
    for the model.

    Returns:
        The reason in :func:`create_with_weights`' words (``"HF_HUB_OFFLINE is set and they
        are not cached"`` or ``"the Hugging Face Hub cannot be reached and they are not
        cached"``), or ``None``.
    """
    if weights_cached_somewhere():
        return None
    if hub_offline():
        return "HF_HUB_OFFLINE is set and they are not cached"
    if hub_reachable(probe_timeout):
        return None
    return "the Hugging Face Hub cannot be reached and they are not cached"


def weights_cached_somewhere() -> bool:
    """Whether the Hugging Face hub cache holds any ``models--*`` repository or torch hub's
    ``checkpoints`` folder any file (:func:`no_pretrained_weights_here`'s first test; no
    timm or torch import)."""
    with contextlib.suppress(OSError):
        if any(p.name.startswith("models--") for p in Path(hub_cache_dir()).iterdir()):
            return True
    with contextlib.suppress(OSError):
        if any((torch_hub_dir() / "checkpoints").iterdir()):
            return True
    return False


def pretrained_status(model_name: str, probe_timeout: float = PROBE_TIMEOUT_S) -> dict[str, Any]:
    """Whether ``model_name``'s pretrained weights can be had here, and how.

    Returns:
        ``{"pretrained_tag": "<arch>.<tag>" | None (timm has no weights for it),
        "cached_file": path | None, "offline": bool (HF_HUB_OFFLINE), "reachable": bool |
        None (None: not asked, because cached or offline), "available": bool,
        "hub_cache": the cache folder}``. The Hub is asked (at most ``probe_timeout``
        seconds) only when the weights are not cached and ``HF_HUB_OFFLINE`` is unset.
    """
    tag = pretrained_tag(model_name)
    status: dict[str, Any] = {"pretrained_tag": tag, "cached_file": None, "offline": hub_offline(),
                              "reachable": None, "available": False, "hub_cache": hub_cache_dir()}
    if tag is None:
        return status
    status["cached_file"] = cached_pretrained_file(model_name)
    if status["cached_file"] is None and not status["offline"]:
        status["reachable"] = hub_reachable(probe_timeout)
    status["available"] = bool(status["cached_file"] or status["reachable"])
    return status


def unavailable_message(model_name: str, status: dict[str, Any], option: str = "stages.train.pretrained") -> str:
    """One sentence: why ``model_name``'s weights cannot be had, and the two ways out."""
    tag = status.get("pretrained_tag")
    if tag is None:
        return (f"{option}: timm has no pretrained weights for {model_name!r}; pick a model name from "
                "timm.list_pretrained(), or set stages.train.weights to a weights file.")
    why = "HF_HUB_OFFLINE is set" if status.get("offline") else "the Hugging Face Hub cannot be reached"
    return (f"{option}: the weights of {tag} are not in the Hugging Face cache ({status.get('hub_cache')}) and {why}; "
            f"set stages.train.weights to a weights file, or fetch the tag into the cache on a connected machine "
            f"(python -c \"import timm; timm.create_model('{tag}', pretrained=True)\") and copy that cache folder here "
            "(or point HF_HUB_CACHE at it).")


def scratch_advice(model_name: str, status: dict[str, Any] | None = None) -> str:
    """What a user training from scratch is told: weaker results, and how to get the weights."""
    tag = (status or {}).get("pretrained_tag") or pretrained_tag(model_name) or model_name
    return (f"no pretrained weights used: training {model_name} from scratch, so expect far weaker results than "
            f"fine-tuning ImageNet weights; to use them, connect to the internet (the {tag} weights are downloaded "
            f"into the Hugging Face cache), copy a cache that holds them (HF_HUB_CACHE), or set "
            f"stages.train.weights to a weights file")


def _is_checkpoint(obj: Any) -> bool:
    from vetset.plugins.train.checkpoint import is_vetset_checkpoint

    return is_vetset_checkpoint(obj)


def _from_file(model_name: str, num_classes: int, path: Path, option: str, log: Callable[[str], Any],
               model_kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    import timm
    import torch

    from vetset.plugins.train.checkpoint import load_weights_into

    file = str(path.resolve())
    info: dict[str, Any] = {"source": "file", "file": file, "pretrained_tag": None, "hf_hub_id": None}
    if path.suffix.lower() != ".safetensors":
        try:
            obj = torch.load(file, map_location="cpu", weights_only=True)
        except Exception as exc:
            if _is_safetensors(file):  # timm picks the safetensors reader by the file name only
                raise RecipeError(f"{option}: {path} is a safetensors file; give it the .safetensors "
                                  f"extension (timm reads a file as safetensors by its name).") from None
            raise RecipeError(f"{option}: {path} cannot be read with torch.load(weights_only=True) "
                              f"(a safetensors file or a plain state dict is needed): {_cause(exc)}.") from None
        if _is_checkpoint(obj):
            arch = model_name.split(".")[0]
            if obj.get("model_name") not in (model_name, arch) and str(obj.get("model_name")).split(".")[0] != arch:
                raise RecipeError(f"{option}: {path} holds a {obj.get('model_name')} checkpoint, not {model_name}.")
            model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
            fresh = load_weights_into(model, obj["state_dict"], log=log)
            clf = (model.pretrained_cfg or {}).get("classifier") or ()
            clfs = (clf,) if isinstance(clf, str) else tuple(clf)
            head_new = not num_classes or any(n.startswith(c + ".") for n in fresh for c in clfs)
            info.update(source="checkpoint", checkpoint_classes=list(obj.get("classes") or []),
                        checkpoint_model_name=obj.get("model_name"), checkpoint_data_config=obj.get("data_config"),
                        head="new" if head_new else "kept", tensors_not_loaded=len(fresh))
            return model, info
    # timm loads a file non-strictly when the class count differs from the tag's (its
    # classifier is dropped), so a file whose tensor names match nothing (another wrapper
    # key, a "backbone." prefix) would load nothing and train from random weights. The
    # same model built from the same RNG state tells which weights the file replaced.
    rng = torch.get_rng_state()
    reference = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
    torch.set_rng_state(rng)
    try:
        model = timm.create_model(model_name, pretrained=True, num_classes=num_classes,
                                  pretrained_cfg_overlay=dict(file=file), **model_kwargs)
    except Exception as exc:
        raise RecipeError(f"{option}: {path} does not fit {model_name}: {_cause(exc)}.") from None
    kept = _weights_not_loaded(model, reference.state_dict())
    if kept and len(kept) == len(_backbone_weights(model)):
        names = list(timm.models.load_state_dict(file).keys())
        wanted = [n for n, t in model.state_dict().items() if t.ndim >= 2][:2]
        raise RecipeError(f"{option}: {path} gave none of {model_name}'s weights: its tensor names "
                          f"({', '.join(names[:2]) or 'none'}) match none of the model's ({', '.join(wanted)}); "
                          f"save model.state_dict() (a 'state_dict' or 'model' wrapper and a 'module.' prefix "
                          f"are read) or a safetensors file of it.")
    if kept:
        log(f"[train] {path}: {len(kept)} weight tensors of {model_name} are not in the file and keep their "
            f"random initialisation (first: {kept[0]})")
    info.update(head="new", tensors_not_loaded=len(kept))
    return model, info


def _cause(exc: BaseException) -> str:
    """The line of a torch/timm/safetensors error that says what is wrong, at most 200
    characters: torch's weights_only refusal names the blocked global or opcode after a
    paragraph of advice, and ``load_state_dict`` lists mismatches after a header line."""
    lines = [ln.strip().rstrip(":").strip() for ln in str(exc).splitlines() if ln.strip()]
    keys = ("unsupported", "size mismatch", "missing key", "unexpected key")
    telling = [ln for ln in lines if any(k in ln.lower() for k in keys)]
    line = (telling or lines or [type(exc).__name__])[0]
    if line.lower().startswith("weightsunpickler error"):
        line = line.split(":", 1)[-1].strip() or line
    return line[:200].rstrip(".")


def _is_safetensors(file: str) -> bool:
    """Whether ``file`` opens as a safetensors file (its header parses)."""
    from safetensors import safe_open

    try:
        with safe_open(file, framework="pt"):
            return True
    except Exception:
        return False


def _backbone_weights(model: Any) -> list[str]:
    """Names of ``model``'s randomly initialised backbone weights: tensors of 2 or more
    dimensions (convolution and linear weights) outside the classifier."""
    clf = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    clfs = (clf,) if isinstance(clf, str) else tuple(clf)
    return [n for n, t in model.state_dict().items()
            if t.ndim >= 2 and not any(n.startswith(c + ".") for c in clfs)]


def _weights_not_loaded(model: Any, reference: dict[str, Any]) -> list[str]:
    """Backbone weights of ``model`` still equal to ``reference`` (the same model built from
    the same RNG state without weights): the ones a weights file did not replace."""
    import torch

    state = model.state_dict()
    return [n for n in _backbone_weights(model) if n in reference and torch.equal(state[n], reference[n])]


def create_with_weights(model_name: str, num_classes: int, *, pretrained: Pretrained = False,
                        weights: str | os.PathLike | None = None, log: Callable[[str], Any] = print,
                        probe_timeout: float = PROBE_TIMEOUT_S, option_prefix: str = "stages.train.",
                        **model_kwargs: Any) -> tuple[Any, dict[str, Any]]:
    """A timm model with the weights the options ask for, and a record of which were used.

    Order: ``weights`` (a file) wins; else ``pretrained`` (``True``: required, ``"auto"``:
    when they can be had, ``False``: never) loads the pretrained tag's weights the way
    timm does (see the module docstring); else random initialisation (seed it with
    ``torch.manual_seed`` first for reproducible weights).

    Args:
        model_name: a ``timm.list_models()`` name, optionally with a pretrained tag.
        num_classes: classifier outputs; ``0`` builds the model without a classifier, whose
            ``forward`` returns pooled features ``(B, num_features)``.
        pretrained: ``True``, ``"auto"`` or ``False``.
        weights: a ``.safetensors`` file, a timm/PyTorch state dict (``.pth``/``.bin``/``.pt``;
            ``state_dict``/``model``/``state_dict_ema`` wrappers and ``module.`` prefixes are
            handled by timm), or a vetset checkpoint (``<out>/train/best.pt``): its tensors
            are copied where name and shape match, so its backbone is reused and its
            classifier replaced when the class count differs. A timm state dict's classifier
            is dropped (timm's rule) unless ``num_classes`` equals the tag's class count.
        log: one-line status callback.
        probe_timeout: seconds the Hub reachability check may take.
        option_prefix: prefix of the option names in error messages.
        **model_kwargs: passed to ``timm.create_model`` (e.g. ``drop_rate``).

    Returns:
        ``(model, info)``; ``info`` is JSON-able: ``source`` (``"hub"`` fetched or checked
        online, ``"hub_cache"`` read from the cache without the network, ``"file"``,
        ``"checkpoint"`` (a vetset checkpoint), ``"none"``), ``model_name``,
        ``pretrained_tag``, ``hf_hub_id``, ``file`` (the file read, cached or given),
        ``head`` (``"kept"``: classifier weights loaded, ``"new"``: freshly initialised),
        and with ``source: "none"``, ``reason`` and ``advice`` (one sentence each).

    Raises:
        RecipeError: unknown model name or tag, a ``weights`` file that is missing,
            unreadable or of another architecture, or ``pretrained: true`` when the weights
            cannot be had (:func:`unavailable_message`).
    """
    import timm

    from vetset.plugins.train.options import check_model_name

    check_model_name(model_name)
    base = {"model_name": model_name, "num_classes": int(num_classes)}
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise RecipeError(f"{option_prefix}weights: file {path} does not exist.")
        model, info = _from_file(model_name, num_classes, path, f"{option_prefix}weights", log, model_kwargs)
        return model, {**base, **info}
    if pretrained is False or pretrained is None:
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
        return model, {**base, "source": "none", "pretrained_tag": None, "hf_hub_id": None, "file": None, "head": "new",
                       "reason": "pretrained: false", "advice": scratch_advice(model_name)}
    status = pretrained_status(model_name, probe_timeout)
    tag = status["pretrained_tag"]
    cfg = pretrained_cfg_of(model_name) or {}
    hub = {"pretrained_tag": tag, "hf_hub_id": cfg.get("hf_hub_id")}
    if not status["available"]:
        if pretrained is True:
            raise RecipeError(unavailable_message(model_name, status, f"{option_prefix}pretrained"))
        why = ("timm has no pretrained weights for it" if tag is None else
               "HF_HUB_OFFLINE is set and they are not cached" if status["offline"] else
               "the Hugging Face Hub cannot be reached and they are not cached")
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **model_kwargs)
        return model, {**base, **hub, "source": "none", "file": None, "head": "new",
                       "reason": f"pretrained: auto, but {why}", "advice": scratch_advice(model_name, status)}
    same_head = num_classes == int(cfg.get("num_classes") or 0)
    cached = status["cached_file"]
    online = not status["offline"] and (status["reachable"] or (status["reachable"] is None and hub_reachable(probe_timeout)))
    try:
        if online or status["offline"]:
            # timm's own path: hf_hub_download fetches/refreshes online, reads the cache under HF_HUB_OFFLINE
            model = timm.create_model(model_name, pretrained=True, num_classes=num_classes, **model_kwargs)
            source = "hub" if online else "hub_cache"
            file = cached_pretrained_file(model_name)
        else:
            model = timm.create_model(model_name, pretrained=True, num_classes=num_classes,
                                      pretrained_cfg_overlay=dict(file=cached), **model_kwargs)
            source, file = "hub_cache", cached
    except Exception as exc:
        first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
        if pretrained is True or not cached:
            raise RecipeError(f"{option_prefix}pretrained: the weights of {tag} could not be loaded: {first}") from None
        log(f"[train] loading {tag} from the Hub failed ({first}); using the cached file {cached}")
        model = timm.create_model(model_name, pretrained=True, num_classes=num_classes,
                                  pretrained_cfg_overlay=dict(file=cached), **model_kwargs)
        source, file = "hub_cache", cached
    return model, {**base, **hub, "source": source, "file": file, "head": "kept" if same_head else "new"}


def describe(info: dict[str, Any]) -> str:
    """One line for the console and the report: which weights a model started from."""
    source = info.get("source")
    if source in ("hub", "hub_cache"):
        where = "downloaded or checked online" if source == "hub" else "from the local cache"
        return f"weights: {info.get('pretrained_tag')} (pretrained, Hugging Face Hub {where}: {info.get('file')})"
    if source == "file":
        return f"weights: file {info.get('file')}"
    if source == "checkpoint":
        classes = info.get("checkpoint_classes") or []
        return (f"weights: vetset checkpoint {info.get('file')} ({len(classes)} classes; backbone reused, "
                f"classifier {'kept' if info.get('head') == 'kept' else 'new'})")
    if info.get("reason") == "pretrained: false":
        return "weights: none (random initialisation; pretrained: false)"
    return f"weights: none ({info.get('reason')}); {info.get('advice')}"
