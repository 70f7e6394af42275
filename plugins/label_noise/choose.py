"""Which ``pred_probs`` source ``method: auto`` picks, and the one sentence that says why.

``embeddings`` (a logistic regression on backbone features, cross-validated) needs features
that describe image content, i.e. a backbone with trained weights; ``kfold`` trains K models
from scratch and needs none. Sources of trained weights, in the order they are used
(:func:`feature_source`):

1. ``stages.label_noise.embeddings.weights`` (a file the user named);
2. the ``embed`` stage's stored features, when this run has that stage with a backbone;
3. the pretrained weights of ``embeddings.model_name``, found as the train stage's
   ``pretrained: auto`` finds them (:func:`vetset.plugins.train.weights.pretrained_status`:
   the Hugging Face cache, or the Hub when it answers within 3 s);
4. this run's ``<out>/train/best.pt``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vetset.plugins.embed.backbone import RUN_CHECKPOINT

if TYPE_CHECKING:
    from vetset.plugins.label_noise.options import LabelNoiseOptions


def feature_source(options: LabelNoiseOptions, embed_block: dict[str, Any] | None,
                   out_dir: str | Path | None) -> tuple[str | None, str, list[str]]:
    """The first source of trained backbone weights for ``method: embeddings``.

    Args:
        options: the stage options (``embeddings.weights``, ``pretrained``,
            ``use_run_checkpoint``, ``model_name``).
        embed_block: ``run.results.get("embed")`` (``None`` when the recipe has no embed stage).
        out_dir: the run folder (for ``train/best.pt``).

    Returns:
        ``(kind, description, tried)``: ``kind`` is ``"weights"``, ``"embed stage"``,
        ``"pretrained"``, ``"checkpoint"`` or ``None`` (no trained weights);
        ``description`` names the source in a few words; ``tried`` says why each source
        that was looked at is not available.
    """
    e = options.embeddings
    if e.weights:
        return "weights", f"the weights file {e.weights} (stages.label_noise.embeddings.weights)", []
    tried = []
    bb = (embed_block or {}).get("backbone")
    if bb:
        src = {"weights": f"weights file {bb.get('weights_file')}", "checkpoint": "run checkpoint weights"}.get(
            bb["source"], f"{bb['source']} weights")  # not "weights weights" for stages.embed.weights
        return "embed stage", f"the embed stage's stored features ({bb['model_name']}, {src})", []
    tried.append("no embed stage features in this run")
    if e.pretrained:
        from vetset.plugins.train.weights import pretrained_status

        status = pretrained_status(e.model_name)
        if status["available"]:
            where = f"cached in {status['cached_file']}" if status["cached_file"] else "from the Hugging Face Hub"
            return "pretrained", f"the pretrained weights of {status['pretrained_tag']} ({where})", []
        tried.append(f"no pretrained weights of {e.model_name} here" if status["pretrained_tag"] else
                     f"timm has no pretrained weights for {e.model_name}")
    if e.use_run_checkpoint and out_dir is not None:
        ckpt = Path(out_dir) / RUN_CHECKPOINT
        if ckpt.is_file():
            return "checkpoint", f"this run's checkpoint {ckpt}", []
        tried.append(f"no {RUN_CHECKPOINT} in the run folder")
    return None, "", tried


def choose_method(options: LabelNoiseOptions, embed_block: dict[str, Any] | None,
                  out_dir: str | Path | None) -> tuple[str, str]:
    """``(method, sentence)``: the ``pred_probs`` source to use and why, in one sentence.

    An explicit ``method`` is kept. ``auto`` picks ``pred_probs_file`` when that option is
    set, ``embeddings`` when :func:`feature_source` finds trained weights, else ``kfold``.
    """
    if options.method != "auto":
        return options.method, f"method {options.method}, as stages.label_noise.method asks."
    if options.pred_probs_file:
        return "pred_probs_file", (f"method pred_probs_file (auto): stages.label_noise.pred_probs_file is set "
                                   f"({options.pred_probs_file}).")
    kind, what, tried = feature_source(options, embed_block, out_dir)
    if kind is not None:
        return "embeddings", (f"method embeddings (auto): {what} describe image content, so a cross-validated "
                              "logistic regression on them gives the pred_probs in seconds instead of "
                              f"{options.n_folds} trainings from scratch.")
    return "kfold", (f"method kfold (auto): no backbone with trained weights ({'; '.join(tried)}), so "
                     f"{options.n_folds} fold models train from scratch; give stages.label_noise.embeddings.weights, "
                     "cache pretrained weights, or run the embed stage first for the fast embeddings method.")
