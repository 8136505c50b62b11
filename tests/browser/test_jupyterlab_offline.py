"""The exploration notebook in a real JupyterLab 4 + headless Chromium with every non-loopback request cut.

Proves the offline claim of docs/viewers.md: the 2D slice browser (ipywidgets Image) and the ipyniivue 3D
view draw (non-blank pixels) while no request leaves 127.0.0.1. Screenshots go to reports/browser/.
"""
from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from jupyterlab_driver import NetworkLog, image_stats, lab_page, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "reports" / "browser"
NOTEBOOK = ROOT / "notebooks" / "01_explore.ipynb"


def _prepared_notebook(dest: Path, data: Path) -> Path:
    """A copy of 01_explore with papermill-style injected parameters (live views, a few cases)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook

    nb = load_notebook_node(str(NOTEBOOK))  # papermill's loader normalises cell tags for parameterize
    nb = parameterize_notebook(nb, {"data_path": str(data), "max_cases": 20, "static_views": False})
    path = dest / "01_explore.ipynb"
    nbformat.write(nb, str(path))
    return path


def _wait_all_executed(page, n_code: int, timeout_s: float) -> None:
    """Until every code cell shows an execution count (none '[*]' or '[ ]')."""
    deadline = time.monotonic() + timeout_s
    prompts: list[str] = []
    while time.monotonic() < deadline:
        prompts = page.locator(".jp-Notebook .jp-CodeCell .jp-InputArea-prompt").all_inner_texts()
        done = [p for p in prompts if re.search(r"\[\d+\]", p)]
        if len(prompts) == n_code and len(done) == n_code:
            return
        time.sleep(1.0)
    raise AssertionError(f"notebook did not finish within {timeout_s}s; prompts: {prompts}")


def test_explore_notebook_renders_offline(samples: Path, tmp_path: Path) -> None:
    require_browser()
    t0 = time.monotonic()
    root = tmp_path / "lab_root"
    root.mkdir()
    nb_path = _prepared_notebook(root, samples / "segmentation_3d" / "hippocampus")
    n_code = sum(c.cell_type == "code" for c in nbformat.read(str(nb_path), as_version=4).cells)
    SHOTS.mkdir(parents=True, exist_ok=True)
    net = NetworkLog()
    console: list[str] = []

    def listen(page) -> None:
        page.on("websocket", lambda ws: net.websockets.append(ws.url))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text[:300]}"))

    with lab_page(root, nb_path.name, net, viewport=(1400, 1000), on_page=listen) as (page, server):
        try:
            _wait_all_executed(page, n_code, timeout_s=150)
        except AssertionError:
            page.screenshot(path=str(SHOTS / "explore_failed.png"))
            raise
        errors = page.locator("[data-mime-type='application/vnd.jupyter.error']").all_inner_texts()
        assert not errors, f"cells raised: {errors[:2]}"

        browser2d = page.locator(".medwb-slice-browser").first
        browser2d.wait_for(state="visible", timeout=60_000)
        image2d = page.locator("img.medwb-slice-image").first
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image2d.element_handle(),
                               timeout=30_000)
        canvas = page.locator(".jp-OutputArea-output canvas").last
        canvas.wait_for(state="visible", timeout=60_000)
        page.wait_for_timeout(4000)  # niivue's first frames (SwiftShader WebGL is software)
        browser2d.screenshot(path=str(SHOTS / "explore_2d.png"))
        std2d, colours2d = image_stats(image2d.screenshot())
        shot3d = canvas.screenshot(path=str(SHOTS / "explore_3d.png"))
        std3d, colours3d = image_stats(shot3d)
        page.screenshot(path=str(SHOTS / "explore_page.png"))
        gl = page.evaluate("c => { const g = c.getContext('webgl2'); return g ? "
                           "g.getParameter(g.VERSION) : null; }", canvas.element_handle())
        # The 2D browser is live: a control change goes to the kernel and a new picture comes back.
        src_before = image2d.get_attribute("src")
        browser2d.locator("button", has_text=re.compile(r"^0$")).first.click()
        page.wait_for_function("([img, old]) => img.src !== old", arg=[image2d.element_handle(), src_before],
                               timeout=30_000)
        browser2d.screenshot(path=str(SHOTS / "explore_2d_axis0.png"))
        # Negative control: a request to a CDN from the page is caught and aborted by the guard.
        probe = page.evaluate("fetch('https://cdn.jsdelivr.net/npm/medwb-probe.js')"
                              ".then(() => 'loaded', () => 'blocked')")
    server_log = server.log()
    elapsed = time.monotonic() - t0
    summary = {
        "seconds": round(elapsed, 1), "requests": len(net.requests), "websockets": net.websockets,
        "blocked_non_loopback": net.blocked, "non_loopback_attempts": net.non_loopback(),
        "image2d_std": round(std2d, 1), "image2d_colours": colours2d, "canvas3d_std": round(std3d, 1),
        "canvas3d_colours": colours3d, "webgl": gl, "control_probe": probe,
    }
    (SHOTS / "offline_run.json").write_text(json.dumps(summary, indent=2))
    shutil.copy(server.log_path, SHOTS / "jupyterlab.log")
    print(json.dumps(summary, indent=2))

    # The guard works (the deliberate CDN probe was caught) ...
    probe_url = "https://cdn.jsdelivr.net/npm/medwb-probe.js"
    assert probe == "blocked" and probe_url in net.blocked
    # ... and apart from it nothing left (or tried to leave) the machine: page, websockets, server.
    attempted = [u for u in net.non_loopback() if u != probe_url]
    assert attempted == [], f"non-loopback requests attempted: {attempted}"
    assert set(net.non_loopback()) <= set(net.blocked)
    assert net.websockets and all(u.startswith("ws://127.0.0.1:") for u in net.websockets)
    assert "medwb is offline: blocked" not in server_log
    assert len(net.requests) > 20  # JupyterLab really loaded through the guard (not a vacuous pass)
    # Both views drew real pictures: a blank or one-colour element has std ~0 and a handful of colours.
    assert std2d > 20 and colours2d > 50, (std2d, colours2d)
    assert gl is not None, "niivue canvas has no WebGL2 context"
    assert std3d > 20 and colours3d > 200, (std3d, colours3d)
