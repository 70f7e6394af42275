"""Benchmark: planted near duplicates found by pHash, by embeddings, and by both.

Data, built at run time (nothing is committed): ``--originals`` CIFAR-10 *train* files
(``../shared/data/cifar10/train.tar.gz``, a seeded class-balanced choice), and 100 planted
copies for each of four modifications, each made from a different original:

* ``jpeg40``: re-encoded as JPEG quality 40;
* ``resize60``: resized to 60% (bicubic);
* ``crop85``: the centre 85% cropped and resized back to the original size;
* ``mirror``: mirrored left-right.

Features come from a timm backbone that vetset's trainer fitted on the CIFAR-10 *test*
files (``_backbone.py``: disjoint images, no train labels), through the embed stage's own
code (``vetset.plugins.embed``: backbone loader, batched pass, centred cosine kNN), in four
variants (``VARIANTS``): plain, flip-invariant (mean of image and mirror features), and
flip-invariant with one or two centre crops averaged in (the stage's ``crops``). pHash is the audit's
(``imagehash.phash`` within 4 bits, multi-index hashing).

Printed: recall per modification (a copy is found when the pair copy-source is reported)
and false pairs (pairs of two originals, and pairs of a copy with an original it was not
made from), for pHash, each variant (threshold rule and mutual-nearest-neighbour rule) and
pHash + the stage's default, then the trade-off curve over thresholds per variant.

Usage::

    .venv/bin/python benchmarks/near_duplicates.py [--originals 2000] [--per-mod 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VETSET_PROGRESS", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

MODS = ("jpeg40", "resize60", "crop85", "mirror")
THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96)


def plant(originals: list[str], per_mod: int, seed: int, dest: Path) -> list[tuple[str, int, str]]:
    """Write the planted copies; returns ``(path, source index, modification)``."""
    from PIL import Image, ImageOps

    rng = np.random.default_rng(seed)
    sources = rng.choice(len(originals), size=per_mod * len(MODS), replace=False)
    out = []
    for m, mod in enumerate(MODS):
        for s in sources[m * per_mod:(m + 1) * per_mod]:
            img = Image.open(originals[s]).convert("RGB")
            w, h = img.size
            path = dest / f"{mod}_{s:05d}.jpg"
            if mod == "jpeg40":
                img.save(path, quality=40)
            elif mod == "resize60":
                img.resize((max(1, round(w * 0.6)), max(1, round(h * 0.6))), Image.BICUBIC).save(path, quality=95)
            elif mod == "crop85":
                cw, ch = round(w * 0.85), round(h * 0.85)
                x0, y0 = (w - cw) // 2, (h - ch) // 2
                img.crop((x0, y0, x0 + cw, y0 + ch)).resize((w, h), Image.BICUBIC).save(path, quality=95)
            else:
                ImageOps.mirror(img).save(path, quality=95)
            out.append((str(path), int(s), mod))
    return out


def phash_pairs(paths: list[str], radius: int = 4) -> set[tuple[int, int]]:
    """Pairs within ``radius`` bits of the audit's pHash."""
    from vetset.core.images import decode
    from vetset.plugins.audit.checks.duplicates import DuplicateOptions, duplicates_compute, near_pairs

    hashes = np.array([int(duplicates_compute(decode(p), DuplicateOptions())["phash"], 16) for p in paths], dtype=np.uint64)
    uniq, inverse = np.unique(hashes, return_inverse=True)
    members: dict[int, list[int]] = {}
    for i, u in enumerate(inverse.tolist()):
        members.setdefault(u, []).append(i)
    pairs = set()
    for a, b in near_pairs(uniq, radius).tolist():
        for i in members[a]:
            for j in members[b]:
                pairs.add((min(i, j), max(i, j)))
    for group in members.values():
        for x in range(len(group)):
            for y in range(x + 1, len(group)):
                pairs.add((group[x], group[y]))
    return pairs


def embed(backbone, paths: list[str], flip: bool, crops: tuple[float, ...] = ()) -> tuple[np.ndarray, float]:
    from vetset.plugins.embed.compute import embed_batches

    t0 = time.perf_counter()
    feats = np.concatenate([f for _s, f, _ok in embed_batches(backbone, paths, 64, flip=flip, device="cpu",
                                                              crops=crops)])
    return feats, time.perf_counter() - t0


def score(pairs: set[tuple[int, int]], n_orig: int, planted: list[tuple[str, int, str]]) -> dict[str, float]:
    truth = {(s, n_orig + c): mod for c, (_p, s, mod) in enumerate(planted)}
    found = {m: 0 for m in MODS}
    for pair, mod in truth.items():
        if pair in pairs:
            found[mod] += 1
    per_mod = len(planted) // len(MODS)
    out = {m: found[m] / per_mod for m in MODS}
    out["all"] = sum(found.values()) / len(planted)
    out["false_orig"] = sum(1 for i, j in pairs if j < n_orig)
    out["false_copy"] = sum(1 for p in pairs if p[1] >= n_orig and p not in truth and p[0] < n_orig)
    return out


def embedding_pairs(feats: np.ndarray, threshold: float, rule: str, k: int = 10) -> set[tuple[int, int]]:
    from vetset.plugins.embed.neighbours import knn, similar_pairs, unit_rows

    sim, idx = knn(unit_rows(feats), k)
    return {tuple(p) for p in similar_pairs(sim, idx, threshold, rule).tolist()}


