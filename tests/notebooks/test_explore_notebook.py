"""notebooks/01_explore.ipynb end to end under papermill (no front end -> static figures), 2D and 3D data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from medwb.pipelines.explore import run_explore
from medwb.notebook_runner import external_urls

pytestmark = pytest.mark.slow


def _outputs(nb) -> tuple[int, list[str], list[dict]]:
    """(number of PNG figures, all text/plain + text/html + stream text, error outputs)."""
    pngs, texts, errors = 0, [], []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                errors.append(out)
            data = out.get("data", {})
            pngs += "image/png" in data
            texts += [str(data.get(k, "")) for k in ("text/plain", "text/html")]
            texts.append(str(out.get("text", "")))
    return pngs, texts, errors


def _check_source_notebook_has_no_outputs() -> None:
    nb = nbformat.read(str(Path(__file__).resolve().parents[2] / "notebooks" / "01_explore.ipynb"), as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "data_path" in tagged[0].source


def test_explore_3d_segmentation(samples: Path, tmp_path: Path) -> None:
    _check_source_notebook_has_no_outputs()
    ipynb, html = run_explore(samples / "segmentation_3d" / "hippocampus", tmp_path, max_cases=12)
    nb = nbformat.read(str(ipynb), as_version=4)
    pngs, texts, errors = _outputs(nb)
    assert not errors
    # class balance, histograms, sample grid, static slice-browser grid, three-plane 3D view
    assert pngs >= 5
    joined = "\n".join(texts)
    assert "Hippocampus" in joined and "Posterior" in joined
    assert "no duplicates found" in joined
    assert "structure model (regions)" in joined  # the structure cell shows the regions
    assert "application/vnd.jupyter.widget-view+json" not in ipynb.read_text()  # static, no dead widgets
    page = html.read_text()
    assert page.count("data:image/png;base64") >= 5
    assert external_urls(page) == []


def test_explore_cli_2d_classification(samples: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    data = samples / "classification_2d" / "pneumoniamnist.npz"
    r = subprocess.run([sys.executable, "-m", "medwb.cli", "explore", str(data), "--out", str(out),
                        "--max-cases", "200"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ipynb = out / "explore_pneumoniamnist.ipynb"
    html = out / "explore_pneumoniamnist.html"
    assert f"executed notebook: {ipynb}" in r.stdout and html.is_file()
    pngs, texts, errors = _outputs(nbformat.read(str(ipynb), as_version=4))
    assert not errors and pngs >= 5
    joined = "\n".join(texts)
    # the real train/val duplicates of PneumoniaMNIST are reported as leakage
    assert "LEAKAGE" in joined and "exact across splits (leak)" in joined
    assert "pneumonia" in joined and "normal" in joined
    assert "structure model (pixel features): 200 cases in 2 clusters" in joined  # the cluster gallery's cell
    assert "application/vnd.jupyter.widget-view+json" not in ipynb.read_text()  # no dead progress-bar widgets
    assert external_urls(html.read_text()) == []


def test_explore_cli_help() -> None:
    r = subprocess.run([sys.executable, "-m", "medwb.cli", "explore", "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "--max-cases" in r.stdout and "--out" in r.stdout
