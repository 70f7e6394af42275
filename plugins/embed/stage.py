"""Built-in plugin: the ``embed`` stage — one embedding pass, and the checks that read it.

A stage rather than an audit option: it needs a backbone, which may be this run's own
trained checkpoint (so it can run after ``train``), it runs on the GPU where the audit's
pass runs on CPU workers, and its features serve later stages too (``label_noise``'s
``method: embeddings`` reads them from the store).

Steps: resolve the backbone (:mod:`vetset.plugins.embed.backbone`; without trained weights
the stage is skipped with one sentence), compute the features of the images the store does
not have yet (:mod:`vetset.plugins.embed.store`, keyed by content hash), then one k-NN search
(:mod:`vetset.plugins.embed.neighbours`) gives

* near duplicates by cosine similarity (groups, groups across splits = leakage, groups with
  conflicting labels): field ``embed_group`` (``emb-NNNNN``), ``embed_group_similarity``
  (cosine to the group's first image), tags ``embed_duplicate``, ``embed_leakage``,
  ``embed_label_conflict``;
* outliers: field ``outlier_score`` (by default the squared Euclidean distance to the
  nearest class mean, :mod:`vetset.plugins.embed.class_distance`; higher = more unusual),
  tag ``outlier``;

and the FiftyOne brain runs ``vetset_similarity`` and ``vetset_embeddings`` for the App.
Samples tagged ``augmented`` or ``unreadable`` are left out.

Result block ``run.results["embed"]``::

    {"skipped": None | sentence, "backbone": {...} | None, "num_images", "num_embedded",
     "failed": [path, ...], "store": {"dir", "key", "computed", "reused"}, "seconds",
     "images_per_s", "device", "duplicates": {...}, "outliers": {...},
     "brain_keys": {"similarity", "visualization"}, "warnings": [...], "metrics": {...}}

A stage skipped after looking for pretrained weights also records where it looked
(``"pretrained_looked_for"``: :func:`vetset.plugins.embed.backbone.pretrained_looked_for`).
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vetset.core.errors import RecipeError
from vetset.core.hookspecs import hookimpl
from vetset.core.registry import ReportSection, Stage, ViewSpec
from vetset.plugins.embed.backbone import pretrained_looked_for, reuse_key
from vetset.plugins.embed.options import EmbedOptions

if TYPE_CHECKING:
    from vetset.core.run import Run
    from vetset.plugins.embed.backbone import Backbone

STAGE = "embed"
GROUP_FIELD = "embed_group"
GROUP_SIM_FIELD = "embed_group_similarity"
OUTLIER_FIELD = "outlier_score"
TAGS = ("embed_duplicate", "embed_leakage", "embed_label_conflict", "outlier")
VIEW_NAMES = ("embed/duplicates", "embed/leakage", "embed/label_conflicts", "embed/outliers")
HASH_FIELD = "file_hash"


def _sha256(path: str) -> str | None:
    try:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def content_hashes(filepaths: Sequence[str], known: Sequence[str | None]) -> list[str | None]:
    """SHA-256 hex of each file: the audit's ``file_hash`` where known, else read and hashed here (``None``: unreadable)."""
    todo = [i for i, h in enumerate(known) if not h]
    out = list(known)
    if todo:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for i, h in zip(todo, pool.map(_sha256, [filepaths[i] for i in todo])):
                out[i] = h
    return out


def store_meta(backbone: Backbone, options: EmbedOptions) -> dict[str, Any]:
    """What identifies the features (the store key's content)."""
    meta = {"model_name": backbone.model_name, "weights_digest": backbone.weights_digest,
            "data_config": backbone.data_config, "flip": options.flip, "dim": int(backbone.model.num_features)}
    if options.crops:  # only when set, so stores written with crops: [] keep their key
        meta["crops"] = [float(c) for c in options.crops]
    return meta


