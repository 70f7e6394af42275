"""Inputs that used to pass silently: dataset names FiftyOne mangles, classes a split leaves
out, a CSV manifest listing a file twice, skipped non-image files and hidden folders."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from vetset.core.dataset import check_dataset_name, load_dataset
from vetset.core.errors import DataError
from vetset.core.recipe import load_recipe
from vetset.core.run import Run


def _digits(digits_dir: Path, dest: Path, plan: dict[str, dict[str, int]]) -> Path:
    """``dest/<split>/<class>/`` with ``n`` real digit PNGs each, from ``plan[split][class]``."""
    for split, classes in plan.items():
        for cls, n in classes.items():
            (dest / split / cls).mkdir(parents=True, exist_ok=True)
            for f in sorted((digits_dir / "train" / cls).iterdir())[:n]:
                shutil.copy(f, dest / split / cls / f.name)
    return dest


@pytest.mark.parametrize("name", ["team/photos", "price$", "a:b", "---", ""])
def test_dataset_names_fiftyone_would_mangle_are_refused(name):
    with pytest.raises(DataError, match="--dataset"):
        check_dataset_name(name)


def test_dataset_names_fiftyone_keeps_are_accepted_and_keep_their_slug():
    from fiftyone.core.utils import to_slug

    for name in ("vetset-digits", "My photos 2024", "cifar10_test.v2", "a+b"):
        assert check_dataset_name(name) == name
        assert to_slug(name)  # FiftyOne accepts it


def test_cli_refuses_a_dataset_name_with_a_slash_before_the_database(digits_dir):
    proc = run_cli("run", "audit", "--data", str(digits_dir), "--dataset", "team/digits")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: --dataset 'team/digits': FiftyOne dataset names may hold letters, digits, spaces and _ . + - only, "
        "not '/'."]
    assert "Traceback" not in proc.stderr


def test_classes_a_split_leaves_out_are_named_on_the_console_before_any_stage(digits_dir, tmp_path, fresh_name, hooks):
    root = _digits(digits_dir, tmp_path / "d", {"train": {"1": 4, "2": 4, "3": 4}, "val": {"1": 2, "7": 2},
                                                  "test": {"1": 1, "8": 1}})
    logged: list[str] = []
    run = Run(load_recipe("audit", hooks), hooks, data=root, dataset=fresh_name, out_dir=tmp_path / "out",
              log=logged.append)
    run.load()
    assert "[load] classes with train images but no val images (they cannot be validated): 2, 3" in logged
    assert "[load] classes only in val/test, with no train images (a model cannot learn them): 7, 8" in logged
    assert run.load_summary.counts["train"]["1"] == 4


def test_csv_listing_a_file_with_two_labels_is_refused_naming_the_rows(digits_dir, tmp_path, fresh_name):
    files = sorted((digits_dir / "train" / "3").iterdir())[:3]
    manifest = tmp_path / "m.csv"
    manifest.write_text("filepath,label\n" + f"{files[0]},3\n{files[1]},3\n{files[2]},3\n{files[1]},8\n")
    with pytest.raises(DataError) as err:
        load_dataset(manifest, name=fresh_name)
    assert str(err.value) == (f"Manifest {manifest}: rows 3 and 5 list {files[1]} with labels '3' and '8'; "
                              "keep one row.")
    import fiftyone as fo

    assert not fo.dataset_exists(fresh_name)  # refused before anything was written


def test_csv_one_file_spelt_two_ways_is_one_file(digits_dir, tmp_path):
    """Break-it: an absolute path with ./ or ../ in it was not normalised, so one file listed
    as '3' and again (as .../train/./3/x.png) as '8' passed the conflict check, and FiftyOne,
    which stores the normalised path, kept one sample with whichever label came first."""
    from vetset.core.dataset import scan_csv

    f = sorted((digits_dir / "train" / "3").iterdir())[0]
    other = f.parent.parent / "." / "8" / ".." / "3" / f.name
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"filepath,label\n{f},3\n{other},8\n")
    with pytest.raises(DataError, match=rf"rows 2 and 3 list .*{f.name} with labels '3' and '8'; keep one row\.$"):
        scan_csv(manifest)
    manifest.write_text(f"filepath,label\n{f},3\n{str(other).replace('/train/', '/train//')},3\n")
    notes: list[str] = []
    items, classes = scan_csv(manifest, notes)
    assert [i.filepath for i in items] == [str(f)] and classes == ["3"] and "rows 3" in notes[0]


def test_csv_identical_rows_are_counted_once_before_the_split(digits_dir, tmp_path, fresh_name):
    """A class with one file listed twice is a single image: kept in train (it used to be
    counted twice, and one copy went to val)."""
    threes = sorted((digits_dir / "train" / "3").iterdir())[:5]
    eight = sorted((digits_dir / "train" / "8").iterdir())[0]
    manifest = tmp_path / "m.csv"
    manifest.write_text("filepath,label\n" + "".join(f"{f},3\n" for f in threes) + f"{eight},8\n{eight},8\n")
    ds, summary = load_dataset(manifest, name=fresh_name)
    assert len(ds) == 6 and summary.counts["all"] == {"3": 5, "8": 1}
    assert summary.counts["train"]["8"] == 1 and summary.counts["val"].get("8", 0) == 0
    assert summary.counts["val"]["3"] == 1  # round(5 * 0.2), from the deduplicated rows
    assert "manifest m.csv: 1 rows repeat an earlier row (same file, label and split) and were counted once (rows 8)" \
        in summary.warnings
    assert "classes with a single image (kept in train, cannot be validated): 8" in summary.warnings


def test_skipped_files_and_hidden_folders_are_counted_on_the_console_and_in_the_report(digits_dir, tmp_path,
                                                                                       fresh_name, hooks):
    root = _digits(digits_dir, tmp_path / "d", {"train": {"1": 3, "2": 3}, "val": {"1": 1, "2": 1}})
    png = next((root / "train" / "1").iterdir())
    shutil.copy(png, root / "train" / "1" / "really-a-png.txt")
    (root / "train" / "2" / ".ipynb_checkpoints").mkdir()
    shutil.copy(png, root / "train" / "2" / ".ipynb_checkpoints" / "copy.png")
    logged: list[str] = []
    run = Run(load_recipe("audit", hooks), hooks, data=root, dataset=fresh_name, out_dir=tmp_path / "out",
              log=logged.append)
    run.load()
    summary = run.load_summary
    assert summary.num_samples == 8 and summary.skipped_non_image == 1 and summary.skipped_hidden == 1
    line = next(m for m in logged if m.startswith("[load] skipped"))
    assert line.startswith("[load] skipped 1 non-image file and 1 hidden folder (e.g. ")
    assert "really-a-png.txt" in line and ".ipynb_checkpoints" in line

    from vetset.plugins.report.overview import render_overview

    html = render_overview({"load": summary.to_dict(), "recipe": {}, "dataset": fresh_name},
                           ctx=None)
    assert 'data-key="load.skipped_non_image"><div class="value">1</div>' in html
    assert 'data-key="load.skipped_hidden"><div class="value">1</div>' in html
    assert "really-a-png.txt" in html


def test_light_commands_do_not_import_fiftyone_or_torch(tmp_path):
    """--help, list, show, plugins, and plan until it needs the dataset (a bad name, a missing folder)."""
    script = """
