"""The review app (``medwb review``) on a 3D segmentation study (MSD hippocampus), in headless Chromium: the reader
clicks a supervoxel in on a slice, opens "3D view" and sees the volume with the mask as edited so far in the offline
WebGL viewer (ipyniivue: three planes and a 3D render) beside the slices, then saves the mask with the editor's
"s" key. Non-loopback requests
are aborted and recorded (the test fails on any). Screenshot: reports/review_app_3d_view.png."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from browser.jupyterlab_driver import CHROMIUM_ARGS, NetworkLog, image_stats, open_click_editor

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not os.environ.get("CI") and not Path(CHROMIUM).is_file(),
                                 reason="needs Debian's chromium")]


def test_a_reader_sees_the_3d_view_of_the_mask_being_edited(samples: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from medwb.al.regions import study_regions
    from medwb.data import open_dataset
    from medwb.pipelines.review_app import ReviewServer
    from medwb.store import Study, read_mask

    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    case = next(c for c in ds.case_ids() if ds.load_mask(c) is not None)
    with Study.create(tmp_path / "study", dataset_path=str(ds.path), task=ds.task, classes=ds.classes) as s:
        s.add_cases(ds.cohort)
        s.start_round(1, "cold_start", {}, [case], [])
        s.save_proposals(1, [case])
        regions = study_regions(s, ds, case)  # cached in the study: the app's kernel reads the same maps
    rows, cols, depth = regions.shape[1:]
    k = depth // 2  # the slice the editor shows first (no pre-label: the middle)
    net = NetworkLog()
    shots = ROOT / "reports"
    shots.mkdir(exist_ok=True)
    with ReviewServer(tmp_path / "study", ["ana"]) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page, img = open_click_editor(browser, srv.links["ana"], net, viewport=(1100, 1400))
            box = img.bounding_box()
            assert box is not None
            img.click(position={"x": (cols // 2 + 0.5) * box["width"] / cols,
                                "y": (rows // 2 + 0.5) * box["height"] / rows})
            page.wait_for_function("document.body.innerText.includes('1 click(s)')", timeout=30_000)
            page.get_by_role("button", name="3D view").click()
            canvas = page.locator("canvas").last
            canvas.wait_for(state="visible", timeout=60_000)
            page.wait_for_timeout(4000)  # niivue's first frames (SwiftShader WebGL is software)
            gl = page.evaluate("c => { const g = c.getContext('webgl2'); return g ? "
                               "g.getParameter(g.VERSION) : null; }", canvas.element_handle())
            std, colours = image_stats(canvas.screenshot())
            page.screenshot(path=str(shots / "review_app_3d_view.png"), full_page=True)
            # the editor's keys: focus the editor (a click on its key hint), "s" saves the mask
            page.locator(".medwb-keycatcher").first.click()
            page.keyboard.press("s")
            page.wait_for_function("document.body.innerText.includes('Queue finished')", timeout=30_000)
        finally:
            browser.close()
    assert net.non_loopback() == [] and net.blocked == [], f"the app tried to reach: {net.non_loopback()}"
    assert gl is not None, "the 3D view's canvas has no WebGL2 context"
    assert std > 20 and colours > 200, (std, colours)  # a real picture, not a blank canvas
    with Study.open(tmp_path / "study") as s:
        lab = s.labels().set_index("case_id").loc[case]
        mask = read_mask(lab["mask_path"])
    assert lab["annotator"] == "ana" and mask[rows // 2, cols // 2, k] == 1
    assert np.array_equal(mask > 0, regions[0] == regions[0][rows // 2, cols // 2, k])
