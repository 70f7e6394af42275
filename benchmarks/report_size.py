"""Report size and time against dataset size: audit + report on 1,000 / 10,000 / 50,000 CIFAR-10 images.

The claim checked: the HTML report stays a few MB whatever the number of images, because
plots and tables grow with the number of classes, not images, and thumbnails are capped
per section (``stages.report.max_thumbnails``). All sizes are measured in this one run;
the last column is each size relative to the smallest dataset's report.

Usage::

    python benchmarks/report_size.py [--sizes 1000,10000,50000] [--cache DIR]

Needs ``../shared/data/cifar10/{train,test}.tar.gz`` (or ``$VETSET_SHARED_DATA``). The
datasets it creates (``vetset-bench-report-N``) are deleted at the end.
"""

from __future__ import annotations

import argparse
import csv
import os
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("VETSET_SHARED_DATA", REPO.parent / "shared" / "data"))


def unpack(name: str, cache: Path) -> Path:
    dest = cache / name
    if not (dest / ".unpacked").exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(SHARED / "cifar10" / f"{name}.tar.gz") as tar:
            tar.extractall(dest, filter="data")
        (dest / ".unpacked").touch()
    return dest / name


def manifest(root: Path, n: int, out: Path) -> Path:
    """A CSV manifest of the first ``n / 10`` files of each class (80/20 split left to vetset)."""
    per_class = n // 10
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["filepath", "label"])
        for cls in sorted(p.name for p in root.iterdir() if p.is_dir()):
            for fp in sorted((root / cls).iterdir())[:per_class]:
                w.writerow([str(fp), cls])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "vetset-bench-cifar"))
    args = parser.parse_args()
    os.environ.setdefault("VETSET_PROGRESS", "0")

    import fiftyone as fo

    from vetset.core.manager import get_hooks  # first: vetset.core sets FiftyOne's environment
    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run
    from vetset.plugins.report.page import plotly_js_gzip_b64
    from vetset.plugins.report.stage import ReportOptions, write_report

    cache = Path(args.cache)
    train = unpack("train", cache)
    hooks = get_hooks()
    plotly_mb = len(plotly_js_gzip_b64()) / 1e6
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        data = manifest(train, n, cache / f"manifest-{n}.csv")
        name = f"vetset-bench-report-{n}"
        if fo.dataset_exists(name):
            fo.delete_dataset(name)
        recipe = parse_recipe({"name": "bench", "stages": {"audit": {}, "report": {}}}, hooks.stages)
        run = Run(recipe, hooks, data=data, dataset=name, out_dir=cache / f"run-{n}", log=lambda m: None)
        result = run.execute()
        block = result["stages"]["report"]
        t0 = time.perf_counter()  # redraw alone: what `recipes report` costs
        write_report(result, cache / f"run-{n}" / "again", ReportOptions(), hooks, run.dataset, log=lambda m: None)
        redraw_s = time.perf_counter() - t0
        rows.append((len(run.dataset), result["stage_times_s"]["audit"], redraw_s, block["size_bytes"] / 1e6,
                     block["thumbnails"]))
        fo.delete_dataset(name)
    base = rows[0][3]
    print(f"plotly.js inlined (gzip + base64): {plotly_mb:.2f} MB, the same in every report\n")
    print(f"| {'images':>7} | {'audit s':>8} | {'report s':>8} | {'HTML MB':>7} | {'non-plotly MB':>13} | "
          f"{'thumbnails':>10} | {'size / smallest':>15} |")
    print(f"| {'-' * 7} | {'-' * 8} | {'-' * 8} | {'-' * 7} | {'-' * 13} | {'-' * 10} | {'-' * 15} |")
    for n, audit_s, report_s, mb, thumbs in rows:
        print(f"| {n:>7,} | {audit_s:>8.1f} | {report_s:>8.2f} | {mb:>7.2f} | {mb - plotly_mb:>13.3f} | "
              f"{thumbs:>10} | {mb / base:>15.2f} |")


if __name__ == "__main__":
    main()
