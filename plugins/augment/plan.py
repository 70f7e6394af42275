"""Gap-driven augmentation planning: how many new train images each policy must write.

Input is the audit's train-split block (``class_counts["train"]`` and
``coverage["train"][property][class][bin]``) and, per class, the readable train samples
with their audited bins. For each class the planner adds images one at a time, greedily:

1. while some targeted cell (class, property, bin) holds less than its target share of
   the class's train images, add one image to the cell with the largest deficit (in
   images), made by the cell's policy from the next eligible source (round-robin over
   sources whose bin the policy turns into the target bin, fewest uses first);
2. otherwise, while the class has fewer images than its target count (``min_count``,
   or ``target_ratio`` x the largest class), add one image with the fill policy;
3. otherwise stop.

Every new image is predicted to keep its source's bins except the one its policy
targets, and counts toward every property's totals, so lifting one cell or the class
count never silently pushes another cell below target. When the sum of the targeted
shares is below 1 (the options model checks this) each step lowers the total deficit,
so the loop ends; ``max_per_source`` bounds it in any case. A cell that runs out of
eligible sources is reported ``infeasible`` with the reason; nothing is guessed.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EPS = 1e-9


@dataclass(frozen=True)
class Source:
    """A train sample usable as augmentation source.

    Attributes:
        id: FiftyOne sample id.
        filepath: absolute path of the image file.
        label: ``ground_truth`` label.
        bins: audited bin per property, e.g. ``{"orientation": "landscape", ...}``.
    """

    id: str
    filepath: str
    label: str
    bins: Mapping[str, str]


@dataclass(frozen=True)
class PolicyInfo:
    """What the planner needs to know about a policy.

    Attributes:
        name: policy name.
        targets: ``(property, bin)`` pairs the policy adds.
        source_bins: ``(property, bin) -> bins of sources`` the pipeline turns into that bin.
    """

    name: str
    targets: tuple[tuple[str, str], ...] = ()
    source_bins: Mapping[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)


@dataclass
class PlannedImage:
    """One new image: ``policy`` applied to ``source`` for the ``index``-th time.

    ``seed`` (32-bit) and ``key`` (10 hex digits) derive from (source filepath, policy,
    index, plan seed), so the same plan always names and draws the same images.
    """

    source: Source
    policy: str
    index: int
    seed: int
    key: str
    target: tuple[str, str] | None
    predicted: dict[str, str]

    def filename(self, ext: str) -> str:
        """``<source stem>-<policy>-<index>-<key>.<ext>``, safe on every file system."""
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(self.source.filepath).stem)[:40] or "img"
        return f"{stem}-{self.policy}-{self.index}-{self.key}.{ext}"


@dataclass
class CellPlan:
    """The plan of one coverage cell (train split)."""

    label: str
    property: str
    bin: str
    target_share: float
    policy: str | None
    before_count: int
    before_total: int
    planned: int = 0
    expected_count: int = 0
    expected_total: int = 0
    status: str = "ok"  # ok (already at target) | planned | infeasible
    reason: str = ""

    @property
    def before_share(self) -> float:
        return self.before_count / self.before_total if self.before_total else 0.0

    @property
    def expected_share(self) -> float:
        return self.expected_count / self.expected_total if self.expected_total else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["before_share"] = round(self.before_share, 4)
        out["expected_share"] = round(self.expected_share, 4)
        return out


@dataclass
class ClassPlan:
    """Class-count plan of one class (train split)."""

    label: str
    before: int
    target: int
    planned: int = 0
    by_policy: dict[str, int] = field(default_factory=dict)
    sources: int = 0
    status: str = "ok"
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """A complete augmentation plan."""

    images: list[PlannedImage]
    cells: list[CellPlan]
    classes: list[ClassPlan]

    def by_policy(self) -> dict[str, int]:
        return dict(Counter(i.policy for i in self.images))

    def summary(self) -> dict[str, Any]:
        """JSON-able plan without the per-image list."""
        return {"images": len(self.images), "by_policy": self.by_policy(),
                "classes": [c.to_dict() for c in self.classes], "cells": [c.to_dict() for c in self.cells]}


def image_key(filepath: str, policy: str, index: int, seed: int) -> tuple[str, int]:
    """``(key, seed)``: 10 hex digits naming the image and a 32-bit seed for its draw."""
    digest = hashlib.sha256(f"{filepath}|{policy}|{index}|{seed}".encode()).hexdigest()
    return digest[:10], int(digest[10:18], 16)


def class_targets(counts: Mapping[str, int], min_count: int, target_ratio: float | None) -> dict[str, int]:
    """Target train count per class: ``max(n, min_count, ceil(target_ratio * largest))``."""
    largest = max(counts.values(), default=0)
    ratio_target = math.ceil(target_ratio * largest - EPS) if target_ratio else 0
    return {c: max(n, min_count, ratio_target) for c, n in counts.items()}


def _pick(pool: list[Source], start: int, uses: Counter, policy: str, limit: int) -> tuple[Source | None, int]:
    """Next source of ``pool`` from ``start`` (round-robin) used fewer than ``limit`` times."""
    n = len(pool)
    for step in range(n):
        src = pool[(start + step) % n]
        if uses[(src.filepath, policy)] < limit:
            return src, (start + step + 1) % n
    return None, start


def plan_class(label: str, n_before: int, coverage: Mapping[str, Mapping[str, int]], target_count: int,
               shares: Mapping[str, Mapping[str, float]], sources: list[Source], policies: Mapping[str, PolicyInfo],
               cell_policy: Mapping[tuple[str, str], str | None], fill_policy: str | None,
               max_per_source: int, seed: int) -> tuple[list[PlannedImage], list[CellPlan], ClassPlan]:
    """Plan one class (see the module docstring for the algorithm).

    Args:
        label: class name.
        n_before: train images of the class now (``class_counts["train"][label]``).
        coverage: ``{property: {bin: count}}`` of the class's train images now.
        target_count: class count to reach (:func:`class_targets`).
        shares: ``{property: {bin: share}}`` target shares in (0, 1).
        sources: eligible source samples, any order (sorted by file path here).
        policies: name -> :class:`PolicyInfo`.
        cell_policy: ``(property, bin) -> policy name`` (``None``: no policy adds that bin).
        fill_policy: policy for class counts, or ``None`` to lift only cells.
        max_per_source: at most this many new images per (source, policy).
        seed: plan seed (mixed into every image's seed).

    Returns:
        ``(images, cells, class_plan)``.
    """
    sources = sorted(sources, key=lambda s: s.filepath)
    props = set(coverage) | set(shares)
    counts = {p: Counter({b: int(n) for b, n in coverage.get(p, {}).items()}) for p in props}
    totals = {p: sum(counts[p].values()) or n_before for p in props}
    cells = [CellPlan(label, p, b, float(s), cell_policy.get((p, b)), counts[p][b], totals[p])
             for p in shares for b, s in shares[p].items()]
    pools: dict[tuple[str, str], list[Source]] = {}
    for cell in cells:
        if cell.property not in coverage:
            cell.status = "infeasible"
            cell.reason = f"the audit computed no {cell.property} coverage (is the check in stages.audit.checks?)"
            continue
        if cell.policy is None:
            cell.status, cell.reason = "infeasible", f"no policy adds {cell.property}={cell.bin}"
            continue
        ok_bins = policies[cell.policy].source_bins.get((cell.property, cell.bin), ())
        pools[(cell.property, cell.bin)] = [s for s in sources if s.bins.get(cell.property) in ok_bins]
    fill_pool = list(sources)
    cursor: Counter = Counter()
    uses: Counter = Counter()
    images: list[PlannedImage] = []
    n = n_before
    klass = ClassPlan(label, n_before, target_count, sources=len(sources))

    def add(src: Source, policy: str, target: tuple[str, str] | None) -> None:
        nonlocal n
        index = uses[(src.filepath, policy)]
        uses[(src.filepath, policy)] += 1
        key, img_seed = image_key(src.filepath, policy, index, seed)
        predicted = dict(src.bins)
        if target is not None:
            predicted[target[0]] = target[1]
        images.append(PlannedImage(src, policy, index, img_seed, key, target, predicted))
        for p in props:
            if p in predicted:
                counts[p][predicted[p]] += 1
            totals[p] += 1
        n += 1

    while True:
        needy = [(c.target_share * totals[c.property] - counts[c.property][c.bin], i)
                 for i, c in enumerate(cells) if c.status != "infeasible"]
        needy = [(need, i) for need, i in needy if need > EPS]
        if needy:
            _, i = max(needy, key=lambda t: (t[0], -t[1]))
            cell = cells[i]
            pool = pools[(cell.property, cell.bin)]
            src, cursor[i] = _pick(pool, cursor[i], uses, cell.policy, max_per_source)
            if src is None:
                cell.status = "infeasible"
                cell.reason = (f"no train image of class {label!r} in bins "
                               f"{'/'.join(policies[cell.policy].source_bins.get((cell.property, cell.bin), ()))} "
                               f"to turn into {cell.bin} with policy {cell.policy!r}") if not pool else \
                    f"all {len(pool)} eligible sources already used max_per_source={max_per_source} times"
                continue
            add(src, cell.policy, (cell.property, cell.bin))
            cell.planned += 1
            cell.status = "planned"
        elif n < target_count and fill_policy is not None:
            src, cursor["fill"] = _pick(fill_pool, cursor["fill"], uses, fill_policy, max_per_source)
            if src is None:
                klass.status = "infeasible"
                klass.reason = (f"class {label!r} has no usable train image" if not fill_pool else
                                f"{len(fill_pool)} sources x max_per_source={max_per_source} reached")
                break
            add(src, fill_policy, None)
        else:
            break
    for cell in cells:
        cell.expected_count, cell.expected_total = counts[cell.property][cell.bin], totals[cell.property]
    klass.planned = len(images)
    klass.by_policy = dict(Counter(i.policy for i in images))
    if n < target_count:
        klass.status, klass.reason = "infeasible", klass.reason or "no fill policy"
    elif images:
        klass.status = "planned"
    return images, cells, klass


def make_plan(audit: Mapping[str, Any], sources: Mapping[str, list[Source]], classes: Iterable[str],
              shares: Mapping[str, Mapping[str, float]], policies: Mapping[str, PolicyInfo],
              cell_policy: Mapping[tuple[str, str], str | None], fill_policy: str | None,
              min_count: int, target_ratio: float | None, max_per_source: int, seed: int,
              split: str = "train", class_shares: Mapping[str, Mapping[str, Mapping[str, float]]] | None = None
              ) -> Plan:
    """Plan every class from an audit block.

    Args:
        audit: the audit result block (``class_counts``, ``coverage``; see the brief).
        sources: class -> eligible :class:`Source` samples of ``split``.
        classes: the dataset's classes (a class absent from ``class_counts`` counts 0).
        class_shares: ``{class: {property: {bin: share}}}``: target shares of one class, over
            ``shares`` (the retrain loop aims these at the validation's failing slices).
        Others: see :func:`plan_class`; ``min_count``/``target_ratio`` see :func:`class_targets`.

    Returns:
        A :class:`Plan`; images are ordered by class, then planning order.
    """
    counts = {c: int(audit.get("class_counts", {}).get(split, {}).get(c, 0)) for c in classes}
    targets = class_targets(counts, min_count, target_ratio)
    coverage = audit.get("coverage", {}).get(split, {})
    plan = Plan([], [], [])
    for label in counts:
        cov = {p: dict(coverage.get(p, {}).get(label, {})) for p in coverage}
        own = (class_shares or {}).get(label) or {}
        merged = {p: {**dict(shares.get(p, {})), **dict(own.get(p, {}))} for p in {*shares, *own}}
        imgs, cells, klass = plan_class(label, counts[label], cov, targets[label], merged, sources.get(label, []),
                                        policies, cell_policy, fill_policy, max_per_source, seed)
        plan.images += imgs
        plan.cells += cells
        plan.classes.append(klass)
    return plan
