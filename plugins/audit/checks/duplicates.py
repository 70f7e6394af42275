"""Built-in check ``duplicates``: exact and near duplicates, train/val/test leakage, label conflicts.

* Exact duplicates share the SHA-256 of their file bytes (hashed in the per-image pass
  from the same bytes that are decoded).
* Near duplicates have perceptual hashes (``imagehash.phash``: DCT of a 32x32 luma
  thumbnail, 64 bits; Zauner, "Implementation and Benchmarking of Perceptual Image Hash
  Functions", 2010) within a Hamming radius. Candidate pairs come from multi-index
  hashing (Norouzi, Punjani and Fleet, "Fast Search in Hamming Space with Multi-Index
  Hashing", CVPR 2012): split the 64 bits into ``radius + 1`` blocks; two hashes within
  the radius agree exactly on at least one block, so only images sharing a block value
  are compared — no all-pairs matrix.
* Groups come from leader clustering: in dataset order, each image not yet grouped leads
  a group of the ungrouped images within the radius of it, so a chain of small steps
  never joins two different pictures (connected components would). Same bytes always
  share a group. A group spanning splits is leakage (train/val is the serious one:
  validation scores are inflated); a group with more than one label is a label conflict.
"""

from __future__ import annotations

from collections import Counter
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
    thumb_grid,
    view_note,
)

if TYPE_CHECKING:  # pragma: no cover
    from vetset.core.images import DecodedImage
    from vetset.plugins.audit.context import AuditContext

#: Longer side the luma is reduced to (area interpolation) before imagehash's own
#: 32x32 Lanczos resize: same hash bits in practice, a fraction of the resize cost.
PHASH_PRESIZE = 64


class DuplicateOptions(BaseModel):
    """``stages.audit.checks.duplicates`` options.

    Attributes:
        radius: near duplicates differ in at most this many of the 64 phash bits. Default
            4: in the CIFAR-10 test set it finds 10 groups (8 pairs at 2-4 bits, 2 with equal
            hashes), every one two versions of the same photo; radius 6 finds 24 pairs,
            some of them different pictures of a similar scene. 0 = equal hashes only, as
            CleanVision's ``near_duplicates``.
        near_min_side: images with a shorter side below this take part in exact (same bytes)
            duplicates only. phash reads an 8x8 block of DCT coefficients of a 32x32
            thumbnail; an image of a few pixels upsampled to it carries too little detail,
            and distinct drawings collide: on the 8x8 scikit-learn digits, radius 4 put 125
            different handwritten digits into 45 groups. Default 16.
        max_groups_listed: groups written into the run result (leakage and label conflicts
            first); every group is still tagged and has a ``duplicate_group`` value.
    """

    model_config = {"extra": "forbid"}

    radius: Count = Field(4, ge=0, le=16)
    near_min_side: Count = Field(16, ge=1)
    max_groups_listed: Count = Field(50, ge=0)


def duplicates_compute(image: DecodedImage, options: DuplicateOptions) -> dict[str, Any]:
    """File hash and perceptual hash of one decoded image.

    Returns:
        ``{"file_hash": 64 hex chars (SHA-256 of the file bytes), "phash": 16 hex chars}``;
        ``phash`` is the text ``str(imagehash.phash(...))`` gives (its bits packed
        most-significant first), formatted with ``np.packbits`` because that is ten times faster.
    """
    import hashlib

    import imagehash
    from PIL import Image

    data = image.info.get("bytes")
    if data is None:
        with open(image.path, "rb") as f:
            data = f.read()
    gray = image.gray()
    if max(gray.shape) > PHASH_PRESIZE:
        gray = image.gray_fit(PHASH_PRESIZE)
    bits = imagehash.phash(Image.fromarray(gray)).hash  # bool (8, 8), row-major as str(ImageHash) reads it
    return {"file_hash": hashlib.sha256(data).hexdigest(), "phash": np.packbits(bits).tobytes().hex()}


