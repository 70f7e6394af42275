"""Out-of-sample ``pred_probs`` for cleanlab: K-fold timm models, embeddings, or a file.

Every function returns ``pred_probs`` as ``float32`` ``(N, K)`` with rows summing to 1,
row ``i`` from a model that never saw sample ``i``'s label (cleanlab's requirement,
Northcutt et al. 2021, "Confident Learning", JAIR 70). Fold assignment is sklearn's
``StratifiedKFold(shuffle=True, random_state=seed)``, as in cleanlab's
``estimate_cv_predicted_probabilities``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vetset.core.atomic import atomic_write
from vetset.core.errors import DataError, RecipeError

if TYPE_CHECKING:
    from vetset.plugins.embed.backbone import Backbone
    from vetset.plugins.label_noise.options import EmbeddingOptions


def stratified_folds(labels: np.ndarray, n_folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_index, held_out_index), ...]`` of a seeded stratified K-fold split.

    A class with fewer samples than ``n_folds`` is spread over fewer folds (sklearn warns;
    the caller reports it).

    Raises:
        DataError: fewer samples than folds, or every class smaller than ``n_folds``.
    """
    from sklearn.model_selection import StratifiedKFold

    labels = np.asarray(labels)
    if len(labels) < n_folds:
        raise DataError(f"label_noise: {len(labels)} samples cannot be split into n_folds={n_folds} folds; "
                        "lower stages.label_noise.n_folds.")
    counts = np.bincount(labels)
    if counts[counts > 0].max() < n_folds:
        raise DataError(f"label_noise: every class has fewer than n_folds={n_folds} samples (largest "
                        f"{int(counts.max())}); lower stages.label_noise.n_folds.")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class")
        return [(tr, te) for tr, te in skf.split(np.zeros(len(labels)), labels)]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def kfold_pred_probs(filepaths: Sequence[str], labels: np.ndarray, classes: Sequence[str], train_options: Any,
                     n_folds: int = 5, seed: int = 0, out_dir: str | Path | None = None,
                     log: Callable[[str], None] = print, resume: bool = False,
                     on_fold: Callable[[int, Any, Any], None] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold ``pred_probs`` from ``n_folds`` models of the timm trainer.

    Each fold's model is trained with ``vetset.plugins.train.stage.fit`` on the other folds (no
    validation items, so no epoch is chosen by the held-out labels) and scores its fold
    with ``vetset.plugins.train.stage.predict``.

    Args:
        filepaths: ``N`` image paths.
        labels: ``int`` ``(N,)`` class indices into ``classes``.
        classes: the ``K`` class names.
        train_options: ``TrainOptions`` or a mapping of ``train``-stage options.
        n_folds, seed: see :func:`stratified_folds`.
        out_dir: folder for each fold's cached ``fold_<i>/pred_probs.npz`` (the fold models
            stay in memory: no checkpoints are written).
        log: one-line status messages.
        resume: reuse a fold's cached ``pred_probs`` when its options and samples match.
        on_fold: called as ``on_fold(fold, fit_output, train_options)`` after each fold
            model is trained (not for cached folds), e.g. to score other files with it.

    Returns:
        ``(pred_probs, folds)``: ``float32`` ``(N, K)``, and per fold a dict with
        ``fold``, ``n_train``, ``n_held_out``, ``held_out_accuracy`` (against the given
        labels), ``seconds`` and ``cached``.

    Raises:
        DataError: see :func:`stratified_folds`; RecipeError: bad train options.
    """
    import time

    from vetset.plugins.train.stage import as_options, fit, predict

    opts = as_options(train_options)
    labels = np.asarray(labels, dtype=np.int64)
    n, k = len(labels), len(classes)
    pred_probs = np.zeros((n, k), dtype=np.float32)
    folds = stratified_folds(labels, n_folds, seed)
    key = _digest({"opts": opts.model_dump(mode="json"), "classes": list(classes), "n_folds": n_folds, "seed": seed})
    info = []
    for f, (tr, te) in enumerate(folds):
        t0 = time.perf_counter()
        fold_dir = Path(out_dir) / f"fold_{f}" if out_dir else None
        cache = fold_dir / "pred_probs.npz" if fold_dir else None
        fold_key = key + _digest([filepaths[i] for i in te] + [int(labels[i]) for i in tr])
        cached = False
        if resume and cache is not None and cache.is_file():
            with np.load(cache) as z:
                if str(z["key"]) == fold_key and z["pred_probs"].shape == (len(te), k):
                    pred_probs[te] = z["pred_probs"]
                    cached = True
        if not cached:
            log(f"[label_noise] fold {f + 1}/{n_folds}: training on {len(tr)} samples, scoring {len(te)}")
            out = fit([(filepaths[i], int(labels[i])) for i in tr], [], list(classes), opts, out_dir=None, log=log)
            probs, _ = predict(out.model, [filepaths[i] for i in te], out.data_config, opts)
            pred_probs[te] = np.asarray(probs, dtype=np.float32)
            if on_fold is not None:
                on_fold(f, out, opts)
            if cache is not None:
                cache.parent.mkdir(parents=True, exist_ok=True)
                np.savez(cache, pred_probs=pred_probs[te], key=np.array(fold_key))
        acc = float((pred_probs[te].argmax(1) == labels[te]).mean()) if len(te) else float("nan")
        info.append({"fold": f, "n_train": int(len(tr)), "n_held_out": int(len(te)), "held_out_accuracy": acc,
                     "seconds": round(time.perf_counter() - t0, 2), "cached": cached})
    return normalise_rows(pred_probs), info


def embed_images(filepaths: Sequence[str], model_name: str = "resnet10t", weights: str | None = None,
                 img_size: int | None = None, batch_size: int = 64, device: str = "auto") -> np.ndarray:
    """Pooled timm backbone features, ``float32`` ``(N, D)``.

    The backbone is ``timm.create_model(model_name, num_classes=0)`` (classifier removed);
    ``weights`` loads a local file through ``pretrained_cfg_overlay=dict(file=...)``, so
    timm drops a classifier that does not fit; a vetset checkpoint (``best.pt``) brings its
    own model name and data config (:func:`vetset.plugins.embed.backbone.load_backbone_file`).
    Images are decoded once, EXIF-oriented
    (:func:`vetset.core.images.decode`), and go through timm's eval transform from
    ``resolve_data_config`` (``img_size`` overrides the input size).

    Raises:
        RecipeError: unknown model name or a weights file that is missing or does not fit.
        DataError: an image cannot be decoded (the message names it).
    """
    import timm
    import torch
    from PIL import Image
    from timm.data import create_transform, resolve_data_config

    from vetset.core.images import decode
    from vetset.core.progress import track

    if not timm.is_model(model_name.split(".")[0]):
        raise RecipeError(f"stages.label_noise.embeddings.model_name: {model_name!r} is not a timm model name.")
    kwargs: dict[str, Any] = {"num_classes": 0}
    if weights:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise RecipeError(f"stages.label_noise.embeddings.weights: file {path} does not exist.")
        if path.suffix != ".safetensors" and _is_checkpoint(path):  # a vetset best.pt: its model and data config
            return _embed_checkpoint(filepaths, path, img_size, batch_size, device)
        kwargs.update(pretrained=True, pretrained_cfg_overlay=dict(file=str(path.resolve())))
    try:
        model = timm.create_model(model_name, **kwargs)
    except RecipeError:
        raise
    except Exception as exc:
        raise RecipeError(f"stages.label_noise.embeddings.weights: {weights} does not fit {model_name}: {exc}") from None
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    model.eval().to(dev)
    cfg = resolve_data_config({"img_size": img_size} if img_size else {}, model=model)
    transform = create_transform(**cfg, is_training=False)
    feats = []
    batches = range(0, len(filepaths), batch_size)
    with torch.inference_mode():
        for start in track(batches, total=len(batches), description="embedding images", unit="batch"):
            tensors = []
            for path in filepaths[start:start + batch_size]:
                img = decode(path)
                if img.array is None:
                    raise DataError(f"{path} cannot be decoded ({img.error}); the audit tags such files 'unreadable'.")
                tensors.append(transform(Image.fromarray(img.array)))
            feats.append(model(torch.stack(tensors).to(dev)).float().cpu().numpy())
    return np.concatenate(feats) if feats else np.zeros((0, model.num_features), np.float32)


def _is_checkpoint(path: Path) -> bool:
    import torch

    from vetset.plugins.train.checkpoint import is_vetset_checkpoint

    try:
        return is_vetset_checkpoint(torch.load(path, map_location="cpu", weights_only=True))
    except Exception:
        return False


def _embed_checkpoint(filepaths: Sequence[str], path: Path, img_size: int | None, batch_size: int,
                      device: str) -> np.ndarray:
    """Features from a vetset checkpoint's backbone (the embed stage's loader and pass)."""
    from vetset.plugins.embed.backbone import load_backbone_file

    bb = load_backbone_file(path, None, img_size, option="stages.label_noise.embeddings.weights")
    return embed_with_backbone(bb, filepaths, batch_size, flip=False, device=device)


def label_noise_backbone(kind: str, options: EmbeddingOptions, out_dir: str | Path | None) -> Backbone:
    """The :class:`~vetset.plugins.embed.backbone.Backbone` of a trained-weights source.

    Args:
        kind: ``"weights"`` (``options.weights``), ``"pretrained"`` (``options.model_name``'s
            pretrained weights through the embed stage's resolver) or ``"checkpoint"``
            (``<out_dir>/train/best.pt``); see :func:`vetset.plugins.label_noise.choose.feature_source`.
        options: ``stages.label_noise.embeddings``.

    Raises:
        RecipeError: a weights file that is missing or does not fit ``model_name``, or
            pretrained weights that cannot be had after all.
    """
    from vetset.plugins.embed.backbone import RUN_CHECKPOINT, load_backbone_file, resolve_backbone
    from vetset.plugins.embed.options import EmbedOptions

    if kind == "weights":
        return load_backbone_file(options.weights, options.model_name, options.img_size,
                                  option="stages.label_noise.embeddings.weights")
    if kind == "checkpoint":
        return load_backbone_file(Path(out_dir) / RUN_CHECKPOINT, None, options.img_size, option="train/best.pt",
                                  source="checkpoint")
    if kind != "pretrained":
        raise ValueError(f"label_noise_backbone: unknown source {kind!r}")
    bb, why = resolve_backbone(EmbedOptions(model_name=options.model_name, pretrained=True, use_run_checkpoint=False,
                                            img_size=options.img_size), None)
    if bb is None:
        raise RecipeError(f"stages.label_noise.embeddings: {why}")
    return bb


def embed_with_backbone(backbone: Backbone, filepaths: Sequence[str], batch_size: int = 64, flip: bool = False,
                        device: str = "auto") -> np.ndarray:
    """``float32`` ``(N, D)`` features of ``filepaths`` from the embed stage's batched pass
    (:func:`vetset.plugins.embed.compute.embed_batches`; ``flip``: mean of image and mirror).

    Raises:
        DataError: an image cannot be decoded (the message names it).
    """
    from vetset.plugins.embed.compute import embed_batches

    feats = np.zeros((len(filepaths), int(backbone.model.num_features)), np.float32)
    for start, f, ok in embed_batches(backbone, list(filepaths), batch_size, flip=flip, device=device):
        if not ok.all():
            bad = filepaths[start + int(np.argmin(ok))]
            raise DataError(f"{bad} cannot be decoded; the audit tags such files 'unreadable'.")
        feats[start:start + len(f)] = f
    return feats


def embedding_pred_probs(features: np.ndarray, labels: np.ndarray, num_classes: int, n_folds: int = 5,
                         seed: int = 0, C: float = 1.0) -> np.ndarray:
    """Cross-validated ``predict_proba`` of a logistic regression on ``features``.

    ``sklearn.model_selection.cross_val_predict`` with a ``StandardScaler`` +
    ``LogisticRegression(C=C)`` pipeline over :func:`stratified_folds`. BLAS runs on one
    thread (``threadpoolctl``): on a busy machine OpenBLAS's spinning worker threads made
    the lbfgs fit over 10x slower (68 s vs 5 s for 1,797 x 512 features here).

    Args:
        features: ``float`` ``(N, D)``.
        labels: ``int`` ``(N,)`` in ``0..num_classes-1``.

    Returns:
        ``float32`` ``(N, num_classes)``; classes absent from ``labels`` get probability 0.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    labels = np.asarray(labels, dtype=np.int64)
    folds = stratified_folds(labels, n_folds, seed)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000))
    with warnings.catch_warnings(), threadpool_limits(1):
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=RuntimeWarning)
        probs = cross_val_predict(clf, features, labels, cv=folds, method="predict_proba")
    out = np.zeros((len(labels), num_classes), dtype=np.float32)
    out[:, np.unique(labels)] = probs
    return normalise_rows(out)


