"""The region-click editor in a real JupyterLab page (headless Chromium, every non-loopback request aborted).

The HC18 image (800 px wide) is drawn 480 px wide, so a click lands on the right image pixel only if the
ClickImage's JavaScript scales page pixels to image pixels. The test clicks, shift-clicks and clicks again at
one point, saves, and checks the store holds exactly the coarse region under that pixel, with its clicks noted.
"""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from jupyterlab_driver import NetworkLog, lab_page, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
WIDTH = 480  # drawn width of the 800 px image


def _notebook(root: Path, data: Path, case: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "from medwb.data import open_dataset\nfrom medwb.store import Study\n"
        "from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue\n"
        f"ds = open_dataset({str(data)!r}, progress=False)\nstudy = Study.open({str(root / 'study')!r})\n"
        f"q = SegmentationReviewQueue(study, ds, [{case!r}], annotator='dr_b', min_view_seconds=0, "
        f"display_px={WIDTH})\nq")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = root / "regions.ipynb"
    nbformat.write(nb, str(path))
    return path


def test_clicks_on_the_page_edit_the_region_under_the_pixel(samples: Path, tmp_path: Path) -> None:
    require_browser()
    from medwb.al.regions import study_regions
    from medwb.data import open_dataset
    from medwb.store import Study, read_mask

    data = samples / "segmentation_2d" / "hc18"
    ds = open_dataset(data, progress=False)
    case = ds.case_ids()[0]
    root = tmp_path / "lab_root"
    root.mkdir()
    with Study.create(root / "study", dataset_path=str(data), task=ds.task, classes=ds.classes) as s:
        s.add_cases(ds.cohort)
        regions = study_regions(s, ds, case)  # cached in the study: the kernel reads the same maps
    rows, cols = regions.shape[1:]
    # a point well inside one coarse region (so a sub-pixel difference in the page cannot change the answer)
    r, c = next((r, c) for r in range(rows // 2, rows - 8, 4) for c in range(cols // 2, cols - 8, 4)
                if len(np.unique(regions[0][r - 6:r + 7, c - 6:c + 7])) == 1)
    want = (regions[0] == regions[0][r, c]).astype(np.int64)
    nb_path = _notebook(root, data, case)
    net = NetworkLog()
    with lab_page(root, nb_path.name, net, viewport=(1300, 1100)) as (page, _):
        img = page.locator("img.medwb-click-image").first
        img.wait_for(state="visible", timeout=120_000)
        page.wait_for_function("document.querySelector('img.medwb-click-image').naturalWidth > 0",
                               timeout=60_000)
        box = img.bounding_box()
        assert box is not None and abs(box["width"] - WIDTH) < 1.5  # drawn smaller than the image
        at = {"x": (c + 0.5) * box["width"] / cols, "y": (r + 0.5) * box["height"] / rows}

        def counter(n: int) -> str:
            want_text = f"{n} click(s)"
            page.wait_for_function(
                "t => Array.from(document.querySelectorAll('.widget-html-content'))"
                ".some(e => e.innerText.startsWith(t))", arg=want_text, timeout=30_000)
            return next(t for t in page.locator(".widget-html-content").all_inner_texts()
                        if t.startswith(want_text))

        img.click(position=at)
        assert f"mask: {int(want.sum())} voxel(s)" in counter(1)
        img.click(position=at, modifiers=["Shift"])  # shift-click takes the region out again
        assert "mask: 0 voxel(s)" in counter(2)
        img.click(position=at)
        assert f"mask: {int(want.sum())} voxel(s)" in counter(3)
        page.screenshot(path=str(ROOT / "reports" / "region_click_jupyterlab.png"))
        page.get_by_role("button", name="save mask").click()
        page.wait_for_function("document.body.innerText.includes('Queue finished')", timeout=30_000)
        assert not img.is_visible()  # the finished queue shows no picture (and no broken-image icon)
    assert net.non_loopback() == []
    with Study.open(root / "study") as s:
        lab = s.labels().iloc[0]
        assert (lab["case_id"], lab["annotator"], lab["source"]) == (case, "dr_b", "human")
        assert lab["note"].startswith("region-click, 3 clicks")
        assert np.array_equal(read_mask(lab["mask_path"]), want)