#: Feature variants compared: (name, flip, centre-crop fractions averaged in).
VARIANTS = (("plain", False, ()), ("flip", True, ()), ("flip + crop 0.8", True, (0.8,)),
            ("flip + crops 0.9, 0.8", True, (0.9, 0.8)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--originals", type=int, default=2000)
    parser.add_argument("--per-mod", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=None, help="epochs of the backbone trained on CIFAR-10 test "
                        "files (default: _backbone.py's)")
    parser.add_argument("--per-class", type=int, default=None, help="CIFAR-10 test files per class the backbone "
                        "trains on (default: _backbone.py's)")
    parser.add_argument("--threshold", type=float, default=None, help="the embedding threshold of the main table "
                        "(default: the embed stage's default)")
    args = parser.parse_args()

    import _backbone
    from train_throughput import balanced_items, image_folder

    from vetset.plugins.embed.backbone import load_backbone_file
    from vetset.plugins.embed.options import EmbedOptions, SimilarDuplicateOptions
    from vetset.plugins.train.weights import cached_pretrained_file

    t_start = time.perf_counter()
    threshold = args.threshold or SimilarDuplicateOptions().threshold
    per_class = args.per_class or _backbone.PER_CLASS
    ckpt = _backbone.cifar_test_backbone(epochs=args.epochs or _backbone.EPOCHS, per_class=per_class)
    train_root = image_folder("cifar10-train")
    pool, _classes = balanced_items(train_root, 50_000)
    rng = np.random.default_rng(args.seed)
    originals = [pool[i][0] for i in sorted(rng.choice(len(pool), size=args.originals, replace=False))]
    feats: dict[str, np.ndarray] = {}
    rates: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        planted = plant(originals, args.per_mod, args.seed, Path(tmp))
        paths = originals + [p for p, _s, _m in planted]
        n = len(originals)
        t0 = time.perf_counter()
        ph = phash_pairs(paths)
        t_phash = time.perf_counter() - t0
        backbone = load_backbone_file(ckpt, None)
        for name, flip, crops in VARIANTS:
            feats[name], secs = embed(backbone, paths, flip, crops)
            rates[name] = len(paths) / secs
    default = EmbedOptions()
    default_name = next(name for name, flip, crops in VARIANTS
                        if flip == default.flip and tuple(crops) == tuple(default.crops))
    cached = cached_pretrained_file("resnet50.a1_in1k")
    print(f"{n} CIFAR-10 train originals + {len(planted)} planted copies ({args.per_mod} per modification); "
          f"backbone {backbone.model_name} trained by vetset on {per_class * 10} CIFAR-10 test files ({ckpt}); "
          f"ImageNet backbone: {'cached at ' + cached if cached else 'none cached (offline), not measured'}")
    print(f"pHash {len(paths) / t_phash:.0f} img/s; embedding pass (CPU, {os.cpu_count()} cores visible, shared "
          "machine, load average {:.1f}): ".format(os.getloadavg()[0])
          + ", ".join(f"{name} {r:.0f} img/s" for name, r in rates.items()) + f"; the stage's default: {default_name}\n")

    rows = [("pHash (4 bits)", score(ph, n, planted))]
    for name, f in feats.items():
        for rule in ("threshold", "mutual"):
            rows.append((f"{name}, {rule} {threshold}", score(embedding_pairs(f, threshold, rule), n, planted)))
    rows.append((f"pHash + {default_name}, {default.duplicates.rule} {threshold}",
                 score(ph | embedding_pairs(feats[default_name], threshold, default.duplicates.rule), n, planted)))
    head = (f"| {'method':<52} | " + " | ".join(f"{m:>8}" for m in MODS)
            + f" | {'all':>6} | {'false orig-orig':>15} | {'false copy-orig':>15} |")
    print(head)
    print("|" + "|".join("-" * (len(c) + 0) for c in head.split("|")[1:-1]) + "|")
    for name, r in rows:
        print(f"| {name:<52} | " + " | ".join(f"{r[m]:>8.2f}" for m in MODS)
              + f" | {r['all']:>6.3f} | {r['false_orig']:>15d} | {r['false_copy']:>15d} |")

    print("\nTrade-off over thresholds (k = 10 neighbours); the target: false orig-orig <= 43 per 2,000 "
          "(a peer with ImageNet features, issue #20):\n")
    head = (f"| {'features':<22} | {'rule':<9} | {'threshold':>9} | " + " | ".join(f"{m:>8}" for m in MODS)
            + f" | {'false orig-orig':>15} | {'+ pHash: all':>12} |")
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    curves = [(name, "mutual") for name in feats] + [("flip", "threshold")]
    for name, rule in curves:
        for t in THRESHOLDS:
            pairs = embedding_pairs(feats[name], t, rule)
            r, both = score(pairs, n, planted), score(pairs | ph, n, planted)
            print(f"| {name:<22} | {rule:<9} | {t:>9.2f} | " + " | ".join(f"{r[m]:>8.2f}" for m in MODS)
                  + f" | {r['false_orig']:>15d} | {both['all']:>12.3f} |")
    print(f"\nwall time {time.perf_counter() - t_start:.0f} s; load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
