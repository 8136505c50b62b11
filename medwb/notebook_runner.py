"""Run a bundled notebook (``medwb.resources.notebook_path``) through papermill and export it to HTML.

A notebook is a function: parameters in, an executed notebook and an HTML page out (code cells hidden by
default). The HTML embeds its images and links no script from the web, so it opens on an offline laptop.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from medwb.atomic import ensure_output_dir
from medwb.resources import notebook_path

__all__ = ["PRINT_CSS", "execute_notebook", "export_html", "external_urls", "notebook_path", "strip_external_links"]


def execute_notebook(
    name: str,
    parameters: dict[str, Any],
    out_dir: str | Path,
    *,
    stem: str | None = None,
    hide_code: bool = True,
    timeout_s: int = 1800,
) -> tuple[Path, Path]:
    """Execute the bundled notebook ``name`` with papermill into ``out_dir``; return (executed .ipynb, .html)."""
    import papermill as pm

    out_dir = ensure_output_dir(out_dir)
    src = notebook_path(name)
    stem = stem or src.stem
    executed = out_dir / f"{stem}.ipynb"
    env_before = os.environ.get("MEDWB_OFFLINE")
    os.environ["MEDWB_OFFLINE"] = "1"  # the kernel inherits it and refuses non-loopback sockets
    try:
        pm.execute_notebook(
            str(src),
            str(executed),
            parameters=parameters,
            cwd=str(out_dir),
            kernel_name="python3",
            progress_bar=False,
            execution_timeout=timeout_s,
        )
    finally:
        if env_before is None:
            os.environ.pop("MEDWB_OFFLINE", None)
        else:
            os.environ["MEDWB_OFFLINE"] = env_before
    html = export_html(executed, out_dir / f"{stem}.html", hide_code=hide_code)
    return executed, html


#: Printing (PDF) must show whole tables and figures: no scroll boxes, wrap long cells, keep figures on a page.
PRINT_CSS = """<style>
@media print {
  .jp-OutputArea-output, .jp-RenderedHTMLCommon { overflow: visible !important; max-height: none !important; }
  .jp-RenderedHTMLCommon table { font-size: 8.5pt; table-layout: auto; width: auto; max-width: 100%; }
  .jp-RenderedHTMLCommon td, .jp-RenderedHTMLCommon th { white-space: normal; word-break: break-word; }
  img { max-width: 100% !important; page-break-inside: avoid; break-inside: avoid; }
  h1, h2, h3 { page-break-after: avoid; break-after: avoid; }
}
</style>
"""


def export_html(ipynb: str | Path, html_path: str | Path, *, hide_code: bool = True) -> Path:
    """Export an executed notebook to a self-contained HTML page (no external script or style links)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(ipynb), as_version=4)
    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input = hide_code
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    exporter.embed_images = True
    # No require.js / MathJax / widget manager from public addresses: the report is static HTML.
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    exporter.widget_renderer_url = ""
    exporter.jupyter_widgets_base_url = ""
    exporter.html_manager_semver_range = ""
    body, _ = exporter.from_notebook_node(nb)
    body = strip_external_links(body).replace("</head>", PRINT_CSS + "</head>", 1)
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def strip_external_links(html: str) -> str:
    """Make an nbconvert page static and offline: no script, style or module is fetched from the web.

    nbconvert's ``lab`` template loads require.js (``<script src>``), MathJax, the widget manager and — from a
    module script — mermaid from public CDNs. A validation report needs none of them (figures are embedded PNGs,
    tables are HTML), so those scripts are removed. URLs that only appear inside CSS comments are dropped too, so
    that a plain search of the page for ``http`` finds nothing but XML namespace identifiers (never fetched).
    """
    import re

    # <script src="http..."> or the empty src="" that nbconvert leaves when a URL trait is blanked
    html = re.sub(r"<script[^>]*\bsrc=[\"'](?:https?:)?(?://[^\"']*)?[\"'][^>]*>\s*</script>", "", html, flags=re.I)
    # inline scripts that reach the web (the mermaid ESM loader) or configure MathJax (not loaded)
    html = re.sub(r"<script\b[^>]*>(?:(?!</script>).)*?(?:https?://|MathJax)(?:(?!</script>).)*</script>", "", html,
                  flags=re.I | re.S)
    html = re.sub(r"<link[^>]*\bhref=[\"'](?:https?:)?//[^>]*>", "", html, flags=re.I)

    def _clean_style(m: re.Match[str]) -> str:
        css = re.sub(r"/\*.*?\*/", "", m.group(0), flags=re.S)  # comments (with their attribution URLs)
        return re.sub(r"@import\s+url\([\"']?https?://[^)]*\)\s*;?", "", css, flags=re.I)

    return re.sub(r"<style\b[^>]*>.*?</style>", _clean_style, html, flags=re.I | re.S)


#: URIs that identify XML vocabularies; browsers never request them.
_NAMESPACE_URIS = re.compile(r"^https?://www\.w3\.org/(?:2000/svg|1999/xhtml|1999/xlink|XML/1998/namespace|"
                             r"2000/xmlns|1998/Math/MathML|Graphics/SVG/1\.1/DTD/)")


def external_urls(html: str) -> list[str]:
    """Every http(s) address anywhere in the page (attributes, CSS, scripts, text), XML namespace URIs excepted.

    Deliberately stricter than "what the browser would load": a report that names no external address cannot
    make an external request. The browser test checks the requests themselves.
    """
    urls = re.findall(r"https?://[^\s\"'<>()`]+", html)
    return [u for u in urls if not _NAMESPACE_URIS.match(u)]
