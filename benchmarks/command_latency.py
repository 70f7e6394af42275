"""Benchmark: what a user waits for, end to end, command by command.

Run from the repository root (needs ``../shared/data`` or ``$VETSET_SHARED_DATA``)::

    .venv/bin/python benchmarks/command_latency.py [--skip-cleanvision]

Every timing is the wall time of a new process, as a user or a CI job runs it, in one run
of this script, on the CIFAR-10 test files (10,000 32x32 JPEGs) copied into a new folder:

* CleanVision end to end: ``python -c`` that imports it, ``Imagelab(data_path=...)``,
  ``find_issues()`` and ``report()``;
* ``recipes run audit`` first run (a new dataset), second run (unchanged folder), after
  adding 100 files (CIFAR-10 train images), and on a folder of 16 images (8 ants, 8 bees
  photos);
* ``python -c "import fiftyone"`` (the floor of any command that opens a dataset) and
  ``recipes list``.

The vetset commands run twice: with the database server stopped before each command
(``recipes db stop``: every command starts it, as a first command does) and with it already
running (``recipes db start`` first). vetset's own modules are compiled to ``__pycache__``
first, as ``pip install`` does for an installed package (with ``PYTHONDONTWRITEBYTECODE``
set and an editable install, every process would otherwise compile them from source, about
0.3 s a process, a cost fiftyone's installed modules do not pay); ``--no-compile`` leaves
that out. They use a database folder of their own under
``$VETSET_BENCH_DIR`` (default a folder under the system temp dir), never the user's.
Targets (issue 19): first run at least 4x faster than CleanVision end to end; unchanged
rerun at most 3 s; +100 files at most 4 s; the 16-image folder within 1.5 s of
``import fiftyone`` once the database is up; ``recipes list`` at most 0.5 s. Absolute numbers
depend on the machine and on what else runs on it; the ratios within one run count. Each
command's CPU seconds (user + system of the processes it waited for: not the database
server's, and not those of worker processes a multiprocessing forkserver started, so the
audit's image pass is undercounted) are printed too: on a shared machine they grow far less
with the load than wall time, which makes them the better before/after measure there.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

from _common import BENCH_DIR, unpack  # the script's own folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))

BIN = Path(sys.executable).parent


def env() -> dict[str, str]:
    """The commands' environment: the benchmark's own database folder, no URI, no progress bars."""
    out = {k: v for k, v in os.environ.items() if k != "FIFTYONE_DATABASE_URI"}
    out.update(FIFTYONE_DATABASE_DIR=str(BENCH_DIR / "latency-db"), VETSET_PROGRESS="0", VETSET_DB_IDLE="900")
    return out


#: CPU seconds (user + system) of the last timed command and its child processes: on a
#: shared machine wall time grows with the load, CPU time much less.
LAST_CPU = [0.0]


def timed(cmd: list[str], cwd: Path) -> float:
    """Wall seconds of ``cmd`` in a new process (its CPU seconds go to :data:`LAST_CPU`);
    exits with its output when it fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True)
    took = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    LAST_CPU[0] = cpu
    print(f"{took:8.2f} s  ({cpu:6.2f} s CPU, load {os.getloadavg()[0]:.1f})  "
          f"{' '.join(Path(c).name if os.sep in c else c for c in cmd[:4])}", flush=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def db(action: str, work: Path) -> None:
    subprocess.run([str(BIN / "recipes"), "db", action], cwd=work, env=env(), capture_output=True, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--skip-cleanvision", action="store_true", help="leave CleanVision out (about 45 s)")
    parser.add_argument("--no-compile", action="store_true",
                        help="do not compile vetset's modules to __pycache__ first (measure from-source imports)")
    args = parser.parse_args(argv)
    if not args.no_compile:
        import compileall

        for pkg in ("core", "plugins", "recipes"):
            compileall.compile_dir(str(REPO / pkg), quiet=1)

    test_root = unpack(SHARED / "cifar10" / "test.tar.gz", "test")
    train_root = unpack(SHARED / "cifar10" / "train.tar.gz", "train")
    hym = unpack(SHARED / "hymenoptera.tar", "hymenoptera_data")
    work = BENCH_DIR / f"latency-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    recipes = str(BIN / "recipes")
    try:
        small = work / "small16"
        for cls in ("ants", "bees"):
            (small / cls).mkdir(parents=True)
            for f in sorted((hym / "train" / cls).iterdir())[:8]:
                shutil.copy(f, small / cls / f.name)
        extra = [f for cls in sorted(train_root.iterdir()) for f in sorted(cls.iterdir())[:10]]  # 100 files
        rows: dict[str, dict[str, float]] = {}
        cpu: dict[str, dict[str, float]] = {}
        for mode in ("db stopped", "db running"):
            cifar = work / f"cifar-{mode.split()[1]}"
            shutil.copytree(test_root, cifar)
            name = f"bench-latency-{mode.split()[1]}-{uuid.uuid4().hex[:6]}"

            def run(data: Path, dataset: str, out: str, mode: str = mode) -> float:
                db("stop" if mode == "db stopped" else "start", work)
                return timed([recipes, "run", "audit", "--data", str(data), "--dataset", dataset, "--out",
                              str(work / out)], work)

            col, cpu_col = rows.setdefault(mode, {}), cpu.setdefault(mode, {})

            def note(label: str, wall: float, col: dict = col, cpu_col: dict = cpu_col) -> None:
                col[label], cpu_col[label] = wall, LAST_CPU[0]

            note("first run (10,000 new files)", run(cifar, name, f"out-{name}"))
            note("second run (unchanged)", run(cifar, name, f"out-{name}"))
            for i, f in enumerate(extra):
                shutil.copy(f, cifar / f.parent.name / f"extra{i:03d}.jpg")
            note("third run (+100 files)", run(cifar, name, f"out-{name}"))
            note("16-image folder", run(small, f"{name}-small", f"out-{name}-small"))
            db("stop" if mode == "db stopped" else "start", work)
            note('python -c "import fiftyone"', timed([sys.executable, "-c", "import fiftyone"], work))
            note("recipes list", timed([recipes, "list"], work))
        cv, cv_cpu = None, 0.0
        if not args.skip_cleanvision:
            script = ("import sys; from cleanvision import Imagelab; lab = Imagelab(data_path=sys.argv[1]); "
                      "lab.find_issues(); lab.report()")
            cv = timed([sys.executable, "-c", script, str(work / "cifar-stopped")], work)
            cv_cpu = LAST_CPU[0]
    finally:
        db("stop", work)
        shutil.rmtree(work, ignore_errors=True)

    targets = {"first run (10,000 new files)": "CleanVision / 4", "second run (unchanged)": "<= 3 s",
               "third run (+100 files)": "<= 4 s", "16-image folder": "import fiftyone + 1.5 s",
               "recipes list": "<= 0.5 s"}
    print(f"\n{'command (wall s, new process)':<34}{'db stopped':>12}{'db running':>12}"
          f"{'CPU s stopped':>15}{'CPU s running':>15}   target")
    if cv is not None:
        print(f"{'CleanVision end to end':<34}{cv:>12.1f}{'':>12}{cv_cpu:>15.2f}{'':>15}   (10,100 files)")
    for label in rows["db stopped"]:
        a, b = rows["db stopped"][label], rows["db running"][label]
        print(f"{label:<34}{a:>12.2f}{b:>12.2f}{cpu['db stopped'][label]:>15.2f}{cpu['db running'][label]:>15.2f}"
              f"   {targets.get(label, '')}")
    if cv is not None:
        first = rows["db running"]["first run (10,000 new files)"]
        print(f"\nCleanVision / vetset first run: {cv / first:.1f}x (db running), "
              f"{cv / rows['db stopped']['first run (10,000 new files)']:.1f}x (db stopped); target >= 4x")
    imp = rows["db running"]['python -c "import fiftyone"']
    imp_cpu = cpu["db running"]['python -c "import fiftyone"']
    print(f"16-image folder - import fiftyone (db running): {rows['db running']['16-image folder'] - imp:+.2f} s "
          f"({cpu['db running']['16-image folder'] - imp_cpu:+.2f} s CPU); target <= +1.5 s")
    print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
