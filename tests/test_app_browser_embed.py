"""The embed stage's brain runs in a real browser: the App's Embeddings panel and "sort by similarity".

40 hymenoptera photos plus a mirrored copy of one of them, embedded by the ``embed`` stage
(a seeded resnet10t weights file at 64 px; with the stage's flip-averaged features a
mirrored copy gets its original's features whatever the weights, which is what this test
relies on; the quality of trained features is measured in ``benchmarks/``). Served by
``recipes app`` to headless Chromium, the test

* selects the original photo and runs the App's own "sort by image similarity" (brain key
  ``vetset_similarity``): the first two samples shown are the photo and its mirrored copy;
* opens the Embeddings panel on brain key ``vetset_embeddings``: one point per sample,
  colour by ``ground_truth.label`` gives the class counts, and the embed stage's fields
  (``outlier_score``, ``embed_group``) are offered as colours.

Helpers (App start/stop, console noise filter) come from ``test_app_browser.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from app_data import subset_tree
from test_app_browser import CHROMIUM, OFFLINE_NOISE, _start_app, _stop

DATASET = "app-hym40-embed"


def _embedded_dataset(hymenoptera_dir: Path, workdir: Path) -> tuple[str, str]:
    """``(dataset name, filepath of the mirrored photo's original)`` after the embed stage."""
    import fiftyone as fo
    import timm
    import torch
    from PIL import Image, ImageOps

    from vetset.core.dataset import load_dataset
    from vetset.plugins.fiftyone_app.api import run_stages

    root = subset_tree(hymenoptera_dir, workdir / "tree")
    original = sorted((root / "train" / "ants").iterdir())[0]
    ImageOps.mirror(Image.open(original).convert("RGB")).save(root / "val" / "ants" / "mirror_copy.jpg", quality=95)
    torch.manual_seed(0)
    weights = workdir / "resnet10t-seed0.pth"
    torch.save(timm.create_model("resnet10t", num_classes=0).state_dict(), weights)
    if fo.dataset_exists(DATASET):
        fo.delete_dataset(DATASET)
    load_dataset(root, name=DATASET)
    run_stages(DATASET, {"embed": {"weights": str(weights), "model_name": "resnet10t", "img_size": 64}},
               out_dir=workdir / "run", log=lambda m: None)
    return DATASET, str(original)


@pytest.mark.browser
def test_embedding_map_and_similarity_sort_in_the_app(hymenoptera_dir, tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
    import fiftyone as fo

    from vetset.plugins.fiftyone_app.launch import install_plugin

    name, original = _embedded_dataset(hymenoptera_dir, tmp_path)
    ds = fo.load_dataset(name)
    assert set(ds.list_brain_runs()) >= {"vetset_similarity", "vetset_embeddings"}
    counts = ds.count_values("ground_truth.label")
    plugins = tmp_path / "plugins"
    install_plugin(plugins)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    console: list[str] = []
    proc, url, server_log = _start_app(name, plugins)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url, wait_until="load", timeout=60_000)
            page.wait_for_selector('[data-cy="looker"]', timeout=60_000)
            page.get_by_text(f"{len(ds)} samples", exact=True).wait_for(timeout=30_000)
            dismiss = page.get_by_text("Dismiss", exact=True)  # the App's own promotional popover
            if dismiss.is_visible():
                dismiss.click()
            try:
                # sort by similarity to the original photo: it comes first, then its mirrored copy
                page.locator('[data-cy="checkbox-filepath"]').click()  # filepaths shown on the thumbnails
                first = page.locator('[data-cy="looker"]').first
                sync_api.expect(first).to_contain_text(original, timeout=30_000)
                first.hover()
                first.locator('[data-cy="looker-checkbox-"]').click()
                page.locator('[data-cy="action-sort-by-similarity"]').click()
                page.get_by_text("Show similar samples", exact=True).click()
                page.get_by_text("Completed").wait_for(timeout=60_000)
                page.screenshot(path=str(shots / "2-similarity-search.png"))
                # the results button only reacts on hover; the event is what a click sends
                page.locator('button[aria-label="Show results"]').dispatch_event("click")
                lookers = page.locator('[data-cy="looker"]')
                sync_api.expect(lookers.nth(1)).to_contain_text("mirror_copy.jpg", timeout=30_000)
                sync_api.expect(lookers.nth(0)).to_contain_text(original)
                page.screenshot(path=str(shots / "3-sorted-by-similarity.png"))
                page.locator('[data-cy="btn-clear-view-bar"]').click()  # back to the whole dataset
                page.get_by_text(f"{len(ds)} samples", exact=True).wait_for(timeout=30_000)
                # the Embeddings panel: the map has one point per sample, coloured by label
                page.locator('[data-cy="new-panel-btn"]').last.click()  # beside the Similarity Search panel
                page.get_by_text("Embeddings", exact=True).click()
                page.get_by_text("vetset_embeddings", exact=True).click()
                page.get_by_text(f"{len(ds)} points", exact=True).wait_for(timeout=30_000)
                page.get_by_text("Color by").click()
                offered = [o.inner_text() for o in page.get_by_role("option").all()]
                assert {"ground_truth.label", "outlier_score", "embed_group"} <= set(offered), offered
                page.get_by_role("option", name="ground_truth.label", exact=True).click()
                for label, n in counts.items():  # the legend: one entry per class with its point count
                    page.get_by_role("button", name=f"{label} {n}", exact=True).wait_for(timeout=30_000)
                page.screenshot(path=str(shots / "1-embeddings-by-label.png"))

            except Exception:
                page.screenshot(path=str(shots / "debug.png"))
                raise
            browser.close()
    finally:
        _stop(proc, server_log)
    unexpected = [m for m in console if not OFFLINE_NOISE.search(m)]
    print(f"screenshots: {shots}")
    assert not unexpected, "browser console errors:\n" + "\n".join(unexpected)
