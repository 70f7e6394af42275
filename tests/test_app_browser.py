"""End to end in a real browser: ``recipes app`` serves a validated dataset to headless Chromium.

Checks that the App loads the dataset, lists the saved views, opens ``validation_errors``,
a failure slice's view and a retraining round's view with the expected sample counts, shows vetset's operators in the operator browser, and
renders the audit panel. Screenshots go to the test's temp folder; browser console errors
are reported (failed fetches of fonts/analytics from the internet are expected offline and
ignored; any other error fails the test).

Uses Debian's ``chromium`` (``.ci/run`` installs it) driven by Playwright; skips only when
no Chromium is installed.
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from app_data import DATASET, VALIDATE, validated_dataset

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
#: Console messages that are expected on a machine without internet access.
OFFLINE_NOISE = re.compile(r"ERR_NAME_NOT_RESOLVED|ERR_INTERNET_DISCONNECTED|ERR_CONNECTION_REFUSED.*(font|analytics)"
                           r"|fonts\.googleapis|segment|analytics"
                           # the App's event stream, cut when the test opens another dataset's URL
                           r"|ERR_ABORTED\): http://127\.0\.0\.1:\d+/events$", re.I)
VETSET_OPERATORS = ["vetset: audit dataset", "vetset: find label issues", "vetset: plan and apply augmentation",
                    "vetset: train and validate", "vetset: run a recipe", "vetset: open a saved view",
                    "vetset: open the audit panel"]


def _count(n: int) -> str:
    """The App's sample count label ("1 sample", "10 samples")."""
    return f"{n} sample" + ("" if n == 1 else "s")


