"""Report sections of training and validation, rendered from the JSON run result only.

Each ``render_*(result, ctx)`` returns an HTML fragment, or ``None`` when the run result
has no train/validate block for it (see :mod:`vetset.core.report_kit`).
"""

from __future__ import annotations

from typing import Any

from vetset.core.report_kit import esc, figure, fmt, table, thumb_img


def _stage(result: dict[str, Any], name: str) -> dict[str, Any] | None:
    block = (result.get("stages") or {}).get(name)
    return block if isinstance(block, dict) and block else None


def render_training(result: dict[str, Any], ctx: Any) -> str | None:
    """Model, device and speed table plus loss / accuracy / learning-rate curves per epoch."""
    train = _stage(result, "train")
    if not train or not train.get("history"):
        return None
    from plotly.subplots import make_subplots

    hist = train["history"]
    epochs = [h["epoch"] for h in hist]
    fig = make_subplots(rows=1, cols=3, subplot_titles=("loss (cross-entropy)", "accuracy", "learning rate"))
    for col, key in ((1, "loss"), (2, "acc")):
        for split, dash in (("train", "solid"), ("val", "dash")):
            ys = [h.get(f"{split}_{key}") for h in hist]
            if any(y is not None for y in ys):
                fig.add_scatter(x=epochs, y=ys, name=f"{split} {key}", mode="lines+markers",
                                line={"dash": dash}, row=1, col=col)
    fig.add_scatter(x=epochs, y=[h.get("lr") for h in hist], name="lr", mode="lines+markers", row=1, col=3)
    if train.get("best_epoch"):
        for col in (1, 2):
            fig.add_vline(x=train["best_epoch"], line_dash="dot", line_color="grey", row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(height=320, margin={"l": 40, "r": 10, "t": 40, "b": 40}, legend={"orientation": "h"})
    m = train.get("metrics", {})
    size = (train.get("data_config") or {}).get("input_size") or ["", "", ""]
    weights = train.get("weights") or {}
    tune = train.get("finetune") or {}
    rows = [("model", train.get("model_name")), ("weights", _weights_text(weights)),
            ("fine-tuning", _finetune_text(tune)), ("input size", f"{size[-2]}x{size[-1]}"),
            ("device", f"{train.get('device')} (amp {train.get('amp') or 'off'})"),
            ("train / val images", f"{train.get('num_train')} / {train.get('num_val')}"),
            ("epochs run", m.get("epochs_run")), ("best epoch", train.get("best_epoch")),
            ("best val accuracy", m.get("best_val_acc")), ("best val loss", m.get("best_val_loss")),
            ("training speed (img/s)", m.get("images_per_s")), ("stopped early", train.get("stopped_early")),
            ("checkpoint", train.get("checkpoint"))]
    note = ""
    if weights.get("source") == "none" and weights.get("reason") != "pretrained: false":
        note = f'<p class="verdict warn">{esc(weights.get("reason"))}: {esc(weights.get("advice"))}.</p>'
    return note + table(["", ""], rows, cls="kv") + figure(fig)


def _weights_text(weights: dict[str, Any]) -> str:
    """Which weights the model started from, in a few words (the train block's ``weights``)."""
    source = weights.get("source")
    if source in ("hub", "hub_cache"):
        return f"{weights.get('pretrained_tag')} (pretrained; {'Hugging Face Hub' if source == 'hub' else 'local cache'})"
    if source == "file":
        return f"file {weights.get('file')}"
    if source == "checkpoint":
        return f"vetset checkpoint {weights.get('file')} (classifier {weights.get('head')})"
    if source == "none":
        return f"none: random initialisation ({weights.get('reason')})"
    return "-"


def _finetune_text(tune: dict[str, Any]) -> str:
    if not tune:
        return "-"
    balance = (tune.get("class_balance") or {}).get("mode", "off")
    if tune.get("finetune") == "linear_probe":
        text = "linear probe (backbone frozen)"
    else:
        text = (f"{tune.get('head_epochs', 0)} classifier-only epoch(s), then all layers; backbone lr "
                f"x{tune.get('backbone_lr_scale', 1):g}" + (f", layer decay {tune['layer_decay']:g}"
                                                              if tune.get("layer_decay") else ""))
    return text + f"; class balance: {balance}"


def render_gap(result: dict[str, Any], ctx: Any) -> str | None:
    """The verdict (overfitting / underfitting / fine) with the numbers and per-class recall gaps."""
    val = _stage(result, "validate")
    if not val or not val.get("gap"):
        return None
    gap = val["gap"]
    colour = {"fine": "ok", "overfitting": "warn", "underfitting": "warn"}.get(gap["verdict"], "")
    detail = gap["summary"].removeprefix(f'{gap["verdict"]}: ')
    out = [f'<p class="verdict {colour}"><strong>{esc(gap["verdict"])}</strong>: {esc(detail)}</p>',
           "<ul>" + "".join(f"<li>{esc(r)}</li>" for r in gap.get("reasons", [])) + "</ul>"]
    rows = [("accuracy", gap.get("train_acc"), gap.get("val_acc"), gap.get("acc_gap")),
            ("loss (cross-entropy)", gap.get("train_loss"), gap.get("val_loss"), gap.get("loss_gap"))]
    out.append(table(["", "train", "val", "difference"], rows))
    splits = {s: val[s] for s in val.get("splits", []) if isinstance(val.get(s), dict)}
    out.append(table(["split", "samples", "accuracy", "loss", "macro F1"],
                     [(s, b.get("num_samples"), b.get("accuracy"), b.get("loss"), (b.get("macro") or {}).get("f1"))
                      for s, b in splits.items()]))
    classes = gap.get("classes_with_recall_gap") or []
    if classes:
        out.append("<p>Classes whose val recall is far below their train recall "
                   f"(gap &gt; {fmt(gap['thresholds']['class_recall_gap'])}):</p>")
        out.append(table(["class", "train recall", "val recall", "gap", "val samples"],
                         [(c["class"], c["train_recall"], c["val_recall"], c["gap"], c["val_support"])
                          for c in classes]))
    t = gap.get("thresholds", {})
    out.append(f'<p class="note">Thresholds: overfitting when train - val accuracy &gt; {fmt(t.get("overfit_gap"))}; '
               f'underfitting when train accuracy &lt; {fmt(t.get("target_train_acc"))}. '
               f'Train metrics: {esc(gap.get("train_source") or "-")}.</p>')
    return "".join(out)


def render_confusion(result: dict[str, Any], ctx: Any) -> str | None:
    """Confusion-matrix heatmaps (rows ground truth, columns prediction) for val and test."""
    val = _stage(result, "validate")
    if not val:
        return None
    import plotly.graph_objects as go

    parts = []
    for split in ("val", "test"):
        block = val.get(split)
        if not isinstance(block, dict) or "confusion_matrix" not in block:
            continue
        cm = block["confusion_matrix"]
        n = len(cm["classes"])
        fig = go.Figure(go.Heatmap(z=cm["matrix"], x=cm["classes"], y=cm["classes"], colorscale="Blues",
                                   text=cm["matrix"], texttemplate="%{text}" if n <= 20 else None,
                                   hovertemplate="true %{y}<br>predicted %{x}<br>%{z} samples<extra></extra>"))
        fig.update_layout(title=f"{split} ({block['num_samples']} samples, accuracy {block['accuracy']:.3f})",
                          xaxis_title="predicted", yaxis_title="ground truth", yaxis_autorange="reversed",
                          height=min(900, 250 + 22 * n), margin={"l": 60, "r": 10, "t": 50, "b": 60})
        parts.append(figure(fig))
    return "".join(parts) or None


def render_per_class(result: dict[str, Any], ctx: Any) -> str | None:
    """Precision, recall, F1 and support per class on val, with train recall beside it."""
    val = _stage(result, "validate")
    block = (val or {}).get("val")
    if not isinstance(block, dict) or "per_class" not in block:
        return None
    train_pc = (val.get("train") or {}).get("per_class", {})
    rows = [(c, m["precision"], m["recall"], m["f1"], m["support"], (train_pc.get(c) or {}).get("recall"))
            for c, m in block["per_class"].items()]
    rows.sort(key=lambda r: r[3])
    return table(["class", "precision", "recall", "F1", "val samples", "train recall"], rows)


def render_errors(result: dict[str, Any], ctx: Any) -> str | None:
    """Thumbnails of the most confident validation errors and how to open the saved view."""
    val = _stage(result, "validate")
    if not val:
        return None
    top = val.get("top_errors") or []
    n = (val.get("views") or {}).get("validation_errors", 0)
    size = getattr(ctx, "thumb_size", 96)
    thumbs = "".join(thumb_img(e["filepath"], size, f"{e['ground_truth']} → {e['prediction']} ({e['confidence']:.2f})")
                     for e in top)
    dataset = result.get("dataset", "")
    how = (f'<p>{n} val samples are misclassified. Open them in the FiftyOne App: '
           f'<code>{esc(val.get("app") or "")}</code>, saved view <code>validation_errors</code> '
           f'(or <code>fo.load_dataset("{esc(dataset)}").load_saved_view("validation_errors")</code>); '
           "per-class views are <code>validation_errors/&lt;class&gt;</code>.</p>")
    return how + (f'<div class="thumbs">{thumbs}</div>' if thumbs else "")