import sys
from vetset.recipes.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ("fiftyone", "torch", "timm", "cv2", "albumentations") if m in sys.modules]
print("HEAVY", code, ",".join(heavy))
"""
    commands = [["--help"], ["list"], ["show", "full"], ["plugins"], ["db", "status"],
                ["plan", "augment", "--data", str(tmp_path / "missing")],
                ["plan", "augment", "--data", str(tmp_path), "--dataset", "a/b"],
                ["run", "audit", "--data", str(tmp_path / "missing")]]
    for args in commands:
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120)
        last = proc.stdout.strip().splitlines()[-1]
        assert last.startswith("HEAVY") and last.split(" ", 2)[2:] in ([], [""]), (args, last, proc.stderr)


def test_validate_a_train_recipe_without_torch_once_timm_s_names_are_cached(tmp_path):
    """`recipes validate` of a recipe with a train stage (a tagged model name, the default optimizer,
    device and precision) imports torch/timm only to list timm's names into vetset's cache the first
    time; afterwards neither. A wrong name is still refused (timm decides what the list lacks),
    and `recipes list` imports neither numpy nor pandas."""
    script = """
import sys
from vetset.recipes.cli import main
code = main(sys.argv[1:])
heavy = [m for m in ("torch", "timm", "fiftyone", "numpy", "pandas") if m in sys.modules]
print("HEAVY", code, ",".join(heavy))
"""
    recipe = tmp_path / "t.yaml"
    recipe.write_text("name: t\nstages:\n  train: {model_name: resnet18.a1_in1k, epochs: 1}\n  report: {}\n")
    env = dict(os.environ, VETSET_CACHE_DIR=str(tmp_path / "cache"))

    def heavy(*args: str) -> list[str]:
        proc = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
                              env=env)
        last = proc.stdout.strip().splitlines()[-1].split(" ", 2)
        assert last[1] == "0", (args, proc.stdout, proc.stderr)
        return [m for m in last[2:][0].split(",") if m] if last[2:] else []

    assert "timm" in heavy("validate", str(recipe))  # the first time: timm lists its names
    assert any((tmp_path / "cache").glob("timm-*-names.json"))
    assert not {"torch", "timm", "fiftyone"} & set(heavy("validate", str(recipe)))
    # a train_transform (albumentations, whose PyTorch helpers import torch) is built without them
    assert not {"torch", "timm", "fiftyone"} & set(heavy("validate", str(Path(__file__).parents[1] / "recipes" / "full.yaml")))
    assert not {"numpy", "pandas", "torch"} & set(heavy("list"))
    recipe.write_text("name: t\nstages:\n  train: {model_name: resnet18.nope_tag}\n")
    proc = subprocess.run([sys.executable, "-m", "vetset.recipes.cli", "validate", str(recipe)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert proc.returncode == 2 and "Invalid pretrained tag (nope_tag) for resnet18" in proc.stderr
    assert "Traceback" not in proc.stderr
