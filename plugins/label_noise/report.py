"""The "Label issues" report section (order 60), built from ``stages.label_noise`` only.

Shows the counts, the messages about skipped samples, flagged samples per class, the
most frequent given -> suggested flips, thumbnails of the worst flagged samples (given vs
suggested label, probability, label quality), the optional Datalab findings, and how to
review and export the corrected labels.
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import ReportContext, esc, fmt, table, thumb_img

METHODS = {"kfold": "K-fold cross-validation of the timm trainer",
           "embeddings": "timm backbone features + cross-validated logistic regression",
           "pred_probs_file": "pred_probs supplied in a file"}


def _stat(value: Any, label: str) -> str:
    return f'<div class="stat"><div class="value">{fmt(value)}</div><div class="label">{esc(label)}</div></div>'


def render(result: dict[str, Any], ctx: ReportContext) -> str | None:
    """HTML fragment for the section, or ``None`` when the run has no ``label_noise`` block."""
    block = (result.get("stages") or {}).get("label_noise")
    if not isinstance(block, dict):
        return None
    filter_by = block.get("filter_by") or block.get("options", {}).get("filter_by")
    parts = [f'<p class="muted">pred_probs from {esc(METHODS.get(block.get("method"), block.get("method")))}'
             + (f', {block.get("n_folds")} folds' if block.get("method") != "pred_probs_file" else "")
             + f'; cleanlab <code>find_label_issues(filter_by="{esc(filter_by)}")</code>'
             f', label quality by <code>{esc(block.get("options", {}).get("rank_by"))}</code>.</p>']
    for key in ("method_reason", "fold_train"):
        if block.get(key):
            parts.append(f'<p class="muted">{esc(block[key])}</p>')
    feats = block.get("features")
    if feats:
        origin = {"embed stage": "the embed stage's stored features", "stages.label_noise.embeddings": "a pass of "
                  "stages.label_noise.embeddings"}.get(feats.get("source"), feats.get("source"))
        weights = {"random": "random weights (little image content: expect weak pred_probs)"}.get(
            feats.get("weights"), f'{feats.get("weights")} <code>{esc(feats.get("weights_file"))}</code>')
        parts.append(f'<p class="muted">Features: {esc(origin)}, {esc(feats.get("model_name"))} with {weights}, '
                     f'{feats.get("dim")}-d{", mean of image and mirror" if feats.get("flip") else ""}.</p>')
    checked = block.get("num_checked", 0)
    parts.append('<div class="stats">' + _stat(checked, "samples checked") + _stat(block.get("num_issues", 0), "label issues")
                 + _stat(f'{100 * block.get("issue_rate", 0):.1f}%', "flagged share")
                 + (_stat(f'{100 * block["oof_accuracy"]:.1f}%', "out-of-sample accuracy vs given labels")
                    if isinstance(block.get("oof_accuracy"), (int, float)) else "") + "</div>")
    for line in block.get("warnings") or []:
        parts.append(f'<div class="note warn">{esc(line)}</div>')
    if block.get("skipped"):
        return "".join(parts)
    per_class = block.get("per_class") or {}
    if per_class:
        rows = [(c, v["checked"], v["issues"], f'{100 * v["issues"] / v["checked"]:.1f}%' if v["checked"] else "-")
                for c, v in per_class.items()]
        parts.append("<h3>Per class (given label)</h3>" + table(["class", "checked", "flagged", "flagged share"], rows))
    if block.get("flips"):
        parts.append("<h3>Most frequent given &rarr; suggested</h3>"
                     + table(["given", "suggested", "samples"], [(f["given"], f["suggested"], f["count"])
                                                                  for f in block["flips"]]))
    top = block.get("top_issues") or []
    if top:
        shown = len(top)
        parts.append(f"<h3>Flagged samples, worst label quality first ({shown} of {block.get('num_issues', shown)})</h3>"
                     '<div class="thumbs">' + "".join(
                         thumb_img(t["filepath"], ctx.thumb_size,
                                   f'{t["given"]} → {t["suggested"]} (p {t["suggested_prob"]:.2f}), '
                                   f'quality {t["label_quality"]:.3f}') for t in top) + "</div>")
    parts.append(_datalab(block.get("datalab"), ctx))
    dataset = result.get("dataset") or "NAME"
    parts.append('<div class="note">Review in the FiftyOne App: open the saved view <code>label_issues</code> '
                 f'(<code>recipes app --dataset {esc(dataset)}</code>), tag a sample <code>label_confirmed</code> '
                 'when its label is wrong (the suggested label is taken) or <code>label_rejected</code> when the '
                 'given label is right, then write the corrected labels to a new folder with '
                 f'<code>recipes export-labels --dataset {esc(dataset)} --out DIR</code>. '
                 'The source images are never changed.</div>')
    return "".join(parts)


def _datalab(block: dict[str, Any] | None, ctx: ReportContext) -> str:
    if not block:
        return ""
    out = ["<h3>Datalab (same pred_probs)</h3>",
           table(["issue type", "dataset score", "samples"],
                 [(s["issue_type"], s["score"], s["num_issues"]) for s in block.get("summary", [])])]
    if block.get("outliers"):
        out.append('<p class="muted">Outliers, most atypical first</p><div class="thumbs">' + "".join(
            thumb_img(o["filepath"], ctx.thumb_size, f'outlier score {o["outlier_score"]:.3f}')
            for o in block["outliers"]) + "</div>")
    groups = block.get("near_duplicate_sets") or []
    if groups:
        out.append(f'<p class="muted">Near-duplicate groups in feature space: {block.get("num_near_duplicate_groups", len(groups))}'
                   f' (largest first; up to 8 images each)</p>')
    for group in groups[:8]:
        out.append(f'<p class="muted">{group["size"]} images</p><div class="thumbs">'
                   + "".join(thumb_img(fp, ctx.thumb_size) for fp in group["filepaths"]) + "</div>")
    return "".join(out)