def normalise_rows(pred_probs: np.ndarray) -> np.ndarray:
    """Rows rescaled to sum to 1 (float32); an all-zero row becomes uniform."""
    p = np.asarray(pred_probs, dtype=np.float64)
    s = p.sum(axis=1, keepdims=True)
    p = np.where(s > 0, p / np.where(s > 0, s, 1), 1.0 / max(1, p.shape[1]))
    return p.astype(np.float32)


def save_pred_probs(path: str | Path, pred_probs: np.ndarray, sample_ids: Sequence[str],
                    filepaths: Sequence[str], classes: Sequence[str], labels: np.ndarray) -> Path:
    """Write ``pred_probs.npz`` (``pred_probs``, ``sample_ids``, ``filepaths``, ``classes``,
    ``labels``) that :func:`load_pred_probs_file` reads back."""
    path = Path(path)
    arrays = {"pred_probs": np.asarray(pred_probs, np.float32), "sample_ids": np.array(list(sample_ids), dtype=str),
              "filepaths": np.array(list(filepaths), dtype=str), "classes": np.array(list(classes), dtype=str),
              "labels": np.asarray(labels, np.int64)}
    atomic_write(path, lambda f: np.savez(f, **arrays), mkdir=True)
    return path


def load_pred_probs_file(path: str, ids_file: str | None, sample_ids: Sequence[str], filepaths: Sequence[str],
                         classes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Read user-supplied ``pred_probs`` and align its rows with the dataset's samples.

    Accepted: ``.npz`` with ``pred_probs`` and ``sample_ids`` or ``filepaths`` (and
    optionally ``classes``, checked against the dataset's), or ``.npy`` ``(N, K)`` with
    ``ids_file`` naming one sample id or image path per row.

    Args:
        sample_ids, filepaths: the samples to score, in the caller's order.
        classes: the dataset's ``K`` classes (column order).

    Returns:
        ``(pred_probs, found)``: ``float32`` ``(len(sample_ids), K)`` rows in the caller's
        order, and a boolean mask of the samples the file has a row for.

    Raises:
        RecipeError: missing/unreadable file (or ids file), wrong shape or dtype, negative
            or non-finite values, rows that do not sum to 1 (tolerance 1e-3), a sample id
            listed twice, or classes that differ.
    """
    p = Path(path).expanduser()
    opt = "stages.label_noise.pred_probs_file"
    if not p.is_file():
        raise RecipeError(f"{opt}: file {p} does not exist.")
    try:
        if p.suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "pred_probs" not in z:
                    raise RecipeError(f"{opt}: {p} has no 'pred_probs' array (it has {', '.join(z.files)}).")
                probs = z["pred_probs"]
                keys = z["sample_ids"] if "sample_ids" in z else z["filepaths"] if "filepaths" in z else None
                if keys is None:
                    raise RecipeError(f"{opt}: {p} needs a 'sample_ids' or 'filepaths' array beside 'pred_probs'.")
                if keys.ndim != 1:
                    raise RecipeError(f"{opt}: the sample ids of {p} have shape {keys.shape}; expected one id per row.")
                keys = [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in keys.tolist()]
                file_classes = [c.decode("utf-8", "replace") if isinstance(c, bytes) else str(c)
                                for c in np.atleast_1d(z["classes"]).tolist()] if "classes" in z else None
                if file_classes is not None and file_classes != list(classes):
                    raise RecipeError(f"{opt}: {p} has classes {file_classes}, the dataset has {list(classes)}.")
        else:
            probs = np.load(p, allow_pickle=False)
            if not ids_file:
                raise RecipeError(f"{opt}: {p} is a .npy file; set stages.label_noise.ids_file to a text file "
                                  "with one sample id or image path per row (or use a .npz with sample_ids).")
            ids_path = Path(ids_file).expanduser()
            if not ids_path.is_file():
                raise RecipeError(f"stages.label_noise.ids_file: file {ids_path} does not exist.")
            try:
                keys = [ln.strip() for ln in ids_path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
            except (OSError, UnicodeDecodeError) as exc:
                raise RecipeError(f"stages.label_noise.ids_file: {ids_path} cannot be read as UTF-8 text "
                                  f"({type(exc).__name__}: {exc}).") from None
    except (OSError, ValueError) as exc:
        raise RecipeError(f"{opt}: {p} cannot be read as a NumPy file: {exc}.") from None
    probs = np.asarray(probs)
    if probs.dtype.kind not in ("f", "i", "u"):
        raise RecipeError(f"{opt}: {p} holds {probs.dtype} values; pred_probs must be real numbers (float).")
    if probs.ndim != 2 or probs.shape[1] != len(classes):
        raise RecipeError(f"{opt}: {p} has shape {probs.shape}; expected (N, {len(classes)}) for the classes "
                          f"{list(classes)}.")
    if len(keys) != len(probs):
        raise RecipeError(f"{opt}: {p} has {len(probs)} rows but {len(keys)} sample ids.")
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise RecipeError(f"{opt}: {p} holds negative or non-finite values; pred_probs are probabilities.")
    bad = np.abs(probs.sum(axis=1) - 1.0) > 1e-3
    if bad.any():
        raise RecipeError(f"{opt}: {int(bad.sum())} rows of {p} do not sum to 1 (first: row {int(np.argmax(bad))}); "
                          "pass softmax probabilities, not logits.")
    row_of = {key: i for i, key in enumerate(keys)}
    if len(row_of) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        where = "sample ids" if p.suffix == ".npz" else f"stages.label_noise.ids_file {ids_file}"
        raise RecipeError(f"{opt}: the {where} of {p} name {len(keys) - len(row_of)} samples twice "
                          f"(first: {dup!r}); each sample needs exactly one row.")
    idx = np.array([row_of.get(sid, row_of.get(fp, -1)) for sid, fp in zip(sample_ids, filepaths)], dtype=np.int64)
    found = idx >= 0
    out = np.zeros((len(idx), len(classes)), dtype=np.float32)
    out[found] = probs[idx[found]]
    return normalise_rows(out), found
