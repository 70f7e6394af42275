"""Slice properties: the audit's per-sample fields and tags, cut into bins.

Failure slices (:mod:`.slices`) and train/validation drift (:mod:`.drift`) both look at
the same properties of each sample. They are found, not listed, so a plugin check's
fields and tags become slices and drift rows without further code:

* **categorical** — every ``str`` or ``bool`` field an audit check wrote
  (``AuditContext.set_field``; the audit records their names and kinds in
  ``dataset.info["vetset"]["audit_fields"]``) with 2 to ``max_bins`` distinct values
  (``orientation``, ``colour_mode``, ``clarity``, ``exif_rotated``...). Fields with more
  values, or fewer than :data:`MIN_PER_VALUE` samples per value on average (hashes,
  duplicate group ids), are identifiers, not properties, and are skipped.
* **numeric** — every ``float``/``int`` field an audit check wrote (``brightness``,
  ``contrast``, ``entropy``, ``sharpness``, ``aspect_ratio``...), and the image ``size``
  (``sqrt(width * height)`` from ``metadata``, pixels), cut at the terciles of the
  reference split (``train``): bins ``low`` / ``mid`` / ``high``. Cut points that
  coincide are merged (fewer bins); a property with a single bin is skipped.
* **tag** — the audit's issue tags (``dataset.info["vetset"]["audit_tags"]``: ``blurry``,
  ``dark``, ``leakage`` (near duplicate of an image in another split), ``exif_rotated``...)
  and the tags of later stages when present (:data:`EXTRA_TAGS`: ``label_issue`` (flagged
  label issue) from ``label_noise``, ``outlier`` from ``embed``,
  ``embed_leakage``/``embed_duplicate``/``embed_label_conflict`` from ``embed``,
  ``datalab_outlier``/``datalab_near_duplicate`` from ``label_noise``'s Datalab checks). One property ``tag`` whose
  bins are the tags; a sample is in every bin whose tag it carries.
* **derived** (one bin, ``true``; the rest is every other sample, as for a tag), from the
  near-duplicate groups of the audit
  (``duplicate_group``) and of the ``embed`` stage (``embed_group``):
  ``near_duplicate_of_train``: the sample shares a group with an (original) train image;
  ``augmented_source``: it shares a group with a train image that augmented images of the
  training set were made from (``source_filepath`` of the ``augmented`` samples), so
  copies of it were trained on. Present when some group qualifies. They describe val/test
  samples against train, so drift leaves them out (``derived=False``).

A dataset audited before the audit recorded ``audit_fields`` falls back to the built-in
checks' fields (:data:`BUILTIN_FIELDS`) that exist in its schema.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vetset.core.dataset import split_view, training_view

#: Fields of the built-in audit checks, used when ``dataset.info`` has no ``audit_fields``.
BUILTIN_FIELDS = {"orientation": "str", "colour_mode": "str", "clarity": "str", "exif_rotated": "bool",
                  "aspect_ratio": "float", "sharpness": "float", "brightness": "float", "contrast": "float",
                  "entropy": "float"}
#: Tags of other stages that make slices when present (label noise review).
EXTRA_TAGS = ("label_issue", "outlier", "embed_leakage", "embed_duplicate", "embed_label_conflict",
              "datalab_outlier", "datalab_near_duplicate")
#: Near-duplicate group fields: the audit's duplicates check, the embed stage.
GROUP_FIELDS = ("duplicate_group", "embed_group")
NEAR_DUP_TRAIN = "near_duplicate_of_train"
AUG_SOURCE = "augmented_source"
DERIVED = "derived"
#: Numeric bins by number of cut points.
NUMERIC_BINS = {1: ("low", "high"), 2: ("low", "mid", "high")}
#: A categorical field needs this many samples per distinct value on average (else: an identifier).
MIN_PER_VALUE = 5
SIZE = "size"
TAG = "tag"


@dataclass
class Property:
    """One slice property and its bins.

    Attributes:
        name: the field name (``colour_mode``), ``size`` or ``tag``.
        kind: ``categorical``, ``numeric`` or ``tag``.
        bins: bin names in display order.
        cuts: numeric only: the cut points (ascending); bin ``i`` holds values in
            ``[cuts[i-1], cuts[i])`` (``-inf``/``+inf`` at the ends).
        source: where the values come from, for people.
        groups: derived only: ``{group field: [group ids]}``; a sample is ``true`` when its
            value of any of these fields is one of the ids.
    """

    name: str
    kind: str
    bins: list[str]
    cuts: list[float] = field(default_factory=list)
    source: str = ""
    groups: dict[str, list[str]] = field(default_factory=dict)

    def bin_text(self, b: str) -> str:
        """``"grayscale"``, ``"low (< 0.42)"``, ``"mid (0.42 to 0.61)"``: a bin for a person."""
        if self.kind != "numeric":
            return b
        i = self.bins.index(b)
        lo = self.cuts[i - 1] if i > 0 else None
        hi = self.cuts[i] if i < len(self.cuts) else None
        if lo is None:
            return f"{b} (< {hi:.4g})"
        if hi is None:
            return f"{b} (>= {lo:.4g})"
        return f"{b} ({lo:.4g} to {hi:.4g})"

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "kind": self.kind, "bins": list(self.bins),
               "cuts": [round(float(c), 6) for c in self.cuts], "source": self.source}
        if self.kind == DERIVED:
            out["groups"] = {f: len(g) for f, g in self.groups.items()}
        return out

    def derived_values(self, columns: dict[str, list[Any]], n: int) -> list[str]:
        """Derived only: ``"true"``/``"false"`` per sample from the group fields' values (``columns``)."""
        sets = {f: set(g) for f, g in self.groups.items()}
        out = []
        for i in range(n):
            out.append("true" if any(columns[f][i] in ids for f, ids in sets.items()) else "false")
        return out

    def membership(self, values: list[Any]) -> np.ndarray:
        """Bool array ``(n, len(bins))``: which samples fall in which bin (``None``: in none).

        Args:
            values: per sample, the field value (categorical, numeric) or the tag list (tag).
        """
        n = len(values)
        out = np.zeros((n, len(self.bins)), dtype=bool)
        if self.kind == "tag":
            index = {b: j for j, b in enumerate(self.bins)}
            for i, tags in enumerate(values):
                for t in tags or ():
                    j = index.get(t)
                    if j is not None:
                        out[i, j] = True
            return out
        if self.kind == "numeric":
            x = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            ok = np.isfinite(x)
            idx = np.searchsorted(np.asarray(self.cuts, dtype=np.float64), x[ok], side="right")
            out[np.flatnonzero(ok), idx] = True
            return out
        text = np.array([_text(v) for v in values], dtype=object)  # categorical and derived
        for j, b in enumerate(self.bins):
            out[:, j] = text == b
        return out

    def match(self, b: str) -> Any:
        """A FiftyOne ``ViewExpression`` for ``dataset.match(...)`` selecting bin ``b``
        (tags: use ``match_tags``; see :func:`match_bin`)."""
        from fiftyone import ViewField as F  # deferred: fiftyone takes about 1 s to import

        if self.kind == DERIVED:
            expr = None
            for f, ids in self.groups.items():
                e = F(f).is_in(list(ids))
                expr = e if expr is None else expr | e
            return expr if b == "true" else ~expr
        if self.kind == "categorical":
            if b in ("true", "false"):
                return F(self.name) == (b == "true")
            return F(self.name) == b
        i = self.bins.index(b)
        lo = self.cuts[i - 1] if i > 0 else None
        hi = self.cuts[i] if i < len(self.cuts) else None
        value = F(self.name) if self.name != SIZE else (F("metadata.width") * F("metadata.height")).sqrt()
        expr = value.exists() if self.name != SIZE else F("metadata.width").exists()
        if lo is not None:
            expr = expr & (value >= lo)
        if hi is not None:
            expr = expr & (value < hi)
        return expr


