"""Built-in plugin: the ``label_noise`` stage — find likely label errors with cleanlab.

Out-of-sample ``pred_probs`` (:mod:`vetset.plugins.label_noise.pred_probs`) go through
``cleanlab.filter.find_label_issues`` (which samples are label issues) and
``cleanlab.rank.get_label_quality_scores`` (how likely each given label is right, 0..1).

Per checked sample the stage writes, in bulk:

* ``label_quality`` (float, lower = more likely wrong; ``None`` when not checked),
* the tag ``label_issue`` on flagged samples,
* ``suggested_label``: a ``fo.Classification`` with the out-of-sample argmax class and
  its probability as ``confidence``;

and saves the view ``label_issues`` (flagged samples, worst first). Reviewers tag samples
``label_confirmed`` / ``label_rejected`` (see :mod:`vetset.plugins.label_noise.review`); a rerun
keeps the ``suggested_label`` of confirmed samples (the label the reviewer accepted); reruns
never touch those tags.

Result block ``run.results["label_noise"]``::

    {"method", "method_reason", "filter_by", "n_folds", "classes", "num_candidates", "num_checked", "num_issues",
     "issue_rate", "oof_accuracy", "chance_agreement", "oof_kappa", "per_class": {class: {"checked", "issues"}},
     "flips": [{"given", "suggested", "count"}], "top_issues": [{"id", "filepath",
     "split", "given", "suggested", "suggested_prob", "label_quality"}], "folds": [...],
     "warnings": [sentence, ...], "skipped": None | sentence, "pred_probs_file",
     "options", "datalab": {...} | None, "features": {"source", "model_name", "weights", ...} | None,
     "fold_train": sentence (method kfold: the fold models' options),
     "metrics": {"label_issues", "label_issue_rate", "oof_accuracy", "label_checked"}}
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any

import numpy as np

from vetset.core.hookspecs import hookimpl
from vetset.core.registry import ReportSection, Stage, ViewSpec
from vetset.plugins.label_noise.options import LabelNoiseOptions, default_filter_by
from vetset.plugins.label_noise.review import CONFIRMED_TAG

if TYPE_CHECKING:
    from vetset.core.run import Run
    from vetset.plugins.train.options import TrainOptions

STAGE = "label_noise"
QUALITY_FIELD = "label_quality"
SUGGESTED_FIELD = "suggested_label"
ISSUE_TAG = "label_issue"
VIEW_NAME = "label_issues"


def find_issues(labels: np.ndarray, pred_probs: np.ndarray, options: LabelNoiseOptions | None = None,
                method: str | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """cleanlab's label issues and label quality scores for one set of ``pred_probs``.

    Args:
        labels: ``int`` ``(N,)`` given class indices in ``0..K-1``.
        pred_probs: ``float`` ``(N, K)`` out-of-sample probabilities, rows summing to 1.
        options: the stage options (``filter_by``, ``frac_noise``,
            ``min_examples_per_class``, ``rank_by``, ``adjust_pred_probs``); defaults are
            cleanlab's.
        method: the ``pred_probs`` source (``kfold``, ``embeddings``, ``pred_probs_file``),
            which ``filter_by: auto`` resolves by
            (:func:`vetset.plugins.label_noise.options.default_filter_by`; the stage also
            passes the backbone's weights source).

    Returns:
        ``(is_issue, label_quality, notes)``: ``bool`` ``(N,)`` from
        ``cleanlab.filter.find_label_issues``; ``float64`` ``(N,)`` in [0, 1] from
        ``cleanlab.rank.get_label_quality_scores`` (lower = more likely mislabelled);
        cleanlab's warnings as sentences.
    """
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    o = options or LabelNoiseOptions()
    labels = np.asarray(labels, dtype=np.int64)
    pred_probs = np.asarray(pred_probs, dtype=np.float64)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        kwargs: dict[str, Any] = {}
        filter_by = default_filter_by(method) if o.filter_by == "auto" else o.filter_by
        if filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
            kwargs["frac_noise"] = o.frac_noise
        # n_jobs=1: cleanlab's pool would fork next to FiftyOne's MongoDB client; for
        # N*K below 1e8 the single-process path takes well under a second.
        is_issue = find_label_issues(labels, pred_probs, filter_by=filter_by,
                                     min_examples_per_class=o.min_examples_per_class, n_jobs=1, **kwargs)
        quality = get_label_quality_scores(labels, pred_probs, method=o.rank_by,
                                           adjust_pred_probs=o.adjust_pred_probs)
    notes = sorted({str(w.message).split("\n")[0] for w in caught if issubclass(w.category, UserWarning)})
    return np.asarray(is_issue, dtype=bool), np.asarray(quality, dtype=np.float64), notes


def candidate_view(dataset: Any, options: LabelNoiseOptions) -> Any:
    """Readable samples of the chosen splits (without ``augmented`` copies unless asked)."""
    view = dataset.match_tags(list(options.splits)).match_tags("unreadable", bool=False)
    if not options.include_augmented:
        view = view.match_tags("augmented", bool=False)
    return view


def _train_options(run: Run, options: LabelNoiseOptions) -> TrainOptions:
    """The fold models' options (:func:`vetset.plugins.label_noise.folds.fold_train_options`); notes go to the log."""
    from vetset.plugins.label_noise.folds import fold_train_options

    opts, notes = fold_train_options(run.recipe, options)
    for note in notes:
        run.log(f"[label_noise] {note}")
    return opts


def _embedding_features(run: Run, options: LabelNoiseOptions, fps: list[str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Features for ``method: embeddings`` and a description of them.

    From the first source :func:`vetset.plugins.label_noise.choose.feature_source` finds:
    the ``embeddings.weights`` file, the ``embed`` stage's stored features (same images by
    content hash; images its store lacks are embedded with its backbone and added), pretrained weights of ``embeddings.model_name``,
    this run's ``train/best.pt``; with none of them, random weights (said in the log).
    """
    from vetset.plugins.label_noise import pred_probs as oof
    from vetset.plugins.label_noise.choose import feature_source

    e = options.embeddings
    block = run.results.get("embed") or {}
    kind, _what, _tried = feature_source(options, block, run.out_dir)
    if kind == "embed stage":
        from vetset.plugins.embed.stage import HASH_FIELD, complete_features

        ds = run.dataset
        known = ([h for h in ds.match({"filepath": {"$in": fps}}).values(HASH_FIELD)] if HASH_FIELD in
                 ds.get_field_schema() else None)
        if known is not None:  # values() follows the dataset's order: map them back to fps
            by_path = dict(zip(ds.match({"filepath": {"$in": fps}}).values("filepath"), known))
            known = [by_path.get(f) for f in fps]
        feats = complete_features(block, fps, known or [None] * len(fps), run.out_dir, run.log)
        if feats is not None:
            bb = block["backbone"]
            return feats, {"source": "embed stage", "model_name": bb["model_name"], "weights": bb["source"],
                           "weights_file": bb["weights_file"], "flip": bb.get("flip"), "dim": int(feats.shape[1])}
        run.log("[label_noise] the embed stage's store lacks some of these images and its backbone cannot be "
                "rebuilt with the same weights; embedding them here")
        kind, _what, _tried = feature_source(options, None, run.out_dir)
    if kind is None:
        run.log(f"[label_noise] embeddings from {e.model_name} with random weights (no stages.label_noise."
                "embeddings.weights file, pretrained weights or run checkpoint): such features say little about "
                "image content, so expect weak pred_probs; give a local pretrained weights file or checkpoint, or "
                "run the embed stage first")
        feats = oof.embed_images(fps, e.model_name, None, e.img_size, e.batch_size)
        return feats, {"source": "stages.label_noise.embeddings", "model_name": e.model_name, "weights": "random",
                       "weights_file": None, "flip": False, "dim": int(feats.shape[1])}
    bb = oof.label_noise_backbone(kind, e, run.out_dir)
    run.log(f"[label_noise] embedding {len(fps)} images with {bb.describe()}")
    feats = oof.embed_with_backbone(bb, fps, e.batch_size, e.flip)
    return feats, {"source": "stages.label_noise.embeddings", "model_name": bb.model_name,
                   "weights": {"weights": "weights file"}.get(bb.source, bb.source),
                   "weights_file": bb.weights_file, "flip": e.flip, "dim": int(feats.shape[1])}


def compute_pred_probs(run: Run, options: LabelNoiseOptions, ids: list[str], fps: list[str], labels: np.ndarray,
                       classes: list[str], method: str | None = None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, list[dict], dict | None]:
    """``(pred_probs, has_row, features, folds, features_info)`` for the samples, by ``method``
    (default ``options.method``; ``auto`` must be resolved first, see
    :func:`vetset.plugins.label_noise.choose.choose_method`). ``features_info`` says which
    features ``method: embeddings`` used, else ``None``."""
    from vetset.plugins.label_noise import pred_probs as oof

    method = method or options.method
    has_row = np.ones(len(ids), dtype=bool)
    if method == "pred_probs_file":
        probs, has_row = oof.load_pred_probs_file(options.pred_probs_file, options.ids_file, ids, fps, classes)
        return probs, has_row, None, [], None
    if method == "embeddings":
        feats, info = _embedding_features(run, options, fps)
        probs = oof.embedding_pred_probs(feats, labels, len(classes), options.n_folds, options.seed, options.embeddings.C)
        return probs, has_row, feats, [], info
    if method != "kfold":
        raise ValueError(f"compute_pred_probs: method {method!r} is not kfold, embeddings or pred_probs_file")
    from vetset.plugins.label_noise.folds import describe_fold_options

    train_opts = _train_options(run, options)
    run.log(f"[label_noise] {describe_fold_options(train_opts, options, len(fps))}")
    probs, folds = oof.kfold_pred_probs(fps, labels, classes, train_opts, options.n_folds,
                                        options.seed, out_dir=run.stage_dir(STAGE) / "folds", log=run.log,
                                        resume=run.resume)
    return probs, has_row, None, folds, None


#: Chance-corrected agreement (Cohen's kappa) of the out-of-sample predictions with the
#: given labels below which the flags are called unreliable. Confident learning assumes
#: ``pred_probs`` from a model that is right on most samples (Northcutt, Jiang & Chuang, JAIR
#: 2021); plain accuracy misleads when classes are few: 0.50 is chance for two balanced
#: classes but five times chance for ten. Kappa ``(acc - p_e) / (1 - p_e)``, with ``p_e`` the
#: agreement expected from the class shares alone, is 0 at chance for any class count; below
#: 0.4 agreement is at most "fair" (Landis & Koch 1977, Biometrics 33:159).
WEAK_KAPPA = 0.4
#: Share of flagged samples above which the flags are called unreliable: human label
#: noise in curated sets is mostly under 10% (CIFAR-10N ``aggre`` 9%, ``random1`` 17%;
#: Northcutt et al. 2021 find 3.3% on average over 10 test sets), and even CIFAR-10N
#: ``worse`` (40%) is rarer than this.
WEAK_ISSUE_RATE = 0.5


def chance_agreement(labels: np.ndarray, predicted: np.ndarray, n_classes: int) -> float:
    """Agreement of predictions with labels expected from the class shares alone, 0..1.

    ``p_e = sum_k share_of_label_k * share_of_prediction_k``: the chance term of Cohen's
    kappa (Cohen 1960; ``sklearn.metrics.cohen_kappa_score``). ``labels``, ``predicted``:
    ``int`` ``(N,)`` in ``0..n_classes-1``; NaN when empty.
    """
    if len(labels) == 0:
        return float("nan")
    a = np.bincount(labels, minlength=n_classes) / len(labels)
    b = np.bincount(predicted, minlength=n_classes) / len(predicted)
    return float(a @ b)


def weak_model_warning(oof_accuracy: float, issue_rate: float, chance: float) -> str | None:
    """A sentence when the pred_probs look too weak for the flags to be trusted, else ``None``.

    Weak means Cohen's kappa ``(oof_accuracy - chance) / (1 - chance)`` below
    :data:`WEAK_KAPPA`, or more than :data:`WEAK_ISSUE_RATE` of the samples flagged.

    Args:
        oof_accuracy: out-of-sample accuracy against the given labels, 0..1 (NaN: unknown).
        issue_rate: flagged share of the checked samples, 0..1.
        chance: the agreement expected from the class shares alone (:func:`chance_agreement`;
            about ``1 / n_classes`` for balanced classes), 0..1.
    """
    kappa = (oof_accuracy - chance) / (1 - chance) if chance < 1 else float("nan")
    if not (kappa < WEAK_KAPPA or issue_rate > WEAK_ISSUE_RATE):
        return None
    return (f"{issue_rate:.0%} of the checked samples are flagged and the out-of-sample accuracy is "
            f"{oof_accuracy:.2f} where the class shares alone give {chance:.2f} (chance-corrected agreement, "
            f"Cohen's kappa, {kappa:.2f}; below {WEAK_KAPPA} is weak): the pred_probs come from a weak model, so "
            "most flags are likely its own mistakes rather than wrong labels; before reviewing, get better "
            "pred_probs (a pretrained backbone for method embeddings, more images or epochs under "
            "stages.label_noise.train, or a pred_probs_file from a stronger model).")


def _prepare_fields(ds: Any) -> None:
    import fiftyone as fo

    schema = ds.get_field_schema()
    if QUALITY_FIELD not in schema:
        ds.add_sample_field(QUALITY_FIELD, fo.FloatField)
    if SUGGESTED_FIELD not in schema:
        ds.add_sample_field(SUGGESTED_FIELD, fo.EmbeddedDocumentField, embedded_doc_type=fo.Classification)
    ds.clear_sample_field(QUALITY_FIELD)
    # a confirmed issue keeps the suggestion the reviewer confirmed (export-labels takes it)
    ds.match_tags(CONFIRMED_TAG, bool=False).clear_sample_field(SUGGESTED_FIELD)
    ds.untag_samples(ISSUE_TAG)


def write_fields(ds: Any, ids: list[str], classes: list[str], pred_probs: np.ndarray, quality: dict[str, float],
                 issues: list[str]) -> None:
    """Bulk-write ``suggested_label`` (for ``ids``), ``label_quality`` and the ``label_issue`` tag."""
    import fiftyone as fo

    if ids:
        best = pred_probs.argmax(axis=1)
        confirmed = set(ds.match_tags(CONFIRMED_TAG).values("id"))  # their reviewed suggestion stays
        ds.set_values(SUGGESTED_FIELD, {sid: fo.Classification(label=classes[int(b)], confidence=float(p[b]))
                                        for sid, b, p in zip(ids, best, pred_probs) if sid not in confirmed},
                      key_field="id")
    if quality:
        ds.set_values(QUALITY_FIELD, quality, key_field="id")
    if issues:
        ds.select(issues).tag_samples(ISSUE_TAG)


def run_stage(run: Run, options: LabelNoiseOptions) -> dict[str, Any]:
    """Stage entry: pred_probs, cleanlab, FiftyOne writes; returns the result block.

    Degenerate inputs (missing labels, labels outside the class list, classes smaller
    than ``n_folds``, a single class, samples without a row in a ``pred_probs`` file) are
    reported as sentences under ``warnings`` and skipped; the run goes on.
    """
    from vetset.plugins.label_noise import pred_probs as oof
    from vetset.plugins.label_noise.choose import choose_method
    from vetset.plugins.label_noise.datalab import run_datalab

    ds, classes, say = run.dataset, run.classes, []
    _prepare_fields(ds)
    view = candidate_view(ds, options)
    ids, fps, given, tags = view.values(["id", "filepath", "ground_truth.label", "tags"])
    splits = [next((t for t in ("train", "val", "test") if t in ts), "") for ts in tags]
    method, why = choose_method(options, run.results.get("embed"), run.out_dir)
    run.log(f"[label_noise] {why}")
    result: dict[str, Any] = {"method": method, "method_reason": why, "n_folds": options.n_folds, "classes": classes,
                              "num_candidates": len(ids), "options": options.model_dump(mode="json"),
                              "skipped": None, "warnings": say, "datalab": None, "folds": [], "features": None}
    if not ids and len(ds):
        present = sorted({t for t in ("train", "val", "test") if len(ds.match_tags(t))})
        return _skip(run, result, say, (
            f"no readable sample carries the split tags {list(options.splits)} (stages.label_noise.splits); the "
            f"dataset's split tags: {present or 'none'}. Tag the samples train/val/test or set splits; no label "
            "issues were searched."))
    missing = [i for i, g in enumerate(given) if not g]
    if missing:
        say.append(f"{len(missing)} samples have no ground_truth label (e.g. {fps[missing[0]]}); they are not checked.")
    unknown = Counter(g for g in given if g and g not in classes)
    if unknown:
        listed = ", ".join(f"{lab!r} ({n})" for lab, n in unknown.most_common(5))
        say.append(f"{sum(unknown.values())} samples have labels outside the class list {classes}: {listed}; "
                   "they are not checked.")
    keep = [i for i, g in enumerate(given) if g and g in classes]
    ids, fps, splits = [ids[i] for i in keep], [fps[i] for i in keep], [splits[i] for i in keep]
    labels = np.array([classes.index(given[i]) for i in keep], dtype=np.int64)
    counts = np.bincount(labels, minlength=len(classes)) if len(labels) else np.zeros(len(classes), int)
    checkable = np.ones(len(labels), dtype=bool)
    if method != "pred_probs_file":
        small = [c for c in np.flatnonzero(counts) if counts[c] < options.n_folds]
        if small:
            say.append(f"classes with fewer samples than n_folds={options.n_folds}: "
                       + ", ".join(f"{classes[c]!r} ({counts[c]})" for c in small)
                       + "; their samples help train the fold models but are not checked (add images or lower "
                       "stages.label_noise.n_folds).")
            checkable &= ~np.isin(labels, small)
    if len(np.unique(labels[checkable])) < 2:
        present = [classes[c] for c in np.flatnonzero(counts)]
        reason = (f"label_noise needs at least 2 classes with enough labelled samples to check; found "
                  f"{len(labels)} usable samples of {present or 'no class'}; no label issues were searched.")
        return _skip(run, result, say, reason)
    if method == "kfold":
        from vetset.plugins.label_noise.folds import describe_fold_options, fold_train_options

        result["fold_train"] = describe_fold_options(fold_train_options(run.recipe, options)[0], options, len(fps))
    pred_probs, has_row, features, folds, result["features"] = compute_pred_probs(run, options, ids, fps, labels,
                                                                                   classes, method)
    result["folds"] = folds
    if not has_row.all():
        say.append(f"{int((~has_row).sum())} samples have no row in {options.pred_probs_file} "
                   f"(e.g. {fps[int(np.argmax(~has_row))]}); they are not checked.")
    checkable &= has_row
    saved = oof.save_pred_probs(run.stage_dir(STAGE) / "pred_probs.npz", pred_probs[has_row],
                                [s for s, h in zip(ids, has_row) if h], [f for f, h in zip(fps, has_row) if h],
                                classes, labels[has_row])
    sel = np.flatnonzero(checkable)
    if len(np.unique(labels[sel])) < 2:
        reason = ("label_noise: fewer than 2 classes have rows in the pred_probs file; nothing was flagged.")
        return _skip(run, result, say, reason)
    result["filter_by"] = (default_filter_by(method, (result["features"] or {}).get("weights"))
                           if options.filter_by == "auto" else options.filter_by)
    is_issue, quality, notes = find_issues(labels[sel], pred_probs[sel],
                                           options.model_copy(update={"filter_by": result["filter_by"]}))
    say.extend(f"cleanlab: {n}" for n in notes)
    issue_ids = [ids[i] for i, flag in zip(sel, is_issue) if flag]
    write_fields(ds, [s for s, h in zip(ids, has_row) if h], classes, pred_probs[has_row],
                 {ids[i]: float(q) for i, q in zip(sel, quality)}, issue_ids)
    if options.datalab:
        result["datalab"] = run_datalab(ds, [ids[i] for i in sel], labels[sel], pred_probs[sel],
                                        None if features is None else features[sel], say)
    result.update(_summary(classes, ids, fps, splits, labels, pred_probs, has_row, sel, is_issue, quality, options))
    weak = weak_model_warning(result["oof_accuracy"], result["issue_rate"], result["chance_agreement"])
    if weak:
        say.append(weak)
    result["pred_probs_file"] = str(saved)
    for line in say:
        run.log(f"[label_noise] {line}")
    run.log(f"[label_noise] {result['num_issues']} of {result['num_checked']} checked samples flagged "
            f"(out-of-sample accuracy against the given labels {result['oof_accuracy']:.3f}); "
            f"saved view {VIEW_NAME!r}")
    return result


def _skip(run: Any, result: dict[str, Any], say: list[str], reason: str) -> dict[str, Any]:
    say.append(reason)
    result.update(skipped=reason, num_checked=0, num_issues=0, issue_rate=0.0, oof_accuracy=None,
                  metrics={"label_issues": 0, "label_checked": 0})
    for line in say:
        run.log(f"[label_noise] {line}")
    return result


def _summary(classes, ids, fps, splits, labels, pred_probs, has_row, sel, is_issue, quality, options) -> dict:
    pred = pred_probs.argmax(axis=1)
    oof_acc = float((pred[has_row] == labels[has_row]).mean()) if has_row.any() else float("nan")
    chance = chance_agreement(labels[has_row], pred[has_row], len(classes))
    kappa = (oof_acc - chance) / (1 - chance) if chance < 1 else float("nan")
    flagged = sel[is_issue]
    per_class = {c: {"checked": int((labels[sel] == k).sum()), "issues": int((labels[flagged] == k).sum())}
                 for k, c in enumerate(classes)}
    flips = Counter((classes[labels[i]], classes[pred[i]]) for i in flagged)
    order = flagged[np.argsort(quality[is_issue], kind="stable")] if len(flagged) else flagged
    q_of = dict(zip(sel.tolist(), quality.tolist()))
    top = [{"id": ids[i], "filepath": fps[i], "split": splits[i], "given": classes[labels[i]],
            "suggested": classes[pred[i]], "suggested_prob": float(pred_probs[i, pred[i]]),
            "label_quality": q_of[int(i)]} for i in order[: options.max_report_samples]]
    n_checked, n_issues = int(len(sel)), int(len(flagged))
    rate = n_issues / n_checked if n_checked else 0.0
    return {"num_checked": n_checked, "num_issues": n_issues, "issue_rate": rate, "oof_accuracy": oof_acc,
            "chance_agreement": chance, "oof_kappa": kappa, "per_class": per_class, "top_issues": top,
            "flips": [{"given": g, "suggested": s, "count": n} for (g, s), n in flips.most_common(10)],
            "metrics": {"label_issues": n_issues, "label_issue_rate": rate, "oof_accuracy": oof_acc,
                        "label_checked": n_checked}}


def build_view(dataset: Any) -> Any:
    """Samples tagged ``label_issue``, lowest ``label_quality`` (worst) first."""
    if QUALITY_FIELD not in dataset.get_field_schema():
        return None
    return dataset.match_tags(ISSUE_TAG).sort_by(QUALITY_FIELD)


@hookimpl
def vetset_register_stages(register):
    register(Stage(STAGE, run_stage, LabelNoiseOptions,
                   "find likely label errors with cleanlab on out-of-sample pred_probs"))


@hookimpl
def vetset_register_views(register):
    register(ViewSpec(VIEW_NAME, STAGE, build_view,
                      "cleanlab label issues, lowest label_quality first; tag label_confirmed/label_rejected to review"))


@hookimpl
def vetset_register_report_sections(register):
    from vetset.plugins.label_noise.report import render

    register(ReportSection("label_issues", "Label issues", render, order=60))
