"""Benchmark: the audit's image pass on the local and the Ray executor, and the driver's memory.

Run from the repository root (needs ``../shared/data`` or ``$VETSET_SHARED_DATA``, and
``pip install 'vetset[ray]'`` for the Ray rows)::

    .venv/bin/python benchmarks/audit_scaling.py [--sizes 2000 10000] [--workers 2]

On the CIFAR-10 test images (10,000 32x32 JPEGs, unpacked under ``$VETSET_BENCH_DIR``,
never into the repository), for each backend and each dataset size, in a fresh process:

* **local, 1 worker** (in-process), **local, W workers** (forkserver processes) and
  **ray, W CPUs** (a local Ray instance started with ``ray.init(num_cpus=W)``);
* a warm-up audit of 200 images first (starts the forkserver / the Ray workers, imports
  the checks), reported as *warm-up s* (plus *ray.init s*), then the timed
  :func:`vetset.plugins.audit.stage.run_audit` of the first N samples, FiftyOne writes included;
* *driver MB*: the growth of the driver's resident memory during the timed audit over its
  value just before (``/proc/self/statm`` sampled every 5 ms), and that growth per image.

Every configuration runs in its own process so one's memory does not hide another's.
Ratios (images/s against local 1 worker at the same size; driver memory at the largest
size against the smallest) are what count: on a shared machine the absolute numbers move.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_vs_cleanvision import DATASETS, list_files, unpack  # noqa: E402

WARMUP = 200


def rss_mb() -> float:
    """Resident memory of this process now, MB (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples :func:`rss_mb` every 5 ms in a thread; ``peak`` after ``stop()``."""

    def __init__(self) -> None:
        self.peak = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.005)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def measure(dataset: str, backend: str, workers: int, size: int) -> dict:
    """One configuration, in this process: warm-up, then the timed audit of ``size`` samples."""
    import fiftyone as fo

    from vetset.core.manager import Hooks
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    ds = fo.load_dataset(dataset)
    hooks, options, quiet = Hooks(), AuditOptions(workers=workers), (lambda m: None)
    t_init = 0.0
    if backend == "ray":
        import ray

        t = time.perf_counter()
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
        t_init = time.perf_counter() - t
    t = time.perf_counter()
    run_audit(ds.skip(len(ds) - WARMUP), options, hooks, log=quiet, executor=backend)
    t_warm = time.perf_counter() - t
    view = ds.limit(size)
    gc.collect()
    base = rss_mb()
    with PeakRSS() as peak:
        t = time.perf_counter()
        block = run_audit(view, options, hooks, log=quiet, executor=backend)
        seconds = time.perf_counter() - t
    if backend == "ray":
        import ray

        ray.shutdown()
    return {"backend": backend, "workers": workers, "size": size, "seconds": seconds, "images_per_s": size / seconds,
            "driver_mb": peak.peak - base, "base_mb": base, "warmup_s": t_warm, "init_s": t_init,
            "executor": block["executor"], "stages": block["seconds"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000], help="dataset sizes (default 2000 10000)")
    ap.add_argument("--workers", type=int, default=2, help="workers / Ray CPUs of the parallel rows (default 2)")
    ap.add_argument("--one", nargs=4, metavar=("DATASET", "BACKEND", "WORKERS", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.environ.setdefault("VETSET_PROGRESS", "0")
    if args.one:
        dataset, backend, workers, size = args.one
        print("RESULT " + json.dumps(measure(dataset, backend, int(workers), int(size))), flush=True)
        return 0

    from _common import private_database
    private_database()
    import vetset.core  # noqa: F401  (offline defaults)
    from vetset.core.dataset import load_dataset

    root = unpack(*DATASETS["cifar10-test"])
    paths = list_files(root)
    for p in paths:  # page cache, so no configuration pays the disk
        Path(p).read_bytes()
    sizes = sorted(s for s in args.sizes if s <= len(paths) - WARMUP or s == len(paths))
    name = f"bench-scaling-{os.getpid()}"
    t = time.perf_counter()
    ds, _ = load_dataset(root, name=name)
    print(f"cifar10-test: {len(ds)} samples loaded into FiftyOne in {time.perf_counter() - t:.1f} s; sizes {sizes}",
          flush=True)
    configs = [("local", 1), ("local", args.workers)]
    try:
        import ray  # noqa: F401

        configs.append(("ray", args.workers))
    except ImportError:
        print("ray is not installed (pip install 'vetset[ray]'): no Ray rows", flush=True)

    rows = []
    for size in sizes:
        for backend, workers in configs:
            proc = subprocess.run([sys.executable, __file__, "--one", name, backend, str(workers), str(size)],
                                  capture_output=True, text=True, env=os.environ.copy())
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if proc.returncode or line is None:
                print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
                return 1
            row = json.loads(line[len("RESULT "):])
            rows.append(row)
            print(f"  {backend} x{workers} on {size}: {row['images_per_s']:,.0f} img/s, driver +{row['driver_mb']:.1f} MB,"
                  f" stages {row['stages']}", flush=True)

    print()
    head = (f"{'backend':<8} {'workers':>7} {'images':>7} {'images/s':>9} {'vs local 1':>10} {'driver MB':>10} "
            f"{'KB/image':>9} {'warm-up s':>10} {'ray.init s':>10}")
    print(head)
    print("-" * len(head))
    ref = {r["size"]: r["images_per_s"] for r in rows if r["backend"] == "local" and r["workers"] == 1}
    for r in rows:
        init = f"{r['init_s']:.1f}" if r["backend"] == "ray" else "-"
        print(f"{r['backend']:<8} {r['workers']:>7} {r['size']:>7} {r['images_per_s']:>9,.0f} "
              f"{r['images_per_s'] / ref[r['size']]:>9.2f}x {r['driver_mb']:>10.1f} "
              f"{r['driver_mb'] * 1024 / r['size']:>9.2f} {r['warmup_s']:>10.1f} {init:>10}")
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print()
        print(f"driver memory growth, {hi:,} vs {lo:,} images ({hi / lo:.1f}x the images):")
        for backend, workers in configs:
            a = next(r for r in rows if (r["backend"], r["workers"], r["size"]) == (backend, workers, lo))
            b = next(r for r in rows if (r["backend"], r["workers"], r["size"]) == (backend, workers, hi))
            ratio = b["driver_mb"] / a["driver_mb"] if a["driver_mb"] > 0 else float("nan")
            print(f"  {backend} x{workers}: {a['driver_mb']:.1f} MB -> {b['driver_mb']:.1f} MB ({ratio:.1f}x)")
    print()
    print(f"CPUs visible={os.cpu_count()}; load average={os.getloadavg()[0]:.1f}. Each row is a fresh process; "
          "images/s include the FiftyOne reads and writes; driver MB is resident-memory growth during the timed audit "
          "(workers return per-image numbers, never pixels).")
    import fiftyone as fo

    fo.delete_dataset(name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