def match_bin(view: Any, prop: Property, b: str) -> Any:
    """The samples of ``view`` in bin ``b`` of ``prop`` (a FiftyOne view)."""
    if prop.kind == TAG:
        return view.match_tags(b)
    return view.match(prop.match(b))


def _text(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def audit_fields(dataset: Any) -> dict[str, str]:
    """``{field: kind}`` the audit wrote on ``dataset`` (``str``, ``bool``, ``float``, ``int``)."""
    vinfo = (dataset.info or {}).get("vetset") or {}
    recorded = vinfo.get("audit_fields")
    schema = dataset.get_field_schema()
    fields = recorded if isinstance(recorded, dict) else BUILTIN_FIELDS
    return {name: kind for name, kind in fields.items() if name in schema and kind in ("str", "bool", "float", "int")}


def audit_tags(dataset: Any) -> list[str]:
    """Issue tags the audit wrote (``dataset.info["vetset"]["audit_tags"]``) plus ``label_issue``, present ones only."""
    vinfo = (dataset.info or {}).get("vetset") or {}
    counts = dataset.count_sample_tags()
    wanted = list(vinfo.get("audit_tags") or []) + list(EXTRA_TAGS)
    return [t for t in dict.fromkeys(wanted) if counts.get(t)]


def derived_properties(dataset: Any, exclude: Iterable[str] = ()) -> list[Property]:
    """``near_duplicate_of_train`` and ``augmented_source`` (module docstring), those some group qualifies for.

    Args:
        dataset: the FiftyOne dataset (its ``train`` split, original images, defines the
            groups; the augmented samples of the training view give the sources).
        exclude: property names to leave out.

    Returns:
        0 to 2 properties of kind ``derived`` with the one bin ``["true"]``.
    """
    skip = set(exclude)
    schema = dataset.get_field_schema()
    fields = [f for f in GROUP_FIELDS if f in schema]
    if not fields:
        return []
    train = split_view(dataset, "train").match_tags("augmented", bool=False)
    if not len(train):
        return []
    cols = dict(zip(["filepath", *fields], train.values(["filepath", *fields])))
    out = []
    if NEAR_DUP_TRAIN not in skip:
        groups = {f: sorted({g for g in cols[f] if g}) for f in fields}
        if any(groups.values()):
            out.append(Property(NEAR_DUP_TRAIN, DERIVED, ["true"], source="shares a near-duplicate group ("
                                + ", ".join(fields) + ") with a train image", groups=groups))
    if AUG_SOURCE not in skip and "source_filepath" in schema:
        aug = training_view(dataset)[0].match_tags("augmented")
        sources = {s for s in aug.values("source_filepath") if s} if len(aug) else set()
        if sources:
            chosen = [i for i, fp in enumerate(cols["filepath"]) if fp in sources]
            groups = {f: sorted({cols[f][i] for i in chosen if cols[f][i]}) for f in fields}
            if any(groups.values()):
                out.append(Property(AUG_SOURCE, DERIVED, ["true"],
                                    source="shares a near-duplicate group with a train image that augmented "
                                           "training images were made from", groups=groups))
    return out


def find_properties(dataset: Any, reference: Any, max_bins: int = 12,
                    exclude: Iterable[str] = (), derived: bool = True) -> list[Property]:
    """The slice properties of ``dataset`` (module docstring), numeric cuts from ``reference``.

    Args:
        dataset: the FiftyOne dataset.
        reference: the view whose terciles cut numeric properties (the train split).
        max_bins: categorical fields with more distinct values are skipped.
        exclude: property names to leave out (field names, ``size``, ``tag``,
            ``near_duplicate_of_train``, ``augmented_source``).
        derived: add :func:`derived_properties` (slices yes, drift no).

    Returns:
        Properties in the order categorical, numeric, ``size``, ``tag``, derived.
    """
    skip = set(exclude)
    fields = audit_fields(dataset)
    tags = [] if TAG in skip else audit_tags(dataset)
    cats, nums = [], []
    for name, kind in fields.items():
        if name in skip or (kind == "bool" and name in tags):  # the tag of the same name covers it
            continue
        if kind in ("str", "bool"):
            values = [v for v in dataset.distinct(name) if v is not None]
            if 2 <= len(values) <= max_bins and dataset.count(name) >= MIN_PER_VALUE * len(values):
                bins = sorted(_text(v) for v in values)
                cats.append(Property(name, "categorical", bins, source=f"audit field {name!r}"))
        else:
            prop = _numeric(name, reference.values(name), f"audit field {name!r}, terciles of the train split")
            if prop is not None:
                nums.append(prop)
    if SIZE not in skip and "metadata" in dataset.get_field_schema():
        w, h = reference.values(["metadata.width", "metadata.height"])
        sides = [None if a is None or b is None else float(np.sqrt(a * b)) for a, b in zip(w, h)]
        prop = _numeric(SIZE, sides, "sqrt(width x height) in pixels, terciles of the train split")
        if prop is not None:
            nums.append(prop)
    out = cats + nums
    if tags:
        out.append(Property(TAG, TAG, tags, source="issue tags of the audit and of the embed / label_noise stages"))
    if derived:
        out += derived_properties(dataset, skip)
    return out


def properties_from_result(dataset: Any, stored: list[dict[str, Any]]) -> dict[str, Property]:
    """``{name: Property}`` of a slices block's ``properties`` (:meth:`Property.to_dict` rows); derived ones
    are rebuilt from ``dataset`` (their groups are not stored)."""
    derived = {p.name: p for p in derived_properties(dataset)} if any(d["kind"] == DERIVED for d in stored) else {}
    out = {}
    for d in stored:
        if d["kind"] == DERIVED:
            if d["name"] in derived:
                out[d["name"]] = derived[d["name"]]
        else:
            out[d["name"]] = Property(d["name"], d["kind"], list(d["bins"]), list(d.get("cuts") or []),
                                      d.get("source", ""))
    return out


def _numeric(name: str, values: list[Any], source: str) -> Property | None:
    x = np.array([v for v in values if v is not None], dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) < 3:
        return None
    cuts = sorted(set(np.quantile(x, [1 / 3, 2 / 3]).round(6).tolist()))
    cuts = [c for c in cuts if c > x.min()]  # a cut at the minimum leaves the low bin empty
    if not cuts:
        return None
    return Property(name, "numeric", list(NUMERIC_BINS[len(cuts)]), cuts, source)


def read_values(view: Any, props: list[Property]) -> dict[str, list[Any]]:
    """Per-sample values of ``props`` on ``view``, in ``view`` order (one ``values`` call).

    Returns:
        ``{property name: [value per sample]}`` (tag lists for ``tag``, sizes for ``size``).
    """
    paths: list[str] = []
    for p in props:
        if p.name == SIZE:
            paths += ["metadata.width", "metadata.height"]
        elif p.kind == DERIVED:
            paths += list(p.groups)
        else:
            paths.append("tags" if p.kind == TAG else p.name)
    paths = list(dict.fromkeys(paths))
    if not paths:
        return {}
    cols = dict(zip(paths, view.values(paths)))
    out: dict[str, list[Any]] = {}
    for p in props:
        if p.kind == DERIVED:
            out[p.name] = p.derived_values(cols, len(next(iter(cols.values()))))
        elif p.name == SIZE:
            out[SIZE] = [None if a is None or b is None else float(np.sqrt(a * b))
                         for a, b in zip(cols["metadata.width"], cols["metadata.height"])]
        else:
            out[p.name] = cols["tags" if p.kind == TAG else p.name]
    return out
