"""Benchmark: the retrain loop (``iterate``) against one run with the same total number of epochs.

For each data set and seed, two runs of the real pipeline on their own FiftyOne dataset:

* **single**: audit -> train (``2E`` epochs) -> validate;
* **loop**: audit -> train (``E`` epochs) -> validate (failure slices) -> iterate (one round:
  augmentation aimed at the failing slices, ``E`` more epochs fine-tuning the round-0
  checkpoint with the same options and seed (``start: kept``; ``--start scratch`` retrains
  from the random initialisation instead), paired comparison, keep the better) — ``2E``
  epochs in all.

Both are scored on the same val images: accuracy and macro-F1, and the loop's kept model
minus the single run with a paired bootstrap 95% interval (:mod:`vetset.plugins.iterate.compare`).
Data sets (from ``../shared/data``; skipped when absent):

* ``antsbees``: the hymenoptera photos (245 train / 153 val, 2 classes) at 64 px;
* ``cifar``: a class-balanced subset of the CIFAR-10 test JPEGs (``--cifar-train`` /
  ``--cifar-val`` per class, 10 classes) at 32 px;
* ``planted``: CIFAR airplane / frog / truck whose frog train images are all colour while a
  third of its val images are grayscale (``tests/slices_data.py``). It also reports where
  the slice analysis ranks (frog, colour_mode = grayscale), as ranked (slices worse than
  the rest of their class in a bin the class's train images lack first) and by ``score``
  alone, its train share, and that slice's error before and after the round.

Usage::

    .venv/bin/python benchmarks/retrain_loop.py [--epochs 3] [--seeds 0 1 2] [--data antsbees cifar planted]
        [--model test_resnet] [--no-single] [--save-slices DIR]

``--no-single`` runs the loop only (enough for the planted case's slice rank and error);
``--save-slices DIR`` writes, per loop run, ``DIR/<data>-<seed>.npz``: the val samples'
``gt``, ``pred0`` and ``pred1`` (round 0 and round 1 predictions), each slice property's
membership (``member/<name>``, bool ``(n, bins)``) and ``properties`` (JSON of
:meth:`Property.to_dict`), so the slice ranking can be studied without training again.
"""

from __future__ import annotations

import argparse
import os
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("VETSET_PROGRESS", "0")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))  # the planted tree's builder, shared with the tests

from _common import private_database  # noqa: E402

SHARED = Path(os.environ.get("VETSET_SHARED_DATA", HERE.parent.parent / "shared" / "data"))


def _unpack(archive: Path, dest: Path) -> Path:
    marker = dest / ".unpacked"
    if not marker.exists():
        dest.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(dest, filter="data")
        marker.touch()
    return dest


def cifar_subset(test_root: Path, dest: Path, n_train: int, n_val: int) -> Path:
    """``dest/{train,val}/<class>/`` with the first ``n_train`` + ``n_val`` files of each class (copies)."""
    for cls in sorted(p.name for p in test_root.iterdir() if p.is_dir()):
        files = sorted((test_root / cls).glob("*.jpg"))
        for split, chosen in (("train", files[:n_train]), ("val", files[n_train:n_train + n_val])):
            out = dest / split / cls
            out.mkdir(parents=True, exist_ok=True)
            for f in chosen:
                (out / f.name).write_bytes(f.read_bytes())
    return dest


