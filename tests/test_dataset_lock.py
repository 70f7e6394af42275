"""One vetset command at a time per dataset (vetset.core.dataset_lock): concurrent runs on
one dataset used to leave its saved-view list with duplicates and dangling references."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from conftest import run_cli


def _folder(digits_dir: Path, root: Path, per_class: int = 5) -> Path:
    for cls in ("0", "1", "2"):
        (root / cls).mkdir(parents=True)
        for f in sorted((digits_dir / "train" / cls).glob("*.png"))[:per_class]:
            shutil.copy(f, root / cls / f.name)
    return root


def _popen(*args: str) -> subprocess.Popen:
    exe = Path(os.sys.executable).parent / "recipes"
    return subprocess.Popen([str(exe), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(proc: subprocess.Popen, path: Path, text: str, timeout: float = 120) -> None:
    """Until ``path`` (the process's stderr copy) holds ``text``; the process must still run."""
    deadline = time.monotonic() + timeout
    while text not in (path.read_text() if path.exists() else ""):
        assert proc.poll() is None, f"ended early: {proc.returncode}"
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_run_waits_while_another_process_uses_its_dataset_and_ctrl_c_stops_the_wait(digits_dir, tmp_path,
                                                                                      fresh_name):
    from vetset.core.dataset_lock import hold_dataset, release_dataset

    data = _folder(digits_dir, tmp_path / "data")
    hold_dataset(fresh_name)  # this test process is the other command
    try:
        errs = [tmp_path / "e1.txt", tmp_path / "e2.txt"]
        procs = []
        for i, err in enumerate(errs):
            exe = Path(os.sys.executable).parent / "recipes"
            procs.append(subprocess.Popen([str(exe), "run", "audit", "--data", str(data), "--dataset", fresh_name,
                                           "--out", str(tmp_path / f"out{i}")], stdout=subprocess.PIPE,
                                          stderr=err.open("w"), text=True))
        for proc, err in zip(procs, errs):
            _wait_for(proc, err, f"waiting for another vetset command on dataset {fresh_name!r} (pid {os.getpid()})")
        assert not (tmp_path / "out0").exists() and not (tmp_path / "out1").exists()
        procs[1].send_signal(signal.SIGINT)  # Ctrl-C while waiting: exit 130, one sentence, nothing written
        assert procs[1].wait(timeout=20) == 130
        assert "interrupted before any stage ran: nothing was written." in errs[1].read_text()
        assert "Traceback" not in errs[1].read_text() and not (tmp_path / "out1").exists()
    finally:
        release_dataset(fresh_name)
    out, _ = procs[0].communicate(timeout=300)
    assert procs[0].returncode == 0, errs[0].read_text()[-2000:]
    assert "[audit] 15 images" in out
    import fiftyone as fo

    fo.delete_dataset(fresh_name)


def test_concurrent_runs_on_one_dataset_all_succeed_and_leave_each_saved_view_once(digits_dir, tmp_path, fresh_name):
    data = _folder(digits_dir, tmp_path / "data")
    procs = [_popen("run", "audit", "--data", str(data), "--dataset", fresh_name, "--out", str(tmp_path / f"o{i}"))
             for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-2000:]
    import fiftyone as fo

    ds = fo.load_dataset(fresh_name)
    views = ds.list_saved_views()
    assert len(views) == len(set(views)) and "audit/duplicates" in views
    for name in views:
        ds.load_saved_view(name)  # no dangling reference
    assert len(ds) == 15
    again = run_cli("run", "audit", "--data", str(data), "--dataset", fresh_name, "--out", str(tmp_path / "o0"))
    assert again.returncode == 0, again.stderr
    fo.delete_dataset(fresh_name)
