"""Built-in checks ``exposure`` (dark, overexposed, low contrast, low information) and ``size``.

Both work on numbers the per-image pass already has: ``exposure`` on the 256-level luma
histogram of each decoded image (one histogram gives brightness, percentiles, contrast
and entropy), ``size`` on the pixel size after EXIF orientation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field

from vetset.core.hookspecs import hookimpl
from vetset.core.recipe import Count
from vetset.core.registry import Check, ReportSection, ViewSpec
from vetset.core.report_kit import ReportContext, esc, figure, stage_block, stat_cards, table, thumb_grid

if TYPE_CHECKING:  # pragma: no cover
    from vetset.core.images import DecodedImage
    from vetset.plugins.audit.context import AuditContext

EXPOSURE_ISSUES = ("dark", "overexposed", "low_contrast", "low_entropy")


class ExposureOptions(BaseModel):
    """``stages.audit.checks.exposure`` options (luma levels are divided by 255, so 0..1).

    Attributes:
        dark_p99: ``dark`` when the 99th percentile of luma is below this: even the
            brightest pixels are dark. Default 0.32, CleanVision's ``dark`` threshold on
            its 99th-percentile brightness.
        overexposed_p5: ``overexposed`` when the 5th percentile of luma is above this:
            even the darkest pixels are bright. Default 0.95 (CleanVision's ``light``
            threshold 0.05 on ``1 - p5``).
        low_contrast: ``low_contrast`` when ``(p99 - p1)`` of luma is below this share of
            the range. Default 0.05, as ``skimage.exposure.is_low_contrast``
            (``fraction_threshold=0.05``, percentiles 1 and 99).
        low_entropy_bits: ``low_entropy`` when the Shannon entropy of the luma histogram is
            below this many bits (0..8). Default 3.0, CleanVision's ``low_information``
            threshold (0.3 after its normalising factor 0.1).
    """

    model_config = {"extra": "forbid"}

    dark_p99: float = Field(0.32, ge=0.0, le=1.0)
    overexposed_p5: float = Field(0.95, ge=0.0, le=1.0)
    low_contrast: float = Field(0.05, ge=0.0, le=1.0)
    low_entropy_bits: float = Field(3.0, ge=0.0, le=8.0)


class SizeOptions(BaseModel):
    """``stages.audit.checks.size`` options.

    Attributes:
        tiny_side: ``tiny`` when the shorter side is below this many pixels. Default 32,
            the side of CIFAR-10/100 images, the smallest resolution common
            image-classification benchmarks train at.
        odd_size_iqr: ``odd_size`` when ``sqrt(width * height)`` lies outside Tukey's fences
            ``[Q1 - k*IQR, Q3 + k*IQR]`` of the audited images with ``k`` = this. Default
            3.0, CleanVision's ``odd_size`` ``iqr_factor`` ("far out" values).
        odd_size_min_ratio: and differs from the median by at least this factor, so a
            dataset of near-equal sizes (IQR 0) flags nothing. Default 2.0.
    """

    model_config = {"extra": "forbid"}

    tiny_side: Count = Field(32, ge=1)
    odd_size_iqr: float = Field(3.0, gt=0.0)
    odd_size_min_ratio: float = Field(2.0, ge=1.0)


def exposure_compute(image: DecodedImage, options: ExposureOptions) -> dict[str, Any]:
    """Brightness, contrast, entropy and luma percentiles of one decoded image.

    Returns:
        ``brightness`` (mean luma / 255), ``contrast`` ((p99 - p1) / 255), ``entropy``
        (bits, 0..8), ``p5`` and ``p99`` (percentile luma / 255); percentiles are the
        lowest level whose cumulative count reaches the share.
    """
    hist = image.gray_hist()
    n = hist.sum()
    p1, p5, p99 = np.searchsorted(np.cumsum(hist), (0.01 * n, 0.05 * n, 0.99 * n))
    p = hist[hist > 0] / n
    return {"brightness": round(float(hist @ np.arange(256)) / n / 255.0, 4),
            "contrast": round((int(p99) - int(p1)) / 255.0, 4),
            "entropy": round(float(-(p * np.log2(p)).sum()), 4),
            "p5": round(int(p5) / 255.0, 4), "p99": round(int(p99) / 255.0, 4)}


def exposure_evaluate(ctx: AuditContext, options: ExposureOptions) -> dict[str, Any]:
    """Write ``brightness``, ``contrast``, ``entropy``; tag ``dark``, ``overexposed``, ``low_contrast``, ``low_entropy``."""
    if not ctx.has("exposure", "brightness"):
        nan = np.full(ctx.n, np.nan)
        bright = contrast = entropy = p5 = p99 = nan
    else:
        bright, contrast, entropy = (ctx.column("exposure", k) for k in ("brightness", "contrast", "entropy"))
        p5, p99 = ctx.column("exposure", "p5"), ctx.column("exposure", "p99")
    ok = ~np.isnan(bright)
    flags = {
        "dark": ok & (p99 < options.dark_p99),
        "overexposed": ok & (p5 > options.overexposed_p5),
        "low_contrast": ok & (contrast < options.low_contrast),
        "low_entropy": ok & (entropy < options.low_entropy_bits),
    }
    ctx.set_field("brightness", bright, "float")
    ctx.set_field("contrast", contrast, "float")
    ctx.set_field("entropy", entropy, "float")
    for tag, mask in flags.items():
        ctx.tag(tag, mask)
    order = {"dark": p99, "overexposed": -p5, "low_contrast": contrast, "low_entropy": entropy}
    edges = np.linspace(0.0, 1.0, 21)
    labels = np.array([lab or "" for lab in ctx.labels], dtype=object)
    return {
        "counts": {k: int(v.sum()) for k, v in flags.items()},
        "by_class": {k: ctx.count_by_class(v)["all"] for k, v in flags.items()},
        "distribution": {"brightness": {"edges": edges.round(3).tolist(), "counts": {
            c: np.histogram(bright[ok & (labels == c)], edges)[0].astype(int).tolist() for c in ctx.classes}}},
        "mean": {"brightness": _mean(bright), "contrast": _mean(contrast), "entropy": _mean(entropy)},
        "thresholds": options.model_dump(),
        "examples": {k: ctx.examples(v, order[k]) for k, v in flags.items()},
        "metrics": {k: int(v.sum()) for k, v in flags.items()},
    }


def size_evaluate(ctx: AuditContext, options: SizeOptions) -> dict[str, Any]:
    """Tag ``tiny`` and ``odd_size``; summarise widths and heights."""
    ok = ctx.readable
    w, h = ctx.width.astype(np.float64), ctx.height.astype(np.float64)
    tiny = ok & (np.minimum(w, h) < options.tiny_side)
    side = np.sqrt(w * h)
    odd = np.zeros(ctx.n, dtype=bool)
    fences = None
    if ok.sum() >= 4:
        q1, med, q3 = np.percentile(side[ok], [25, 50, 75])
        k = options.odd_size_iqr * (q3 - q1)
        lo, hi = min(q1 - k, med / options.odd_size_min_ratio), max(q3 + k, med * options.odd_size_min_ratio)
        odd = ok & ((side < lo) | (side > hi))
        fences = {"low": round(float(lo), 2), "high": round(float(hi), 2), "median": round(float(med), 2)}
    ctx.tag("tiny", tiny)
    ctx.tag("odd_size", odd)
    stats = {}
    labels = np.array([lab or "" for lab in ctx.labels], dtype=object)
    for c in ctx.classes:
        m = ok & (labels == c)
        stats[c] = ({"min": [int(w[m].min()), int(h[m].min())], "median": [float(np.median(w[m])), float(np.median(h[m]))],
                     "max": [int(w[m].max()), int(h[m].max())]} if m.any() else None)
    return {
        "size_fences_sqrt_area": fences, "by_class_size": stats,
        "counts": {"tiny": int(tiny.sum()), "odd_size": int(odd.sum())},
        "by_class": {"tiny": ctx.count_by_class(tiny)["all"], "odd_size": ctx.count_by_class(odd)["all"]},
        "examples": {"tiny": ctx.examples(tiny, side), "odd_size": ctx.examples(odd, -np.abs(np.log(np.where(side > 0, side, 1.0))))},
        "metrics": {"tiny": int(tiny.sum()), "odd_size": int(odd.sum())},
    }


def _mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return round(float(x.mean()), 4) if len(x) else None


def _tag_view(tag: str, sort: str | None = None, reverse: bool = False):
    def build(dataset: Any) -> Any:
        view = dataset.match_tags(tag)
        if sort and sort in dataset.get_field_schema():
            view = view.sort_by(sort, reverse=reverse)
        return view
    return build


#: The issues of the quality section: (tag and metric, check that writes it), in display order.
QUALITY_ISSUES = (("blurry", "clarity"), ("dark", "exposure"), ("overexposed", "exposure"),
                  ("low_contrast", "exposure"), ("low_entropy", "exposure"), ("tiny", "size"),
                  ("odd_size", "size"), ("odd_aspect_ratio", "orientation"), ("exif_rotated", "orientation"))


def _issue_count(checks: dict[str, Any], issue: str, check: str) -> int | None:
    summary = checks.get(check) or {}
    metrics = summary.get("metrics") or {}
    return metrics.get(issue) if isinstance(metrics.get(issue), int) else None


def render_quality(result: dict[str, Any], ctx: ReportContext | None) -> str | None:
    """Issue counts, sharpness and brightness distributions per class, example thumbnails."""
    block = stage_block(result, "audit")
    checks = (block or {}).get("checks") or {}
    if not any(c in checks for c in ("clarity", "exposure", "size", "orientation")):
        return None
    import plotly.graph_objects as go

    found = [(issue, check, _issue_count(checks, issue, check)) for issue, check in QUALITY_ISSUES]
    found = [f for f in found if f[2] is not None]
    parts = [stat_cards([(issue.replace("_", " "), n, f"audit.metrics.{issue}") for issue, _, n in found])]
    clarity = checks.get("clarity") or {}
    dist = clarity.get("distribution") or {}
    if dist.get("edges"):
        import math

        edges = dist["edges"]  # log10 of sharpness
        mids = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
        fig = go.Figure([go.Bar(name=c, x=mids, y=v, opacity=0.6, width=(edges[1] - edges[0]))
                         for c, v in dist["counts"].items()])
        th = clarity.get("thresholds", {})
        for key, colour in (("blurry_below", "#D55E00"), ("sharp_above", "#009E73")):
            if th.get(key):
                fig.add_vline(x=math.log10(th[key]), line_dash="dash", line_color=colour,
                              annotation_text=f"{key.replace('_', ' ')} {th[key]:g}")
        ticks = list(range(math.floor(edges[0]), math.ceil(edges[-1]) + 1))
        fig.update_layout(barmode="overlay", height=300, title=f"Sharpness (variance of the Laplacian at {th.get('size', '?')} px)",
                          xaxis={"title": "sharpness (log scale)", "tickvals": ticks, "ticktext": [f"{10 ** t:,}" for t in ticks]},
                          yaxis_title="images")
        parts.append(figure(fig))
    up = clarity.get("upscaled") or {}
    if up.get("count"):
        size = clarity.get("thresholds", {}).get("size", "?")
        parts.append(f"<p class=\"note\">{up['count']:,} images are smaller than {size} px and were upscaled to "
                     f"measure their sharpness; upscaling blurs, so for them (blurry: {up.get('blurry', 0):,}) the "
                     "clarity bin says more about resolution than about focus.</p>")
    bright = ((checks.get("exposure") or {}).get("distribution") or {}).get("brightness") or {}
    if bright.get("edges"):
        e = bright["edges"]
        mids = [(a + b) / 2 for a, b in zip(e[:-1], e[1:])]
        fig = go.Figure([go.Bar(name=c, x=mids, y=v, opacity=0.6) for c, v in bright["counts"].items()])
        fig.update_layout(barmode="overlay", height=300, title="Brightness (mean luma, 0-1)", xaxis_title="brightness",
                          yaxis_title="images")
        parts.append(figure(fig))
    by_class: dict[str, dict[str, int]] = {}
    for check in ("exposure", "size"):
        for issue, row in ((checks.get(check) or {}).get("by_class") or {}).items():
            by_class[issue] = row
    odd = ((checks.get("orientation") or {}).get("odd_aspect_ratio") or {})
    if odd.get("by_class"):
        by_class["odd_aspect_ratio"] = odd["by_class"]
    if clarity.get("share"):
        split = "all" if "all" in clarity["share"] else next(iter(clarity["share"]))
        counts = (block.get("coverage") or {}).get(split, {}).get("clarity", {})
        by_class = {"blurry": {c: row.get("blurry", 0) for c, row in counts.items()}, **by_class}
    if by_class:
        classes = sorted({c for row in by_class.values() for c in row})
        parts.append(table(["class"] + [i.replace("_", " ") for i in by_class],
                           [[c] + [by_class[i].get(c, 0) for i in by_class] for c in classes], cls="num"))
    if ctx is not None:
        for issue, check, n in found:
            examples = ((checks.get(check) or {}).get("examples") or {}).get(issue) or []
            if n and examples:
                parts.append(f"<h3>{esc(issue.replace('_', ' '))}</h3>")
                parts.append(thumb_grid([(e["filepath"], f"{e.get('label')} / {e.get('split')}") for e in examples],
                                        ctx, total=n, view=f"audit/{issue}"))
    return "".join(parts)


EXPOSURE = Check(
    "exposure", "dark, overexposed, low-contrast and low-entropy images from the luma histogram",
    exposure_evaluate, exposure_compute, ExposureOptions,
    views=(ViewSpec("audit/dark", "audit", _tag_view("dark", "brightness"), "dark images, darkest first"),
           ViewSpec("audit/overexposed", "audit", _tag_view("overexposed", "brightness", True),
                    "overexposed images, brightest first"),
           ViewSpec("audit/low_contrast", "audit", _tag_view("low_contrast", "contrast"), "low-contrast images"),
           ViewSpec("audit/low_entropy", "audit", _tag_view("low_entropy", "entropy"),
                    "images with little information (luma entropy below the threshold)")),
    # the image-quality section also shows the clarity, size and orientation checks' issues
    report=ReportSection("quality", "Image quality: clarity, exposure, size", render_quality, order=30))
SIZE = Check(
    "size", "tiny images and size outliers (Tukey fences on sqrt(area))",
    size_evaluate, None, SizeOptions,
    views=(ViewSpec("audit/tiny", "audit", _tag_view("tiny", "metadata.width"), "images with a very short side"),
           ViewSpec("audit/odd_size", "audit", _tag_view("odd_size"), "images far from the usual size")))


@hookimpl
def vetset_register_checks(register):
    register(EXPOSURE)
    register(SIZE)
