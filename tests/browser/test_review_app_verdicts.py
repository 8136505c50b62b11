"""The review app (``medwb review``) serves the explanation verdict panel, in headless Chromium: a study with a
model and its explanations (``medwb explain STUDY DATA --out STUDY/exports/explain``); the reader opens the
"judge explanations" tab, judges a map and saves; the store holds the verdict under the reader the link names.
Non-loopback requests are aborted and recorded (the test fails on any). Screenshot: reports/review_app_verdicts.png."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from browser.jupyterlab_driver import NetworkLog, guard_context

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not os.environ.get("CI") and not Path(CHROMIUM).is_file(),
                                 reason="needs Debian's chromium")]


def test_a_reader_judges_an_explanation_in_the_app(samples: Path, tmp_path: Path, tiny_pneumonia_model) -> None:
    from playwright.sync_api import sync_playwright

    from medwb.data import open_dataset
    from medwb.explain.run import run_explain
    from medwb.models import save_checkpoint
    from medwb.pipelines.review_app import ReviewServer
    from medwb.store import Study

    data = samples / "classification_2d" / "pneumoniamnist.npz"
    ds = open_dataset(data, progress=False)
    folder = tmp_path / "study"
    with Study.create(folder, dataset_path=str(data), task=ds.task, classes=ds.classes) as s:
        s.add_cases(ds.cohort)
        s.add_model(1, save_checkpoint(tiny_pneumonia_model, s.checkpoint_path(1), {"round": 1}), {})
    run_explain(folder, data, method="gradcam", cases=2, out_dir=folder / "exports" / "explain", checks=False,
                progress=False)
    net = NetworkLog()
    shots = ROOT / "reports"
    shots.mkdir(exist_ok=True)
    with ReviewServer(folder, ["ana"]) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            context = browser.new_context(viewport={"width": 1100, "height": 1000})
            guard_context(context, net)
            page = context.new_page()
            page.goto(srv.links["ana"], wait_until="domcontentloaded", timeout=180_000)
            tab = page.get_by_role("tab", name="judge explanations")
            tab.wait_for(state="visible", timeout=180_000)
            tab.click()
            page.get_by_role("combobox", name="verdict").first.select_option(label="plausible")
            page.get_by_role("button", name="save verdicts").click()
            page.wait_for_function("document.body.innerText.includes('saved 1')", timeout=30_000)
            page.screenshot(path=str(shots / "review_app_verdicts.png"), full_page=True)
        finally:
            browser.close()
    assert net.non_loopback() == [] and net.blocked == [], f"the app tried to reach: {net.non_loopback()}"
    with Study.open(folder) as s:
        v = s.verdicts()
    assert len(v) == 1 and (v.iloc[0]["reviewer"], v.iloc[0]["verdict"], v.iloc[0]["method"]) == (
        "ana", "plausible", "gradcam")
