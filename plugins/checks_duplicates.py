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
* Groups are the connected components of the "is a duplicate of" graph
  (``scipy.sparse.csgraph.connected_components``). A group spanning splits is leakage
  (train/val is the serious one: validation scores are inflated); a group with more
  than one label is a label conflict.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from vetset.core.hookspecs import hookimpl
from vetset.core.registry import Check, ReportSection, ViewSpec

#: Longer side the luma is reduced to (area interpolation) before imagehash's own
#: 32x32 Lanczos resize: same hash bits in practice, a fraction of the resize cost.
PHASH_PRESIZE = 64


class DuplicateOptions(BaseModel):
    """``audit.duplicates`` options.

    Attributes:
        radius: near duplicates differ in at most this many of the 64 phash bits. Default
            4: on the CIFAR-10 test images it pairs re-encoded and slightly shifted copies
            while unrelated images of plain backgrounds stay apart (measured distances
            between distinct images start at about 6-8 bits). 0 = identical hashes only,
            as CleanVision's ``near_duplicates``.
        max_groups_listed: groups written into the run result (leakage and label conflicts
            first); every group is still tagged and has a ``duplicate_group`` value.
    """

    model_config = {"extra": "forbid"}

    radius: int = Field(4, ge=0, le=16)
    max_groups_listed: int = Field(50, ge=0)


def duplicates_compute(image: Any, options: DuplicateOptions) -> dict[str, Any]:
    """File hash and perceptual hash of one decoded image.

    Returns:
        ``{"file_hash": 64 hex chars (SHA-256 of the file bytes), "phash": 16 hex chars}``;
        ``phash`` is the text ``str(imagehash.phash(...))`` gives (its bits packed
        most-significant first), formatted with ``np.packbits`` because that is ten times faster.
    """
    import hashlib

    import cv2
    import imagehash
    from PIL import Image

    data = image.info.get("bytes")
    if data is None:
        with open(image.path, "rb") as f:
            data = f.read()
    gray = image.gray()
    h, w = gray.shape
    if max(h, w) > PHASH_PRESIZE:
        s = PHASH_PRESIZE / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    bits = imagehash.phash(Image.fromarray(gray)).hash  # bool (8, 8), row-major as str(ImageHash) reads it
    return {"file_hash": hashlib.sha256(data).hexdigest(), "phash": np.packbits(bits).tobytes().hex()}


def near_pairs(hashes: np.ndarray, radius: int) -> np.ndarray:
    """Index pairs ``(i, j)``, ``i < j``, of 64-bit hashes within Hamming ``radius``.

    Args:
        hashes: ``uint64`` array, shape ``(n,)``.
        radius: maximum number of differing bits.

    Returns:
        ``int64`` array, shape ``(k, 2)``. Identical hashes are chained (``i`` to the next
        equal one) rather than all-paired, which keeps the graph's components the same.
    """
    hashes = np.asarray(hashes, dtype=np.uint64)
    uniq, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    pairs = [_chain_equal(inverse)]
    if radius > 0 and len(uniq) > 1:
        blocks = radius + 1
        bounds = np.linspace(0, 64, blocks + 1).astype(int)
        cand = []
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            keys = (uniq >> np.uint64(lo)) & np.uint64((1 << (hi - lo)) - 1)
            order = np.argsort(keys, kind="stable")
            sk = keys[order]
            # every pair inside a run of equal keys: pair position p with p + d while the key holds
            for d in range(1, len(sk)):
                same = np.flatnonzero(sk[d:] == sk[:-d])
                if not len(same):
                    break
                cand.append(np.stack([order[same], order[same + d]], axis=1))
        if cand:
            c = np.unique(np.sort(np.concatenate(cand), axis=1), axis=0)
            dist = np.bitwise_count(uniq[c[:, 0]] ^ uniq[c[:, 1]])
            c = c[dist <= radius]
            pairs.append(np.stack([first[c[:, 0]], first[c[:, 1]]], axis=1))
    out = np.concatenate(pairs) if pairs else np.empty((0, 2), dtype=np.int64)
    return np.sort(out.astype(np.int64), axis=1)


