"""Issue 14, defect 2: in JupyterLab, keys pressed on the review queue act on the queue, never on JupyterLab.

Before the fix, clicking the image and pressing ``a`` inserted a cell and ``r`` turned the review cell into a Raw
cell. Here a real JupyterLab 4 in headless Chromium (every non-loopback request aborted) runs a notebook with a
review queue; the test clicks the image and presses ``1``, ``a``, ``r`` and ``m``: the store gets the class-1
label and the reject, and the notebook still has its two code cells, none inserted or changed.
"""
from __future__ import annotations

import time
from pathlib import Path

import nbformat
import pytest

from jupyterlab_driver import NetworkLog, lab_page, require_browser

pytestmark = [pytest.mark.browser, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def _notebook(root: Path, samples: Path) -> tuple[Path, list[str]]:
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.data import open_dataset
    from medwb.store import Study

    data = tiny_pneumonia_npz(samples / PNEUMONIA, root / "p.npz", n_train=6, n_val=4, n_test=4)
    ds = open_dataset(data, progress=False)
    ids = list(ds.cohort.loc[ds.cohort["split"] == "train", "case_id"])[:3]
    with Study.create(root / "study", dataset_path=str(data), task=ds.task, classes=ds.classes) as s:
        s.add_cases(ds.cohort)
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(
            "from medwb.data import open_dataset\nfrom medwb.store import Study\n"
            "from medwb.ui.widgets.review import ReviewQueue\n"
            f"study = Study.open({str(root / 'study')!r})\nds = open_dataset({str(data)!r}, progress=False)\n"
            f"q = ReviewQueue(study, {ids!r}, None, ds.load_image, annotator='dr_k')\nq"),
        nbformat.v4.new_code_cell("print('the next cell')"),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = root / "review.ipynb"
    nbformat.write(nb, str(path))
    return path, ids


def test_keys_on_the_review_queue_never_reach_jupyterlab(samples: Path, tmp_path: Path) -> None:
    require_browser()
    from medwb.store import Study

    root = tmp_path / "lab_root"
    root.mkdir()
    nb_path, ids = _notebook(root, samples)
    net = NetworkLog()
    with lab_page(root, nb_path.name, net) as (page, _):
        image = page.locator(".jp-OutputArea-output .widget-image").first
        image.wait_for(state="visible", timeout=120_000)
        page.wait_for_timeout(1500)  # the widget views settle

        def press(key: str, expect: str) -> str:
            time.sleep(0.7)  # a case must be on screen 0.5 s before it can be decided
            image.click()
            page.keyboard.press(key)
            page.wait_for_function(
                "want => Array.from(document.querySelectorAll('.widget-html-content'))"
                ".some(e => e.innerText.startsWith(want))", arg=expect, timeout=60_000)
            return next(t for t in page.locator(".widget-html-content").all_inner_texts()
                        if t.startswith(expect))

        assert press("1", f"saved case {ids[0]} as 1:")
        assert "no pre-label" in press("a", "not saved")  # nothing to accept; and no cell inserted
        assert press("r", f"saved case {ids[1]} rejected")
        press("m", "key 'm'")  # not a review key: refused by the queue, and no markdown cell either
        page.screenshot(path=str(ROOT / "reports" / "review_queue_jupyterlab_keys.png"))
        cells = page.locator(".jp-Notebook .jp-Cell")
        kinds = [c.get_attribute("class") for c in cells.all()]
    assert len(kinds) == 2 and all("jp-CodeCell" in k for k in kinds), kinds  # none inserted or converted
    assert [u for u in net.non_loopback()] == []
    with Study.open(root / "study") as s:
        lab = s.labels()
        assert lab[["case_id", "value", "annotator"]].values.tolist() == [[ids[0], 1, "dr_k"]]
        assert s.review_queue()["case_id"].tolist() == [ids[1]]
