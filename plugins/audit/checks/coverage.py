"""Built-in checks ``orientation``, ``colour`` and ``clarity``: the coverage properties.

Each sorts every readable image into one bin of a property, per class and split, so the
report and the augmentation planner see which classes lack (or are dominated by) a kind
of image. Findings that cover most of a class are shown as coverage, never hidden.

* ``orientation`` — landscape / portrait / square from the size *after* the EXIF
  orientation tag (the direction is kept, unlike CleanVision's ``min(w/h, h/w)``);
  images whose EXIF tag rotates them; odd aspect ratios (tall or wide).
* ``colour`` — colour / grayscale / bw (two-level), decided from the pixels, not the
  file mode: an RGB file whose channels agree is grayscale.
* ``clarity`` — variance of the Laplacian (Pech-Pacheco et al., "Diatom autofocusing in
  brightfield microscopy: a comparative study", ICPR 2000) of the luma resized to a
  fixed longer side, so scores compare across resolutions; bins blurry / normal / sharp.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Check, ReportSection, ViewSpec
from vetset.core.report_kit import ReportContext, esc, figure, note, stage_block, table

if TYPE_CHECKING:  # pragma: no cover
    from vetset.core.images import DecodedImage
    from vetset.plugins.audit.context import AuditContext

ORIENTATION_BINS = ("landscape", "portrait", "square")
COLOUR_BINS = ("colour", "grayscale", "bw")
CLARITY_BINS = ("blurry", "normal", "sharp")
#: Pillow modes whose decoded RGB channels are equal by construction.
GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


class OrientationOptions(BaseModel):
    """``stages.audit.checks.orientation`` options.

    Attributes:
        square_tolerance: an image is square when ``|w/h - 1|`` is at most this. Default 0
            (only ``w == h``), which reproduces the hymenoptera counts of its README.
        odd_aspect_ratio: an image has an odd aspect ratio when its short side / long side
            is below this. Default 0.35, CleanVision's ``odd_aspect_ratio`` threshold.
    """

    model_config = {"extra": "forbid"}

    square_tolerance: float = Field(0.0, ge=0.0, lt=0.5)
    odd_aspect_ratio: float = Field(0.35, gt=0.0, le=1.0)


class ColourOptions(BaseModel):
    """``stages.audit.checks.colour`` options.

    Attributes:
        tolerance: channels count as equal when ``max(R,G,B) - min(R,G,B)`` is at most this
            (0-255). Default 12: JPEG chroma noise on gray content stays below it, and
            colour photos (hymenoptera: 99% of them) have over 7% of pixels above it.
        colour_fraction: an image is grayscale when at most this share of its pixels has
            channels further apart than ``tolerance``. Default 0.01 (finds 208 of the
            10,000 CIFAR-10 test images, old black-and-white photos among them).
        bw_share: a grayscale image is ``bw`` (two-level) when its two most populated of 32
            gray levels (8 values wide) hold at least this share of pixels. Default 0.95.
    """

    model_config = {"extra": "forbid"}

    tolerance: Count = Field(12, ge=0, le=255)
    colour_fraction: float = Field(0.01, ge=0.0, lt=1.0)
    bw_share: float = Field(0.95, gt=0.5, le=1.0)


class ClarityOptions(BaseModel):
    """``stages.audit.checks.clarity`` options.

    Attributes:
        size: longer side, in pixels, the luma is resized to before the Laplacian (area
            interpolation down, bilinear up). Default 128.
        blurry_below: sharpness under this is ``blurry`` (tag ``blurry``). Default 100,
            the variance-of-Laplacian threshold of Rosebrock's "Blur detection with
            OpenCV" (pyimagesearch, 2015); at 128 px the hymenoptera photos score
            p5 = 308, median 1266, and a Gaussian blur of sigma = 1% of the longer side
            brings their median to 47.
        sharp_above: sharpness over this is ``sharp``. Default 1000 (about the median of
            those photos); in between is ``normal``.
    """

    model_config = {"extra": "forbid"}

    size: Count = Field(128, ge=16, le=1024)
    blurry_below: float = Field(100.0, ge=0.0)
    sharp_above: float = Field(1000.0, ge=0.0)

    @model_validator(mode="after")
    def _order(self) -> ClarityOptions:
        if self.sharp_above <= self.blurry_below:
            raise ValueError(f"sharp_above ({self.sharp_above:g}) must be greater than blurry_below ({self.blurry_below:g})")
        return self


# -- per-image computations (worker processes) -------------------------------------------
def colour_compute(image: DecodedImage, options: ColourOptions) -> dict[str, Any]:
    """Colour bin of one decoded image.

    Returns:
        ``{"colour_mode": "colour"|"grayscale"|"bw", "colour_fraction": float}``, the
        second being the share of pixels whose channels differ by more than ``tolerance``.
    """
    import cv2

    arr = image.array
    if image.mode in GRAY_MODES:
        frac = 0.0
    else:
        r, g, b = cv2.split(arr)
        spread = cv2.subtract(cv2.max(cv2.max(r, g), b), cv2.min(cv2.min(r, g), b))
        frac = cv2.countNonZero(cv2.compare(spread, options.tolerance, cv2.CMP_GT)) / spread.size
    if frac > options.colour_fraction:
        return {"colour_mode": "colour", "colour_fraction": round(frac, 4)}
    levels = image.gray_hist().reshape(32, 8).sum(axis=1)
    top2 = np.partition(levels, -2)[-2:].sum() / max(1.0, levels.sum())
    return {"colour_mode": "bw" if top2 >= options.bw_share else "grayscale", "colour_fraction": round(frac, 4)}


def clarity_compute(image: DecodedImage, options: ClarityOptions) -> dict[str, Any]:
    """Sharpness of one decoded image: variance of the 3x3 Laplacian of its resized luma.

    Returns:
        ``{"sharpness": float}`` (luma levels squared; 0 for a flat image).
    """
    import cv2

    _, std = cv2.meanStdDev(cv2.Laplacian(image.gray_fit(options.size), cv2.CV_32F))
    return {"sharpness": round(float(std[0, 0]) ** 2, 3)}


# -- evaluation (driver) ---------------------------------------------------------------
def _with_share(counts: dict[str, Any]) -> dict[str, Any]:
    from vetset.plugins.audit.context import shares  # the context module imports pandas: not for `recipes --help`

    return shares(counts)


def _bin_names(names: tuple[str, ...], index: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Object array of bin names (``names[index]``, ``None`` where not ``ok``); every sample in a
    bin shares one string object, so a column costs 8 bytes per sample."""
    table = np.array(list(names) + [None], dtype=object)
    return table[np.where(ok, index, len(names))]


