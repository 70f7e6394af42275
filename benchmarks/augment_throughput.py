"""Benchmark: vetset's augmentation writer vs the same ``A.Compose`` in a plain loop.

Every run makes the same new images from the same real photos (the hymenoptera ants/bees
set, 193x130 to 2592x1944 JPEGs) with the bundled ``light`` policy, decode + transform +
encode (JPEG quality 95) + write, all in this one process run:

* ``plain loop (cv2)``       -- what a user writes: ``cv2.imread`` -> ``compose(image=...)``
  -> ``cv2.imencode`` -> file, one process;
* ``plain loop (vetset decode)`` -- the same loop decoding with
  :func:`vetset.core.images.decode` (EXIF, palette/16-bit modes), the reference for the
  bookkeeping overhead;
* ``vetset writer, 1 worker`` -- :func:`vetset.plugins.augment.writer.write_plan`: seeds,
  applied parameters (``save_applied_params``), atomic writes and FiftyOne samples added
  in bulk, in-process;
* ``vetset writer, N workers`` -- the same with N worker processes (start-up included).

Targets (issue 6): N=2 workers at least 1.5x the plain loop; bookkeeping (writer with 1
worker vs the plain loop with the same decode) under 10% per image. Every round runs the
four configurations back to back, in an order that rotates from round to round, with the
page cache's dirty pages flushed (``os.sync``) before each; each ratio is computed within
a round (paired), so slow phases of a shared machine hit both sides; the summary gives the median and the
range over ``--rounds``, the table the best time of each configuration. The
single-process rows also show this process's CPU time (``time.process_time``, all its
threads), which other processes disturb far less, and the MongoDB server's CPU time
during each writer run (the inserts' cost on the database side, another process).

On a shared machine the same plain loop's CPU time moves by 10-20% from one run to the
next, as much as the target. So the bookkeeping is also measured paired image by image
(:func:`paired_steps`): the plain step and the writer's per-image work back to back for
each image, then the writer's sample inserts for the same images, and the same inserts
through FiftyOne's public ``add_samples`` (what keeps the private insert in
:mod:`vetset.core._fiftyone`). Last, the import time of a fresh writer worker, with and
without albumentations' optional PyTorch helpers (what keeps torch out of the workers).

Usage::

    .venv/bin/python benchmarks/augment_throughput.py [--repeat 8] [--workers 2] [--rounds 5] [--data DIR] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tarfile
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from _common import private_database

private_database()
os.environ.setdefault("VETSET_PROGRESS", "0")

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))


def hymenoptera(tmp: Path, data: str | None) -> Path:
    if data:
        return Path(data)
    archive = SHARED / "hymenoptera.tar"
    if not archive.exists():
        sys.exit(f"{archive} is absent; pass --data with an ImageFolder tree of photos.")
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    return tmp / "hymenoptera_data"


def plain_loop(images, compose, out_dir: Path, decode_with_vetset: bool) -> tuple[float, float]:
    """The reference: decode, transform, encode, write, one image after another.

    Returns:
        ``(wall seconds, CPU seconds of this process)``.
    """
    import cv2

    from vetset.core.images import decode

    out_dir.mkdir(parents=True, exist_ok=True)
    t0, c0 = time.perf_counter(), time.process_time()
    for i, im in enumerate(images):
        if decode_with_vetset:
            rgb = decode(im.source.filepath).array
        else:
            rgb = cv2.cvtColor(cv2.imread(im.source.filepath), cv2.COLOR_BGR2RGB)
        out = compose(image=rgb)["image"]
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        (out_dir / f"{i:05d}.jpg").write_bytes(buf.tobytes())
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=8, help="new images per source photo")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the four configurations; ratios are per round")
    ap.add_argument("--data", default=None, help="ImageFolder tree (default: the shared hymenoptera set)")
    ap.add_argument("--workdir", default=None,
                    help="folder for the unpacked photos and every output (default: the system temp folder); "
                         "/dev/shm takes the disk's noise out of both sides")
    args = ap.parse_args()

    import cv2

    cv2.setNumThreads(1)  # every configuration computes on one core per process
    from vetset.core.dataset import load_dataset, split_view
    from vetset.core.manager import Hooks
    from vetset.plugins.augment.pipeline import load_pipeline
    from vetset.plugins.augment.plan import PlannedImage, Source, image_key
    from vetset.plugins.augment.store import prepare_output, write_plan
    from vetset.plugins.augment.writer import WriterConfig

    tmp = Path(tempfile.mkdtemp(prefix="vetset-bench-", dir=args.workdir))
    try:
        root = hymenoptera(tmp, args.data)
        ds, _ = load_dataset(root, name="vetset-bench-augment")
        train = split_view(ds, "train")
        ids, fps, labels = train.values(["id", "filepath", "ground_truth.label"])
        images = []
        for sid, fp, lab in zip(ids, fps, labels):
            for k in range(args.repeat):  # what the planner makes for the fill policy
                key, seed = image_key(fp, "light", k, 0)
                images.append(PlannedImage(Source(sid, fp, lab, {}), "light", k, seed, key, None, {}))
        hooks = Hooks()
        light = hooks.policies["light"]
        compose = load_pipeline(light.pipeline, hooks)
        cfg = WriterConfig({"light": light.pipeline["transform"]}, {}, 95, key="bench")
        for fp in fps:  # warm the page cache so the first run is not penalised
            Path(fp).read_bytes()

        mongod = _mongod()
        names = ["plain loop (cv2)", "plain loop (vetset decode)", "vetset writer, 1 worker",
                 f"vetset writer, {args.workers} workers"]

        def plain_run(k: int, r: int) -> tuple[float, float, float]:
            return (*plain_loop(images, compose, tmp / f"plain-{k}-{r}", decode_with_vetset=k == 1), 0.0)

        def writer(workers: int, r: int) -> tuple[float, float, float]:
            folder = prepare_output(tmp / f"writer-{workers}-{r}", [str(root)])
            t0, c0, m0 = time.perf_counter(), time.process_time(), _cpu(mongod)
            stats = write_plan(ds, images, folder, f"bench-{workers}-{r}", cfg, workers=workers, log=lambda m: None)
            assert stats["written"] == len(images) and stats["failed"] == 0, stats
            return time.perf_counter() - t0, time.process_time() - c0, _cpu(mongod) - m0

        runs = [lambda r: plain_run(0, r), lambda r: plain_run(1, r), lambda r: writer(1, r), lambda r: writer(args.workers, r)]
        times = {name: [] for name in names}
        for r in range(args.rounds):
            # the order rotates every round, so no configuration always runs after another's
            # writes; and dirty pages are flushed between runs, so none pays another's writeback
            for k in range(r, r + len(runs)):
                os.sync()
                times[names[k % len(runs)]].append(runs[k % len(runs)](r))
        n_samples = len(ds.match_tags("augmented"))
        assert n_samples == 2 * args.rounds * len(images), n_samples
        paired = paired_steps(ds, images, compose, cfg, tmp / "paired")
    finally:
        import fiftyone as fo

        if fo.dataset_exists("vetset-bench-augment"):
            fo.delete_dataset("vetset-bench-augment")
        shutil.rmtree(tmp, ignore_errors=True)

    n = len(images)
    rows = [(name, min(t[0] for t in ts), min(t[1] for t in ts), min(t[2] for t in ts)) for name, ts in times.items()]
    cpus = len(os.sched_getaffinity(0))
    load = os.getloadavg()[0]
    print(f"\naugment throughput: {n} new images from {len(fps)} hymenoptera train photos, policy 'light', "
          f"JPEG q95, one OpenCV thread per process; {cpus} CPUs visible, load average {load:.1f}; "
          f"{args.rounds} rounds, best time of each configuration\n")
    plain, t_ref = rows[0][1], rows[1][1]
    print(f"{'run':<28} {'wall s':>7} {'images/s':>9} {'vs plain (cv2)':>15} {'vs plain (vetset decode)':>25} "
          f"{'CPU ms/image':>13} {'MongoDB CPU ms/image':>21}")
    for name, wall, cpu, db in rows:
        cpu_text = f"{1000 * cpu / n:13.2f}" if not name.endswith("workers") else f"{'(driver) ' + format(1000 * cpu / n, '.2f'):>13}"
        db_text = f"{1000 * db / n:21.2f}" if name.startswith("vetset") and mongod else f"{'-':>21}"
        print(f"{name:<28} {wall:7.2f} {n / wall:9.1f} {plain / wall:14.2f}x {t_ref / wall:24.2f}x {cpu_text} {db_text}")

    # ratios within each round (paired), then their median and range over the rounds
    per_round = list(zip(*times.values()))
    cpu_over = [100 * (w1[1] - ref[1]) / ref[1] for _, ref, w1, _ in per_round]
    cpu_db_over = [100 * (w1[1] + w1[2] - ref[1]) / ref[1] for _, ref, w1, _ in per_round]
    wall_over = [100 * (w1[0] - ref[0]) / ref[0] for _, ref, w1, _ in per_round]
    speed_up = [p[0] / wn[0] for p, _, _, wn in per_round]
    print(f"\nper round ({args.rounds}), median [min .. max]:")
    print(f"  bookkeeping overhead per image, writer with 1 worker vs the plain loop with the same decode: "
          f"{_summary(cpu_over, '%')} CPU time of this process, {_summary(cpu_db_over, '%')} with MongoDB's, "
          f"{_summary(wall_over, '%')} wall time  (target < 10%)")
    print(f"  speed-up of the writer with {args.workers} workers vs the plain loop (cv2), wall time: "
          f"{_summary(speed_up, 'x')}  (target >= 1.5x on 2 idle cores)")
    step, apply, insert, public = (1000 * v / n for v in paired)
    print(f"\npaired per image (the plain loop's step and the writer's apply_one back to back, image by image, "
          f"thread CPU time; then the writer's sample inserts of those images):\n"
          f"  plain step {step:.3f} ms, apply_one {apply:.3f} ms ({100 * (apply - step) / step:+.1f}%), "
          f"sample insert {insert:.3f} ms ({100 * insert / step:+.1f}%): "
          f"bookkeeping {100 * (apply + insert - step) / step:+.1f}% per image  (target < 10%)")
    print(f"  the same inserts through FiftyOne's public add_samples: {public:.3f} ms ({100 * public / step:+.1f}%), "
          f"{public / insert:.1f}x the writer's (vetset.core._fiftyone.insert_samples)")
    worker = import_seconds("import vetset.plugins.augment._preload")
    plain = import_seconds("import albumentations")
    print(f"\nimports of a fresh writer worker (best of 3, wall, with the interpreter's start): "
          f"albumentations without its PyTorch helpers (the writer's preload) {worker[0]:.2f} s (torch imported: "
          f"{worker[1]}), plain 'import albumentations' {plain[0]:.2f} s (torch imported: {plain[1]})")


def paired_steps(ds, images, compose, cfg, folder: Path) -> tuple[float, float, float]:
    """The bookkeeping measured where a shared machine's slow phases cannot fall on one side.

    For every image, the plain loop's step (vetset decode, transform, encode, write) and the
    writer's :func:`~vetset.plugins.augment.writer.apply_one` (seeding, applied parameters,
    atomic write) run back to back, in an order that alternates; then the writer's sample
    documents for those images are built and inserted as its adder thread does (batches of
    256). Returns the CPU seconds (``time.thread_time``) of the three.
    """
    import cv2

    from vetset.core.images import decode
    from vetset.plugins.augment.store import _sample, insert_samples
    from vetset.plugins.augment.writer import Task, apply_one

    folder.mkdir(parents=True)
    step = apply = insert = 0.0
    made = []
    for i, im in enumerate(images):
        for which in ((0, 1) if i % 2 else (1, 0)):
            c = time.thread_time()
            if which == 0:
                out = compose(image=decode(im.source.filepath).array)["image"]
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(out, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
                (folder / f"plain-{i:05d}.jpg").write_bytes(buf.tobytes())
                step += time.thread_time() - c
            else:
                task = Task(im.source.filepath, str(folder / f"writer-{i:05d}.jpg"), im.policy, im.seed)
                res = apply_one(cfg, task)
                apply += time.thread_time() - c
                made.append((im, task, res))
    public = 0.0
    for start in range(0, len(made), 256):
        batch = made[start:start + 256]
        c = time.thread_time()
        pairs = [_sample("bench-paired", item) for item in batch]
        insert_samples(ds, [p[0] for p in pairs], [p[1] for p in pairs])
        insert += time.thread_time() - c
        # the same samples through FiftyOne's public add_samples (the door's fallback), other filepaths
        c = time.thread_time()
        pairs = [_sample("bench-paired", (im, replace(task, out_path=task.out_path + ".public.jpg"), res))
                 for im, task, res in batch]
        insert_samples(_PublicOnly(ds), [p[0] for p in pairs], [p[1] for p in pairs])
        public += time.thread_time() - c
    return step, apply, insert, public


class _PublicOnly:
    """A dataset seen as through a FiftyOne without the internals :mod:`vetset.core._fiftyone`
    uses: its functions take their public fallback (``add_samples`` for the inserts)."""

    def __init__(self, ds):
        self._ds = ds

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self._ds, name)


def import_seconds(code: str, repeat: int = 3) -> tuple[float, bool]:
    """Best wall time of ``python -c code`` in a fresh process, and whether torch got imported."""
    import subprocess

    best, torch = float("inf"), False
    for _ in range(repeat):
        t = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print('torch' in sys.modules)"],
                             capture_output=True, text=True, check=True).stdout
        best = min(best, time.perf_counter() - t)
        torch = out.strip().endswith("True")
    return best, torch


def _summary(values: list[float], unit: str) -> str:
    import statistics

    fmt = (lambda v: f"{v:+.1f}%") if unit == "%" else (lambda v: f"{v:.2f}x")
    return f"{fmt(statistics.median(values))} [{fmt(min(values))} .. {fmt(max(values))}]"


def _mongod():
    """The ``mongod`` process FiftyOne started for this run (a ``psutil.Process``), or ``None``."""
    import psutil

    for child in psutil.Process().children(recursive=True):
        try:
            if child.name().startswith("mongod"):
                return child
        except psutil.Error:
            continue
    return None


def _cpu(proc) -> float:
    """User + system CPU seconds of ``proc`` so far (0 without one)."""
    if proc is None:
        return 0.0
    t = proc.cpu_times()
    return t.user + t.system

if __name__ == "__main__":
    main()
