"""Near-duplicate groups from similar pairs: leakage across splits, conflicting labels, what pHash missed.

Groups come from the audit's leader clustering
(:func:`vetset.plugins.audit.checks.duplicates.leader_groups`): in dataset order, each image
not yet grouped leads a group of its ungrouped near duplicates, so a chain of small steps
never joins two different pictures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from vetset.plugins.audit.checks.duplicates import leader_groups


def summarise_groups(unit: np.ndarray, pairs: np.ndarray, ids: Sequence[str], filepaths: Sequence[str],
                     labels: Sequence[str | None], splits: Sequence[str | None],
                     phash_groups: Sequence[str | None] | None = None) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """Group near-duplicate pairs and describe each group.

    Args:
        unit: ``float32`` ``(N, D)`` unit feature rows (cosine similarity = dot product).
        pairs: ``int64`` ``(m, 2)`` near-duplicate pairs.
        ids, filepaths, labels, splits: per-row sample id, path, label and split tag.
        phash_groups: the audit's ``duplicate_group`` per row, if it ran.

    Returns:
        ``(group, similarity, groups)``: ``int64`` ``(N,)`` leader row per row (-1 when not in
        a group), ``float32`` ``(N,)`` cosine similarity to the leader (NaN outside groups),
        and per group a dict: ``group`` (``emb-00001``...), ``kinds`` (``leakage``,
        ``label_conflict``), ``size``, ``splits``, ``labels``, ``min_similarity``,
        ``phash_found`` (all members share one pHash group), ``members``.
    """
    n = len(unit)
    lead = leader_groups(n, pairs)
    sizes = np.bincount(lead, minlength=n)
    in_group = sizes[lead] > 1
    group = np.where(in_group, lead, -1)
    similarity = np.full(n, np.nan, dtype=np.float32)
    rows = np.flatnonzero(in_group)
    similarity[rows] = np.einsum("ij,ij->i", unit[rows], unit[lead[rows]])
    members_of: dict[int, list[int]] = {}
    for i in rows.tolist():
        members_of.setdefault(int(lead[i]), []).append(i)
    listed = []
    for gno, leader in enumerate(sorted(members_of), start=1):
        members = members_of[leader]
        split_set = sorted({splits[i] for i in members if splits[i]})
        label_set = sorted({labels[i] for i in members if labels[i] is not None})
        kinds = (["leakage"] if len(split_set) > 1 else []) + (["label_conflict"] if len(label_set) > 1 else [])
        ph = {phash_groups[i] for i in members} if phash_groups is not None else None
        listed.append({
            "group": f"emb-{gno:05d}", "leader": leader, "kinds": kinds, "size": len(members), "splits": split_set,
            "labels": label_set, "min_similarity": round(float(similarity[members].min()), 4),
            "phash_found": None if ph is None else (len(ph) == 1 and None not in ph),
            "members": [{"id": ids[i], "filepath": filepaths[i], "label": labels[i], "split": splits[i],
                         "similarity": round(float(similarity[i]), 4)} for i in members],
        })
    return group, similarity, listed


def group_metrics(groups: list[dict[str, Any]], n: int) -> dict[str, Any]:
    """Counts for the result block and ``fail_on``: groups, samples, leakage, conflicts, pHash-missed groups."""
    kinds = Counter(k for g in groups for k in g["kinds"])
    leak = sum(g["size"] for g in groups if "leakage" in g["kinds"])
    return {
        "similar_groups": len(groups), "similar_samples": sum(g["size"] for g in groups),
        "similar_redundant_images": sum(g["size"] - 1 for g in groups),
        "similar_leakage_groups": kinds["leakage"], "similar_leakage_samples": leak,
        "similar_leakage_fraction": round(leak / max(1, n), 4),
        "similar_conflicting_label_groups": kinds["label_conflict"],
        "similar_groups_missed_by_phash": sum(1 for g in groups if g["phash_found"] is False),
    }
