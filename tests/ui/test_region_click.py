"""The region-click mask editor and the segmentation review queue on real bundled cases (HC18 ultrasound, the
hippocampus MR volumes). Clicks are sent as the page sends them: a comm message to the ClickImage widget."""
from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medwb.store import Study, read_mask
from medwb.ui.widgets.region_click import ClickImage, RegionClickEditor
from medwb.ui.widgets.review import NO_PROPOSAL_NOTE
from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue


def send_click(canvas: ClickImage, row: int, col: int, shift: bool = False) -> None:
    """What the browser's click does: a custom comm message, handled by the widget's message dispatch."""
    canvas._handle_msg({"content": {"data": {"method": "custom", "content": {
        "type": "click", "row": row, "col": col, "shift": shift}}}, "buffers": []})


def png_size(src: str) -> tuple[int, int]:
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))) as im:
        return im.size


def make_study(folder: Path, ds, classes=None) -> Study:
    s = Study.create(folder, dataset_path=str(ds.path), task=ds.task, classes=classes or ds.classes)
    s.add_cases(ds.cohort)
    return s


def labelled(ds, n: int) -> list[str]:
    return [c for c in ds.case_ids() if ds.load_mask(c) is not None][:n]


def test_click_adds_exactly_the_region_shift_click_removes_undo_restores(tmp_path: Path, hc18) -> None:
    s = make_study(tmp_path / "s", hc18)
    case = labelled(hc18, 1)[0]
    q = SegmentationReviewQueue(s, hc18, [case], annotator="dr_r", min_view_seconds=0)
    e, regions = q.editor, q.regions(case)
    assert regions.shape[1:] == hc18.load_image(case).shape[1:]
    assert [lab for lab, _ in e.level.options] == ["coarse", "medium", "fine"]
    assert (e.canvas.rows, e.canvas.cols) == regions.shape[1:]  # clicks come back in image pixels
    r, c = 270, 400  # the middle of the image (the fetal head)
    coarse = regions[0] == regions[0][r, c]
    send_click(e.canvas, r, c)
    assert np.array_equal(e.mask, coarse.astype(np.int64)) and e.clicks == 1
    assert f"region {regions[0][r, c]} (coarse)" in e.info.value and "fetal head" in e.info.value

    e.level.value = 2  # fine: shift-click takes the one fine region under the pixel out
    fine = regions[2] == regions[2][r, c]
    send_click(e.canvas, r, c, shift=True)
    assert np.array_equal(e.mask, (coarse & ~fine).astype(np.int64)) and e.clicks == 2
    e.mode.value = "remove"  # the remove mode does the same without shift: here nothing is left to take out
    assert send_click(e.canvas, r, c) is None and e.clicks == 3
    assert np.array_equal(e.mask, (coarse & ~fine).astype(np.int64))

    e.b_undo.click()  # the no-op click is skipped: the fine region comes back
    assert np.array_equal(e.mask, coarse.astype(np.int64))
    e.b_undo.click()
    assert not e.mask.any()
    e.b_undo.click()  # nothing left: refused on the page, the mask unchanged
    assert "nothing to undo" in e.info.value and not e.mask.any()
    send_click(e.canvas, r, c)  # remove mode on an empty mask: nothing added
    assert not e.mask.any()
    e.mode.value = "add"
    send_click(e.canvas, r, c)
    e.b_clear.click()
    assert not e.mask.any()
    e.b_undo.click()  # clear is undone like a click
    assert np.array_equal(e.mask, fine.astype(np.int64))
    send_click(e.canvas, 10_000, 3)  # outside the image (a stale page): ignored
    assert e.clicks == 5
    s.close()


