"""Small building blocks for report sections: escaped tables, inline plots, thumbnails.

A section's ``render(result, ctx)`` returns an HTML fragment. The page that assembles
the sections (``vetset.plugins.report.page``) inlines plotly.js once, so figures here are
exported with ``include_plotlyjs=False``. Everything is inline: no network fetches.

Page conventions a section can rely on:

* plotly.js arrives compressed and is started after the page has loaded, so a figure's
  ``<script>`` that calls ``Plotly.`` is re-typed by :func:`defer_plot_scripts` and run
  once plotly.js is ready (figures from :func:`figure` and raw ``fig.to_html`` both work);
* while sections render, :func:`plot_theme` makes a compact vetset template the plotly
  default (the stock template adds about 8 kB of JSON to every figure);
* CSS classes ``stats``/``stat`` (:func:`stat_cards`), ``thumbs`` (:func:`thumb_grid`),
  ``note good|warn|bad|info`` (:func:`note`), ``muted`` and ``num`` are styled by the page.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import io
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vetset.core.result import lookup

if TYPE_CHECKING:  # pragma: no cover
    from vetset.core.manager import Hooks

from markupsafe import Markup, escape


@dataclass
class ReportContext:
    """What a section may use besides the JSON result.

    Attributes:
        result: the run result dict (also passed to ``render`` as its first argument).
        dataset: the FiftyOne dataset, or ``None`` when rebuilding without a database.
        out_dir: the report's folder.
        thumb_size: longest side of embedded thumbnails, in pixels.
        extra: free-form values a section may share with later ones.
        max_thumbnails: most thumbnails one :func:`thumb_grid` embeds (the report
            stage's ``max_thumbnails`` option); the rest are counted, not embedded.
        thumbnails: thumbnails embedded so far by :func:`thumb_grid` on this page.
        hooks: the :class:`~vetset.core.manager.Hooks` the report is drawn with (its
            checks' action rules), or ``None`` for the process-wide one.
    """

    result: dict[str, Any]
    dataset: Any = None
    out_dir: Path | None = None
    thumb_size: int = 96
    extra: dict[str, Any] = field(default_factory=dict)
    max_thumbnails: int = 24
    thumbnails: int = 0
    hooks: Hooks | None = None

    def saved_views(self) -> list[str]:
        """Saved-view names of ``dataset`` (empty without a dataset)."""
        if self.dataset is None:
            return []
        try:
            return list(self.dataset.list_saved_views())
        except Exception:  # a deleted dataset or an unreachable database: no links
            return []


def stage_block(result: dict[str, Any], stage: str) -> dict[str, Any] | None:
    """``result["stages"][stage]`` when it is a dict (the stage ran), else ``None``."""
    block = (result.get("stages") or {}).get(stage)
    return block if isinstance(block, dict) else None


def view_note(name: str, ctx: ReportContext | None) -> str:
    """`` Saved view <code>name</code>.`` when the dataset has that saved view, else ``""``."""
    if ctx is not None and name in ctx.saved_views():
        return f' <span class="muted">Saved view <code>{esc(name)}</code>.</span>'
    return ""


def esc(value: Any) -> str:
    """``value`` as HTML text: ``markupsafe.escape`` (``& < > " '`` escaped; :data:`safe` HTML,
    a ``markupsafe.Markup``, passes unchanged), as a plain ``str``."""
    return str(escape(value))


def fmt(value: Any, digits: int = 3) -> str:
    """Numbers with a sensible precision, everything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return esc("-" if value is None else value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are already ``Markup`` (``safe(...)``)."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(c) for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _cell(value: Any) -> str:
    if isinstance(value, Markup):
        return f"<td>{value}</td>"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f'<td class="num">{fmt(value)}</td>'
    return f"<td>{fmt(value)}</td>"


#: Trusted HTML that :func:`table` and :func:`esc` leave as it is: ``safe("<code>x</code>")``
#: (``markupsafe.Markup``, what Jinja2 uses).
safe = Markup


def figure(fig: Any) -> str:
    """A plotly figure as an HTML ``div`` (plotly.js is inlined once by the page)."""
    return '<div class="plot">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                               config={"displaylogo": False, "responsive": True}) + "</div>"


def thumbnail(path: str, size: int = 96, quality: int = 70) -> str | None:
    """``data:image/jpeg;base64,...`` of the EXIF-oriented image, longest side ``size`` px.

    Returns ``None`` for unreadable files. A 96 px JPEG at quality 70 is about 2-4 kB.
    Results are cached per (path, size, quality, file modification time), so a page
    rendered twice in one process decodes each image once.
    """
    try:
        mtime = os.stat(path).st_mtime_ns
    except OSError:
        return None
    return _thumbnail_cached(str(path), int(size), int(quality), mtime)


@functools.lru_cache(maxsize=4096)
def _thumbnail_cached(path: str, size: int, quality: int, mtime_ns: int) -> str | None:
    from PIL import Image

    from vetset.core.images import decode

    img = decode(path, max_side=size)
    if img.array is None:
        return None
    pil = Image.fromarray(img.array)
    pil.thumbnail((size, size))
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumb_img(path: str, size: int = 96, caption: str = "") -> str:
    """An ``<figure>`` with the embedded thumbnail (or a placeholder) and a caption."""
    uri = thumbnail(path, size)
    img = f'<img src="{uri}" alt="{esc(Path(path).name)}">' if uri else '<div class="noimg">unreadable</div>'
    return f'<figure class="thumb">{img}<figcaption>{esc(caption or Path(path).name)}</figcaption></figure>'


def thumb_grid(items: Sequence[tuple[str, str]], ctx: ReportContext, total: int | None = None,
               view: str | None = None) -> str:
    """A grid of at most ``ctx.max_thumbnails`` thumbnails, and how many were left out.

    Args:
        items: ``(filepath, caption)`` pairs, most important first.
        ctx: the report context (thumbnail size and cap; its ``thumbnails`` counter grows).
        total: how many items exist in all (default ``len(items)``), for the "N of M" note.
        view: a FiftyOne saved view that holds them all, named in the note.

    Returns:
        HTML: ``<div class="thumbs">`` of ``<figure>`` elements, followed by a note when
        items were left out.
    """
    total = len(items) if total is None else int(total)
    shown = list(items)[: max(0, ctx.max_thumbnails)]
    ctx.thumbnails += len(shown)
    out = '<div class="thumbs">' + "".join(thumb_img(p, ctx.thumb_size, c) for p, c in shown) + "</div>"
    if total > len(shown):
        where = f"; the saved view <code>{esc(view)}</code> holds all of them" if view else ""
        out += f'<p class="muted">Showing {len(shown):,} of {total:,}{where}.</p>'
    return out


def stat_cards(stats: Iterable[tuple[str, Any] | tuple[str, Any, str]]) -> str:
    """Headline numbers as cards: ``(label, value[, key])``.

    ``key`` (a dotted path into the result, e.g. ``load.num_samples``) is written as the
    card's ``data-key`` so tests and scripts can find the number and its source.
    """
    cards = []
    for item in stats:
        label, value = item[0], item[1]
        key = f' data-key="{esc(item[2])}"' if len(item) > 2 and item[2] else ""
        cards.append(f'<div class="stat"{key}><div class="value">{fmt(value)}</div>'
                     f'<div class="label">{esc(label)}</div></div>')
    return '<div class="stats">' + "".join(cards) + "</div>"


def note(text_html: str, kind: str = "info") -> str:
    """A call-out box; ``kind`` is ``info``, ``good``, ``warn`` or ``bad``. ``text_html`` is not escaped."""
    kind = kind if kind in ("info", "good", "warn", "bad") else "info"
    return f'<div class="note {kind}">{text_html}</div>'


# -- plots ---------------------------------------------------------------------------
_SCRIPT = re.compile(r"<script(?P<attrs>[^>]*)>(?P<body>.*?)</script>", re.S | re.I)
DEFERRED_TYPE = "application/x-vetset-plot"


def defer_plot_scripts(fragment: str) -> str:
    """Re-type inline scripts that call ``Plotly.`` so the page runs them after plotly.js loads.

    Scripts with a ``src`` or a non-JavaScript ``type`` are left alone; running the
    function twice changes nothing.
    """

    def swap(m: re.Match) -> str:
        attrs = m.group("attrs")
        typ = re.search(r'type\s*=\s*["\']([^"\']*)["\']', attrs, re.I)
        if "src=" in attrs.lower() or (typ and typ.group(1).lower() not in ("text/javascript", "")):
            return m.group(0)
        if "Plotly." not in m.group("body"):
            return m.group(0)
        attrs = re.sub(r'\s*type\s*=\s*["\'][^"\']*["\']', "", attrs, flags=re.I)
        return f'<script type="{DEFERRED_TYPE}"{attrs}>{m.group("body")}</script>'

    return _SCRIPT.sub(swap, fragment)


#: Colours of the vetset plot template (Okabe-Ito, readable by colour-blind readers).
COLORWAY = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]


def vetset_template() -> Any:
    """A compact plotly ``layout.Template``: white background, light grid, Okabe-Ito colours."""
    import plotly.graph_objects as go

    axis = {"gridcolor": "#e5e7eb", "linecolor": "#9ca3af", "zerolinecolor": "#d1d5db", "automargin": True}
    return go.layout.Template(layout={
        "font": {"family": "system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12, "color": "#1f2937"},
        "colorway": COLORWAY, "paper_bgcolor": "white", "plot_bgcolor": "white",
        "xaxis": axis, "yaxis": axis, "margin": {"l": 50, "r": 20, "t": 40, "b": 40},
        "hoverlabel": {"font": {"size": 12}}, "legend": {"bgcolor": "rgba(255,255,255,0.6)"},
        "colorscale": {"sequential": [[0, "#f7fbff"], [0.5, "#6baed6"], [1, "#08306b"]]},
    })


@contextlib.contextmanager
def plot_theme() -> Iterator[None]:
    """Make :func:`vetset_template` the plotly default inside the block (restored after)."""
    import plotly.io as pio

    previous = pio.templates.default
    pio.templates["vetset"] = vetset_template()
    pio.templates.default = "vetset"
    try:
        yield
    finally:
        pio.templates.default = previous


# -- recommended actions ---------------------------------------------------------------
#: Action severities and their rank (see :class:`Action`).
SEVERITY = {"high": 3, "medium": 2, "low": 1}


@dataclass
class Action:
    """One recommended action, returned by an action rule (``rule(result) -> Action | None``).

    Rules come from checks (:attr:`vetset.core.registry.Check.actions`) and from the report
    stage; ``vetset.plugins.report.actions.recommended_actions`` ranks them.

    Attributes:
        id: stable rule id (``leakage``, ``label_issues``...).
        severity: ``high`` (the problem makes the evaluation wrong), ``medium`` (it degrades
            training) or ``low`` (it costs robustness or hygiene).
        title: one imperative sentence with the count.
        detail: why it matters and how to do it.
        metric: dotted metric path (under ``stages``) the action comes from.
        value: that metric's value.
        share: fraction of ``share_of`` affected, 0..1, or ``None`` when unknown.
        views: FiftyOne saved-view name fragments where the affected samples are.
        share_of: what ``share`` is a fraction of: ``images`` or ``classes``.
    """

    id: str
    severity: str
    title: str
    detail: str
    metric: str
    value: float | int
    share: float | None = None
    views: list[str] = field(default_factory=list)
    share_of: str = "images"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def metric(result: dict[str, Any], *paths: str) -> tuple[str, float | int] | None:
    """The first of ``paths`` (dotted, under ``stages``) whose value is a number, as ``(path, value)``."""
    for path in paths:
        value = lookup(result, path)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return path, value
    return None


def num_images(result: dict[str, Any]) -> int | None:
    """Images of the run: ``audit.num_images``, else ``load.num_samples``, else ``None``."""
    found = metric(result, "audit.num_images")
    if found:
        return int(found[1])
    n = (result.get("load") or {}).get("num_samples")
    return n if isinstance(n, int) else None


def share(count: float | None, total: int | None) -> float | None:
    """``count / total`` clipped to 0..1, or ``None`` when either is unknown (or ``total`` is 0)."""
    if count is None or not total:
        return None
    return max(0.0, min(1.0, float(count) / total))
