"""Built-in check ``unreadable``: files that do not decode, and files that need a second look.

Every audited file is decoded once by the per-image pass (:func:`vetset.core.images.decode`);
this check turns its failure reasons into the ``unreadable`` tag, the
``unreadable_reason`` field and one clear sentence per file. Unreadable files are
reported, never fatal, and never deleted or modified. Readable files with more than one
frame (animated GIF/WebP, multi-page TIFF) are tagged ``animated``: only their first
frame is audited and trained on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Check, ReportSection, ViewSpec
from vetset.core.report_kit import (
    Action,
    ReportContext,
    esc,
    metric,
    note,
    num_images,
    share,
    stage_block,
    stat_cards,
    table,
    view_note,
)

if TYPE_CHECKING:  # pragma: no cover
    from vetset.plugins.audit.context import AuditContext

#: Decode failure reason (or its prefix) -> what it means and what to do.
EXPLANATIONS: dict[str, str] = {
    "empty file": "The file has zero bytes (an interrupted download or copy); replace or delete it.",
    "truncated file": "The image data ends early (an interrupted download or copy); Pillow refuses to "
                      "decode it. Re-download or re-export the file.",
    "not an image": "No image format recognises the bytes: a text/HTML page or an unsupported format "
                    "saved with an image extension. Convert it to JPEG/PNG or remove it.",
    "decompression bomb": "The header claims more pixels than Pillow's limit (Image.MAX_IMAGE_PIXELS, "
                          "89,478,485), so it is not decoded, to protect memory. Downscale the image.",
    "broken symlink": "A symbolic link whose target does not exist; fix the link or remove it.",
    "symlink loop": "A symbolic link that points back to itself (directly or through other links).",
    "not a regular file": "The path is not a regular file (a directory or a device).",
    "cannot read file": "The file exists but could not be read (permissions or an I/O error).",
    "file not found": "No file at this path: moved or deleted after it was loaded, or a manifest row "
                      "with a wrong path.",
    "cannot stat file": "The file could not be inspected (permissions or an I/O error).",
    "cannot decode": "Pillow recognised the format but could not decode it (an unsupported variant "
                     "or corrupt data); re-export it as JPEG/PNG.",
    "malformed image header": "The file's header is malformed; re-export it as JPEG/PNG.",
}


#: Unreadable files named one by one in the log; the rest are counted.
LOG_LIMIT = 20


def explain(reason: str | None) -> str:
    """The sentence for a decode failure ``reason`` (matched exactly, then by prefix)."""
    if not reason:
        return ""
    if reason in EXPLANATIONS:
        return EXPLANATIONS[reason]
    for key, text in EXPLANATIONS.items():
        if reason.startswith(key):
            return text
    return "The file could not be decoded."


class UnreadableOptions(BaseModel):
    """``stages.audit.checks.unreadable`` options.

    Attributes:
        max_listed: files listed (with reason and explanation) in the run result; all of
            them are tagged ``unreadable`` and in the saved view ``audit/unreadable``.
    """

    model_config = {"extra": "forbid"}

    max_listed: Count = Field(200, ge=0)


def unreadable_evaluate(ctx: AuditContext, options: UnreadableOptions) -> dict[str, Any]:
    """Tag ``unreadable`` and ``animated``; write ``unreadable_reason``."""
    bad = ~ctx.readable
    animated = ctx.readable & (ctx.n_frames > 1)
    ctx.set_field("unreadable_reason", [e if e else None for e in ctx.error], "str")
    ctx.tag("unreadable", bad)
    ctx.tag("animated", animated)
    reasons = np.array([e or "" for e in ctx.error], dtype=object)
    keys = [_reason_key(r) for r in reasons[bad]]
    by_reason = {k: keys.count(k) for k in sorted(set(keys))}
    files = [{"filepath": ctx.filepaths[i], "label": ctx.labels[i], "split": ctx.splits[i],
              "reason": ctx.error[i], "explanation": explain(ctx.error[i])}
             for i in np.flatnonzero(bad)[: options.max_listed]]
    frames = [{"filepath": ctx.filepaths[i], "label": ctx.labels[i], "split": ctx.splits[i],
               "frames": int(ctx.n_frames[i])} for i in np.flatnonzero(animated)[: options.max_listed]]
    formats = np.array([f or "?" for f in ctx.format], dtype=object)[ctx.readable]
    vals, counts = np.unique(formats.astype(str), return_counts=True)
    for f in files[:LOG_LIMIT]:
        ctx.log(f"[audit] unreadable: {f['filepath']}: {f['reason']}. {f['explanation']}")
    if bad.sum() > LOG_LIMIT:
        ctx.log(f"[audit] ... and {int(bad.sum()) - LOG_LIMIT} more unreadable files (saved view audit/unreadable)")
    return {"count": int(bad.sum()), "by_reason": by_reason, "files": files,
            "by_class": ctx.count_by_class(bad), "animated": frames,
            "formats": {str(v): int(c) for v, c in zip(vals, counts)},
            "metrics": {"unreadable": int(bad.sum()), "animated": int(animated.sum())}}


def _reason_key(reason: str) -> str:
    for key in EXPLANATIONS:
        if reason == key or reason.startswith(key):
            return key
    return reason


def render_unreadable(result: dict[str, Any], ctx: ReportContext | None) -> str | None:
    """Every unreadable file with its reason and what to do; multi-frame files."""
    block = stage_block(result, "audit")
    un = ((block or {}).get("checks") or {}).get("unreadable")
    if un is None:
        return None
    parts = [stat_cards([("unreadable files", un.get("count", 0), "audit.metrics.unreadable"),
                         ("animated / multi-frame", len(un.get("animated", [])), "audit.metrics.animated")])]
    if not un.get("count"):
        parts.append(note("Every file decoded.", "good"))
    else:
        parts.append(note("These files are skipped by every stage; they were reported, not modified or deleted."
                          + view_note("audit/unreadable", ctx), "warn"))
        parts.append(table(["file", "class", "split", "reason", "what it means"],
                           [[f["filepath"], f.get("label"), f.get("split"), f["reason"], f["explanation"]] for f in un["files"]]))
        if un["count"] > len(un["files"]):
            parts.append(f'<p class="muted">{len(un["files"])} of {un["count"]} listed.</p>')
    if un.get("animated"):
        parts.append("<p>Multi-frame files (only the first frame is used):</p>")
        parts.append(table(["file", "class", "frames"], [[a["filepath"], a.get("label"), a["frames"]] for a in un["animated"]]))
    if un.get("formats"):
        parts.append('<p class="muted">Formats of the readable files: '
                     + ", ".join(f"{esc(k)} {v:,}" for k, v in un["formats"].items()) + ".</p>")
    return "".join(parts)


def unreadable_action(result: dict[str, Any]) -> Action | None:
    """``low``: fix or remove the unreadable files (share of the images)."""
    found = metric(result, "audit.metrics.unreadable")
    if not found:
        n = (result.get("load") or {}).get("unreadable")
        found = ("load.unreadable", n) if isinstance(n, int) else None
    if not found or found[1] <= 0:
        return None
    return Action("unreadable", "low", f"Fix or remove {found[1]:,} unreadable files.",
                  "Every stage skips them, so they are missing from training and evaluation; a data loader "
                  "outside vetset may crash on them.",
                  found[0], found[1], share(found[1], num_images(result)), ["unreadable"])


UNREADABLE = Check(
    "unreadable", "zero-byte, truncated, non-image, decompression-bomb and unsupported files",
    unreadable_evaluate, None, UnreadableOptions,
    views=(ViewSpec("audit/unreadable", "audit", lambda ds: ds.match_tags("unreadable"),
                    "files that could not be decoded (see unreadable_reason)"),
           ViewSpec("audit/animated", "audit", lambda ds: ds.match_tags("animated"),
                    "multi-frame files; only the first frame is used")),
    report=ReportSection("unreadable", "Unreadable files", render_unreadable, order=50),
    actions=(unreadable_action,))


@hookimpl
def vetset_register_checks(register):
    register(UNREADABLE)
