"""The review app (``medwb review``) on a segmentation study, in headless Chromium: the reader's page is the
region-click editor; a click on the picture adds the structure-model region under that image pixel and "save mask"
stores it under the reader from the link, with the round and the click count. A case whose model mask the loop
stored starts from that mask, and saving it unchanged stores it as the reader's ``human`` label. Non-loopback
requests are aborted and recorded (the test fails on any)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from browser.jupyterlab_driver import NetworkLog, open_click_editor

CHROMIUM = "/usr/bin/chromium"
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not os.environ.get("CI") and not Path(CHROMIUM).is_file(),
                                 reason="needs Debian's chromium")]


def test_a_reader_builds_a_mask_by_region_clicks_in_the_app(samples: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    from medwb.al.regions import study_regions
    from medwb.data import open_dataset
    from medwb.pipelines.review_app import ReviewServer
    from medwb.store import Study, read_mask

    from medwb.models import build_segmenter, save_checkpoint

    ds = open_dataset(samples / "segmentation_2d" / "hc18", progress=False)
    case, case2 = [c for c in ds.case_ids() if ds.load_mask(c) is not None][:2]
    pred = np.asarray(ds.load_mask(case2))[0]  # the model's mask of case2, as loop.propose stores it
    with Study.create(tmp_path / "study", dataset_path=str(ds.path), task=ds.task, classes=ds.classes) as s:
        s.add_cases(ds.cohort)
        version = s.add_model(1, save_checkpoint(build_segmenter(2, 1, 2, seed=0, channels=(4, 8)),
                                                 s.checkpoint_path(1), {"round": 1}), {})
        s.start_round(2, "entropy", {}, [case, case2], [])
        s.save_proposals(2, [case, case2], model_version=version)
        s.save_predicted_mask(2, case2, pred, model_version=version)  # case: none stored, it starts empty
        regions = study_regions(s, ds, case)  # cached in the study: the app's kernel reads the same maps
        study_regions(s, ds, case2)
    rows, cols = regions.shape[1:]
    r, c = next((r, c) for r in range(rows // 2, rows - 8, 4) for c in range(cols // 2, cols - 8, 4)
                if len(np.unique(regions[0][r - 6:r + 7, c - 6:c + 7])) == 1)  # well inside one coarse region
    want = (regions[0] == regions[0][r, c]).astype(np.int64)
    net = NetworkLog()
    with ReviewServer(tmp_path / "study", ["ana"]) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            page, img = open_click_editor(browser, srv.links["ana"], net, viewport=(1100, 1000))
            box = img.bounding_box()
            assert box is not None
            img.click(position={"x": (c + 0.5) * box["width"] / cols, "y": (r + 0.5) * box["height"] / rows})
            page.wait_for_function("document.body.innerText.includes('1 click(s)')", timeout=30_000)
            page.wait_for_timeout(600)  # the minimum viewing time
            page.get_by_role("button", name="save mask").click()
            # the next case starts from the model's stored mask: saved as is, it is accepted
            page.wait_for_function(f"document.body.innerText.includes('pre-label of model {version}')",
                                   timeout=30_000)
            page.wait_for_function(f"document.body.innerText.includes('mask: {int(pred.sum())} voxel(s)')",
                                   timeout=30_000)
            page.wait_for_timeout(600)
            page.get_by_role("button", name="save mask").click()
            page.wait_for_function("document.body.innerText.includes('Queue finished')", timeout=30_000)
            assert "medwb review: ana" in page.inner_text("body")
        finally:
            browser.close()
    assert net.non_loopback() == [] and net.blocked == [], f"the app tried to reach: {net.non_loopback()}"
    with Study.open(tmp_path / "study") as s:
        labs = s.labels().set_index("case_id")
        lab = labs.loc[case]
        assert (lab["annotator"], lab["source"], lab["round"]) == ("ana", "human", 2)
        assert lab["note"].startswith("region-click, 1 click")
        assert np.array_equal(read_mask(lab["mask_path"]), want)
        lab = labs.loc[case2]  # the model's mask, accepted unchanged
        assert (lab["annotator"], lab["source"], lab["round"], lab["model_version"]) == ("ana", "human", 2, version)
        assert lab["note"] == "region-click, 0 clicks: mask unchanged from pre-label"
        assert np.array_equal(read_mask(lab["mask_path"]), pred)
        assert s.case_status(2)["decided"].all()