def test_picture_grid_and_zoom(tmp_path: Path, hc18) -> None:
    """The PNG is drawn at display size (width_px wide, the image's aspect); zoom changes the drawing, never the
    grid clicks are reported in."""
    s = make_study(tmp_path / "s", hc18)
    q = SegmentationReviewQueue(s, hc18, labelled(hc18, 1), annotator="dr_r", min_view_seconds=0, display_px=300)
    e = q.editor
    rows, cols = e.canvas.rows, e.canvas.cols
    assert png_size(e.canvas.src) == (300, round(rows * 300 / cols)) and e.canvas.width_px == 300
    e.zoom.value = 3
    assert png_size(e.canvas.src) == (900, round(rows * 900 / cols)) and e.canvas.width_px == 900
    assert (e.canvas.rows, e.canvas.cols) == (rows, cols)
    before = e.canvas.src
    e.edges.value = False  # region edges off: a different picture
    assert e.canvas.src != before
    s.close()


def test_class_picker_shows_names_and_stores_the_class_value(tmp_path: Path, hc18) -> None:
    """Classes numbered 0, 3, 7: the picker shows the names only; choosing "head" (second button) stores 7, not
    its position or a key."""
    s = make_study(tmp_path / "s", hc18, classes={0: "background", 3: "skull", 7: "head"})
    case = labelled(hc18, 1)[0]
    q = SegmentationReviewQueue(s, hc18, [case], annotator="dr_c", min_view_seconds=0)
    e, regions = q.editor, q.regions(case)
    assert [lab for lab, _ in e.label.options] == ["skull", "head"]
    e.label.label = "head"
    send_click(e.canvas, 270, 400)
    e.label.label = "skull"
    e.level.value = 2
    send_click(e.canvas, 30, 30)
    assert set(np.unique(e.mask)) == {0, 3, 7}
    assert (e.mask[regions[0] == regions[0][270, 400]] == 7).all()
    shown = e.mask.copy()
    e.b_save.click()
    lab = s.labels().iloc[0]
    assert np.array_equal(read_mask(lab["mask_path"]), shown)
    s.close()


def test_3d_click_on_a_slice_adds_the_supervoxel_in_every_slice(tmp_path: Path, hippocampus) -> None:
    s = make_study(tmp_path / "h", hippocampus)
    case = labelled(hippocampus, 1)[0]
    q = SegmentationReviewQueue(s, hippocampus, [case], annotator="dr_h", min_view_seconds=0)
    e, regions = q.editor, q.regions(case)
    assert "every slice it spans" in e.help.value and e.slice.layout.display is None
    assert e.slice.max == regions.shape[-1] - 1 and (e.canvas.rows, e.canvas.cols) == regions.shape[1:3]
    e.label.label = "Posterior"
    e.level.value = 1
    k = e.slice.value
    r, c = regions.shape[1] // 2, regions.shape[2] // 2
    region = regions[1] == regions[1][r, c, k]
    send_click(e.canvas, r, c)
    assert np.array_equal(e.mask, 2 * region.astype(np.int64))
    spans = np.flatnonzero(region.any(axis=(0, 1)))
    assert len(spans) > 1 and f"slices {spans.min()}-{spans.max()}" in e.info.value
    other = int(spans[0] if spans[0] != k else spans[-1])
    e.slice.value = other  # on another slice the same supervoxel is in the mask already
    assert (e.mask[..., other] == 2).sum() == region[..., other].sum() > 0
    send_click(e.canvas, *np.argwhere(region[..., other])[0], shift=True)  # removed from there: gone everywhere
    assert not e.mask.any()
    send_click(e.canvas, *np.argwhere(region[..., other])[0])
    shown = e.mask.copy()
    q.save()
    lab = s.labels().iloc[0]
    assert shown.ndim == 3 and np.array_equal(read_mask(lab["mask_path"]), shown)
    assert lab["note"].startswith("region-click, 3 clicks") and lab["source"] == "human"
    s.close()


