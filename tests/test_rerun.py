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
    assert "done in" in first.stdout  # the summary of a run that failed a gate, as a kept run prints it
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


def test_source_digest_sees_a_file_in_a_linked_class_folder_and_survives_a_link_loop(digits_dir, tmp_path):
    """The loader follows a class folder that is a symbolic link; the digest must too."""
    from vetset.core.dataset import scan_imagefolder
    from vetset.core.rerun import source_digest

    data = _folder(digits_dir, tmp_path / "data", per_class=2)
    elsewhere = tmp_path / "elsewhere" / "7"
    elsewhere.mkdir(parents=True)
    shutil.copy(sorted((digits_dir / "train" / "7").glob("*.png"))[0], elsewhere / "a.png")
    (data / "7").symlink_to(elsewhere, target_is_directory=True)
    items, classes, _ = scan_imagefolder(data)
    assert "7" in classes and sum(i.label == "7" for i in items) == 1  # what the loader reads
    base = source_digest(data)
    shutil.copy(sorted((digits_dir / "train" / "7").glob("*.png"))[1], elsewhere / "b.png")
    assert len(scan_imagefolder(data)[0]) == 10
    added = source_digest(data)
    assert added != base
    (elsewhere / "loop").symlink_to(data, target_is_directory=True)  # a loop: the walk still ends
    looped = source_digest(data)
    assert looped not in (base, added) and looped == source_digest(data)
    # a file link pointed elsewhere: the target is an input
    (data / "0" / "l.png").symlink_to(elsewhere / "a.png")
    first = source_digest(data)
    (data / "0" / "l.png").unlink()
    (data / "0" / "l.png").symlink_to(elsewhere / "b.png")
    assert source_digest(data) != first


def test_source_digest_of_a_manifest_listing_a_missing_file_still_sees_a_label_change(digits_dir, tmp_path):
    from vetset.core.rerun import source_digest

    data = _folder(digits_dir, tmp_path / "data", per_class=2)
    rows = ["filepath,label"] + [f"{p.relative_to(tmp_path)},{p.parent.name}" for p in sorted(data.rglob("*.png"))]
    manifest = tmp_path / "m.csv"
    manifest.write_text("\n".join([*rows, "data/0/missing.png,0"]) + "\n")
    base = source_digest(manifest)
    assert base is not None  # a missing file is an input (the run reports it unreadable), not a reason to give up
    manifest.write_text("\n".join([*rows, "data/0/missing.png,1"]) + "\n")
    assert source_digest(manifest) not in (None, base)


def test_result_digest_equals_for_the_result_and_the_file_written_from_it(tmp_path):
    import numpy as np

    from vetset.core.rerun import result_digest
    from vetset.core.result import read_result, write_json_atomic

    result = {"schema_version": 2, "stages": {"audit": {"counts": {2: np.int64(3), 10: 4}, "mean": np.float32(0.1),
                                                        "pair": (1, 2)}}, "inputs": {"code": "x"}}
    write_json_atomic(tmp_path / "result.json", result)
    back = read_result(tmp_path / "result.json")
    assert result_digest(back) == result_digest(result)
    assert result_digest({**back, "inputs": {"code": "y"}}) == result_digest(result)  # inputs left out
    back["stages"]["audit"]["counts"]["2"] = 5
    assert result_digest(back) != result_digest(result)


