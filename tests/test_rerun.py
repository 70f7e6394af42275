"""An unchanged rerun keeps the last result (vetset.core.rerun); any change runs in full."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import run_cli


def _folder(digits_dir: Path, root: Path, per_class: int = 6) -> Path:
    """A small ImageFolder of real digits: 4 classes x ``per_class`` PNGs."""
    for cls in ("0", "1", "2", "3"):
        (root / cls).mkdir(parents=True)
        for f in sorted((digits_dir / "train" / cls).glob("*.png"))[:per_class]:
            shutil.copy(f, root / cls / f.name)
    return root


def _run(data: Path, name: str, out: Path, *extra: str):
    return run_cli("run", "audit", "--data", str(data), "--dataset", name, "--out", str(out), *extra)


KEPT = "nothing changed since the run that finished at"


def test_unchanged_rerun_keeps_the_result_and_any_change_runs_in_full(digits_dir, tmp_path, fresh_name):
    data, out = _folder(digits_dir, tmp_path / "data"), tmp_path / "out"
    first = _run(data, fresh_name, out)
    assert first.returncode == 0, first.stderr
    assert KEPT not in first.stdout
    result = json.loads((out / "result.json").read_text())
    from vetset.core.result_schema import validate_result

    validate_result(result, "result.json")
    inputs = result["inputs"]
    assert inputs["version"] == 1 and inputs["dataset"]["samples"] == 24
    assert set(inputs["stages"]) == {"audit", "embed", "report"}
    assert inputs["stages"]["embed"]["skipped"].startswith("no backbone with trained weights")
    assert "## Skipped\n\n- **embed**: no backbone with trained weights" in (out / "report.md").read_text()
    stamp = (out / "result.json").stat().st_mtime_ns

    again = _run(data, fresh_name, out)
    assert again.returncode == 0, again.stderr
    assert KEPT in again.stdout and result["finished_at"] in again.stdout
    assert "[audit]" not in again.stdout and "the kept run took" in again.stdout
    assert f"report html: {out / 'report.html'}" in again.stdout
    assert (out / "result.json").stat().st_mtime_ns == stamp  # nothing was written

    forced = _run(data, fresh_name, out, "--force")
    assert forced.returncode == 0 and KEPT not in forced.stdout and "[audit]" in forced.stdout

    # a new file in the source: a full run that reads only it
    shutil.copy(sorted((digits_dir / "val" / "1").glob("*.png"))[0], data / "1" / "new.png")
    added = _run(data, fresh_name, out)
    assert added.returncode == 0 and KEPT not in added.stdout
    assert json.loads((out / "result.json").read_text())["inputs"]["dataset"]["samples"] == 25
    assert KEPT in _run(data, fresh_name, out).stdout

    # the report deleted: a full run writes it again
    (out / "report.html").unlink()
    assert KEPT not in _run(data, fresh_name, out).stdout
    assert (out / "report.html").is_file()

    # the dataset changed by someone else (a tag added in FiftyOne): a full run
    import fiftyone as fo

    ds = fo.load_dataset(fresh_name)
    ds.take(1, seed=0).tag_samples("reviewed")
    assert KEPT not in _run(data, fresh_name, out).stdout
    assert KEPT in _run(data, fresh_name, out).stdout

    # the dataset deleted: a full run creates it again
    fo.delete_dataset(fresh_name)
    redo = _run(data, fresh_name, out)
    assert redo.returncode == 0 and KEPT not in redo.stdout and fo.dataset_exists(fresh_name)

    # another recipe option: a full run
    recipe = tmp_path / "audit-min.yaml"
    recipe.write_text("name: audit\nstages:\n  audit:\n    checks:\n      balance:\n        min_images: 5\n"
                      "  embed: {}\n  report: {}\n")
    other = run_cli("run", str(recipe), "--data", str(data), "--dataset", fresh_name, "--out", str(out))
    assert other.returncode == 0, other.stderr
    assert KEPT not in other.stdout
    fo.delete_dataset(fresh_name)


def test_a_kept_run_fails_its_fail_on_gate_as_the_run_did(digits_dir, tmp_path, fresh_name):
    data, out = _folder(digits_dir, tmp_path / "data", per_class=3), tmp_path / "out"
    recipe = tmp_path / "gate.yaml"
    recipe.write_text("name: gate\nstages:\n  audit: {}\n  report: {}\nfail_on:\n  audit.metrics.classes_below_min: 0\n")
    first = run_cli("run", str(recipe), "--data", str(data), "--dataset", fresh_name, "--out", str(out))
    assert first.returncode == 1, first.stdout + first.stderr
    again = run_cli("run", str(recipe), "--data", str(data), "--dataset", fresh_name, "--out", str(out))
    assert again.returncode == 1 and KEPT in again.stdout
    assert "classes_below_min" in again.stderr
    import fiftyone as fo

    fo.delete_dataset(fresh_name)


def test_a_recipe_with_a_stage_without_a_reuse_key_always_runs(hooks, tmp_path):
    from vetset.core.recipe import load_recipe
    from vetset.core.rerun import stage_keys

    audit = load_recipe("audit", hooks)
    assert stage_keys(audit, hooks, tmp_path) is not None
    assert stage_keys(load_recipe("train", hooks), hooks, tmp_path) is None  # training: no key


def test_source_digest_sees_an_edit_a_touch_a_rename_and_a_new_file(digits_dir, tmp_path):
    import os

    from vetset.core.rerun import source_digest

    data = _folder(digits_dir, tmp_path / "data", per_class=2)
    base = source_digest(data)
    assert base == source_digest(data)
    f = sorted((data / "0").iterdir())[0]
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = source_digest(data)
    assert touched != base
    f.rename(f.with_name("renamed.png"))
    assert source_digest(data) not in (base, touched)
    (data / ".ipynb_checkpoints").mkdir()
    assert source_digest(data) != touched
    assert source_digest(tmp_path / "missing") is None


def test_embed_reuse_key_names_the_weights_it_would_load(tmp_path, monkeypatch):
    import os

    from vetset.plugins.embed import backbone
    from vetset.plugins.embed.options import EmbedOptions
    from vetset.plugins.train import weights

    out = tmp_path / "out"
    out.mkdir()
    # offline, nothing cached (the test session's hub cache is empty): the skip sentence
    key = backbone.reuse_key(EmbedOptions(), out)
    assert list(key) == ["skipped"] and "no backbone with trained weights" in key["skipped"]
    # a weights file: its path, size and mtime; a touch changes the key
    w = tmp_path / "w.pt"
    w.write_bytes(b"0" * 64)
    k1 = backbone.reuse_key(EmbedOptions(weights=str(w)), out)
    assert k1 == {"file": [str(w.resolve()), 64, w.stat().st_mtime_ns]}
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 10**9))
    assert backbone.reuse_key(EmbedOptions(weights=str(w)), out) != k1
    assert backbone.reuse_key(EmbedOptions(weights=str(tmp_path / "gone.pt")), out) is None
    # pretrained weights that can be had: the file the last run loaded for this model, else None
    monkeypatch.setattr(weights, "no_pretrained_weights_here", lambda *a, **k: None)
    opts = EmbedOptions()
    assert backbone.reuse_key(opts, out) is None  # no earlier run: only timm's resolver knows
    cached = tmp_path / "hub" / "model.safetensors"
    cached.parent.mkdir()
    cached.write_bytes(b"1" * 32)
    used = {"source": "pretrained", "model_name": opts.model_name, "weights_file": str(cached)}
    (out / "result.json").write_text(json.dumps({"stages": {"embed": {"backbone": used}}}))
    assert backbone.reuse_key(opts, out) == {"pretrained": [str(cached.resolve()), 32, cached.stat().st_mtime_ns]}
    cached.unlink()
    assert backbone.reuse_key(opts, out) is None
