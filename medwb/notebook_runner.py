"""Run a parameterized notebook from ``notebooks/`` through papermill and export it to HTML.

A notebook is a function: parameters in, an executed notebook and an HTML page out (code cells hidden by
default). The HTML embeds its images and links no script from the web, so it opens on an offline laptop.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def notebook_path(name: str) -> Path:
    """Path of a bundled notebook by file name (``"01_explore.ipynb"``) or stem (``"01_explore"``)."""
    p = NOTEBOOKS / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not p.is_file():
        raise FileNotFoundError(f"{p}: notebook not found. Fix: run medwb from a source checkout (pip install -e .)")
    return p


def execute_notebook(
    name: str,
    parameters: dict[str, Any],
    out_dir: str | Path,
    *,
    stem: str | None = None,
    hide_code: bool = True,
    timeout_s: int = 1800,
) -> tuple[Path, Path]:
    """Execute ``notebooks/<name>`` with papermill into ``out_dir``; return (executed .ipynb, .html)."""
    import papermill as pm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
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
    body = strip_external_links(body)
    html_path = Path(html_path)
    html_path.write_text(body, encoding="utf-8")
    return html_path


def strip_external_links(html: str) -> str:
    """Drop ``<script src=http...>`` and ``<link href=http...>`` tags that would reach the web."""
    import re

    html = re.sub(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", "", html, flags=re.I)
    html = re.sub(r"<link[^>]*\bhref=[\"']https?://[^>]*>", "", html, flags=re.I)
    return html


def external_urls(html: str) -> list[str]:
    """Every http(s) address the page would load as a script, stylesheet, image or frame."""
    import re

    return re.findall(r"<(?:script|link|img|iframe)[^>]*\b(?:src|href)=[\"'](https?://[^\"']+)", html, flags=re.I)