def compute_features(backbone: Backbone, options: EmbedOptions, store: Any, paths: Sequence[str],
                     hashes: Sequence[str], log: Any = print) -> tuple[int, list[str], float]:
    """Embed the images whose content hash the store lacks; append them in shards.

    Runs in-process (on the GPU when there is one) or on the run's executor
    (:func:`vetset.plugins.embed.workers.pass_executor`); either way the features reach
    the store shard by shard, never all at once in this process.

    Returns:
        ``(computed, failed paths, seconds)``.
    """
    from vetset.core.progress import track
    from vetset.plugins.embed.compute import embed_batches
    from vetset.plugins.embed.workers import CHUNK_BATCHES, embed_on_executor, pass_executor

    have = store.has(hashes)
    todo: dict[str, str] = {}
    for p, h, ok in zip(paths, hashes, have):
        if not ok:
            todo.setdefault(h, p)
    if not todo:
        return 0, [], 0.0
    todo_hashes, todo_paths = list(todo), list(todo.values())
    log(f"[embed] computing features of {len(todo_paths)} images ({int(have.sum())} already in the store)")
    t0 = time.perf_counter()
    buf_h: list[str] = []
    buf_f: list[np.ndarray] = []
    failed: list[str] = []
    executor = pass_executor(options)
    if executor is None:  # the GPU, or in-process on CPU (see vetset.plugins.embed.workers)
        batches = embed_batches(backbone, todo_paths, options.batch_size, options.flip, options.device,
                                crops=options.crops)
        n_batches, unit = -(-len(todo_paths) // options.batch_size), "batch"
    else:
        batches = embed_on_executor(executor, backbone, options, todo_paths)
        n_batches, unit = -(-len(todo_paths) // (CHUNK_BATCHES * options.batch_size)), "chunk"
        log(f"[embed] on the {executor.name} executor ({executor.workers} workers)")
    done = 0
    for start, feats, ok in track(batches, total=n_batches, description="embedding", unit=unit):
        for j in range(len(ok)):
            if ok[j]:
                buf_h.append(todo_hashes[start + j])
                buf_f.append(feats[j])
            else:
                failed.append(todo_paths[start + j])
        if len(buf_h) >= options.shard_size:
            store.append(buf_h, np.stack(buf_f))
            done += len(buf_h)
            buf_h, buf_f = [], []
    if buf_h:
        store.append(buf_h, np.stack(buf_f))
        done += len(buf_h)
    return done, failed, time.perf_counter() - t0


def _clear(ds: Any) -> None:
    """Remove the previous run's embed fields' values and tags; writes only what is set
    (one aggregation decides: an unchanged rerun that skipped the stage writes nothing)."""
    import fiftyone as fo

    schema = ds.get_field_schema()
    fields = ((GROUP_FIELD, fo.StringField), (GROUP_SIM_FIELD, fo.FloatField), (OUTLIER_FIELD, fo.FloatField))
    for name, kind in fields:
        if name not in schema:
            ds.add_sample_field(name, kind)
    *counts, tag_counts = ds.aggregate([fo.Count(name) for name, _ in fields] + [fo.CountValues("tags")])
    for (name, _), count in zip(fields, counts):
        if count:
            ds.clear_sample_field(name)
    if any(tag_counts.get(t) for t in TAGS):
        ds.untag_samples(list(TAGS))


def _forget(ds: Any) -> None:
    """Remove what an earlier run of the stage left (fields, tags, saved views, brain runs):
    a skipped stage must not leave stale results that look current."""
    from vetset.plugins.embed.brain import SIMILARITY_KEY, VISUALIZATION_KEY

    stale = [f for f in (GROUP_FIELD, GROUP_SIM_FIELD, OUTLIER_FIELD) if f in ds.get_field_schema()]
    if stale:
        ds.delete_sample_fields(stale)
    if set(TAGS) & set(ds.count_sample_tags()):
        ds.untag_samples(list(TAGS))
    for name in ds.list_saved_views():
        if name in VIEW_NAMES:
            ds.delete_saved_view(name)
    for key in (SIMILARITY_KEY, VISUALIZATION_KEY):
        if key in ds.list_brain_runs():
            ds.delete_brain_run(key)


def _drop_brain_runs(ds: Any, similarity: bool, visualization: bool) -> None:
    """Delete an earlier run's similarity index / embedding map that this run does not rebuild
    (``similarity_index: false`` or ``visualization: false``): they describe old features."""
    from vetset.plugins.embed.brain import SIMILARITY_KEY, VISUALIZATION_KEY

    runs = ds.list_brain_runs()
    for key, drop in ((SIMILARITY_KEY, similarity), (VISUALIZATION_KEY, visualization)):
        if drop and key in runs:
            ds.delete_brain_run(key)


def _write(ds: Any, ids: list[str], values: dict[str, list], tags: dict[str, np.ndarray]) -> None:
    for field, vals in values.items():
        ds.set_values(field, dict(zip(ids, vals)), key_field="id")
    for tag, mask in tags.items():
        chosen = [ids[i] for i in np.flatnonzero(mask)]
        if chosen:
            ds.select(chosen).tag_samples(tag)


def _duplicates(unit, sim, idx, options, ids, fps, labels, splits, phash) -> tuple[dict, dict, dict]:
    from vetset.plugins.embed.groups import group_metrics, summarise_groups
    from vetset.plugins.embed.neighbours import similar_pairs

    o = options.duplicates
    pairs = similar_pairs(sim[:, :o.k], idx[:, :o.k], o.threshold, o.rule)
    group, gsim, groups = summarise_groups(unit, pairs, ids, fps, labels, splits, phash)
    names = {g["leader"]: g["group"] for g in groups}
    values = {GROUP_FIELD: [names.get(int(g)) if g >= 0 else None for g in group],
              GROUP_SIM_FIELD: [None if np.isnan(s) else float(s) for s in gsim]}
    leak, conflict = np.zeros(len(ids), bool), np.zeros(len(ids), bool)
    lead_kinds = {g["leader"]: g["kinds"] for g in groups}
    for i, g in enumerate(group.tolist()):
        if g >= 0:
            leak[i] = "leakage" in lead_kinds[g]
            conflict[i] = "label_conflict" in lead_kinds[g]
    tags = {"embed_duplicate": group >= 0, "embed_leakage": leak, "embed_label_conflict": conflict}
    rank = {"leakage": 0, "label_conflict": 1}
    groups.sort(key=lambda g: (min([rank[k] for k in g["kinds"]] + [2]), -g["size"], g["group"]))
    metrics = group_metrics(groups, len(ids))
    for g in groups:
        g.pop("leader")
    block = {"threshold": o.threshold, "rule": o.rule, "k": o.k, "pairs": int(len(pairs)),
             "groups": groups[: o.max_groups_listed], "groups_total": len(groups), "metrics": metrics}
    return block, values, tags


def outlier_score(options: EmbedOptions, feats: np.ndarray, unit: np.ndarray, sim: np.ndarray,
                  labels: Sequence[str | None]) -> np.ndarray:
    """``float64`` ``(N,)``: the ``outliers.method`` score of each row (higher = more unusual).

    Args:
        feats: ``float32`` ``(N, D)`` raw features; ``unit``: the same as centred unit rows;
        sim: ``(N, k)`` kNN cosine similarities (:func:`~vetset.plugins.embed.neighbours.knn`);
        labels: class name per row (``None``: unlabelled).
    """
    from vetset.plugins.embed.class_distance import centroid_scores, label_codes, mahalanobis_scores
    from vetset.plugins.embed.neighbours import outlier_scores

    o = options.outliers
    if o.method == "knn":
        return outlier_scores(sim, o.k)
    codes = label_codes(labels)
    if o.method == "mahalanobis":
        return mahalanobis_scores(feats, codes, o.classes)
    if o.method == "class_mean":
        return centroid_scores(feats, codes, o.classes, metric="euclidean")
    return centroid_scores(unit, codes, o.classes, metric="cosine")


def _outliers(scores, options, ids, fps, labels, splits, classes) -> tuple[dict, dict, dict]:
    from vetset.plugins.embed.neighbours import outlier_fence

    o = options.outliers
    fence = outlier_fence(scores, o.threshold)
    flagged = scores > fence
    order = np.argsort(-scores, kind="stable")
    top = [{"id": ids[i], "filepath": fps[i], "label": labels[i], "split": splits[i],
            "score": round(float(scores[i]), 4)} for i in order[flagged[order]][: o.max_listed]]
    per_class = {}
    for c in classes:
        m = np.array([lab == c for lab in labels], dtype=bool)
        if m.any():
            per_class[c] = {"images": int(m.sum()), "outliers": int((flagged & m).sum()),
                            "median_score": round(float(np.median(scores[m])), 4)}
    block = {"method": o.method, "classes": o.classes, "k": o.k, "threshold": o.threshold, "fence": round(fence, 4),
             "median_score": round(float(np.median(scores)), 4) if len(scores) else None,
             "count": int(flagged.sum()), "top": top, "per_class": per_class,
             "metrics": {"outliers": int(flagged.sum()), "outlier_fraction": round(float(flagged.mean()), 4)
                         if len(scores) else 0.0}}
    return block, {OUTLIER_FIELD: [float(s) for s in scores]}, {"outlier": flagged}


def run_stage(run: Run, options: EmbedOptions) -> dict[str, Any]:
    """Stage entry (module docstring): features, near duplicates, outliers, brain runs."""
    from vetset.plugins.audit.context import read_columns
    from vetset.plugins.embed.backbone import resolve_backbone
    from vetset.plugins.embed.compute import pick_device
    from vetset.plugins.embed.neighbours import knn, unit_rows
    from vetset.plugins.embed.store import FeatureStore

    ds = run.dataset
    view = ds.match_tags(["augmented", "unreadable"], bool=False)
    say: list[str] = []
    block: dict[str, Any] = {"skipped": None, "backbone": None, "num_images": None, "num_embedded": 0,
                             "failed": [], "store": None, "duplicates": None, "outliers": None,
                             "brain_keys": {}, "warnings": say, "options": options.model_dump(mode="json"),
                             "metrics": {"embedded": 0}}
    if options.similarity_index:
        from vetset.plugins.embed.brain import check_backend

        check_backend(options.similarity_backend)  # before the pass, not after it
    backbone, reason = resolve_backbone(options, run.out_dir)  # first: a skip costs no column read, no torch import
    if backbone is None:
        run.log(f"[embed] skipped: {reason}")
        block.update(skipped=reason, num_images=view.count())  # a count, not every sample's columns
        # where the resolver looked for pretrained weights, for the rerun's reuse key; timm not
        # imported: the resolver did not look (nothing cached anywhere, and offline), the sentence says so
        if options.pretrained and options.model_name and "timm" in sys.modules:
            block["pretrained_looked_for"] = pretrained_looked_for(options.model_name)
        _forget(ds)
        return block
    _clear(ds)
    ids, fps, labels, splits, _tags = read_columns(view)
    block["num_images"] = len(ids)
    run.log(f"[embed] backbone {backbone.describe()}")
    block["backbone"] = {"model_name": backbone.model_name, "source": backbone.source,
                         "weights_file": backbone.weights_file, "weights_digest": backbone.weights_digest,
                         "data_config": backbone.data_config, "num_features": int(backbone.model.num_features),
                         "trained_on": backbone.trained_on, "flip": options.flip,
                         "crops": list(options.crops)}
    known = view.values(HASH_FIELD) if HASH_FIELD in ds.get_field_schema() else [None] * len(ids)
    hashes = content_hashes(fps, known)
    unreadable = [i for i, h in enumerate(hashes) if h is None]
    meta = store_meta(backbone, options)
    store = FeatureStore(run.stage_dir(STAGE) / "features", meta)
    readable = [i for i, h in enumerate(hashes) if h is not None]
    computed, failed, seconds = compute_features(backbone, options, store, [fps[i] for i in readable],
                                                 [hashes[i] for i in readable], run.log)
    failed_set = set(failed) | {fps[i] for i in unreadable}
    keep = [i for i in readable if fps[i] not in failed_set]
    block["failed"] = sorted(failed_set)[:50]
    if failed_set:
        say.append(f"{len(failed_set)} files could not be read or decoded (e.g. {sorted(failed_set)[0]}); they have "
                   "no features (the audit tags such files 'unreadable').")
    ids, fps = [ids[i] for i in keep], [fps[i] for i in keep]
    labels, splits, hashes = [labels[i] for i in keep], [splits[i] for i in keep], [hashes[i] for i in keep]
    block["store"] = {"dir": str(store.dir), "key": store.key, "computed": computed,
                      "reused": len(set(hashes)) - computed}
    block.update(seconds=round(seconds, 3), images_per_s=round(computed / seconds, 2) if seconds > 0 else None,
                 device=str(pick_device(options.device)), num_embedded=len(ids))
    block["metrics"]["embedded"] = len(ids)
    if len(ids) < 3:
        block["skipped"] = f"only {len(ids)} images have features; near duplicates and outliers need at least 3."
        run.log(f"[embed] {block['skipped']}")
        _forget(ds)
        return block
    feats = store.get(hashes)
    unit = unit_rows(feats, options.center)
    k = max(options.duplicates.k if options.duplicates.enabled else 1,
            options.outliers.k if options.outliers.enabled and options.outliers.method == "knn" else 1)
    sim, idx = knn(unit, k)
    values: dict[str, list] = {}
    tags: dict[str, np.ndarray] = {}
    if options.duplicates.enabled:
        phash = view.select(ids).values("duplicate_group") if "duplicate_group" in ds.get_field_schema() else None
        dup, v, t = _duplicates(unit, sim, idx, options, ids, fps, labels, splits, phash)
        block["duplicates"] = dup
        block["metrics"].update(dup["metrics"])
        values.update(v)
        tags.update(t)
    if options.outliers.enabled:
        scores = outlier_score(options, feats, unit, sim, labels)
        out, v, t = _outliers(scores, options, ids, fps, labels, splits, run.classes)
        block["outliers"] = out
        block["metrics"].update(out["metrics"])
        values.update(v)
        tags.update(t)
    _write(ds, ids, values, tags)
    chosen = view.select(ids)
    _drop_brain_runs(ds, similarity=not options.similarity_index, visualization=not options.visualization)
    if options.similarity_index:
        from vetset.plugins.embed.brain import register_similarity

        block["brain_keys"]["similarity"] = register_similarity(chosen, feats, options.similarity_backend,
                                                               options.similarity_config)
        block["brain_keys"]["similarity_backend"] = options.similarity_backend
    if options.visualization:
        from vetset.plugins.embed.brain import map_method, register_visualization

        method = map_method(len(ids), options.visualization_max_tsne)
        block["brain_keys"]["visualization"] = register_visualization(chosen, feats, method)
        block["brain_keys"]["visualization_method"] = method
    for line in say:
        run.log(f"[embed] {line}")
    d, o = block["duplicates"] or {}, block["outliers"] or {}
    run.log(f"[embed] {len(ids)} images embedded ({computed} computed, {block['store']['reused']} reused); "
            f"{(d.get('metrics') or {}).get('similar_groups', 0)} near-duplicate groups "
            f"({(d.get('metrics') or {}).get('similar_leakage_groups', 0)} across splits), {o.get('count', 0)} outliers")
    return block


def features_for(block: dict[str, Any], filepaths: Sequence[str], known_hashes: Sequence[str | None]) -> np.ndarray | None:
    """The ``embed`` stage's stored features for ``filepaths``, or ``None`` when some are missing.

    Args:
        block: ``run.results["embed"]``.
        filepaths: image files; ``known_hashes``: their ``file_hash`` values where known.

    Returns:
        ``float32`` ``(len(filepaths), D)`` or ``None``.
    """
    from vetset.plugins.embed.store import FeatureStore

    store_info = (block or {}).get("store")
    if not store_info or block.get("backbone") is None:
        return None
    d = Path(store_info["dir"])
    meta_path = d / "meta.json"
    if not meta_path.is_file():
        return None
    store = FeatureStore(d.parent, json.loads(meta_path.read_text()))
    hashes = content_hashes(filepaths, known_hashes)
    if any(h is None for h in hashes) or not store.has(hashes).all():
        return None
    return store.get(hashes)


def complete_features(block: dict[str, Any], filepaths: Sequence[str], known_hashes: Sequence[str | None],
                      out_dir: str | Path | None, log: Any = print) -> np.ndarray | None:
    """Like :func:`features_for`, but images the store lacks (files added or edited since the
    embed stage ran, e.g. a ``--resume`` that skipped it) are embedded first with the embed
    stage's own backbone and options, into its store.

    Returns ``None`` when the backbone cannot be rebuilt with the same weights (the file
    changed or is gone) or some files cannot be read; the caller then needs other features.
    """
    from vetset.plugins.embed.backbone import resolve_backbone
    from vetset.plugins.embed.store import FeatureStore

    feats = features_for(block, filepaths, known_hashes)
    if feats is not None or not (block or {}).get("store") or not block.get("options") or not block.get("backbone"):
        return feats
    options = EmbedOptions.model_validate(block["options"])
    try:
        backbone, _why = resolve_backbone(options, out_dir)
    except RecipeError:
        return None
    if backbone is None or backbone.weights_digest != block["backbone"].get("weights_digest"):
        return None
    store = FeatureStore(Path(block["store"]["dir"]).parent, store_meta(backbone, options))
    if store.key != block["store"].get("key"):
        return None
    hashes = content_hashes(filepaths, known_hashes)
    readable = [i for i, h in enumerate(hashes) if h is not None]
    compute_features(backbone, options, store, [filepaths[i] for i in readable], [hashes[i] for i in readable], log)
    return features_for(block, filepaths, hashes)


def _tag_view(tag: str, sort: str, reverse: bool = False):
    """The view builder: ``None`` (no view saved) when the stage wrote no results (it was
    skipped, so ``sort``, one of its fields, does not exist)."""
    def build(dataset: Any) -> Any:
        if sort not in dataset.get_field_schema():
            return None
        return dataset.match_tags(tag).sort_by(sort, reverse=reverse)
    return build


@hookimpl
def vetset_register_stages(register):
    register(Stage(STAGE, run_stage, EmbedOptions,
                   "embed images with a timm backbone; near duplicates/leakage by cosine similarity, outliers",
                   reuse_key=reuse_key))


@hookimpl
def vetset_register_views(register):
    register(ViewSpec("embed/duplicates", STAGE, _tag_view("embed_duplicate", GROUP_FIELD),
                      "near duplicates by embedding cosine similarity, sorted by embed_group"))
    register(ViewSpec("embed/leakage", STAGE, _tag_view("embed_leakage", GROUP_FIELD),
                      "embedding near-duplicate groups that span splits, sorted by embed_group"))
    register(ViewSpec("embed/label_conflicts", STAGE, _tag_view("embed_label_conflict", GROUP_FIELD),
                      "embedding near-duplicate groups whose images carry different labels"))
    register(ViewSpec("embed/outliers", STAGE, _tag_view("outlier", OUTLIER_FIELD, reverse=True),
                      "images unlike the rest (outlier_score: distance to the nearest class mean by default), most unusual first"))


@hookimpl
def vetset_register_report_sections(register):
    from vetset.plugins.embed.report import render_duplicates, render_outliers

    register(ReportSection("embed_duplicates", "Near duplicates from embeddings", render_duplicates, order=45))
    register(ReportSection("outliers", "Outliers", render_outliers, order=47))


@hookimpl
def vetset_on_dataset_loaded(run: Run) -> None:
    """Begin the Hugging Face Hub reachability request that :func:`resolve_backbone` asks
    when no pretrained weights are cached, so it overlaps with the stages before this one."""
    if STAGE not in run.recipe.stage_names():
        return
    options = run.recipe.options(STAGE)
    if options.weights or not (options.pretrained and options.model_name):
        return
    from vetset.plugins.train.weights import hub_offline, start_hub_probe, weights_cached_somewhere

    if not hub_offline() and not weights_cached_somewhere():
        start_hub_probe()
