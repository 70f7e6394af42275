"""Small building blocks for report sections: escaped tables, inline plots, thumbnails.

A section's ``render(result, ctx)`` returns an HTML fragment. The page that assembles
the sections (``vetset.plugins.report``) inlines plotly.js once, so figures here are
exported with ``include_plotlyjs=False``. Everything is inline: no network fetches.
"""

from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence


@dataclass
class ReportContext:
    """What a section may use besides the JSON result.

    Attributes:
        result: the run result dict (also passed to ``render`` as its first argument).
        dataset: the FiftyOne dataset, or ``None`` when rebuilding without a database.
        out_dir: the report's folder.
        thumb_size: longest side of embedded thumbnails, in pixels.
        extra: free-form values a section may share with later ones.
    """

    result: dict[str, Any]
    dataset: Any = None
    out_dir: Path | None = None
    thumb_size: int = 96
    extra: dict[str, Any] = field(default_factory=dict)


def esc(value: Any) -> str:
    """HTML-escape ``str(value)``."""
    return html.escape(str(value), quote=True)


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
    body = "".join(
        "<tr>" + "".join(f"<td>{c.html if isinstance(c, safe) else fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class safe:
    """Wrap trusted HTML so :func:`table` does not escape it."""

    def __init__(self, html_text: str):
        self.html = html_text


def figure(fig: Any) -> str:
    """A plotly figure as an HTML ``div`` (plotly.js is inlined once by the page)."""
    return '<div class="plot">' + fig.to_html(full_html=False, include_plotlyjs=False,
                                               config={"displaylogo": False, "responsive": True}) + "</div>"


def thumbnail(path: str, size: int = 96, quality: int = 70) -> str | None:
    """``data:image/jpeg;base64,...`` of the EXIF-oriented image, longest side ``size`` px.

    Returns ``None`` for unreadable files. A 96 px JPEG at quality 70 is about 2-4 kB.
    """
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
