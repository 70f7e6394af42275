"""What timm offers, without importing timm: its model names, pretrained tags and optimizers.

``import timm`` imports torch (several seconds), which ``recipes validate`` and the option
checks before a run should not pay just to look a name up. The lists timm's public API
gives (``timm.list_models()``, ``timm.list_pretrained()``, ``timm.optim.list_optimizers()``)
are kept in vetset's cache folder (:mod:`vetset.core.cache`), named by the installed timm
version (``importlib.metadata``), and built by importing timm once per version.

The lists only ever confirm a name: a name they lack is checked by timm itself (the
callers import timm then), so a stale or edited cache can cost time, never a wrong verdict.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version

from vetset.core.cache import cached_text


@lru_cache(maxsize=1)
def timm_catalog() -> dict[str, frozenset[str]]:
    """``{"models": ..., "pretrained": ..., "optimizers": ...}``: timm's names as sets.

    ``models`` are ``timm.list_models()`` names (architectures, no tag), ``pretrained``
    ``timm.list_pretrained()`` names (``<arch>.<tag>``), ``optimizers``
    ``timm.optim.list_optimizers()``. Empty sets when timm is not installed (callers then
    ask timm); a cached file that is not the lists' JSON is rebuilt.
    """
    try:
        name = f"timm-{version('timm')}-names.json"
    except PackageNotFoundError:
        return {"models": frozenset(), "pretrained": frozenset(), "optimizers": frozenset()}

    def build() -> str:
        import timm
        from timm.optim import list_optimizers

        return json.dumps({"models": timm.list_models(), "pretrained": timm.list_pretrained(),
                           "optimizers": list(list_optimizers())})

    lists = _parse(cached_text(name, build, valid=lambda text: _parse(text) is not None)) or {}
    return {key: frozenset(lists.get(key) or ()) for key in _KEYS}


_KEYS = ("models", "pretrained", "optimizers")


def _parse(text: str) -> dict[str, list[str]] | None:
    """The three name lists of a cached file; ``None`` when it is not the JSON object
    :func:`timm_catalog` writes (truncated, emptied, edited by hand), which is then rebuilt."""
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    lists = {key: data.get(key) for key in _KEYS}
    if not all(isinstance(v, list) and all(isinstance(n, str) for n in v) for v in lists.values()):
        return None
    return lists


def known_model(name: str) -> bool:
    """Whether ``name`` (``arch`` or ``arch.tag``) is surely a timm model name with an existing
    tag; ``False`` means "ask timm", not "unknown"."""
    arch, _, tag = name.partition(".")
    cat = timm_catalog()
    return arch in cat["models"] and (not tag or name in cat["pretrained"])


def known_optimizer(name: str) -> bool:
    """Whether ``name`` is surely a ``timm.optim.list_optimizers()`` name; ``False``: ask timm."""
    return name.lower() in timm_catalog()["optimizers"]
