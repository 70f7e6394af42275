"""Built-in plugin: the ``iterate`` stage, retraining aimed at the failing slices, round against round.

Put it after ``train`` and ``validate`` (the bundled ``iterate`` recipe does). Round 0 is
the model those stages trained and validated. Each round then

1. aims new augmentation at the worst failure slices of the current best model, in the
   slices' ranking (those worse than the rest of their class in a bin its train images
   lack first; :func:`slice_targets`: slices on a coverage property a policy can add, i.e.
   ``orientation``, ``colour_mode``, ``clarity``, become per-class targets of the augment
   planner, ``AugmentOptions.class_targets``, at the slice's share of the class's val
   images), writing the images under ``<out>/iterate/round-<r>/images`` (with no such
   slice, ``no_target: train`` fine-tunes on the recipe's augmentation alone, ``stop``
   ends the loop);
2. trains with the train stage's options (same epochs, model and seed: each round's budget
   is the train stage's ``epochs``) into ``<out>/iterate/round-<r>/train``. With
   ``start: kept`` (the default) the round fine-tunes the kept (best so far) model: its
   checkpoint is the ``weights`` of the round's training (classifier kept, so
   ``head_epochs`` 0; the backbone learning-rate scale the train stage used), and the
   learning-rate schedule starts again from ``lr`` over the round's epochs, a warm restart
   (I. Loshchilov & F. Hutter, "SGDR: Stochastic gradient descent with warm restarts",
   ICLR 2017). ``start: scratch`` trains each round from the same random initialisation
   instead;
3. predicts the val split into the field ``predictions_round<r>`` (evaluated with
   ``eval_key`` ``eval_round<r>``; round 0's predictions are copied to
   ``predictions_round0`` / ``eval_round0``);
4. compares with the best model so far (:mod:`.compare`: accuracy and macro-F1 with paired
   bootstrap intervals, per-class and per-slice error) and saves the views
   ``iterate/round<r>/fixed`` and ``iterate/round<r>/broken`` (val images the new model
   gets right that the old one got wrong, and the reverse).

A round whose verdict is ``better`` becomes the best; the loop stops after ``max_rounds``
or at the first round that is not better. That last round is still kept when ``keep`` is
``higher`` (the default) and its ``primary`` metric is higher, the interval including 0
(``no clear difference``): a fine-tuned round has trained longer, and the val images pick
it as they pick the best epoch; ``keep: clearly_better`` keeps it only when ``better``. The best checkpoint is copied to
``<out>/iterate/best.pt``, and the dataset's latest augmentation folder is set back to
the best round's, so a later ``train`` fits what won.

Result block (``result["stages"]["iterate"]``)::

    {"primary", "max_rounds", "rounds": [{"round", "checkpoint", "pred_field", "eval_key",
       "accuracy", "macro_f1", "targets": {class: {property: {bin: share}}},
       "start": {"mode": "kept"|"scratch", "from_round", "checkpoint", "weights", "lr", "epochs"},
       "history": [...train history rows...],
       "augment": {"output_dir", "images"}, "compare": {...paired_bootstrap...,
       "verdict", "per_class", "per_slice": [...]}, "views": {"fixed", "broken"}}],
     "best_round", "best_checkpoint", "stopped": sentence,
     "metrics": {"rounds_run", "best_round", "val_accuracy_gain", "macro_f1_gain"}}
"""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from vetset.core.dataset import AUGMENT_FOLDER_KEY, split_view, training_view
from vetset.core.errors import VetsetError
from vetset.core.hookspecs import hookimpl
from vetset.core.registry import ReportSection, Stage
from vetset.plugins.augment.policies import PROPERTY_BINS
from vetset.plugins.augment.stage import AugmentOptions
from vetset.plugins.augment.steps import run_augment
from vetset.plugins.iterate.compare import paired_bootstrap, per_class_error, verdict
from vetset.plugins.iterate.report import render_rounds
from vetset.plugins.train.checkpoint import load_checkpoint, model_from_checkpoint
from vetset.plugins.train.data import resolve_device
from vetset.plugins.train.options import TrainOptions, as_options
from vetset.plugins.train.stage import fit, items_of, predict
from vetset.plugins.validate.properties import match_bin, properties_from_result
from vetset.plugins.validate.slices import SliceOptions, failure_slices

if TYPE_CHECKING:
    from vetset.core.run import Run