def orientation_evaluate(ctx: AuditContext, options: OrientationOptions) -> dict[str, Any]:
    """Write ``orientation``, ``aspect_ratio``, ``exif_rotated``; tag ``exif_rotated``, ``odd_aspect_ratio``."""
    ok = ctx.readable
    w = ctx.width.astype(np.float64)
    h = np.where(ctx.height > 0, ctx.height, 1).astype(np.float64)
    ratio = np.where(ok, w / h, np.nan)
    square = np.abs(ratio - 1.0) <= options.square_tolerance + 1e-12
    bins_list = _bin_names(ORIENTATION_BINS, np.where(square, 2, np.where(ratio > 1.0, 0, 1)), ok)
    short_long = np.minimum(ratio, 1.0 / np.where(ratio > 0, ratio, 1.0))
    odd = ok & (short_long < options.odd_aspect_ratio)
    rotated = ok & (ctx.exif_orientation != 1)
    ctx.set_field("orientation", bins_list, "str")
    ctx.set_field("aspect_ratio", np.round(ratio, 4), "float")  # NaN (unreadable) is left empty
    ctx.set_field("exif_rotated", [bool(r) if k else None for r, k in zip(rotated, ok)], "bool")
    ctx.tag("exif_rotated", rotated)
    ctx.tag("odd_aspect_ratio", odd)
    counts = ctx.add_coverage("orientation", bins_list, ORIENTATION_BINS)
    wide, tall = odd & (ratio > 1.0), odd & (ratio < 1.0)
    return {
        "bins": list(ORIENTATION_BINS), "share": _with_share(counts),
        "exif_rotated": int(rotated.sum()), "exif_orientations": _value_counts(ctx.exif_orientation[ok]),
        "odd_aspect_ratio": {"wide": int(wide.sum()), "tall": int(tall.sum()),
                             "by_class": ctx.count_by_class(odd)["all"]},
        "examples": {"exif_rotated": ctx.examples(rotated),
                     "odd_aspect_ratio": ctx.examples(odd, -np.abs(np.log(np.nan_to_num(ratio, nan=1.0))))},
        "metrics": {"exif_rotated": int(rotated.sum()), "odd_aspect_ratio": int(odd.sum())},
    }