def test_a_prelabel_brings_edge_band_levels_that_move_its_edge_by_a_voxel(tmp_path: Path, hippocampus) -> None:
    """With a pre-label the editor also offers thin regions along its edges (``with_edge_bands``); clicking one
    just outside the pre-label moves its edge out by one voxel there and nowhere else. With the model's
    uncertainty map the bands come cut where it is unsure too; without a pre-label only the supervoxels."""
    from skimage.segmentation import find_boundaries

    s = make_study(tmp_path / "h", hippocampus)
    a, b = labelled(hippocampus, 2)
    pre = (hippocampus.load_mask(a)[0] > 0).astype(np.int64)  # one class: the whole hippocampus as "Anterior"
    unsure = {a: find_boundaries(pre, connectivity=1, mode="thick").astype(float)}
    q = SegmentationReviewQueue(s, hippocampus, [a, b], [pre, None], annotator="dr_b", min_view_seconds=0,
                                uncertainty=unsure.get)
    e = q.editor
    names = [n for n, _ in e.level.options]
    assert names == ["coarse", "medium", "fine", "edge bands (coarse)", "edge bands (medium)", "edge bands (fine)",
                     "unsure edge (coarse)", "unsure edge (medium)", "unsure edge (fine)"]
    e.level.value = 5
    edge_out = find_boundaries(pre, connectivity=1, mode="thick") & (pre == 0)
    k = int(np.argmax(edge_out.sum(axis=(0, 1))))  # the slice with most of the outer edge
    e.slice.value = k
    r, c = np.argwhere(edge_out[..., k])[0]
    e.label.value = 1
    send_click(e.canvas, int(r), int(c))
    added = (e.mask > 0) & (pre == 0)
    assert added[r, c, k] and added.sum() > 0 and (added <= edge_out).all()  # only voxels touching the edge
    assert ((e.mask > 0) | ~(pre > 0)).all()  # nothing of the pre-label was lost
    q.save()
    assert q.current == b and [n for n, _ in e.level.options] == ["coarse", "medium", "fine"]
    s.close()


def test_save_writes_labels_with_provenance(tmp_path: Path, hc18) -> None:
    """Save goes through the study's label writer: a pre-label saved as is is ``human``, a changed one
    ``corrected``, no pre-label ``human``; round, annotator and the note with the clicks used; the stored mask
    reads back equal to the one shown. 'previous case' takes the saved mask back."""
    s = make_study(tmp_path / "s", hc18)
    ids = labelled(hc18, 3)
    truth = {c: hc18.load_mask(c) for c in ids}
    q = SegmentationReviewQueue(s, hc18, ids, [truth[ids[0]], truth[ids[1]], None], annotator="dr_p", round=1,
                                min_view_seconds=0)
    e = q.editor
    assert np.array_equal(e.mask, truth[ids[0]][0]) and "pre-label" in q.title.value
    e.b_save.click()  # accepted as is
    assert q.current == ids[1] and np.array_equal(e.mask, truth[ids[1]][0])
    e.level.value = 2
    outside = np.argwhere(truth[ids[1]][0] == 0)[0]
    send_click(e.canvas, *outside)
    send_click(e.canvas, *np.argwhere(truth[ids[1]][0] == 1)[0], shift=True)
    corrected = e.mask.copy()
    assert e.changed
    e.b_save.click()
    assert q.current == ids[2] and not e.mask.any() and "no pre-label" in q.title.value
    e.b_save.click()  # nothing clicked on an empty mask: refused
    assert "nothing clicked" in q.queue.status.value and q.current == ids[2]
    send_click(e.canvas, 270, 400)
    drawn = e.mask.copy()
    e.b_save.click()
    assert q.done and "Queue finished" in q.title.value and e.b_save.disabled

    labs = s.labels().set_index("case_id")
    assert list(labs.loc[ids, "source"]) == ["human", "corrected", "human"]
    assert list(labs.loc[ids, "note"]) == ["region-click, 0 clicks: mask unchanged from pre-label",
                                           "region-click, 2 clicks: corrected pre-label mask",
                                           f"region-click, 1 click: {NO_PROPOSAL_NOTE}"]
    assert (labs["round"] == 1).all() and set(labs["annotator"]) == {"dr_p"}
    for cid, shown in zip(ids, [truth[ids[0]][0], corrected, drawn]):
        assert np.array_equal(read_mask(labs.loc[cid, "mask_path"]), shown)
    assert [d["clicks"] for d in q.decisions] == [0, 2, 1]

    q.b_back.click()  # previous case: its label retracted, shown again from its start
    assert q.current == ids[2] and ids[2] not in set(s.labels()["case_id"]) and not e.mask.any()
    q.flag("unsure where the skull ends")
    assert q.done and s.review_queue()["case_id"].tolist() == [ids[2]]
    s.close()


