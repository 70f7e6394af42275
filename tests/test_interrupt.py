"""A run stops promptly on SIGTERM/SIGINT, keeps finished work for ``--resume``, and leaves
no worker process behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

RECIPE = """name: interrupt-label-noise
stages:
  label_noise:
    method: kfold
    n_folds: 2
    train: {epochs: 40, workers: 2, batch_size: 16, threads: 1}
"""


def _small_digits(digits_dir: Path, dest: Path) -> Path:
    for cls in ("1", "4", "7"):
        (dest / cls).mkdir(parents=True)
        for f in sorted((digits_dir / "train" / cls).iterdir())[:16]:
            shutil.copy(f, dest / cls / f.name)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_during_fold_training_stops_within_seconds_without_orphans(digits_dir, tmp_path, fresh_name, sig):
    """Started as a background job is (SIGINT ignored by the shell), signalled during the second
    fold model's training (DataLoader workers running): exit 130 within a few seconds, the first
    fold's pred_probs kept, no child process left."""
    data = _small_digits(digits_dir, tmp_path / "d")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    exe = Path(sys.executable).parent / "recipes"
    proc = subprocess.Popen([str(exe), "run", str(recipe), "--data", str(data), "--dataset", fresh_name + str(int(sig)),
                             "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, VETSET_PROGRESS="0"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # as `cmd &` does
    try:
        deadline = time.monotonic() + 600
        for line in proc.stdout:
            if "fold 2/2" in line or time.monotonic() > deadline:
                break
        fold_0 = out / "label_noise" / "folds" / "fold_0" / "pred_probs.npz"
        assert fold_0.is_file(), list(out.rglob("*"))  # the finished fold, reused by --resume
        time.sleep(3)  # well into the second fold's training: DataLoader workers are up
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "expected DataLoader worker processes"
        t = time.monotonic()
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
        took = time.monotonic() - t
        err = proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == 130, err
    assert "interrupted: finished stages are saved; rerun with --resume to continue" in err
    assert "Traceback" not in err
    assert took < 10, took  # about 1.5 s on a loaded 2-core machine
    assert fold_0.is_file()
    time.sleep(0.5)
    left = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not left, [(c.pid, c.cmdline()) for c in left]


def test_dataloader_workers_drop_only_fd_sharing_reports(monkeypatch):
    """The workers' ``worker_init_fn`` drops what multiprocessing's resource_sharer thread
    reports through ``sys.excepthook`` (a peer gone mid-batch when a run is interrupted) and
    passes every other exception on."""
    import sys

    from vetset.plugins.train.data import quiet_fd_sharing_errors

    seen = []
    monkeypatch.setattr(sys, "excepthook", lambda *exc: seen.append(exc[0]))
    quiet_fd_sharing_errors(0)

    def report(filename: str) -> None:  # as resource_sharer's _serve loop reports what its accept() raised
        code = compile("import sys\ndef serve():\n    try:\n        raise ConnectionResetError('peer gone')\n"
                       "    except Exception:\n        sys.excepthook(*sys.exc_info())\n", filename, "exec")
        ns: dict = {}
        exec(code, ns)
        ns["serve"]()

    report("/usr/lib/python3.11/multiprocessing/resource_sharer.py")
    assert seen == []
    report("/work/somewhere/else.py")
    assert seen == [ConnectionResetError]