#: Slice property (audit field) -> augment coverage property.
FIELD_TO_COVERAGE = {"orientation": "orientation", "colour_mode": "colour", "clarity": "clarity"}
VIEW_PREFIX = "iterate/"


class IterateOptions(BaseModel):
    """``stages.iterate`` options.

    Attributes:
        max_rounds: retraining rounds at most (each one a full training). Default 2.
        aim_slices: worst failure slices aimed at per round. Default 3.
        min_share / max_share: a targeted slice's share of its class's train images is
            lifted to its share of the class's val images, kept within these. Defaults 0.1, 0.5.
        primary: metric the verdict is taken on. Default ``accuracy``.
        n_boot: paired bootstrap replicates. Default 2000.
        confidence: interval level. Default 0.95.
        seed: bootstrap seed.
        keep: ``higher``: a round that is not clearly better stops the loop but is kept when
            its ``primary`` metric is higher (verdict ``no clear difference``);
            ``clearly_better``: only a ``better`` round is kept.
        no_target: a round finding no failing slice a policy can add: ``train`` (with
            ``start: kept``) still fine-tunes the kept model for its budget, with the
            recipe's augmentation only, so the loop spends the epochs it was given and the
            stopping rule decides; ``stop`` ends the loop there (as ``start: scratch``
            always does: the same data and seed would give the same model).
        start: ``kept``: each round fine-tunes the kept (best so far) checkpoint for the
            train stage's ``epochs`` (module docstring); ``scratch``: each round trains from
            the random initialisation of the train stage's ``seed``.
    """

    model_config = {"extra": "forbid"}

    max_rounds: int = Field(2, ge=1, le=10)
    aim_slices: int = Field(3, ge=1)
    min_share: float = Field(0.1, gt=0.0, lt=1.0)
    max_share: float = Field(0.5, gt=0.0, lt=1.0)
    primary: Literal["accuracy", "macro_f1"] = "accuracy"
    n_boot: int = Field(2000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    seed: int = 0
    start: Literal["kept", "scratch"] = "kept"
    keep: Literal["higher", "clearly_better"] = "higher"
    no_target: Literal["train", "stop"] = "train"


def slice_targets(slices: dict[str, Any], options: IterateOptions,
                  addable: set[tuple[str, str]] | None = None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Per-class coverage targets for the worst slices the augment planner can add.

    Args:
        slices: a ``failure_slices`` block (ranked ``by_class`` rows).
        options: :class:`IterateOptions`.
        addable: ``(coverage property, bin)`` cells some augmentation policy adds (the
            registered policies' ``targets``); ``None``: every bin of the property.

    Returns:
        ``(targets, aimed)``: ``{class: {coverage property: {bin: share}}}`` and the slice
        rows aimed at, in the slices' ranking: rows with ``priority`` (worse than the rest
        of their class in a bin the class's train images lack;
        :mod:`vetset.plugins.validate.slices`) first, then the others by ``score``. A row
        qualifies when it has errors, a positive excess, a property in
        :data:`FIELD_TO_COVERAGE` and a bin in ``addable``; its share is
        ``n / (n + rest_n)`` (the bin's share of the class's val images) clipped to
        ``[min_share, max_share]``, and a class's shares stay under 1 in all (the augment
        planner's rule).
    """
    targets: dict[str, dict[str, dict[str, float]]] = {}
    aimed = []
    # the ranking's order; sorted again (stable) so that results written before ``priority`` existed still work
    for row in sorted(slices.get("by_class") or [], key=lambda r: not r.get("priority")):
        prop = FIELD_TO_COVERAGE.get(row["property"])
        if prop is None or row["bin"] not in PROPERTY_BINS.get(prop, ()) or not row["errors"] or row["excess"] <= 0 \
                or (addable is not None and (prop, row["bin"]) not in addable):
            continue
        share = min(options.max_share, max(options.min_share, row["n"] / max(1, row["n"] + row["rest_n"])))
        per_class = targets.get(row["class"], {})
        if sum(v for bins in per_class.values() for v in bins.values()) + share >= 1.0:
            continue
        targets.setdefault(row["class"], {}).setdefault(prop, {})[row["bin"]] = round(share, 4)
        aimed.append(row)
        if len(aimed) >= options.aim_slices:
            break
    return targets, aimed


def round_train_options(train_opts: TrainOptions, train_block: dict[str, Any], checkpoint: str,
                        start: str = "kept") -> TrainOptions:
    """The training options of one round: the train stage's, starting from ``checkpoint`` when ``start`` is ``kept``.

    Args:
        train_opts: the train stage's options (their ``epochs`` and ``seed`` are the round's).
        train_block: the train stage's result block (its ``finetune`` plan gives the
            backbone learning-rate scale it resolved).
        checkpoint: path of the kept model's ``best.pt`` (a vetset checkpoint).
        start: ``kept`` or ``scratch`` (:class:`IterateOptions`).

    Returns:
        ``train_opts`` unchanged for ``scratch``; for ``kept`` a copy with ``weights`` =
        ``checkpoint``, ``pretrained`` false, ``head_epochs`` 0 (the classifier is already
        trained) unless set, and ``backbone_lr_scale`` the train stage's (unless set), so
        the fine-tune keeps the learning rates the first model trained with.
    """
    if start == "scratch":
        return train_opts
    plan = train_block.get("finetune") or {}
    update: dict[str, Any] = {"weights": str(checkpoint), "pretrained": False}
    if train_opts.head_epochs is None:
        update["head_epochs"] = 0
    if train_opts.backbone_lr_scale is None:
        update["backbone_lr_scale"] = float(plan.get("backbone_lr_scale") or 1.0)
    return train_opts.model_copy(update=update)


def _evaluate(dataset: Any, field: str, eval_key: str, classes: list[str]) -> None:
    val = split_view(dataset, "val").exists(field)
    if eval_key in dataset.list_evaluations():
        dataset.delete_evaluation(eval_key)
    val.evaluate_classifications(field, gt_field="ground_truth", eval_key=eval_key, classes=classes, progress=False)


def _predict_round(run: Run, ckpt_path: str, field: str, classes: list[str], train_opts: Any) -> None:
    """Predict the val split with a checkpoint into ``field`` (``fo.Classification`` with logits)."""
    import fiftyone as fo  # deferred: fiftyone takes about 1 s to import

    ckpt = load_checkpoint(ckpt_path)
    if list(ckpt["classes"]) != classes:
        raise VetsetError(f"The checkpoint {ckpt_path} has other classes than the validated model.")
    model = model_from_checkpoint(ckpt, resolve_device(train_opts.device))
    val = split_view(run.dataset, "val")
    probs, logits = predict(model, val.values("filepath"), ckpt["data_config"], train_opts)
    val.set_values(field, [fo.Classification(label=classes[int(i)], confidence=float(p[int(i)]), logits=lg.tolist())
                           for i, p, lg in zip(probs.argmax(1), probs, logits)])


def _indices(view: Any, field: str, classes: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index.get(v, -1) for v in view.values(f"{field}.label")], dtype=np.int64)


def _per_slice(dataset: Any, slices: dict[str, Any], old: str, new: str, aimed: list[dict[str, Any]],
               limit: int = 10) -> list[dict[str, Any]]:
    """Error of both models on the slices aimed at and the top ``limit`` slices (by class) of ``slices``."""
    from fiftyone import ViewField as F  # deferred: fiftyone takes about 1 s to import

    props = properties_from_result(dataset, slices["properties"])
    val = split_view(dataset, "val").exists(new)
    out = []
    rows = {r["label"]: r for r in list(aimed) + (slices.get("by_class") or [])[:limit]}
    for row in rows.values():
        if row["property"] not in props:
            continue
        view = match_bin(val.match(F("ground_truth.label") == row["class"]), props[row["property"]], row["bin"])
        gt, a, b = view.values(["ground_truth.label", f"{old}.label", f"{new}.label"])
        n = len(gt)
        if n:
            out.append({"label": row["label"], "n": n, "aimed": row["label"] in {a["label"] for a in aimed},
                        "old": round(sum(x != g for x, g in zip(a, gt)) / n, 4),
                        "new": round(sum(x != g for x, g in zip(b, gt)) / n, 4)})
    return out


def _save_change_views(dataset: Any, r: int, old: str, new: str) -> dict[str, int]:
    from fiftyone import ViewField as F  # deferred: fiftyone takes about 1 s to import

    val = split_view(dataset, "val").exists(new)
    gt = F("ground_truth.label")
    views = {"fixed": val.match((F(f"{old}.label") != gt) & (F(f"{new}.label") == gt)),
             "broken": val.match((F(f"{old}.label") == gt) & (F(f"{new}.label") != gt))}
    dataset.reload()
    counts = {}
    for kind, view in views.items():
        name = f"{VIEW_PREFIX}round{r}/{kind}"
        dataset.save_view(name, view, overwrite=True,
                          description=f"val images the round-{r} model gets {'right' if kind == 'fixed' else 'wrong'} "
                                      f"that the model it was compared with got {'wrong' if kind == 'fixed' else 'right'}")
        counts[kind] = len(view)
    return counts


def _set_augment_folder(dataset: Any, folder: str | None) -> None:
    info = dict(dataset.info or {})
    vinfo = dict(info.get("vetset") or {})
    if folder:
        vinfo[AUGMENT_FOLDER_KEY] = folder
    else:
        vinfo.pop(AUGMENT_FOLDER_KEY, None)
    info["vetset"] = vinfo
    dataset.info = info
    dataset.save()


def _augment_base(run: Run) -> AugmentOptions:
    """The augmentation every round starts from: the recipe's ``augment`` options, else those of the
    augment stage that ran before (its result block, e.g. a run started from the App), else none
    (``min_count`` 0, no coverage targets: a round writes only the images aimed at its slices)."""
    if "augment" in run.recipe.stages:
        return run.recipe.options("augment")
    earlier = (run.results.get("augment") or {}).get("options")
    if earlier:
        keep = {k: v for k, v in earlier.items() if k in AugmentOptions.model_fields and k != "output_dir"}
        return AugmentOptions(**keep)
    return AugmentOptions(min_count=0, coverage_targets={})


def _iterate(run: Run, options: IterateOptions) -> dict[str, Any]:
    train_block, val_block = run.results.get("train"), run.results.get("validate")
    if not train_block or not val_block or not val_block.get("slices"):
        raise VetsetError("The iterate stage needs the train and validate stages (with slices) before it in the recipe.")
    ds, classes = run.dataset, list(val_block["classes"])
    train_opts = as_options(run.recipe.options("train") if "train" in run.recipe.stages else train_block["options"])
    aug_base = _augment_base(run)
    base_folder = ((ds.info or {}).get("vetset") or {}).get(AUGMENT_FOLDER_KEY)
    val = split_view(ds, "val")
    ds.clone_sample_field("predictions", "predictions_round0") if "predictions_round0" not in \
        ds.get_field_schema() else val.set_values("predictions_round0", val.values("predictions"))
    _evaluate(ds, "predictions_round0", "eval_round0", classes)
    y = _indices(val, "ground_truth", classes)
    best = {"round": 0, "checkpoint": train_block["checkpoint"], "field": "predictions_round0", "folder": base_folder,
            "slices": val_block["slices"]}
    acc0 = float((_indices(val, "predictions_round0", classes) == y).mean())
    rounds: list[dict[str, Any]] = [{"round": 0, "checkpoint": best["checkpoint"], "pred_field": best["field"],
                                     "eval_key": "eval_round0", "accuracy": round(acc0, 4),
                                     "macro_f1": (val_block["val"].get("macro") or {}).get("f1")}]
    stopped = f"reached max_rounds={options.max_rounds}"
    for r in range(1, options.max_rounds + 1):
        addable = {(str(p), str(b)) for pol in run.hooks.policies.values() for p, b in pol.targets}
        targets, aimed = slice_targets(best["slices"], options, addable)
        if not targets:
            why = (f"round {r}: no failing slice in a bin an augmentation policy adds "
                   "(orientation, colour_mode, clarity bins with a policy)")
            if options.no_target == "stop" or options.start == "scratch":
                stopped = why
                break
            run.log(f"[iterate] {why}; fine-tuning with the recipe's augmentation only (no_target: train)")
        else:
            run.log(f"[iterate] round {r}: aiming augmentation at " + "; ".join(a["label"] for a in aimed))
        rdir = run.stage_dir("iterate") / f"round-{r}"
        aug_opts = AugmentOptions(**{**aug_base.model_dump(), "class_targets": targets,
                                     "output_dir": rdir / "images", "reaudit": False})
        aug = run_augment(run, aug_opts)
        train_view, _ = training_view(ds)
        round_opts = round_train_options(train_opts, train_block, best["checkpoint"], options.start)
        if options.start == "kept":
            run.log(f"[iterate] round {r}: fine-tuning the kept model (round {best['round']}, {best['checkpoint']}) "
                    f"for {round_opts.epochs} epochs, seed {round_opts.seed}")
        out = fit(items_of(train_view, classes), items_of(val, classes), classes, round_opts,
                  out_dir=rdir / "train", log=run.log, resume=run.resume, recipe=run.recipe.dump())
        ckpt = str(rdir / "train" / "best.pt")
        field, key = f"predictions_round{r}", f"eval_round{r}"
        _predict_round(run, ckpt, field, classes, train_opts)
        _evaluate(ds, field, key, classes)
        new = _indices(val, field, classes)
        stats = paired_bootstrap(y, _indices(val, best["field"], classes), new, len(classes), options.n_boot,
                                 options.confidence, options.seed)
        stats["verdict"] = verdict(stats, options.primary)
        stats["against_round"] = best["round"]
        stats["per_class"] = per_class_error(y, _indices(val, best["field"], classes), new, classes)
        stats["per_slice"] = _per_slice(ds, best["slices"], best["field"], field, aimed)
        views = _save_change_views(ds, r, best["field"], field)
        slices = failure_slices(ds, classes, SliceOptions(views=0), lambda m: None, pred_field=field,
                                gap_share=val_block["slices"].get("gap_share"))
        m = stats[options.primary]
        run.log(f"[iterate] round {r} vs round {best['round']}: {options.primary} {m['old']:.3f} -> {m['new']:.3f} "
                f"({m['diff']:+.3f}, {int(100 * options.confidence)}% CI {m['ci'][0]:+.3f} to {m['ci'][1]:+.3f}): "
                f"{stats['verdict']}; fixed {stats['fixed']}, broke {stats['broken']} val images")
        rounds.append({"round": r, "checkpoint": ckpt, "pred_field": field, "eval_key": key,
                       "accuracy": stats["accuracy"]["new"], "macro_f1": stats["macro_f1"]["new"],
                       "epochs_run": len(out.history), "history": out.history,
                       "start": {"mode": options.start, "from_round": best["round"] if options.start == "kept" else None,
                                 "checkpoint": best["checkpoint"] if options.start == "kept" else None,
                                 "weights": out.weights, "lr": round_opts.lr, "epochs": round_opts.epochs,
                                 "seed": round_opts.seed},
                       "targets": targets, "aimed": [a["label"] for a in aimed],
                       "augment": {"output_dir": aug["output_dir"], "images": aug["metrics"]["augmented_images"]},
                       "compare": stats, "views": {f"{VIEW_PREFIX}round{r}/{k}": v for k, v in views.items()},
                       "worst_slice": slices["worst"]})
        new_best = {"round": r, "checkpoint": ckpt, "field": field, "folder": aug["output_dir"], "slices": slices}
        if stats["verdict"] != "better":
            stopped = f"round {r} was not better than round {best['round']} ({stats['verdict']})"
            if options.keep == "higher" and stats["verdict"] != "worse" and m["diff"] > 0:
                stopped += f"; kept for its higher {options.primary} (keep: higher)"
                best = new_best
            break
        best = new_best
    _set_augment_folder(ds, best["folder"])
    kept = run.stage_dir("iterate") / "best.pt"
    shutil.copyfile(best["checkpoint"], kept)
    run.log(f"[iterate] kept round {best['round']} ({stopped}): {kept}")
    first, last = rounds[0], next(x for x in rounds if x["round"] == best["round"])
    return {
        "primary": options.primary, "max_rounds": options.max_rounds, "rounds": rounds,
        "best_round": best["round"], "best_checkpoint": str(kept), "best_source": best["checkpoint"],
        "stopped": stopped,
        "metrics": {"rounds_run": len(rounds) - 1, "best_round": best["round"],
                    "val_accuracy_gain": round(last["accuracy"] - first["accuracy"], 4),
                    "macro_f1_gain": None if first.get("macro_f1") is None or last.get("macro_f1") is None
                    else round(last["macro_f1"] - first["macro_f1"], 4)},
    }


@hookimpl
def vetset_register_stages(register):
    register(Stage("iterate", _iterate, IterateOptions,
                   "Retrain with augmentation aimed at the failing slices; compare round against round; keep the better"))


@hookimpl
def vetset_register_report_sections(register):
    register(ReportSection("iterate", "Retraining rounds", render_rounds, order=95))