def _start_app(name: str, plugins: Path) -> tuple[subprocess.Popen, str, list[str]]:
    """``recipes app --dataset NAME`` (with its delegated-operation worker) on a free port,
    sharing this session's database."""
    import fiftyone.core.odm as foo

    from vetset.plugins.fiftyone_app.launch import free_port
    host, db_port = foo.get_db_client().address
    env = dict(os.environ, FIFTYONE_PLUGINS_DIR=str(plugins), FIFTYONE_DATABASE_URI=f"mongodb://{host}:{db_port}",
               PYTHONUNBUFFERED="1")
    exe = Path(sys.executable).parent / "recipes"
    proc = subprocess.Popen([str(exe), "app", "--dataset", name, "--port", str(free_port()),
                             "--address", "127.0.0.1"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue = queue.Queue()
    log: list[str] = []

    def pump():
        for line in proc.stdout:
            log.append(line.rstrip())
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        if line.startswith("App: "):
            return proc, line.split("App: ", 1)[1].strip(), log
    proc.kill()
    raise AssertionError("recipes app printed no URL:\n" + "\n".join(log))


def _stop(proc: subprocess.Popen, log: list[str] | None = None) -> None:
    """SIGTERM (as kill or a service manager sends): recipes app must close the session, its
    server and its delegated-operation worker, as on Ctrl-C."""
    worker = next((int(line.split("pid ", 1)[1].split(",")[0]) for line in (log or [])
                   if line.startswith("delegated-operation worker: pid ")), None)
    if proc.poll() is None:
        proc.send_signal(15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    if worker is not None:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and os.path.exists(f"/proc/{worker}"):
            with open(f"/proc/{worker}/stat") as f:  # a zombie has exited; only its parent's wait is missing
                if f.read().split(") ", 1)[1].startswith("Z"):
                    break
            time.sleep(0.2)
        alive = os.path.exists(f"/proc/{worker}") and not open(f"/proc/{worker}/stat").read().split(") ", 1)[1].startswith("Z")
        assert not alive, f"the delegated-operation worker {worker} outlived recipes app"


def _schedule_label_issues(name: str) -> str:
    """Queue 'find label issues' (fast embeddings mode) as the App's Schedule button does."""
    import fiftyone.operators as foo

    params = {"label_noise__method": "embeddings", "label_noise__n_folds": 3,
              "label_noise__embeddings__model_name": "resnet10t", "label_noise__embeddings__img_size": 64}
    queued = foo.execute_operator("@vetset/vetset/find_label_issues", dataset=name, params=params,
                                  request_delegation=True)
    return queued.result["id"]


def _wait_done(doc_id: str, timeout: float = 120) -> object:
    import fiftyone.operators.delegated as food
    from fiftyone.operators.executor import ExecutionRunState

    dos = food.DelegatedOperationService()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        doc = dos.get(doc_id)
        if doc.run_state in (ExecutionRunState.COMPLETED, ExecutionRunState.FAILED):
            return doc
        time.sleep(1)
    return dos.get(doc_id)


def _iterated_clone(ds, out: Path):
    """A copy of the validated dataset, with failure slices (support 3: 10 val photos per class)
    and one retraining round, run in its own folder ``out`` (the session's dataset stays as it is)."""
    import fiftyone as fo

    from vetset.plugins.fiftyone_app.api import out_dir_of, run_stages

    name = f"{ds.name}-iterate"
    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    clone = ds.clone(name)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(out_dir_of(ds) / "result.json", out / "result.json")  # the train block the round starts from
    info = dict(clone.info or {})
    info["vetset"] = {**(info.get("vetset") or {}), "out_dir": str(out)}
    clone.info = info
    clone.save()
    run_stages(name, {"validate": {**VALIDATE, "slices": {"min_support": 3}},
                      "iterate": {"max_rounds": 1, "n_boot": 200}}, log=lambda m: None)
    clone.reload()
    return clone


@pytest.mark.browser
def test_app_in_headless_chromium(hymenoptera_dir, session_tmp, tmp_path, monkeypatch):
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium installed (apt-get install chromium; .ci/run does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the dev extras")
    import fiftyone as fo
    from fiftyone.core.utils import to_slug

    from vetset.core.result import read_result
    from vetset.plugins.fiftyone_app.api import out_dir_of
    from vetset.plugins.fiftyone_app.launch import install_plugin

    name = validated_dataset(hymenoptera_dir, session_tmp)
    ds = fo.load_dataset(name)
    iterated = _iterated_clone(ds, tmp_path / "iterate-run")
    slice_view, slice_count = next((v, len(iterated.load_saved_view(v))) for v in iterated.list_saved_views()
                                   if v.startswith("validation_errors/slice/"))
    round_views = {v: len(iterated.load_saved_view(v)) for v in ("iterate/round1/fixed", "iterate/round1/broken")}
    round_view = max(round_views, key=round_views.get)
    n_errors = len(ds.load_saved_view("validation_errors"))
    saved = ds.list_saved_views()
    # an issue view whose size differs from validation_errors, to see the click-through land
    issue_view, issue_count = next((v, len(ds.load_saved_view(v))) for v in saved
                                   if v.startswith("validation_errors/") and not v.startswith("validation_errors/slice/")
                                   and 0 < len(ds.load_saved_view(v)) != n_errors)

    plugins = tmp_path / "plugins"
    install_plugin(plugins)
    monkeypatch.setattr(fo.config, "plugins_dir", str(plugins))  # this process queues a vetset operation
    audited_at = read_result(out_dir_of(ds))["finished_at"]
    console: list[str] = []
    shots = tmp_path / "screenshots"
    shots.mkdir()
    proc, url, server_log = _start_app(name, plugins)
    try:
        assert url.endswith(f"/datasets/{DATASET}")
        assert any(line.startswith("delegated-operation worker: pid") for line in server_log)
        doc_id = _schedule_label_issues(name)  # runs in recipes app's delegated-operation worker
        # Let it finish before the browser's audit run: two processes saving views of one dataset
        # at the same moment can lose one (FiftyOne rewrites the whole saved-view list).
        doc = _wait_done(doc_id)
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                         args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.on("console", lambda m: console.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.on("response", lambda r: console.append(f"http {r.status}: {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: console.append(f"request failed ({r.failure}): {r.url}"))
            page.goto(url, wait_until="load", timeout=60_000)
            # the grid shows the dataset's samples
            page.wait_for_selector('[data-cy="looker"]', timeout=60_000)
            page.get_by_text(_count(len(ds)), exact=True).wait_for(timeout=30_000)
            page.wait_for_timeout(500)
            dismiss = page.get_by_text("Dismiss", exact=True)  # the App's own promotional popover
            if dismiss.is_visible():
                dismiss.click()
            page.screenshot(path=str(shots / "1-dataset.png"))

            # saved views are listed; validation_errors opens with its sample count
            page.get_by_text("Unsaved view", exact=True).click()
            for view in saved:
                page.get_by_text(view, exact=True).first.wait_for(timeout=10_000)
            page.screenshot(path=str(shots / "2-saved-views.png"))
            page.get_by_text("validation_errors", exact=True).first.click()
            page.get_by_text(_count(n_errors), exact=True).wait_for(timeout=30_000)
            assert "view=validation-errors" in page.url
            sync_api.expect(page.locator('[data-cy="looker"]')).to_have_count(n_errors, timeout=30_000)
            page.screenshot(path=str(shots / "3-validation-errors.png"))


            # vetset's operators are in the operator browser
            page.keyboard.press("`")
            page.get_by_placeholder("Search operations by name...").fill("vetset")
            for label in VETSET_OPERATORS:
                page.get_by_text(label, exact=True).wait_for(timeout=10_000)
            page.screenshot(path=str(shots / "4-operator-browser.png"))

            # run the audit from its form (immediate execution)
            page.get_by_text("vetset: audit dataset", exact=True).click()
            page.get_by_text("Checks", exact=True).wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "5-audit-form.png"))
            page.get_by_text("Entire dataset", exact=True).click()
            page.get_by_role("button", name="Execute").click()
            try:
                page.get_by_text("Audit finished").wait_for(timeout=60_000)
            except Exception:
                page.screenshot(path=str(shots / "debug-after-execute.png"))
                open(shots / "debug.html", "w").write(page.content())
                raise
            page.screenshot(path=str(shots / "6-audit-done.png"))
            page.keyboard.press("Escape")
            page.keyboard.press("`")
            page.get_by_placeholder("Search operations by name...").fill("vetset")

            # the audit panel opens and shows this dataset's balance and issues
            page.get_by_text("vetset: open the audit panel", exact=True).click()
            page.get_by_text("Class balance per split").wait_for(timeout=30_000)
            try:
                page.get_by_text("validation_errors", exact=True).last.wait_for(timeout=10_000)
            except Exception:
                page.screenshot(path=str(shots / "debug-panel.png"))
                open(shots / "debug-panel.html", "w").write(page.content())
                raise
            page.screenshot(path=str(shots / "7-audit-panel.png"))

            # click-through: an issue row's button loads its saved view in the grid
            row = page.locator("tr", has_text=issue_view)
            row.scroll_into_view_if_needed()
            row.get_by_role("button").click()
            page.get_by_text(_count(issue_count), exact=True).wait_for(timeout=30_000)
            sync_api.expect(page.locator('[data-cy="looker"]')).to_have_count(issue_count, timeout=30_000)
            page.screenshot(path=str(shots / "8-issue-view.png"))

            # on the iterated copy: a failure slice's view and a retraining round's view open with
            # their sample counts, and the panel shows the slice and round tables
            base = url.rsplit("/datasets/", 1)[0] + f"/datasets/{iterated.name}"
            for i, (view, count) in enumerate(((slice_view, slice_count), (round_view, round_views[round_view]))):
                page.goto(f"{base}?view={to_slug(view)}", wait_until="load", timeout=60_000)
                page.get_by_text(view, exact=True).first.wait_for(timeout=30_000)  # the view selector names it
                if count:
                    page.get_by_text(_count(count), exact=True).wait_for(timeout=30_000)
                sync_api.expect(page.locator('[data-cy="looker"]')).to_have_count(count, timeout=30_000)
                page.screenshot(path=str(shots / f"9{'ab'[i]}-{view.replace('/', '_')}.png"))
            page.keyboard.press("Escape")
            page.keyboard.press("`")
            page.get_by_placeholder("Search operations by name...").fill("vetset")
            page.get_by_text("vetset: open the audit panel", exact=True).click()
            for title in ("Failure slices", "Retraining rounds"):
                page.get_by_text(title, exact=False).first.wait_for(timeout=30_000)
            page.screenshot(path=str(shots / "9c-panel-slices-rounds.png"))
            browser.close()
    finally:
        _stop(proc, server_log)
    # the App's audit run rewrote result.json; the scheduled operation ran in the worker
    assert read_result(out_dir_of(ds))["finished_at"] > audited_at
    assert doc.run_state == "completed", (doc.result.error if doc.result else doc.run_state)
    ds.reload()  # the worker process added fields and the label_issues view
    assert doc.result.result["metrics"]["label_noise"]["label_issues"] == len(ds.load_saved_view("label_issues"))
    assert ds.count("label_quality") == 40
    unexpected = [m for m in console if not OFFLINE_NOISE.search(m)]
    print(f"screenshots: {shots}")
    print("browser console errors:", "\n".join(console) or "none")
    assert not unexpected, "browser console errors:\n" + "\n".join(unexpected) + "\nserver:\n" + "\n".join(server_log[-30:])
    assert proc.returncode is not None
