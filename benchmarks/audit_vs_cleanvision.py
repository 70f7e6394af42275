"""Benchmark: vetset's full audit vs CleanVision vs a plain Pillow decode, on the same folders.

Run from the repository root (needs ``../shared/data`` or ``$VETSET_SHARED_DATA``)::

    .venv/bin/python benchmarks/audit_vs_cleanvision.py [--workers 2] [--only cifar|hymenoptera]

For each folder, in one process and one run:

1. **plain decode** — ``Image.open(p).convert("RGB")`` of every file, one process: the
   floor any audit that looks at pixels has to pay;
2. **CleanVision** — ``Imagelab(filepaths=...).find_issues(n_jobs=W)`` (all its default
   issue types), the tool people use for this today;
3. **vetset** — :func:`vetset.plugins.audit.stage.run_audit` with every check and ``workers=W``,
   including the FiftyOne writes of all fields and tags. The FiftyOne load (one sample
   per file) happens before and is timed separately: it is the loader's work, shared by
   every stage. As in ``recipes run``, the workers' forkserver imports its modules
   (:func:`vetset.core.executor.prestart`, 0.5 s of one core) while the dataset loads;
   CleanVision's and the plain decode's imports are outside their timings too.

The files are read once before timing so every contender finds them in the page cache.
Folders: the CIFAR-10 test set (10,000 32x32 JPEGs) and the hymenoptera photos (398 files,
193x130 up to 2592x1944), unpacked into ``$VETSET_BENCH_DIR`` (default a folder under the
system temp dir), never into the repository. Targets (the audit issue): vetset at least
10x CleanVision's images/s on both folders, and on CIFAR no slower than 1.5x the plain
decode. Ratios measured in one run are what count; absolute numbers depend on the machine.

Before the audit comparison, each folder's **embedding pass** (the ``embed`` stage's
feature computation, :func:`vetset.plugins.embed.compute.embed_batches`, in-process as the
stage runs it on one machine) is timed on the first ``--embed-images`` files with
``--embed-model``, on the CPU and, when CUDA is available, on the GPU: its own table,
images/s (``--embed-only`` prints just that).
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

from _common import unpack  # the script's own folder is on sys.path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))

DATASETS = {
    "cifar10-test": (SHARED / "cifar10" / "test.tar.gz", "test"),
    "hymenoptera": (SHARED / "hymenoptera.tar", "hymenoptera_data"),
}


def list_files(root: Path) -> list[str]:
    from vetset.core.dataset import _list_images

    return _list_images(root)[0]


def plain_decode(paths: list[str]) -> float:
    from PIL import Image

    t = time.perf_counter()
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB")
    return time.perf_counter() - t


def cleanvision(paths: list[str], workers: int) -> float:
    import contextlib
    import io

    from cleanvision import Imagelab

    t = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        lab = Imagelab(filepaths=paths, verbose=False)
        lab.find_issues(n_jobs=workers)
    return time.perf_counter() - t


def vetset_audit(root: Path, name: str, workers: int) -> tuple[float, float, dict, float]:
    from vetset.core.dataset import load_dataset
    from vetset.core.executor import prestart
    from vetset.core.manager import Hooks
    from vetset.plugins.audit.stage import AuditOptions, run_audit

    hooks = Hooks()
    t = time.perf_counter()
    prestart(hooks.stages["audit"].worker_modules)  # as a run does: worker imports overlap the load
    ds, _ = load_dataset(root, name=name)
    t_load = time.perf_counter() - t
    rss0 = maxrss_mb()
    t = time.perf_counter()
    block = run_audit(ds, AuditOptions(workers=workers), hooks, log=lambda m: None)
    seconds = time.perf_counter() - t
    ds.delete()
    return t_load, seconds, block, maxrss_mb() - rss0


def embed_pass(paths: list[str], model_name: str, device: str, batch_size: int = 32) -> tuple[float, int]:
    """Seconds of the embed stage's pass (decode, timm eval transform, pooled features averaged over
    the stage's default views: flip and centre crops) over ``paths`` on ``device``, in-process as the
    stage runs it; and the image count. Seeded random weights: the speed does not depend on them."""
    import timm
    import torch

    from vetset.plugins.embed.backbone import Backbone, _data_config
    from vetset.plugins.embed.compute import embed_batches
    from vetset.plugins.embed.options import EmbedOptions

    torch.manual_seed(0)
    model = timm.create_model(model_name, num_classes=0).eval()
    bb = Backbone(model, model_name, "weights", "-", "-", _data_config(model, None, None))
    opts = EmbedOptions()
    list(embed_batches(bb, paths[:batch_size], batch_size, opts.flip, device, crops=opts.crops))  # warm-up
    t = time.perf_counter()
    n = sum(len(ok) for _s, _f, ok in embed_batches(bb, paths, batch_size, opts.flip, device, crops=opts.crops))
    return time.perf_counter() - t, n


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", type=int, default=2, help="worker processes for vetset and CleanVision (default 2)")
    ap.add_argument("--only", choices=["cifar", "hymenoptera"], default=None)
    ap.add_argument("--fiftyone-public", action="store_true",
                    help="write the audit's fields through FiftyOne's public API (VETSET_FIFTYONE_PUBLIC=1: "
                         "set_values per field, add_sample_field per field), to see what vetset.core._fiftyone saves")
    ap.add_argument("--embed-model", default="resnet50",
                    help="timm model of the embedding-pass line (default resnet50, the embed stage's default architecture)")
    ap.add_argument("--embed-images", type=int, default=256, help="images of each folder the embedding pass times (default 256)")
    ap.add_argument("--embed-only", action="store_true", help="time only the embedding pass")
    args = ap.parse_args(argv)
    from _common import private_database
    private_database()
    os.environ.setdefault("VETSET_PROGRESS", "0")
    if args.fiftyone_public:
        os.environ["VETSET_FIFTYONE_PUBLIC"] = "1"
    import vetset.core  # noqa: F401  (offline defaults)

    rows = []
    embed_rows: list[tuple[str, str, int, float]] = []
    for key, (archive, inner) in DATASETS.items():
        if args.only and not key.startswith(args.only):
            continue
        root = unpack(archive, inner)
        paths = list_files(root)
        for p in paths:  # page cache, so nobody pays the disk
            Path(p).read_bytes()
        n = len(paths)
        for device in ["cpu"] + (["cuda"] if _cuda() else []):
            sec, m = embed_pass(paths[: args.embed_images], args.embed_model, device)
            embed_rows.append((key, device, m, sec))
            print(f"  embedding pass ({args.embed_model}, {device}): {m} images in {sec:.2f} s", flush=True)
        if args.embed_only:
            continue
        print(f"{key}: {n} files in {root}; plain decode ...", flush=True)
        t_plain = plain_decode(paths)
        print(f"  plain decode {t_plain:.2f} s; CleanVision ({args.workers} workers) ...", flush=True)
        t_cv = cleanvision(paths, args.workers)
        print(f"  CleanVision {t_cv:.2f} s; vetset audit ({args.workers} workers) ...", flush=True)
        t_load, t_vs, block, drss = vetset_audit(root, f"bench-{key}-{os.getpid()}", args.workers)
        print(f"  vetset {t_vs:.2f} s (FiftyOne load before it: {t_load:.2f} s); stages {block['seconds']}", flush=True)
        rows.append((key, n, t_plain, t_cv, t_vs, t_load, drss))

    from vetset.plugins.embed.options import EmbedOptions

    print()
    print(f"Embedding pass (the embed stage, in-process; {args.embed_model}, its default input size, flip and crops "
          f"{EmbedOptions().crops} averaged, batch 32; torch threads={_threads()}):")
    print(f"{'folder':<14} {'device':>6} {'images':>7} {'seconds':>8} {'images/s':>9}")
    for key, device, m, sec in embed_rows:
        print(f"{key:<14} {device:>6} {m:>7} {sec:>8.2f} {m / sec:>9.1f}")
    if args.embed_only:
        print(f"load average={os.getloadavg()[0]:.1f}")
        return 0
    print()
    head = (f"{'folder':<14} {'images':>7} {'plain decode':>14} {'CleanVision':>14} {'vetset audit':>14} "
            f"{'speed vs CV':>12} {'time vs plain':>14} {'RSS +MB':>8} {'targets':>24}")
    print(head)
    print("-" * len(head))
    for key, n, tp, tc, tv, _tl, drss in rows:
        speedup = tc / tv
        slow = tv / tp
        ok_cv = speedup >= 10
        targets = f"CV>=10x {'yes' if ok_cv else 'NO'}"
        if key.startswith("cifar"):
            targets += f", <=1.5x plain {'yes' if slow <= 1.5 else 'NO'}"
        print(f"{key:<14} {n:>7} {n / tp:>9,.0f} im/s {n / tc:>9,.0f} im/s {n / tv:>9,.0f} im/s "
              f"{speedup:>11.1f}x {slow:>13.2f}x {drss:>8.0f} {targets:>24}")
    print()
    print(f"FiftyOne writes: {'public API (--fiftyone-public)' if args.fiftyone_public else 'vetset.core._fiftyone'}; "
          f"workers={args.workers}; CPUs visible={os.cpu_count()}; load average={os.getloadavg()[0]:.1f}. "
          "speed vs CV: vetset's images/s over CleanVision's (higher is better); time vs plain: vetset's seconds "
          "over the plain decode's (lower is better). vetset includes the FiftyOne writes; the plain decode is single-process. "
          "RSS +MB: growth of this process's peak RSS during the vetset audit alone (workers return numbers, not pixels).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