def colour_evaluate(ctx: AuditContext, options: ColourOptions) -> dict[str, Any]:
    """Write ``colour_mode`` from the pixels; report file modes next to it."""
    modes = ctx.computed.get("colour", {}).get("colour_mode", [None] * ctx.n)
    ctx.set_field("colour_mode", modes, "str")
    counts = ctx.add_coverage("colour", modes, COLOUR_BINS)
    arr = np.array([m or "" for m in modes], dtype=object)
    file_modes = np.array(ctx.mode, dtype=object)
    gray_rgb = (arr != "colour") & (arr != "") & np.isin(file_modes, ["RGB", "YCbCr", "CMYK", "P", "RGBA"])
    return {
        "bins": list(COLOUR_BINS), "share": _with_share(counts),
        "by_bin": {b: int((arr == b).sum()) for b in COLOUR_BINS},
        "file_modes": _value_counts(file_modes[ctx.readable]),
        "gray_in_colour_files": int(gray_rgb.sum()),
        "examples": {b: ctx.examples(arr == b) for b in ("grayscale", "bw")},
        "metrics": {"grayscale": int((arr == "grayscale").sum()), "bw": int((arr == "bw").sum())},
    }


def clarity_evaluate(ctx: AuditContext, options: ClarityOptions) -> dict[str, Any]:
    """Write ``sharpness`` and ``clarity``; tag ``blurry``; count images upscaled to be measured."""
    sharp = ctx.column("clarity", "sharpness") if ctx.has("clarity", "sharpness") else np.full(ctx.n, np.nan)
    ok = ~np.isnan(sharp)
    bins_list = _bin_names(CLARITY_BINS, np.where(sharp < options.blurry_below, 0, np.where(sharp > options.sharp_above, 2, 1)), ok)
    blurry = ok & (sharp < options.blurry_below)
    ctx.set_field("sharpness", sharp, "float")
    ctx.set_field("clarity", bins_list, "str")
    ctx.tag("blurry", blurry)
    counts = ctx.add_coverage("clarity", bins_list, CLARITY_BINS)
    # images smaller than the measuring size are upscaled (bilinear) first, which blurs them:
    # their bin reflects resolution more than focus, and the report says so
    upscaled = ok & (np.maximum(ctx.width, ctx.height) < options.size)
    return {
        "bins": list(CLARITY_BINS), "share": _with_share(counts),
        "upscaled": {"count": int(upscaled.sum()), "blurry": int((upscaled & blurry).sum())},
        "thresholds": {"blurry_below": options.blurry_below, "sharp_above": options.sharp_above, "size": options.size},
        "distribution": log_histograms(ctx, sharp),
        "examples": {"blurry": ctx.examples(blurry, sharp)},
        "metrics": {"blurry": int(blurry.sum()), "blurry_fraction": round(float(blurry.sum()) / max(1, int(ok.sum())), 4)},
    }


def log_histograms(ctx: AuditContext, values: np.ndarray, bins: int = 30) -> dict[str, Any]:
    """Per-class histograms of positive ``values`` on a log10 axis: ``{edges, counts: {class: [...]}}``."""
    ok = np.isfinite(values) & (values > 0)
    if not ok.any():
        return {"edges": [], "counts": {}, "log10": True}
    logs = np.log10(values[ok])
    edges = np.linspace(np.floor(logs.min() * 10) / 10, np.ceil(logs.max() * 10) / 10 + 1e-9, bins + 1)
    labels = np.array([lab or "" for lab in ctx.labels], dtype=object)[ok]
    counts = {c: np.histogram(logs[labels == c], edges)[0].astype(int).tolist() for c in ctx.classes}
    return {"edges": np.round(edges, 4).tolist(), "counts": counts, "log10": True}


def _value_counts(values: Any) -> dict[str, int]:
    vals, counts = np.unique(np.asarray(values).astype(str), return_counts=True)
    return {str(v): int(c) for v, c in zip(vals, counts)}


# -- saved views, report, registration -------------------------------------------------
def _tag_view(tag: str):
    def build(dataset: Any) -> Any:
        return dataset.match_tags(tag)
    return build