def near_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """Every index pair ``(i, j)``, ``i < j``, of 64-bit hashes at most ``radius`` bits apart.

    Multi-index hashing: the 64 bits are cut into ``radius + 1`` blocks; a pair within the
    radius agrees on at least one block, so only hashes sharing a block value are compared.
    Pass distinct values (``np.unique``): equal hashes are all paired with each other.

    Args:
        hashes: ``uint64`` array, shape ``(n,)``.
        radius: maximum number of differing bits, 0..63.

    Returns:
        ``int64`` array, shape ``(k, 2)``, rows sorted.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    bounds = np.linspace(0, 64, radius + 2).astype(int)
    cand = [np.empty((0, 2), dtype=np.int64)]
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        keys = (hashes >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        # every pair inside a run of equal keys: position p with p + d while the key holds
        for d in range(1, len(sk)):
            same = np.flatnonzero(sk[d:] == sk[:-d])
            if not len(same):
                break
            a, b = order[same], order[same + d]
            near = np.bitwise_count(hashes[a] ^ hashes[b]) <= radius  # keep only true pairs: memory
            if near.any():  # grows with the pairs found, not with the candidates compared
                cand.append(np.stack([a[near], b[near]], axis=1))
    return np.unique(np.sort(np.concatenate(cand).astype(np.int64), axis=1), axis=0)


def leader_groups(n: int, pairs: np.ndarray, order: np.ndarray | None = None) -> np.ndarray:
    """Group ``n`` nodes: in ``order``, each ungrouped node leads a group of its ungrouped neighbours.

    Unlike connected components, a chain of small steps (a~b, b~c, ...) never puts two
    distant nodes together: every member is a direct neighbour of its group's leader.

    Args:
        n: number of nodes.
        pairs: ``(k, 2)`` neighbour pairs.
        order: the order in which nodes may lead (default: index order).

    Returns:
        ``int64`` group id per node (the leader's index); a node without neighbours is its
        own group.
    """
    from scipy.sparse import coo_matrix

    group = np.arange(n, dtype=np.int64)
    if not len(pairs):
        return group
    adj = coo_matrix((np.ones(2 * len(pairs), dtype=np.int8),
                      (np.r_[pairs[:, 0], pairs[:, 1]], np.r_[pairs[:, 1], pairs[:, 0]])), shape=(n, n)).tocsr()
    done = np.zeros(n, dtype=bool)
    linked = np.zeros(n, dtype=bool)
    linked[pairs.ravel()] = True
    for i in (np.arange(n) if order is None else np.asarray(order)):
        if done[i] or not linked[i]:
            continue
        members = adj.indices[adj.indptr[i]:adj.indptr[i + 1]]
        members = members[~done[members]]
        group[members] = i
        done[members] = True
        done[i] = True
    return group


def duplicates_evaluate(ctx: AuditContext, options: DuplicateOptions) -> dict[str, Any]:
    """Group duplicates; write ``phash``, ``file_hash``, ``duplicate_group``; tag the members."""
    n = ctx.n
    has = ctx.has("duplicates", "phash")
    ph = ctx.computed["duplicates"]["phash"] if has else [None] * n
    fh = ctx.computed["duplicates"]["file_hash"] if has else [None] * n
    ctx.set_field("phash", ph, "str")
    ctx.set_field("file_hash", fh, "str")
    small = np.minimum(ctx.width, ctx.height) < options.near_min_side
    hashed = np.fromiter((p is not None for p in ph), dtype=bool, count=n)
    near = np.flatnonzero(hashed & ~small)
    byte_only = np.flatnonzero(hashed & small)
    owner = np.full(n, -1, dtype=np.int64)  # group key per image: an image index, or -1
    if len(near):
        uniq, inverse = np.unique(np.fromiter((int(ph[i], 16) for i in near), dtype=np.uint64, count=len(near)),
                                  return_inverse=True)
        first = np.full(len(uniq), n, dtype=np.int64)  # first image (dataset order) with each hash
        np.minimum.at(first, inverse, near)
        lead = leader_groups(len(uniq), near_pairs(uniq, options.radius), order=np.argsort(first, kind="stable"))
        owner[near] = first[lead[inverse]]
    if len(byte_only):
        seen: dict[str, int] = {}
        for i in byte_only:
            owner[i] = seen.setdefault(fh[i], int(i))
    groups: dict[int, list[int]] = {}
    for i in np.flatnonzero(owner >= 0):
        groups.setdefault(int(owner[i]), []).append(int(i))
    groups = {k: v for k, v in groups.items() if len(v) > 1}
    tag = {k: np.zeros(n, dtype=bool) for k in ("duplicate", "exact_duplicate", "leakage", "label_conflict")}
    group_field: list[str | None] = [None] * n
    listed, by_splits = [], {}
    within = {s: 0 for s in ctx.split_names}
    counts = {"exact": 0, "leakage": 0, "conflict": 0}
    for gno, members in enumerate(sorted(groups.values(), key=lambda m: min(m)), start=1):
        name = f"dup-{gno:05d}"
        splits = sorted({ctx.splits[i] for i in members if ctx.splits[i]})
        labels = sorted({ctx.labels[i] for i in members if ctx.labels[i] is not None})
        same_bytes = Counter(fh[i] for i in members)
        exact = len(same_bytes) < len(members)
        kinds = []
        for i in members:
            group_field[i] = name
            tag["duplicate"][i] = True
            if same_bytes[fh[i]] > 1:
                tag["exact_duplicate"][i] = True
        if exact:
            counts["exact"] += 1
            kinds.append("exact")
        if len(splits) > 1:
            counts["leakage"] += 1
            kinds.append("leakage")
            tag["leakage"][members] = True
            key = "/".join(splits)
            by_splits[key] = by_splits.get(key, 0) + 1
        if len(labels) > 1:
            counts["conflict"] += 1
            kinds.append("label_conflict")
            tag["label_conflict"][members] = True
        for s in splits:
            if sum(1 for i in members if ctx.splits[i] == s) > 1:
                within[s] += 1
        bits = np.array([int(ph[i], 16) for i in members], dtype=np.uint64)
        listed.append({"group": name, "kinds": kinds, "size": len(members), "splits": splits, "labels": labels,
                       "max_distance_to_first": int(np.bitwise_count(bits ^ bits[0]).max()),
                       "members": [{"id": ctx.ids[i], "filepath": ctx.filepaths[i], "label": ctx.labels[i],
                                    "split": ctx.splits[i]} for i in members]})
    ctx.set_field("duplicate_group", group_field, "str")
    for t, mask in tag.items():
        ctx.tag(t, mask)
    rank = {"leakage": 0, "label_conflict": 1, "exact": 2}
    listed.sort(key=lambda g: (min([rank[k] for k in g["kinds"]] + [3]), -g["size"], g["group"]))
    readable = max(1, int(ctx.readable.sum()))
    redundant = sum(g["size"] - 1 for g in listed)
    metrics = {
        "duplicate_groups": len(groups), "exact_duplicate_groups": counts["exact"],
        "duplicate_samples": int(tag["duplicate"].sum()), "redundant_images": redundant,
        "leakage_groups": counts["leakage"], "leakage_samples": int(tag["leakage"].sum()),
        "leakage_fraction": round(int(tag["leakage"].sum()) / readable, 4),
        "conflicting_label_groups": counts["conflict"], "conflicting_label_samples": int(tag["label_conflict"].sum()),
    }
    return {"radius": options.radius, "near_hashed": int(len(near)), "bytes_only": int(len(byte_only)),
            "within_split_groups": within,
            "leakage_by_splits": by_splits, "groups": listed[: options.max_groups_listed],
            "groups_total": len(listed), "metrics": metrics}


def _group_view(tag: str):
    def build(dataset: Any) -> Any:
        view = dataset.match_tags(tag)
        return view.sort_by("duplicate_group") if "duplicate_group" in dataset.get_field_schema() else view
    return build


#: Groups of duplicates drawn with thumbnails; the rest are in the table and the saved views.
GROUPS_WITH_THUMBNAILS = 8


def render_duplicates(result: dict[str, Any], ctx: ReportContext | None) -> str | None:
    """Duplicate, leakage and label-conflict groups, leakage first, with thumbnails."""
    block = stage_block(result, "audit")
    dup = ((block or {}).get("checks") or {}).get("duplicates")
    if not dup:
        return None
    m = dup.get("metrics", {})
    parts = [stat_cards([
        ("duplicate groups", m.get("duplicate_groups", 0), "audit.metrics.duplicate_groups"),
        ("exact (same bytes)", m.get("exact_duplicate_groups", 0), "audit.metrics.exact_duplicate_groups"),
        ("leakage groups (span splits)", m.get("leakage_groups", 0), "audit.metrics.leakage_groups"),
        ("label conflicts", m.get("conflicting_label_groups", 0), "audit.metrics.conflicting_label_groups"),
        ("redundant images", m.get("redundant_images", 0), "audit.metrics.redundant_images"),
    ])]
    parts.append(f'<p class="muted">Near duplicates: perceptual hashes (imagehash phash, 64 bits) within '
                 f'{dup.get("radius")} bits; exact: same SHA-256 of the file bytes.</p>')
    if m.get("leakage_groups"):
        splits = ", ".join(f"{esc(k)}: {v}" for k, v in (dup.get("leakage_by_splits") or {}).items())
        parts.append(note(f"{m['leakage_groups']} group(s) of the same image span splits ({splits}); validation "
                          "scores are inflated until each group sits in one split." + view_note("audit/leakage", ctx), "bad"))
    if m.get("conflicting_label_groups"):
        parts.append(note(f"{m['conflicting_label_groups']} group(s) carry different labels for the same image."
                          + view_note("audit/label_conflicts", ctx), "bad"))
    groups = dup.get("groups") or []
    if not groups:
        parts.append(note("No duplicates found.", "good"))
        return "".join(parts)
    parts.append(table(["group", "kind", "images", "labels", "splits", "max bits to first"],
                       [[g["group"], ", ".join(g["kinds"]) or "near", g["size"], ", ".join(map(str, g["labels"])),
                         ", ".join(g["splits"]), g.get("max_distance_to_first")] for g in groups]))
    if dup.get("groups_total", 0) > len(groups):
        parts.append(f'<p class="muted">{len(groups)} of {dup["groups_total"]} groups listed; the saved view '
                     "<code>audit/duplicates</code> holds them all.</p>")
    if ctx is not None:
        for g in groups[:GROUPS_WITH_THUMBNAILS]:
            parts.append(f"<h3>{esc(g['group'])} <span class=\"muted\">{esc(', '.join(g['kinds']) or 'near')}</span></h3>")
            parts.append(thumb_grid([(mm["filepath"], f"{mm.get('label')} / {mm.get('split')}") for mm in g["members"]],
                                    ctx, total=g["size"], view="audit/duplicates"))
    return "".join(parts)


def leakage_action(result: dict[str, Any]) -> Action | None:
    """``high``: remove train/val leakage (groups of one image that span splits)."""
    found = metric(result, "audit.metrics.leakage_groups")
    if not found or found[1] <= 0:
        return None
    samples = metric(result, "audit.metrics.leakage_samples")
    fraction = metric(result, "audit.metrics.leakage_fraction")
    return Action("leakage", "high", f"Remove train/val leakage: {found[1]:,} groups of the same image span splits.",
                  "While one image sits in both train and validation, validation scores are inflated and "
                  "say little about new data. Keep every group in one split, or drop the extra copies.",
                  found[0], found[1],
                  fraction[1] if fraction else share(samples[1] if samples else None, num_images(result)), ["leakage"])


def conflicts_action(result: dict[str, Any]) -> Action | None:
    """``high``: resolve duplicate groups whose copies carry different labels."""
    found = metric(result, "audit.metrics.conflicting_label_groups")
    if not found or found[1] <= 0:
        return None
    samples = metric(result, "audit.metrics.conflicting_label_samples")
    return Action("conflicting_duplicates", "high",
                  f"Resolve {found[1]:,} groups of duplicate images that carry different labels.",
                  "The model is trained (or scored) on the same picture with two answers; pick the right "
                  "label for each group and relabel or remove the others.",
                  found[0], found[1], share(samples[1] if samples else None, num_images(result)), ["conflict"])


DUPLICATES = Check(
    "duplicates", "exact (SHA-256) and near (phash) duplicates, split leakage, label conflicts",
    duplicates_evaluate, duplicates_compute, DuplicateOptions,
    views=(ViewSpec("audit/duplicates", "audit", _group_view("duplicate"),
                    "exact and near duplicates, sorted by duplicate_group"),
           ViewSpec("audit/exact_duplicates", "audit", _group_view("exact_duplicate"),
                    "files with identical bytes, sorted by duplicate_group"),
           ViewSpec("audit/leakage", "audit", _group_view("leakage"),
                    "duplicate groups that span splits (train/val leakage), sorted by duplicate_group"),
           ViewSpec("audit/label_conflicts", "audit", _group_view("label_conflict"),
                    "duplicate groups whose images carry different labels")),
    report=ReportSection("duplicates", "Duplicates and leakage", render_duplicates, order=40),
    actions=(leakage_action, conflicts_action))


@hookimpl
def vetset_register_checks(register):
    register(DUPLICATES)
