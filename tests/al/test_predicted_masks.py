"""The model's predicted masks of a segmentation round: written to the study when the loop proposes, and the review
app's reader starts the region-click editor from them (issue 14: "the reader's mask editor does not start from the
model's predicted mask"). Saved unchanged it is the reader's ``human`` label (an accepted pre-label), edited it is
``corrected``; a study without stored masks starts empty as before."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medwb.store import Study, read_mask


def _seg_loop(study: Study, ds, batch_size: int):
    from medwb.al.loop import ActiveLearningLoop
    from medwb.models import TrainConfig

    cfg = TrainConfig(epochs=1, min_epochs=1, batch_size=2, patience=1, seed=0)  # one short epoch: any real model
    return ActiveLearningLoop(study, ds, strategy="random", batch_size=batch_size, seed=0, progress=False,
                              pretrain=False, semi=False, train_config=cfg, mc_passes=2)


def test_a_segmentation_round_stores_its_predicted_masks_and_the_reader_starts_from_them(
        tmp_path: Path, hc18) -> None:
    from medwb.al.oracle import simulated_oracle
    from medwb.al.prelabels import prelabel_mask, uncertainty_map
    from medwb.ui.widgets.reader import reader_queue
    from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue

    study = Study.create(tmp_path / "s", dataset_path=str(hc18.path), task=hc18.task, classes=hc18.classes)
    loop = _seg_loop(study, hc18, 3)
    b1 = loop.propose()  # round 1, no model yet: nothing to predict, the readers start empty (as before)
    assert len(study.predicted_masks()) == 0 and study.predicted_mask(1, b1["case_id"][0]) is None
    first = loop.run_round(simulated_oracle(hc18))
    batch = loop.propose()  # round 2: the round-1 model's masks are stored with the proposals
    version = first.model_version
    ids = batch["case_id"].tolist()
    stored = study.predicted_masks(2)
    assert stored["case_id"].tolist() == sorted(ids) and set(stored["model_version"]) == {version}
    for cid, path in zip(stored["case_id"], stored["mask_path"]):
        assert Path(path) == study.layout.predicted_mask(2, cid) and np.load(path).dtype == np.uint8  # compact
        assert np.array_equal(study.predicted_mask(2, cid), prelabel_mask(loop, cid))
        assert study.predicted_mask(2, cid).shape == hc18.load_image(cid).shape[1:]  # the image's own grid
        # with the model's MC-dropout entropy map, as the notebook's review computes it
        assert np.allclose(study.predicted_uncertainty(2, cid), uncertainty_map(loop, cid), atol=2e-3)
    when = stored["created_at"].tolist()
    loop.propose()  # a reopened round keeps its masks
    assert study.predicted_masks(2)["created_at"].tolist() == when

    Path(stored["mask_path"].iloc[-1]).unlink()  # a damaged study: that case's mask is gone
    lost = stored["case_id"].iloc[-1]
    ana = reader_queue(study, "ana", min_view_seconds=0)
    assert isinstance(ana, SegmentationReviewQueue)
    accepted = corrected = None
    for _ in range(3):
        cid, shown = ana.current, ana.editor.mask.copy()
        if cid == lost:  # no traceback: the case starts empty, the page names the missing file and the fix
            assert not shown.any() and "could not be shown" in ana.title.value
            assert Path(stored["mask_path"].iloc[-1]).name in ana.title.value and "propose the round" in ana.title.value
            ana.click(270, 400)
        else:
            pred = study.predicted_mask(2, cid)
            assert pred.any() and np.array_equal(shown, pred)  # the model's mask, not an empty start
            # the stored entropy map is drawn beside the case and cuts the editor's edge bands
            assert ana.editor.uncertainty is not None and ana.editor.umap_box.layout.display is None
            assert [n for n, _ in ana.editor.level.options][-1] == "unsure edge (fine)"
            assert f"pre-label</b> of model <code>{version}</code>" in ana.title.value
            if accepted is None:  # saved as is
                accepted = cid
            else:  # one region changed: removed where the model predicted it, else added
                assert ana.click(270, 400, shift=bool(pred[270, 400])) > 0
                corrected, edited = cid, ana.editor.mask.copy()
        ana.editor.b_save.click()
    assert ana.done
    labs = study.labels().set_index("case_id")
    assert labs.loc[accepted, "source"] == "human" and "unchanged from pre-label" in labs.loc[accepted, "note"]
    assert np.array_equal(read_mask(labs.loc[accepted, "mask_path"]), study.predicted_mask(2, accepted))
    assert labs.loc[corrected, "source"] == "corrected" and "corrected pre-label mask" in labs.loc[corrected, "note"]
    assert np.array_equal(read_mask(labs.loc[corrected, "mask_path"]), edited)
    assert not np.array_equal(edited, study.predicted_mask(2, corrected))
    assert labs.loc[lost, "source"] == "human"  # no pre-label shown: the reader's own mask
    assert (labs.loc[ids, "round"] == 2).all() and (labs.loc[ids, "model_version"] == version).all()
    assert (labs.loc[ids, "annotator"] == "ana").all()
    study.close()
