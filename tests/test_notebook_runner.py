"""The HTML export is self-contained: nbconvert's lab template references public CDNs; ours must not."""
from __future__ import annotations

import base64
import io
import re

import nbformat
import numpy as np
from PIL import Image

from medwb.notebook_runner import export_html, external_urls, strip_external_links


def _notebook_with_figure(samples, path):
    """A notebook whose output is a real PneumoniaMNIST image (PNG) and a table, like an executed report."""
    img = np.load(samples / "classification_2d" / "pneumoniamnist.npz")["test_images"][0]
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Report\nSome $x^2$ math and a table."),
                nbformat.v4.new_code_cell("show()", outputs=[
                    nbformat.v4.new_output("display_data", data={
                        "image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<Figure>"}),
                    nbformat.v4.new_output("display_data", data={"text/html": "<table><tr><td>1</td></tr></table>"}),
                ])]
    nbformat.write(nb, str(path))


def test_export_html_has_no_external_address_and_keeps_figures(samples, tmp_path):
    from nbconvert import HTMLExporter

    _notebook_with_figure(samples, tmp_path / "r.ipynb")
    raw, _ = HTMLExporter(template_name="lab").from_filename(str(tmp_path / "r.ipynb"))
    assert external_urls(raw), "nbconvert's default page should reference CDNs (else this test proves nothing)"
    html = export_html(tmp_path / "r.ipynb", tmp_path / "r.html").read_text()
    assert external_urls(html) == []
    assert not re.search(r"<script", html, flags=re.I)
    assert len(re.findall(r"<img[^>]+src=\"data:image/png;base64,", html)) == 1
    assert "<table>" in html and "show()" not in html  # tables shown, code hidden by default
    shown = export_html(tmp_path / "r.ipynb", tmp_path / "code.html", hide_code=False).read_text()
    assert "show" in shown


def test_external_urls_finds_every_kind_of_reference():
    page = ('<script src="https://a.example/x.js"></script><link href="http://b.example/s.css">'
            '<style>@import url("https://c.example/f.css");</style><script>import("https://d.example/m.mjs")</script>'
            '<svg xmlns="http://www.w3.org/2000/svg"></svg>')
    assert len(external_urls(page)) == 4  # the SVG namespace is an identifier, never fetched
    assert external_urls(strip_external_links(page)) == []


def test_bundled_notebook_parameters_are_all_seen_by_papermill():
    """papermill skips a parameter whose line holds a second '=' (e.g. in its comment) and then warns
    "Passed unknown parameter"; every parameter of these notebooks must be one papermill can inject and list."""
    import papermill as pm

    from medwb.notebook_runner import notebook_path

    expected = {"01_explore": {"data_path", "max_cases", "volume_case", "static_views", "near_duplicate_distance",
                               "seed", "prelabel"},
                "04_validation_report": {"study", "dataset", "simulation_curves", "explain_dir", "class_sweep", "seed",
                                         "n_bootstrap"}}
    for name, params in expected.items():
        assert set(pm.inspect_notebook(str(notebook_path(name)))) == params, name
