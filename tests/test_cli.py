"""The `recipes` CLI: help, list/show/validate, demo, exit codes, one-sentence errors."""

from __future__ import annotations

from conftest import run_cli

from vetset.recipes.cli import main


def test_help_on_every_command():
    top = run_cli("--help")
    assert top.returncode == 0
    for cmd in ("list", "show", "validate", "run", "demo", "plugins"):
        assert cmd in top.stdout
        res = run_cli(cmd, "--help")
        assert res.returncode == 0 and "Usage" in res.stdout, cmd


def test_validate_good_and_bad(tmp_path, capsys):
    good = tmp_path / "good.yaml"
    good.write_text("name: g\nstages:\n  report: {}\n")
    assert main(["validate", str(good)]) == 0
    assert "valid recipe 'g'" in capsys.readouterr().out
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\nstages:\n  report: {nonsense: 1}\n")
    res = run_cli("validate", str(bad))
    assert res.returncode == 2
    assert "bad.yaml" in res.stderr and "stages.report.nonsense: unknown key" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) <= 3


def test_run_without_data_or_with_missing_folder_exits_2(tmp_path):
    res = run_cli("run", "audit")
    assert res.returncode == 2 and "Pass --data PATH" in res.stderr and "Traceback" not in res.stderr
    res = run_cli("run", "audit", "--data", str(tmp_path / "nope"))
    assert res.returncode == 2 and "nope does not exist" in res.stderr and "Traceback" not in res.stderr


def test_unknown_option_is_a_usage_error():
    assert run_cli("run", "audit", "--bogus").returncode == 2


def test_demo_writes_digits_once(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path)]) == 0
    files = sorted((tmp_path / "digits").rglob("*.png"))
    assert len(files) == 1797
    assert {p.parent.parent.name for p in files} == {"train", "val"}
    mtimes = [p.stat().st_mtime_ns for p in files[:50]]
    assert main(["demo", "--out", str(tmp_path)]) == 0
    assert [p.stat().st_mtime_ns for p in files[:50]] == mtimes  # rerun writes nothing
    from PIL import Image

    with Image.open(files[0]) as im:
        assert im.size == (8, 8) and im.mode == "L"
    assert "recipes run full --data" in capsys.readouterr().out


def test_list_show_and_plugins(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "full" in out and "audit" in out
    assert main(["show", "full"]) == 0
    out = capsys.readouterr().out
    assert "with defaults filled in" in out and "stages:" in out
    assert main(["plugins"]) == 0
    assert "vetset.recipes.bundled" in capsys.readouterr().out


def test_a_mismatched_torchvision_is_one_sentence(monkeypatch, capsys):
    import vetset.recipes.cli as cli

    def broken_import(**kwargs):  # what `import timm` raises with a torchvision built for another torch
        raise RuntimeError("operator torchvision::nms does not exist")

    monkeypatch.setattr(cli, "app", broken_import)
    assert cli.main(["list"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: torchvision does not match the installed torch (installed: torch ")
    assert "reinstall both from the same index" in err and len(err.strip().splitlines()) == 1
    assert cli.torch_build_error(RuntimeError("CUDA out of memory")) is None


def test_validate_checks_the_train_options_run_checks(tmp_path):
    bad = tmp_path / "t.yaml"
    bad.write_text("name: t\nstages:\n  train: {model_name: not_a_model}\n")
    res = run_cli("validate", str(bad))
    assert res.returncode == 2 and "stages.train.model_name: 'not_a_model' is not a timm model name" in res.stderr
    assert f"error: {bad}: stages.train.model_name" in res.stderr  # the file is named, as for schema errors
    assert "Traceback" not in res.stderr