def test_read_result_refuses_json_that_is_not_an_object(tmp_path):
    import pytest

    from vetset.core.result import read_result

    (tmp_path / "result.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="holds a JSON list, not an object"):
        read_result(tmp_path)


def test_a_hand_edited_result_json_is_not_kept(digits_dir, tmp_path, fresh_name):
    data, out = _folder(digits_dir, tmp_path / "data", per_class=3), tmp_path / "out"
    assert _run(data, fresh_name, out).returncode == 0
    result = json.loads((out / "result.json").read_text())
    result["stages"]["audit"]["num_images"] = 999  # the inputs record left as it was
    (out / "result.json").write_text(json.dumps(result))
    edited = _run(data, fresh_name, out)
    assert edited.returncode == 0, edited.stderr
    assert KEPT not in edited.stdout and "[audit]" in edited.stdout
    assert json.loads((out / "result.json").read_text())["stages"]["audit"]["num_images"] == 12
    (out / "result.json").write_text("[1, 2]")
    listed = _run(data, fresh_name, out)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr and KEPT not in listed.stdout
    import fiftyone as fo

    fo.delete_dataset(fresh_name)


def test_an_edited_check_or_plugin_file_changes_the_image_pass_key_and_the_code_digest(tmp_path, monkeypatch,
                                                                                      hooks):
    """The image pass reused per-image records computed by the old code (even with --force)
    after a check's compute was edited or its plugin upgraded under the same version."""
    import importlib
    import os

    from vetset.core.rerun import code_digest
    from vetset.plugins.audit._incremental import cache_key

    mod = tmp_path / "vetset_test_edited_check.py"
    mod.write_text("def compute(image, options):\n    return {'x': 1}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = importlib.import_module("vetset_test_edited_check")
    key, code = cache_key(256, [("mine", m.compute, None)]), None
    assert key == cache_key(256, [("mine", m.compute, None)])
    hooks.pm.register(m, name="vetset_test_edited_check")
    try:
        code = code_digest(hooks)
        mod.write_text("def compute(image, options):\n    return {'x': 2}\n")  # same size, later mtime
        st = mod.stat()
        os.utime(mod, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
        assert cache_key(256, [("mine", m.compute, None)]) != key
        assert code_digest(hooks) != code
    finally:
        hooks.pm.unregister(name="vetset_test_edited_check")


def test_embed_reuse_key_keeps_a_skip_while_the_places_looked_in_stay_empty(tmp_path, monkeypatch,
                                                                              hub_offline_cache):
    """A Hugging Face cache holding another model's weights made every rerun of the audit
    recipe run in full (timm and torch imported to find the embed model still missing)."""
    from vetset.plugins.embed import backbone
    from vetset.plugins.embed.options import EmbedOptions

    opts = EmbedOptions()
    (hub_offline_cache / "models--timm--another-model").mkdir()  # weights of some other model are cached
    out = tmp_path / "out"
    out.mkdir()
    assert backbone.reuse_key(opts, out) is None  # no earlier run: only timm's resolver knows
    looked = backbone.pretrained_looked_for(opts.model_name)
    assert looked["paths"][0] == str(hub_offline_cache / "models--timm--resnet50.a1_in1k")
    block = {"skipped": "no backbone ...", "backbone": None, "pretrained_looked_for": looked}
    (out / "result.json").write_text(json.dumps({"stages": {"embed": block}}))
    key = backbone.reuse_key(opts, out)
    assert list(key) == ["skipped"] and str(hub_offline_cache / "models--timm--resnet50.a1_in1k") in key["skipped"]
    assert f"no trained checkpoint at {out / 'train' / 'best.pt'}" in key["skipped"]  # the next source, as resolved
    (hub_offline_cache / "models--timm--resnet50.a1_in1k").mkdir()  # the weights arrive: the run goes in full
    assert backbone.reuse_key(opts, out) is None
    (hub_offline_cache / "models--timm--resnet50.a1_in1k").rmdir()
    assert backbone.reuse_key(opts, out) == key
    assert backbone.reuse_key(EmbedOptions(model_name="resnet18"), out) is None  # another model: not looked for


def test_an_unchanged_rerun_is_kept_when_the_hub_cache_holds_other_models(digits_dir, tmp_path, fresh_name):
    data, out = _folder(digits_dir, tmp_path / "data", per_class=3), tmp_path / "out"
    cache = tmp_path / "hf"
    (cache / "models--timm--another-model").mkdir(parents=True)
    env = {"HF_HUB_CACHE": str(cache), "HF_HOME": str(tmp_path / "hf-home")}
    first = run_cli("run", "audit", "--data", str(data), "--dataset", fresh_name, "--out", str(out), env=env)
    assert first.returncode == 0, first.stderr
    assert "[embed] skipped" in first.stdout
    again = run_cli("run", "audit", "--data", str(data), "--dataset", fresh_name, "--out", str(out), env=env)
    assert again.returncode == 0 and KEPT in again.stdout, again.stdout + again.stderr
    (cache / "models--timm--resnet50.a1_in1k").mkdir()
    arrived = run_cli("run", "audit", "--data", str(data), "--dataset", fresh_name, "--out", str(out), env=env)
    assert arrived.returncode == 0 and KEPT not in arrived.stdout
    import fiftyone as fo

    fo.delete_dataset(fresh_name)


def test_report_reuse_key_sees_the_report_written_outside_the_run_folder(tmp_path):
    """With stages.report.out elsewhere, a deleted report.html was kept as 'report html: <path>'."""
    import os

    from vetset.plugins.report.stage import ReportOptions, reuse_key

    out, rep = tmp_path / "out", tmp_path / "rep"
    out.mkdir()
    rep.mkdir()
    assert reuse_key(ReportOptions(), out) == {} and reuse_key(ReportOptions(out=str(out)), out) == {}
    opts = ReportOptions(out=str(rep))
    assert reuse_key(opts, out) is None  # nothing written there yet
    for name, text in (("report.html", "<html></html>"), ("report.md", "# r\n"), ("result.json", "{}")):
        (rep / name).write_text(text)
    key = reuse_key(opts, out)
    assert [row[0] for row in key["files"]] == [str(rep / n) for n in ("report.html", "report.md", "result.json")]
    assert key["files"][0][1] == 13 and reuse_key(opts, out) == key
    st = (rep / "report.md").stat()
    os.utime(rep / "report.md", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert reuse_key(opts, out) not in (None, key)
    (rep / "report.html").unlink()
    assert reuse_key(opts, out) is None


def test_a_folder_whose_default_dataset_name_is_taken_keeps_its_rerun_too(digits_dir, tmp_path):
    """Without --dataset, a second folder named like the first loads into '<name>-<hash>':
    its unchanged reruns were never kept (the check looked for '<name>' only)."""
    import fiftyone as fo

    from vetset.core.dataset import default_dataset_names

    first = _folder(digits_dir, tmp_path / "a" / "pets", per_class=2)
    second = _folder(digits_dir, tmp_path / "b" / "pets", per_class=3)
    base, own = default_dataset_names(second)
    assert base == "vetset-pets" and own.startswith("vetset-pets-") and len(own) == len(base) + 7
    try:
        assert run_cli("run", "audit", "--data", str(first), "--out", str(tmp_path / "o1")).returncode == 0
        ran = run_cli("run", "audit", "--data", str(second), "--out", str(tmp_path / "o2"))
        assert ran.returncode == 0 and f"this folder uses dataset {own!r}" in ran.stdout, ran.stdout + ran.stderr
        again = run_cli("run", "audit", "--data", str(second), "--out", str(tmp_path / "o2"))
        assert again.returncode == 0 and KEPT in again.stdout and f"dataset: {own}" in again.stdout
        assert KEPT in run_cli("run", "audit", "--data", str(first), "--out", str(tmp_path / "o1")).stdout
    finally:
        for name in (base, own):
            if fo.dataset_exists(name):
                fo.delete_dataset(name)


def test_a_run_folder_inside_the_data_folder_is_not_read_as_data(digits_dir, tmp_path):
    """`cd data && recipes run audit --data .` wrote ./vetset-runs into the data folder; the next
    run read it as a class, so beside train/ and val/ every split folder became a class
    (all labels 'train' or 'val'), and the source digest changed with every run."""
    from vetset.core.dataset import scan_imagefolder
    from vetset.core.rerun import source_digest

    root = tmp_path / "data"
    for split in ("train", "val"):
        _folder(digits_dir, root / split, per_class=2)
    base = source_digest(root)
    runs = root / "vetset-runs" / "vetset-data"
    (runs / "audit").mkdir(parents=True)
    (runs / "result.json").write_text("{}")
    items, classes, skipped = scan_imagefolder(root)
    assert classes == ["0", "1", "2", "3"] and {i.split for i in items} == {"train", "val"} and skipped == 0
    assert source_digest(root) == base  # the run's own files are no input
    out = run_cli("run", "audit", "--data", str(root), "--out", str(root / "report"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"--out {root / 'report'} is inside the data folder {root}" in out.stderr
    assert not (root / "report").exists()
