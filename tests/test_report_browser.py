"""The report in a real browser: headless Chromium (Debian's ``chromium``) through playwright.

Opens ``report.html`` from disk, waits for the ``load`` event and for plotly to draw,
then checks every section heading, at least one drawn plot, no console errors and no
network request other than the file itself and ``data:`` URIs. A screenshot is saved
under the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = os.environ.get("VETSET_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def open_report(html_path: Path, screenshot: Path) -> dict:
    """Load the report in headless Chromium; returns headings, plots, console errors, requests."""
    if not CHROMIUM:
        pytest.skip("no chromium installed (apt-get install -y chromium); the browser test needs it")
    from playwright.sync_api import sync_playwright

    errors, requests = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.on("request", lambda r: requests.append(r.url))
            page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
            url = html_path.resolve().as_uri()
            page.goto(url, wait_until="load")
            page.wait_for_selector("html[data-plots='ready']", timeout=60_000)
            page.wait_for_selector(".js-plotly-plot .main-svg", timeout=60_000)
            info = {
                "url": url,
                "headings": page.locator("section.card > h2").all_inner_texts(),
                "toc": page.locator("nav.toc a").all_inner_texts(),
                "plots": page.locator(".js-plotly-plot .main-svg").count(),
                "thumbs_loaded": page.evaluate(
                    "Array.from(document.querySelectorAll('figure.thumb img')).filter(i => i.naturalWidth > 0).length"),
            }
            page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    info["errors"], info["requests"] = errors, requests
    return info


def test_report_renders_in_headless_chromium(hymenoptera_dir, tmp_path_factory, tmp_path):
    """A real audit of 398 photos plus a third-party section and a broken one, opened in Chromium."""
    from report_plugin import BROKEN_TITLE, SECTION_TITLE, audit_run

    if not CHROMIUM:
        pytest.skip("no chromium installed (apt-get install -y chromium); the browser test needs it")
    _, result, _, hooks = audit_run(hymenoptera_dir, tmp_path_factory)
    block = result["stages"]["report"]
    shot = tmp_path / "report.png"
    info = open_report(Path(block["report_html"]), shot)

    shown = [s["title"] for s in block["sections"] if s["status"] != "empty"]
    assert shown[0] == "Overview" and shown[-1] == "Recommended actions"
    assert {SECTION_TITLE, BROKEN_TITLE, "Class balance", "Duplicates and leakage", "Unreadable files"} <= set(shown)
    assert info["headings"] == shown and info["toc"] == shown
    assert info["plots"] >= 4  # balance, coverage x3, sharpness/brightness, acme
    assert info["thumbs_loaded"] == block["thumbnails"] > 12
    assert info["errors"] == []
    assert all(u == info["url"] or u.startswith("data:") for u in info["requests"]), info["requests"]
    assert shot.stat().st_size > 50_000
