"""The validation report in a real browser (Debian's Chromium via Playwright, no download) and its PDF pages.

Every request that is not to this machine is aborted and recorded; the test fails if any was attempted.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _report_study import built_report
from browser.jupyterlab_driver import is_loopback_url

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
# Skipped only on a developer machine without the tools; in CI (CI set) a missing tool fails the test.
_IN_CI = bool(os.environ.get("CI"))
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _IN_CI and not Path(CHROMIUM).is_file(), reason="needs Debian's chromium")]


def _is_local(url: str) -> bool:
    return is_loopback_url(url, allow_file=True)  # the report is opened from disk


@pytest.fixture(scope="module")
def report(tmp_path_factory, samples):
    return built_report(tmp_path_factory, samples)


def test_html_report_in_headless_chromium_makes_no_external_request(report):
    from playwright.sync_api import sync_playwright

    attempted: list[str] = []
    shots = ROOT / "reports"
    shots.mkdir(exist_ok=True)

    def gate(route):
        if _is_local(route.request.url):
            route.continue_()
        else:
            attempted.append(route.request.url)
            route.abort()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.route("**/*", gate)
            page.on("request", lambda r: None if _is_local(r.url) else attempted.append(r.url))
            page.goto((report / "validation_report.html").as_uri(), wait_until="networkidle")
            drawn = page.evaluate("Array.from(document.images).filter(i => i.complete && i.naturalWidth > 100).length")
            headings = page.evaluate("Array.from(document.querySelectorAll('h2')).map(h => h.textContent)")
            page.screenshot(path=str(shots / "validation_report_browser.png"), full_page=True)
        finally:
            browser.close()
    assert attempted == [], f"the report tried to reach: {attempted}"
    assert drawn >= 4  # ROC/PR, confusion matrix, reliability diagram, learning curve
    assert any("Calibration" in h for h in headings) and any("Provenance" in h for h in headings)
    assert (shots / "validation_report_browser.png").stat().st_size > 50_000


@pytest.mark.skipif(not _IN_CI and shutil.which("pdftoppm") is None, reason="needs poppler-utils (pdftoppm)")
def test_pdf_pages_contain_the_figures(report, tmp_path):
    subprocess.run(["pdftoppm", "-r", "60", "-png", str(report / "validation_report.pdf"), str(tmp_path / "p")],
                   check=True, timeout=120)
    pages = sorted(tmp_path.glob("p-*.png"))
    assert len(pages) >= 5
    shutil.copy(pages[0], ROOT / "reports" / "validation_report_pdf_page1.png")
    coloured = []
    for p in pages:
        a = np.asarray(Image.open(p).convert("RGB")).astype(int)
        sat = a.max(axis=2) - a.min(axis=2)  # text is grey/black; plots are coloured
        coloured.append(int((sat > 60).sum()))
    assert sum(c > 300 for c in coloured) >= 3, coloured  # plots (coloured) on at least three pages
