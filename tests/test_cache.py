"""vetset's cache folder (core/cache.py) when its files were truncated, emptied or edited by hand:
each entry is rebuilt, never trusted or crashed on."""

from __future__ import annotations

import base64
import gzip
import json
from importlib.metadata import version

import pytest

from vetset.core.cache import cached_text


def test_cached_text_rebuilds_an_entry_that_fails_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("VETSET_CACHE_DIR", str(tmp_path))
    (tmp_path / "e.txt").write_text("broken")
    assert cached_text("e.txt", lambda: "good", valid=lambda t: t == "good") == "good"
    assert (tmp_path / "e.txt").read_text() == "good"
    assert cached_text("e.txt", lambda: "other", valid=lambda t: t == "good") == "good"  # kept when valid


@pytest.mark.parametrize("stored", ["[]", "null", '{"models": "resnet10t"}', '{"models": [1]}', "", '{"mod'])
def test_timm_names_cache_edited_by_hand_is_rebuilt(tmp_path, monkeypatch, stored):
    """`recipes validate` read the cached timm lists with dict methods: a file holding `[]` or `null`
    crashed it with an AttributeError traceback."""
    from vetset.plugins.train import _catalog

    monkeypatch.setenv("VETSET_CACHE_DIR", str(tmp_path))
    path = tmp_path / f"timm-{version('timm')}-names.json"
    path.write_text(stored)
    _catalog.timm_catalog.cache_clear()
    try:
        assert _catalog.known_model("resnet10t") and _catalog.known_model("resnet18.a1_in1k")
        assert _catalog.known_optimizer("adamw")
    finally:
        _catalog.timm_catalog.cache_clear()
    data = json.loads(path.read_text())
    assert "resnet10t" in data["models"] and "adamw" in data["optimizers"]


@pytest.mark.parametrize("damage", ["truncate", "empty", "not_base64"])
def test_plotly_cache_damaged_is_rebuilt(tmp_path, monkeypatch, damage):
    """A truncated plotly.js cache was embedded as it was into every report (plots never drawn)."""
    from plotly.offline import get_plotlyjs

    from vetset.plugins.report import page

    monkeypatch.setenv("VETSET_CACHE_DIR", str(tmp_path))
    page.plotly_js_gzip_b64.cache_clear()
    good = page.plotly_js_gzip_b64()
    path = tmp_path / f"plotly-{version('plotly')}.js.gz.b64"
    assert path.read_text() == good
    path.write_text({"truncate": good[: len(good) // 2], "empty": "", "not_base64": "<html>" + good[6:]}[damage])
    page.plotly_js_gzip_b64.cache_clear()
    try:
        text = page.plotly_js_gzip_b64()
    finally:
        page.plotly_js_gzip_b64.cache_clear()
    assert gzip.decompress(base64.b64decode(text)).decode("utf-8") == get_plotlyjs()
    assert path.read_text() == text