def test_review_next_round_shows_a_segmentation_round_as_region_clicks(tmp_path: Path, hc18, capsys) -> None:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.ui.widgets.review import review_next_round

    s = Study.create(tmp_path / "s", dataset_path=str(hc18.path), task=hc18.task, classes=hc18.classes)
    loop = ActiveLearningLoop(s, hc18, strategy="entropy", batch_size=2, seed=0, progress=False, pretrain=False,
                              semi=False)
    q = review_next_round(loop, annotator="dr_l")
    assert isinstance(q, SegmentationReviewQueue) and "clicking its regions" in capsys.readouterr().out
    import time

    time.sleep(0.5)  # the queue's minimum viewing time
    send_click(q.editor.canvas, 270, 400)
    q.editor.b_save.click()
    lab = s.labels().iloc[0]
    assert lab["round"] == 1 and lab["source"] == "human" and lab["note"].startswith("region-click, 1 click")
    s.close()


def test_editor_refuses_regions_on_another_grid() -> None:
    from medwb.errors import DataError

    e = RegionClickEditor({0: "background", 1: "x"})
    with pytest.raises(DataError, match="regions of shape"):
        e.load(np.zeros((1, 8, 8), np.float32), np.zeros((2, 8, 9), np.int32))
    with pytest.raises(DataError, match="no foreground class"):
        RegionClickEditor({0: "background"})


def press(e: RegionClickEditor, key: str) -> None:
    """What a key pressed on the editor sends: the KeyCatcher's key and count, synced from the page."""
    e.catcher.key = key
    e.catcher.count += 1


def test_keys_drive_the_editor_class_mode_level_slice_undo_and_save(tmp_path: Path, hippocampus) -> None:
    s = make_study(tmp_path / "h", hippocampus)
    case = labelled(hippocampus, 1)[0]
    q = SegmentationReviewQueue(s, hippocampus, [case], annotator="dr_h", min_view_seconds=0)
    e, regions = q.editor, q.regions(case)
    assert "u undo click" in e.catcher.hint and ", previous slice" in e.catcher.hint
    press(e, "2")
    assert e.label.value == 2 and e.label.label == "Posterior"
    press(e, "7")  # no such class: said on the editor, nothing changes
    assert "no foreground class" in e.info.value and e.label.value == 2
    press(e, "l")
    assert e.level.value == 1
    k = e.slice.value
    press(e, ".")
    press(e, ".")
    press(e, ",")
    assert e.slice.value == k + 1
    r, c = regions.shape[1] // 2, regions.shape[2] // 2
    send_click(e.canvas, r, c)
    region = regions[1] == regions[1][r, c, k + 1]
    assert np.array_equal(e.mask, 2 * region.astype(np.int64))
    press(e, "m")
    assert e.mode.value == "remove"
    send_click(e.canvas, r, c)
    assert not e.mask.any()
    press(e, "u")  # the removal taken back
    assert np.array_equal(e.mask, 2 * region.astype(np.int64))
    press(e, "e")
    assert e.edges.value is False
    press(e, "s")
    assert q.done and np.array_equal(read_mask(s.labels().iloc[0]["mask_path"]), 2 * region.astype(np.int64))
    s.close()