def one_run(name: str, data: Path, out: Path, stages: dict, hooks) -> dict:
    import fiftyone as fo

    from vetset.core.recipe import parse_recipe
    from vetset.core.run import Run

    if fo.dataset_exists(name):
        fo.delete_dataset(name)
    recipe = parse_recipe({"name": name, "stages": stages}, hooks.stages)
    run = Run(recipe, hooks, data=data, dataset=name, out_dir=out, log=lambda m: None)
    result = run.execute()
    return {"result": result, "dataset": run.dataset}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="E: epochs per round; the single run trains 2E")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data", nargs="+", default=["antsbees", "cifar", "planted"])
    parser.add_argument("--model", default="test_resnet")
    parser.add_argument("--cifar-train", type=int, default=60, help="CIFAR train images per class")
    parser.add_argument("--cifar-val", type=int, default=30, help="CIFAR val images per class")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--start", choices=["kept", "scratch"], default="kept",
                        help="iterate rounds fine-tune the kept model (kept) or train from scratch")
    parser.add_argument("--no-single", action="store_true", help="skip the single run (loop only)")
    parser.add_argument("--save-slices", type=Path, default=None,
                        help="folder for the loop runs' slice inputs (<data>-<seed>.npz)")
    args = parser.parse_args()
    private_database()

    import numpy as np

    from vetset.core.manager import Hooks
    from vetset.plugins.iterate.compare import paired_bootstrap

    work = Path(tempfile.mkdtemp(prefix="vetset-retrain-"))
    roots: dict[str, tuple[Path, int]] = {}
    if "antsbees" in args.data and (SHARED / "hymenoptera.tar").exists():
        roots["antsbees"] = (_unpack(SHARED / "hymenoptera.tar", work / "hym") / "hymenoptera_data", 64)
    cifar_tar = SHARED / "cifar10" / "test.tar.gz"
    if cifar_tar.exists() and {"cifar", "planted"} & set(args.data):
        test_root = _unpack(cifar_tar, work / "cifar-src") / "test"
        if "cifar" in args.data:
            roots["cifar"] = (cifar_subset(test_root, work / "cifar", args.cifar_train, args.cifar_val), 32)
        if "planted" in args.data:
            from slices_data import write_planted

            roots["planted"] = (write_planted(test_root, work / "planted")["root"], 32)
    roots = {k: roots[k] for k in args.data if k in roots}  # in the order asked for
    hooks = Hooks()
    rows, planted_rows = [], []
    t_all = time.perf_counter()
    for key, (root, size) in roots.items():
        for seed in args.seeds:
            train = {"model_name": args.model, "img_size": size, "batch_size": 32, "epochs": args.epochs,
                     "seed": seed, "threads": args.threads, "workers": 0}
            validate = {"workers": 0, "brain": False}
            t0 = time.perf_counter()
            single = None if args.no_single else one_run(f"bench-loop-{key}-{seed}-single", root, work / f"{key}-{seed}-single",
                             {"audit": {"workers": 0}, "train": {**train, "epochs": 2 * args.epochs},
                              "validate": validate}, hooks)
            t_single = time.perf_counter() - t0
            t0 = time.perf_counter()
            loop = one_run(f"bench-loop-{key}-{seed}-loop", root, work / f"{key}-{seed}-loop",
                           {"audit": {"workers": 0}, "augment": {"min_count": 0, "coverage_targets": {}},
                            "train": train, "validate": validate,
                            "iterate": {"max_rounds": 1, "seed": seed, "start": args.start}}, hooks)
            t_loop = time.perf_counter() - t0
            it = loop["result"]["stages"]["iterate"]
            kept = next(r for r in it["rounds"] if r["round"] == it["best_round"])
            classes = loop["result"]["stages"]["validate"]["classes"]
            index = {c: i for i, c in enumerate(classes)}
            # the same val images in both datasets: align by file path
            lv = loop["dataset"].match_tags("val")
            paths, gt, l_pred = lv.values(["filepath", "ground_truth.label", f"{kept['pred_field']}.label"])
            if args.save_slices:
                save_slice_inputs(loop, args.save_slices / f"{key}-{seed}.npz")
            sv = (loop if single is None else single)["dataset"].match_tags("val")  # no single: loop vs round 0
            s_pred = dict(zip(sv.values("filepath"),
                              sv.values(("predictions_round0" if single is None else "predictions") + ".label")))
            y = np.array([index[g] for g in gt])
            a = np.array([index[s_pred[p]] for p in paths])
            b = np.array([index[p] for p in l_pred])
            cmp = paired_bootstrap(y, a, b, len(classes), n_boot=2000, seed=seed)
            r1 = it["rounds"][1] if len(it["rounds"]) > 1 else None
            last = it["rounds"][-1]
            rows.append((key, seed, len(y), cmp["accuracy"]["old"], cmp["accuracy"]["new"], cmp["accuracy"]["ci"],
                         cmp["macro_f1"]["old"], cmp["macro_f1"]["new"], cmp["macro_f1"]["ci"],
                         it["best_round"], r1["compare"]["verdict"] if r1 else "no round 1", t_single, t_loop,
                         last["accuracy"], last["macro_f1"]))
            if key == "planted":
                sl = loop["result"]["stages"]["validate"]["slices"]
                def is_planted(r: dict) -> bool:
                    return (r["class"], r["property"], r["bin"]) == ("frog", "colour_mode", "grayscale")

                rank = next((i + 1 for i, r in enumerate(sl["by_class"]) if is_planted(r)), None)
                # the same rows ordered by score alone (the ranking before train coverage came first)
                by_score = sorted(sl["by_class"], key=lambda r: (-r["score"], -r["n"], r["label"]))
                rank_score = next((i + 1 for i, r in enumerate(by_score) if is_planted(r)), None)
                row = sl["by_class"][rank - 1] if rank else {}
                per = [s for s in (r1["compare"]["per_slice"] if r1 else [])
                       if s["label"] == "frog, colour_mode = grayscale"]
                first = sl["by_class"][0]
                planted_rows.append((seed, rank_score, rank, row.get("score"), row.get("train_share"),
                                     row.get("priority"), first["label"], first["score"], first.get("train_share"),
                                     per[0]["old"] if per else None, per[0]["new"] if per else None,
                                     r1["augment"]["images"] if r1 else 0,
                                     [r["label"] for r in sl["by_class"] if r.get("priority")],
                                     [r["label"] for r in sl["by_class"] if r.get("uncovered") and not r["priority"]],
                                     [f"{r['label']} ({r['errors']}/{r['n']}, score {_f(r['score'])}, train share "
                                      f"{_f(r.get('train_share'))})" for r in by_score[:3]]))
            print(f"  {key} seed {seed}: acc single {rows[-1][3]:.3f} loop {rows[-1][4]:.3f} (kept round "
                  f"{it['best_round']}), macro-F1 single {rows[-1][6]:.3f} loop {rows[-1][7]:.3f}; "
                  f"{t_single:.0f} s / {t_loop:.0f} s" + (f"; planted {planted_rows[-1]}" if key == "planted" else ""),
                  flush=True)

    print(f"\nretrain loop (rounds start: {args.start}) vs single run, {args.model}, E={args.epochs} epochs per round "
          f"(single: {2 * args.epochs}), {time.perf_counter() - t_all:.0f} s in all; load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print("loop = the kept model; last = the loop's last round (kept or not); diff = loop - single, paired "
          "bootstrap 95% CI" + ("; --no-single: 'single' is the loop's round 0 (E epochs)" if args.no_single else ""))
    print("data      seed  val  acc single  acc loop  diff [95% CI]        acc last  F1 single  F1 loop  "
          "diff [95% CI]        F1 last  kept  round-1 verdict        s single  s loop")
    for k, s, n, a0, a1, aci, f0, f1, fci, kr, v, ts, tl, al, fl in rows:
        print(f"{k:9} {s:4} {n:4}  {a0:10.3f}  {a1:8.3f}  {a1 - a0:+.3f} [{aci[0]:+.3f},{aci[1]:+.3f}]  {al:8.3f}"
              f"  {f0:9.3f}  {f1:7.3f}  {f1 - f0:+.3f} [{fci[0]:+.3f},{fci[1]:+.3f}]  {_f(fl):>7}  {kr:4}  {v:22} "
              f"{ts:8.0f} {tl:7.0f}")
    for key in roots:
        sub = [r for r in rows if r[0] == key]
        print(f"{key:9} mean over {len(sub)} seeds: accuracy single {np.mean([r[3] for r in sub]):.3f}, "
              f"loop {np.mean([r[4] for r in sub]):.3f}, last {np.mean([r[13] for r in sub]):.3f}; macro-F1 single "
              f"{np.mean([r[6] for r in sub]):.3f}, loop {np.mean([r[7] for r in sub]):.3f}")
    if planted_rows:
        print("\nplanted case: rank of (frog, colour_mode = grayscale) among class slices, by score alone (low end "
              "of the 95% interval of its excess error) and as ranked (worse and uncovered in train first); its "
              "train share, priority; the first slice; the planted slice's val error before/after")
        print("seed  rank by score  rank  score   train share  priority  first slice                              "
              "score   train share  error round 0  error round 1  images added")
        for seed, rs, rank, score, share, prio, first, fscore, fshare, e0, e1, n, *_ in planted_rows:
            print(f"{seed:4}  {rs if rs else '-':>13}  {rank if rank else '-':>4}  {_f(score):>6}  {_f(share):>11}  "
                  f"{str(prio):8}  {first[:40]:40} {_f(fscore):>6}  {_f(fshare):>11}  {_f(e0):>13}  {_f(e1):>13}  "
                  f"{n:12}")
        for row in planted_rows:
            print(f"seed {row[0]}: priority (worse, uncovered) slices: {'; '.join(row[-3]) or 'none'}; uncovered, "
                  f"not worse (among the rows kept, slices.rows): {'; '.join(row[-2]) or 'none'}; first by "
                  f"score alone: {'; '.join(row[-1])}")


def save_slice_inputs(run: dict, path: Path) -> None:
    """The loop run's val slice inputs as ``path`` (npz: see the module docstring)."""
    import json

    import numpy as np

    from vetset.core.dataset import split_view
    from vetset.plugins.validate.properties import properties_from_result, read_values

    it = run["result"]["stages"]["iterate"]
    props = list(properties_from_result(run["dataset"], run["result"]["stages"]["validate"]["slices"]["properties"])
                 .values())
    val = split_view(run["dataset"], "val").exists("predictions_round0")
    fields = ["ground_truth.label", "predictions_round0.label"] + \
        ([f"{it['rounds'][1]['pred_field']}.label"] if len(it["rounds"]) > 1 else [])
    cols = val.values(fields)
    values = read_values(val, props)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, gt=np.array(cols[0], dtype=str), pred0=np.array(cols[1], dtype=str),
                        pred1=np.array(cols[2] if len(cols) > 2 else cols[1], dtype=str),
                        properties=json.dumps([p.to_dict() for p in props]),
                        **{f"member/{p.name}": p.membership(values[p.name]) for p in props})


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    main()