def _field_view(field: str, values: list[str], sort: str | None = None):
    def build(dataset: Any) -> Any:
        from fiftyone import ViewField as F

        schema = dataset.get_field_schema()
        if field not in schema:
            return None
        view = dataset.match(F(field).is_in(values))
        return view.sort_by(sort) if sort and sort in schema else view
    return build


#: The coverage properties, in the order the report shows them.
PROPERTIES = ("orientation", "colour", "clarity")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100.0 * x:.1f}%"


def render_coverage(result: dict[str, Any], ctx: ReportContext | None) -> str | None:
    """Heatmaps class x bin (share, with counts) per property, and the coverage gaps."""
    block = stage_block(result, "audit")
    coverage = (block or {}).get("coverage") or {}
    if not coverage:
        return None
    import plotly.graph_objects as go

    split = "train" if "train" in coverage else "all"
    props = [p for p in PROPERTIES if p in coverage[split]] + [p for p in coverage[split] if p not in PROPERTIES]
    parts = [f'<p>Share of each class\'s <b>{esc(split)}</b> images in each bin (counts in the cells). '
             "Findings that cover most of a class are shown here, not hidden: a class that is almost always "
             "one way is where a model learns the property instead of the class.</p>"]
    for prop in props:
        tab = coverage[split][prop]
        classes = list(tab)
        bins = list(next(iter(tab.values()), {}))
        z, text = [], []
        for c in classes:
            total = sum(tab[c].values())
            z.append([tab[c][b] / total if total else 0.0 for b in bins])
            text.append([f"{tab[c][b]} ({_pct(tab[c][b] / total) if total else '-'})" for b in bins])
        fig = go.Figure(go.Heatmap(z=z, x=bins, y=classes, text=text, texttemplate="%{text}", zmin=0, zmax=1,
                                   colorscale="Blues", colorbar={"title": "share"},
                                   hovertemplate="%{y} / %{x}: %{text}<extra></extra>"))
        fig.update_layout(title=prop, height=max(180, 60 + 28 * len(classes)), yaxis={"type": "category", "autorange": "reversed"})
        parts.append(figure(fig))
    gaps = block.get("coverage_gaps") or []
    opts = (block.get("options") or {})
    if gaps:
        parts.append(note(f"{len(gaps)} coverage gap(s): the bin holds under {_pct(opts.get('coverage_gap_share'))} of "
                          f"the class's {esc(split)} images but at least that share of all of them.", "warn"))
        parts.append(table(["class", "property", "bin", "class share", "overall share"],
                           [[g["class"], g["property"], g["bin"], _pct(g["share"]), _pct(g["overall_share"])] for g in gaps]))
    else:
        parts.append(note("No coverage gap: no class lacks a bin that the rest of the data has.", "good"))
    return "".join(parts)


ORIENTATION = Check(
    "orientation", "landscape/portrait/square share per class after EXIF; EXIF-rotated files; odd aspect ratios",
    orientation_evaluate, None, OrientationOptions,
    views=(ViewSpec("audit/exif_rotated", "audit", _tag_view("exif_rotated"),
                    "images whose EXIF orientation tag rotates or flips them"),
           ViewSpec("audit/odd_aspect_ratio", "audit", _tag_view("odd_aspect_ratio"),
                    "images much wider or taller than usual (short/long side below the threshold)"),
           ViewSpec("audit/portrait", "audit", _field_view("orientation", ["portrait"]),
                    "portrait images (after EXIF orientation)")),
    # the section of all three coverage properties; it reads the audit block's coverage tables
    report=ReportSection("coverage", "Coverage: orientation, colour and clarity per class", render_coverage, order=20))
COLOUR = Check(
    "colour", "colour/grayscale/bw per class, decided from the pixels",
    colour_evaluate, colour_compute, ColourOptions,
    views=(ViewSpec("audit/grayscale", "audit", _field_view("colour_mode", ["grayscale", "bw"]),
                    "grayscale and two-level images, decided from the pixels"),))
CLARITY = Check(
    "clarity", "variance-of-Laplacian sharpness at a fixed size; blurry/normal/sharp per class",
    clarity_evaluate, clarity_compute, ClarityOptions,
    views=(ViewSpec("audit/blurry", "audit", _field_view("clarity", ["blurry"], "sharpness"),
                    "blurry images, least sharp first"),),
    decode_side=lambda options: options.size)  # the luma is measured at this longer side


@hookimpl
def vetset_register_checks(register):
    register(ORIENTATION)
    register(COLOUR)
    register(CLARITY)