def _chain_equal(keys: np.ndarray) -> np.ndarray:
    """Pairs linking each index to the next one with the same key."""
    order = np.argsort(keys, kind="stable")
    same = keys[order][1:] == keys[order][:-1]
    return np.stack([order[:-1][same], order[1:][same]], axis=1).astype(np.int64)


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of ``n`` nodes joined by ``pairs`` (shape ``(k, 2)``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if n == 0:
        return np.zeros(0, dtype=np.int64)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def duplicates_evaluate(ctx: Any, options: DuplicateOptions) -> dict[str, Any]:
    """Group duplicates; write ``phash``, ``file_hash``, ``duplicate_group``; tag the members."""
    n = ctx.n
    has = ctx.has("duplicates", "phash")
    ph = ctx.computed["duplicates"]["phash"] if has else [None] * n
    fh = ctx.computed["duplicates"]["file_hash"] if has else [None] * n
    ctx.set_field("phash", ph, "str")
    ctx.set_field("file_hash", fh, "str")
    idx = np.array([i for i in range(n) if ph[i] is not None], dtype=np.int64)
    hashes = np.array([int(ph[i], 16) for i in idx], dtype=np.uint64)
    file_keys = np.unique(np.array([fh[i] for i in idx], dtype=object), return_inverse=True)[1] if len(idx) else idx
    pairs = np.concatenate([near_pairs(hashes, options.radius), _chain_equal(file_keys)]) if len(idx) else np.empty((0, 2), np.int64)
    comp = components(len(idx), pairs)
    sizes = np.bincount(comp) if len(comp) else np.zeros(0, dtype=np.int64)
    groups: dict[int, list[int]] = {}
    for local, c in enumerate(comp):
        if sizes[c] > 1:
            groups.setdefault(int(c), []).append(int(idx[local]))
    tag = {k: np.zeros(n, dtype=bool) for k in ("duplicate", "exact_duplicate", "leakage", "label_conflict")}
    group_field: list[str | None] = [None] * n
    listed, by_splits = [], {}
    within = {s: 0 for s in ctx.split_names}
    counts = {"exact": 0, "leakage": 0, "conflict": 0}
    for gno, members in enumerate(sorted(groups.values(), key=lambda m: m[0]), start=1):
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
    return {"radius": options.radius, "hashed": int(len(idx)), "within_split_groups": within,
            "leakage_by_splits": by_splits, "groups": listed[: options.max_groups_listed],
            "groups_total": len(listed), "metrics": metrics}


@hookimpl
def vetset_register_checks(register):
    register(Check("duplicates", "exact (SHA-256) and near (phash) duplicates, split leakage, label conflicts",
                   duplicates_evaluate, duplicates_compute, DuplicateOptions))


def _group_view(tag: str):
    def build(dataset: Any) -> Any:
        view = dataset.match_tags(tag)
        return view.sort_by("duplicate_group") if "duplicate_group" in dataset.get_field_schema() else view
    return build


@hookimpl
def vetset_register_views(register):
    register(ViewSpec("audit/duplicates", "audit", _group_view("duplicate"),
                      "exact and near duplicates, sorted by duplicate_group"))
    register(ViewSpec("audit/exact_duplicates", "audit", _group_view("exact_duplicate"),
                      "files with identical bytes, sorted by duplicate_group"))
    register(ViewSpec("audit/leakage", "audit", _group_view("leakage"),
                      "duplicate groups that span splits (train/val leakage), sorted by duplicate_group"))
    register(ViewSpec("audit/label_conflicts", "audit", _group_view("label_conflict"),
                      "duplicate groups whose images carry different labels"))


@hookimpl
def vetset_register_report_sections(register):
    from vetset.plugins.audit_report import render_duplicates

    register(ReportSection("duplicates", "Duplicates and leakage", render_duplicates, order=40))
