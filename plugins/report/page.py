"""Page assembly: every registered report section, in order, in one self-contained HTML file.

Each plugin contributes its sections through ``vetset_register_report_sections``; this
module renders them in ``(order, name)`` order inside the Jinja2 template
``vetset/core/templates/report.html``. Sections that return ``None`` are left out; a
section whose ``render`` raises becomes an error box naming the section and its plugin,
and the page is still written.

Self-contained means no network fetch when the file is opened: CSS and scripts are
inline, thumbnails are ``data:`` URIs, and plotly.js (4.9 MB as shipped in the plotly
package) is inlined once, gzip-compressed and base64-encoded (about 1.9 MB), and started
with the browser's ``DecompressionStream``. It is left out when no section has a plot.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import gzip
import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vetset.core import __version__
from vetset.core.cache import cached_text
from vetset.core.registry import ReportSection
from vetset.core.report_kit import DEFERRED_TYPE, ReportContext, defer_plot_scripts, esc, plot_theme
from vetset.core.result import SCHEMA_VERSION

TEMPLATE = "report.html"


@dataclass
class RenderedSection:
    """One section as it appears on the page.

    Attributes:
        name, title, plugin, order: from the registry.
        anchor: HTML id (``sec-<name>``).
        status: ``ok``, ``empty`` (render returned ``None``; not on the page) or ``error``.
        html: the fragment (the error box for ``error``).
        error: ``"ExcType: message"`` when ``status == "error"``.
    """

    name: str
    title: str
    plugin: str
    order: int
    anchor: str
    status: str
    html: str = ""
    error: str = ""

    def info(self) -> dict[str, Any]:
        """The JSON record kept in the report stage's result."""
        out = {"name": self.name, "title": self.title, "plugin": self.plugin, "order": self.order, "status": self.status}
        if self.error:
            out["error"] = self.error
        return out


def anchor_for(name: str) -> str:
    """``sec-`` plus ``name`` lower-cased with anything but ``[a-z0-9_-]`` replaced by ``-``."""
    return "sec-" + re.sub(r"[^a-z0-9_-]+", "-", name.lower()).strip("-")


def error_box(section: str, plugin: str, error: str) -> str:
    """The HTML shown in place of a section whose render raised."""
    return (f'<div class="note bad error-box"><strong>This section could not be drawn.</strong> '
            f'Plugin <code>{esc(plugin)}</code> raised <code>{esc(error)}</code> while rendering the '
            f'section <code>{esc(section)}</code>. The other sections are unaffected, and '
            f'<code>result.json</code> still holds the data.</div>')


def render_sections(registry: Any, result: dict[str, Any], ctx: ReportContext,
                    log: Callable[[str], None] = print) -> list[RenderedSection]:
    """Render every registered section in ``(order, name)`` order.

    Args:
        registry: ``hooks.report_sections`` (a :class:`~vetset.core.registry.Registry` of
            :class:`ReportSection`).
        result: the run result (``result.json`` as a dict).
        ctx: the report context handed to each ``render``.
        log: told about each section that failed.

    Returns:
        Every section, including ``empty`` ones (not shown) and ``error`` ones (shown as
        an error box). Never raises for a failing section.
    """
    entries = sorted(registry.entries(), key=lambda e: (e.value.order, e.name))
    out: list[RenderedSection] = []
    with plot_theme():
        for entry in entries:
            section: ReportSection = entry.value
            rs = RenderedSection(entry.name, section.title, entry.plugin, int(section.order), anchor_for(entry.name), "ok")
            try:
                fragment = section.render(result, ctx)
                if fragment is not None and not isinstance(fragment, str):
                    raise TypeError(f"render returned {type(fragment).__name__}, not str or None")
            except Exception as exc:  # a broken section must not cost the user the whole report
                rs.status, rs.error = "error", f"{type(exc).__name__}: {exc}"
                rs.html = error_box(entry.name, entry.plugin, rs.error)
                log(f"[report] section {entry.name!r} of plugin {entry.plugin!r} failed: {rs.error}")
            else:
                if fragment is None:
                    rs.status = "empty"
                else:
                    rs.html = defer_plot_scripts(fragment)
            out.append(rs)
    return out


@functools.lru_cache(maxsize=1)
def plotly_js_gzip_b64() -> str:
    """plotly.js from the installed plotly package, gzip-compressed, base64 text.

    Compressing the script (about 4.9 MB) at level 9 is a large part of an unchanged rerun,
    so the text is kept in vetset's cache folder (:mod:`vetset.core.cache`), named by the
    plotly version, and in memory.
    """
    from importlib.metadata import version

    def compress() -> str:
        from plotly.offline import get_plotlyjs

        return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), compresslevel=9, mtime=0)).decode("ascii")

    return cached_text(f"plotly-{version('plotly')}.js.gz.b64", compress, valid=_gzip_b64_ok)


def _gzip_b64_ok(text: str) -> bool:
    """Whether ``text`` is base64 of a complete gzip stream (a truncated or emptied cache
    file would otherwise be embedded into every report and its plots never drawn)."""
    try:
        return bool(gzip.decompress(base64.b64decode(text, validate=True)))
    except (ValueError, OSError, EOFError, zlib.error):
        return False


@functools.lru_cache(maxsize=1)
def _environment() -> Any:
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("vetset.core", "templates"),
                              autoescape=jinja2.select_autoescape(["html"]), undefined=jinja2.StrictUndefined)


def _gate(result: dict[str, Any]) -> dict[str, str] | None:
    fail_on = result.get("fail_on") or {}
    checked = fail_on.get("checked") or {}
    if not checked:
        return None
    failures = fail_on.get("failures") or []
    if failures:
        return {"status": "fail", "text": f"fail_on: {len(failures)} of {len(checked)} gates failed"}
    return {"status": "pass", "text": f"fail_on: all {len(checked)} gates passed"}


def build_page(result: dict[str, Any], sections: list[RenderedSection], title: str) -> str:
    """The complete HTML document for rendered ``sections``.

    Args:
        result: the run result (header facts and the ``fail_on`` badge come from it).
        sections: from :func:`render_sections`; ``empty`` ones are skipped.
        title: the page title.
    """
    shown = [s for s in sections if s.status != "empty"]
    needs_plotly = any(DEFERRED_TYPE in s.html for s in shown)
    meta = []
    recipe = (result.get("recipe") or {}).get("name")
    if recipe:
        meta.append(f"recipe {recipe}")
    if result.get("started_at"):
        meta.append(f"run started {result['started_at']}")
    meta.append(f"vetset {result.get('vetset_version', __version__)}")
    return _environment().get_template(TEMPLATE).render(
        title=title, meta=meta, gate=_gate(result), sections=shown,
        vetset_version=__version__, schema_version=result.get("schema_version", SCHEMA_VERSION),
        generated_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        plotly_gz=plotly_js_gzip_b64() if needs_plotly else None, deferred_type=DEFERRED_TYPE,
    )
