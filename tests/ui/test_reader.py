"""The review app's reader page without a browser: tokens name readers, leases feed each reader's queue."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medwb.errors import ConfigError


@pytest.fixture
def open_round(samples: Path, tmp_path: Path):
    from _fixtures import tiny_pneumonia_loop

    study, _, loop = tiny_pneumonia_loop(samples, tmp_path)
    batch = list(loop.propose()["case_id"])
    yield study, batch
    study.close()


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_token_names_the_reader(tmp_path: Path) -> None:
    from medwb.ui.widgets.reader import reader_from_query, token_digest

    f = tmp_path / "r.json"
    f.write_text(json.dumps({token_digest("s3cret"): "ana"}))
    assert reader_from_query("token=s3cret", f) == "ana"
    assert reader_from_query("token=other", f) is None and reader_from_query("", f) is None
    assert "s3cret" not in f.read_text()  # only digests are kept


def test_two_queues_share_a_round_through_leases(open_round) -> None:
    from medwb.ui.widgets.reader import reader_queue, round_progress

    study, batch = open_round
    clock = Clock()
    ana = reader_queue(study, "ana", ttl=60, min_view_seconds=0, clock=clock)
    ben = reader_queue(study, "ben", ttl=60, min_view_seconds=0, clock=clock)
    assert ana.current == batch[0] and ben.current == batch[1]  # never the same case
    assert ana.annotator.disabled and ana.annotator.value == "ana"
    ana.keys.value = "1"
    assert ana.current == batch[2]  # the next undecided, unleased case
    assert "Round 1: 1 of 4 cases decided" in round_progress(study)
    # ben leaves his case on screen past the lease; ana's queue takes it over once she is free
    clock.t += 61
    ana.keys.value = "0"  # decides batch[2]
    assert ana.current == batch[1]  # ben's lapsed lease: the case goes to ana
    ben.keys.value = "1"  # ben comes back and answers: refused, nothing written, told why
    assert "went to another reader" in ben.status.value and "not saved" in ben.status.value
    lab = study.labels()
    assert batch[1] not in set(lab["case_id"])
    assert ben.current == batch[3]  # his next case
    ben.keys.value = "0"
    ana.keys.value = "1"
    got = study.labels().set_index("case_id")
    assert sorted(got.index) == sorted(batch)
    assert got.loc[batch[1], "annotator"] == "ana" and got.loc[batch[3], "annotator"] == "ben"
    assert ana.done and ben.done


def test_undo_takes_the_case_back_for_the_same_reader(open_round) -> None:
    from medwb.ui.widgets.reader import reader_queue

    study, batch = open_round
    ana = reader_queue(study, "ana", min_view_seconds=0)
    ana.keys.value = "1"
    ana.keys.value = "u"
    assert ana.current == batch[0] and len(study.labels()) == 0
    assert study.holds_lease(batch[0], "ana")
    ben = reader_queue(study, "ben", min_view_seconds=0)
    assert ben.current == batch[2]  # the undone case and the one ana had on screen stay with her
    ana.keys.value = "0"
    assert ana.current == batch[1] and study.labels().set_index("case_id").loc[batch[0], "value"] == 0


def test_page_without_a_valid_token_says_so(open_round, tmp_path: Path) -> None:
    from medwb.ui.widgets.reader import READERS_ENV, STUDY_ENV, reader_page, token_digest

    study, _ = open_round
    f = tmp_path / "r.json"
    f.write_text(json.dumps({token_digest("tok"): "ana"}))
    env = {STUDY_ENV: str(study.folder), READERS_ENV: str(f)}
    assert "does not name a reader" in reader_page({**env, "QUERY_STRING": "token=bad"}).value
    page = reader_page({**env, "QUERY_STRING": "token=tok"})
    assert "medwb review: ana" in page.children[0].value
    broken = reader_page({**env, STUDY_ENV: str(tmp_path / "nowhere"), "QUERY_STRING": "token=tok"})
    assert "could not open" in broken.value and "Traceback" not in broken.value


def test_reader_names_are_checked() -> None:
    from medwb.pipelines.review_app import check_readers

    assert check_readers([" ana", "ben "]) == ["ana", "ben"]
    for bad in ([], ["ana", ""], ["ana", "ana"]):
        with pytest.raises(ConfigError):
            check_readers(bad)


def test_double_read_disagreement_goes_to_the_adjudicator(open_round, tmp_path: Path) -> None:
    from medwb.ui.widgets.adjudicate import AdjudicationPanel
    from medwb.ui.widgets.reader import (ADJUDICATORS_ENV, READERS_ENV, STUDY_ENV, ReadersPanel, double_read_kappa,
                                         reader_page, reader_queue, readers_summary, token_digest)

    study, batch = open_round
    study.set_reads([batch[0]], 2)
    ana = reader_queue(study, "ana", min_view_seconds=0)
    ben = reader_queue(study, "ben", min_view_seconds=0)
    assert ana.current == ben.current == batch[0]  # a double read: both, blind
    ana.keys.value = "0"
    ben.keys.value = "1"
    assert study.disagreements()["case_id"].tolist() == [batch[0]]
    s = readers_summary(study).set_index("reader")
    assert s.loc["ana", "double_reads"] == 1 and s.loc["ben", "disagreed"] == 1
    assert double_read_kappa(study)[0] == 1
    panel = AdjudicationPanel(study, "dr_s", ana.load_image, min_view_seconds=0)
    assert panel.current == batch[0] and "ana: <b>0: 0</b>" in panel.answers.value
    panel.keys.value = "7"
    assert "no class" in panel.status.value and panel.current == batch[0]
    panel.keys.value = "1"
    cur = study.labels().set_index("case_id")
    assert cur.loc[batch[0], "annotator"] == "dr_s" and cur.loc[batch[0], "value"] == 1
    assert panel.current is None and "No disagreement" in panel.title.value
    assert "wait for adjudication" not in ReadersPanel(study).html.value
    s = readers_summary(study).set_index("reader")  # the adjudication is not a third read: the readers' disagreement
    assert s.loc["ben", "disagreed"] == 1 and s.loc["dr_s", "adjudicated"] == 1 and s.loc["dr_s", "answered"] == 0
    assert double_read_kappa(study)[0] == 1 and study.case_status().set_index("case_id").loc[batch[0], "readers"] \
        == ["ana", "ben"]  # stays on the researcher's panel after adjudication
    f = tmp_path / "r.json"
    f.write_text(json.dumps({token_digest("t"): "dr_s"}))
    page = reader_page({STUDY_ENV: str(study.folder), READERS_ENV: str(f), "QUERY_STRING": "token=t",
                        ADJUDICATORS_ENV: "dr_s"})
    assert page.children[2].get_title(1) == "adjudicate"


def test_case_view_zoom_window_and_near_chance_warning(open_round) -> None:
    from medwb.ui.widgets.review import ReviewQueue
    from medwb.ui.widgets.review_text import near_chance

    study, batch = open_round
    from medwb.data import open_dataset

    ds = open_dataset(study.dataset_path, progress=False)
    q = ReviewQueue(study, batch[:2], [0, 1], ds.load_image, confidence=[0.52, 0.97], min_view_seconds=0,
                    annotator="x")
    assert "near chance" in q.title.value  # 0.52 of 2 classes: a warning, not just a number
    assert q.view.umap_box.layout.display == "none"  # no map: hidden, not a broken image
    png = q.image.value
    q.view.window.value = (20.0, 60.0)
    assert q.image.value != png and q.image.value[:4] == b"\x89PNG"
    q.view.zoom.value = 3
    assert q.image.layout.width == f"{3 * q.view.display_px}px"
    q.accept()
    assert "near chance" not in q.title.value and "confidence 0.970" in q.title.value
    assert near_chance(0.3, 4) and not near_chance(0.9, 4) and not near_chance(1.0, 1)


def test_a_flagged_case_goes_to_another_reader_with_its_comment(open_round) -> None:
    """Issue 14 defect 5: flagged / rejected cases came back to the same reader, without their comments, and
    their review-queue rows stayed open after the case was labelled."""
    from medwb.ui.widgets.reader import reader_queue

    study, batch = open_round
    ana = reader_queue(study, "ana", min_view_seconds=0)
    ana.comment.value = "rib fracture? not sure"
    ana.keys.value = "f"
    assert ana.current == batch[1]  # not the flagged case again
    ben = reader_queue(study, "ben", min_view_seconds=0)
    assert ben.current == batch[0] and "ana: flagged for a second look: rib fracture? not sure" in ben.title.value
    ben.keys.value = "1"
    assert study.review_queue().empty  # the label answered the flag
    assert len(study.review_queue(open_only=False)) == 1


def test_a_second_readers_flag_of_a_flagged_case_is_stored_with_their_comment(open_round) -> None:
    """Issue 14 defect 4: B's flag of a case A had flagged showed "saved", but no row was written (the queue kept
    one open entry per case and source), so B's comment was lost and the next reader saw only A's."""
    from medwb.ui.widgets.reader import reader_queue

    study, batch = open_round
    ana = reader_queue(study, "ana", min_view_seconds=0)
    ana.comment.value = "rib fracture? not sure"
    ana.keys.value = "f"
    ben = reader_queue(study, "ben", min_view_seconds=0)
    assert ben.current == batch[0]
    ben.comment.value = "looks like an artefact"
    ben.keys.value = "f"
    assert ben.status.value.startswith(f"saved case <code>{batch[0]}</code> flagged")
    q = study.review_queue()
    assert sorted(q.loc[q["case_id"] == batch[0], "flagged_by"]) == ["ana", "ben"]
    assert ben.decisions[-1]["queued"] == 1
    cy = reader_queue(study, "cy", min_view_seconds=0)
    assert cy.current == batch[0]
    assert "rib fracture? not sure" in cy.title.value and "looks like an artefact" in cy.title.value
    cy.keys.value = "0"
    assert study.review_queue().empty  # the label answered both flags


def test_an_open_page_continues_into_the_next_round_with_its_provenance(samples: Path, tmp_path: Path) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.ui.widgets.reader import reader_queue

    study, _, loop = tiny_pneumonia_loop(samples, tmp_path, batch_size=3)
    loop.propose()
    ana = reader_queue(study, "ana", min_view_seconds=0)
    for _ in range(3):
        ana.keys.value = "1"
    assert ana.done
    loop.complete()
    second = list(loop.propose()["case_id"])  # the researcher's next batch, pre-labelled by the round-1 model
    ana.undo()  # the page was left on 'finished'; an undo brings back ana's last round-1 case ...
    ana.keys.value = "0"  # ... decided again as round 1
    ana.keys.value = "1"  # the page continues with the new round's cases
    lab = study.labels().set_index("case_id")
    assert ana.decisions[-1]["case_id"] in second
    got = lab.loc[second[0]]
    assert int(got["round"]) == 2 and got["model_version"] == study.models()["version"].iloc[-1]
    study.close()


def test_readers_panel_follows_the_store_live(open_round) -> None:
    import time

    from medwb.ui.widgets.reader import ReadersPanel

    study, batch = open_round
    panel = ReadersPanel(study, every=0.05)
    try:
        assert "0 of 4 cases decided" in panel.html.value
        study.add_label(batch[0], value=1, annotator="ana")  # a reader's answer arrives in the store
        deadline = time.monotonic() + 10
        while "1 of 4 cases decided" not in panel.html.value and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "1 of 4 cases decided" in panel.html.value and "ana" in panel.html.value
    finally:
        panel.stop()


def test_a_structure_round_is_read_on_the_reader_pages_and_trains_the_loop(samples: Path, tmp_path: Path) -> None:
    """Issue 13 x 14: namings open a structure round; run_review_rounds proposes it (its stored pre-labels must
    stay the namings', not an untrained model's empty ones) and two readers' pages decide it (one case double
    read); every label says it was decided on a structure-model pre-label, and loop.complete trains on them."""
    from _fixtures import tiny_pneumonia_loop

    from medwb.al.oracle import ground_truth
    from medwb.al.review_rounds import run_review_rounds
    from medwb.al.structure import cluster_pool, pixel_embeddings
    from medwb.al.structure_round import name_cluster, open_structure_round
    from medwb.ui.widgets.reader import reader_queue

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path, n_train=30, batch_size=4)
    try:
        X, _, ids = loop.arrays("train")
        clusters = cluster_pool(pixel_embeddings(X), ids, n_clusters=3, random_state=0)
        truth = ground_truth(ds)
        for k in range(3):  # named after the first typical member's true class: some pre-labels are wrong
            name_cluster(study, clusters, k, truth(clusters.typical(k, 4)[0]), by="dr_a", shown=4)
        assert open_structure_round(study) == 1
        named = dict(zip(study.structure_names()["case_id"], study.structure_names()["value"]))
        pages: dict = {}

        def readers_at_work(_study) -> None:  # each poll, each reader's page decides one case
            for name in ("ana", "ben"):
                q = pages.setdefault(name, reader_queue(study, name, min_view_seconds=0))
                if not q.done:
                    assert q.proposals[q.position] == named[q.current]  # the structure pre-label is shown
                    q.change(truth(q.current))

        out = run_review_rounds(loop, rounds=1, double_reads=1, poll_seconds=0, timeout_seconds=120,
                                on_wait=readers_at_work)
        assert out["round"].tolist() == [1] and out["n_labeled"].tolist() == [12]
        assert study.rounds()["strategy"].tolist() == ["structure"] and len(study.models()) == 1
        assert study.proposals(1)["prelabel"].tolist() == [named[c] for c in study.proposals(1)["case_id"]]
        lab = study.labels(per_annotator=True)
        assert sorted(set(lab["case_id"])) == sorted(named) and set(lab["annotator"]) == {"ana", "ben"}
        assert lab["note"].str.startswith("structure model: ").all()  # the provenance, on every reader's label
        want = ["human" if named[c] == truth(c) else "corrected" for c in lab["case_id"]]
        assert lab["source"].tolist() == want and "corrected" in want
        assert len(study.structure_labels()) == 12
        assert (study.case_status(1)["reads"] == 2).sum() == 1 and study.case_status(1)["decided"].all()
    finally:
        study.close()


def _segmentation_round(samples: Path, folder: Path, sub: str, n: int):
    """A segmentation study on a bundled sample with round 1 proposed as loop.propose stores it before any model
    (cases in order, no pre-label)."""
    from medwb.data import open_dataset
    from medwb.store import Study

    ds = open_dataset(samples / sub, progress=False)
    study = Study.create(folder, dataset_path=str(ds.path), task=ds.task, classes=ds.classes)
    study.add_cases(ds.cohort)
    ids = [c for c in ds.case_ids() if ds.load_mask(c) is not None][:n]
    study.start_round(1, "cold_start", {}, ids, [])
    study.save_proposals(1, ids)
    return study, ds, ids


def test_segmentation_cases_are_read_by_region_clicks_and_double_reads_compared_by_dice(
        samples: Path, tmp_path: Path) -> None:
    import numpy as np

    from medwb.store import read_mask
    from medwb.ui.widgets.adjudicate import AdjudicationPanel
    from medwb.ui.widgets.reader import (ADJUDICATORS_ENV, READERS_ENV, STUDY_ENV, panel_html, reader_page,
                                         reader_queue, readers_summary, token_digest)
    from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue

    study, ds, ids = _segmentation_round(samples, tmp_path / "s", "segmentation_2d/hc18", 3)
    study.set_reads(ids[:2], 2)
    clock = Clock()
    ana = reader_queue(study, "ana", min_view_seconds=0, clock=clock)
    ben = reader_queue(study, "ben", min_view_seconds=0, clock=clock)
    assert isinstance(ana, SegmentationReviewQueue) and ana.queue.annotator.disabled
    assert ana.current == ben.current == ids[0]  # a double read: both, blind
    assert not ana.editor.mask.any()  # no mask proposal is stored: the editor starts empty
    assert ana.editor.canvas.src.startswith("data:image/png")

    def head(q) -> np.ndarray:  # the reader clicks the coarse region in the middle of the image (the fetal head)
        q.click(270, 400)
        return q.editor.mask.copy()

    ana_masks = {}
    ana_masks[ids[0]] = head(ana)
    ana.editor.b_save.click()
    assert "saved case" in ana.queue.status.value and ana.current == ids[1]
    same = head(ben)
    ben.editor.b_save.click()
    ana_masks[ids[1]] = head(ana)
    ana.editor.b_save.click()
    assert ana.current == ids[2] and ben.current == ids[1]
    ben.click(20, 20)  # ben takes a corner region instead: his mask hardly overlaps ana's
    ben.editor.b_save.click()
    assert ben.done  # the single-read case is ana's
    ana_masks[ids[2]] = head(ana)
    ana.editor.b_save.click()
    assert ana.done

    lab = study.labels(per_annotator=True)
    assert len(lab) == 5 and (lab["round"] == 1).all() and lab["note"].str.startswith("region-click, 1 click").all()
    mine = lab[lab["annotator"] == "ana"].set_index("case_id")
    for cid, m in ana_masks.items():
        assert np.array_equal(read_mask(mine.loc[cid, "mask_path"]), m)
    assert np.array_equal(read_mask(lab[lab["annotator"] == "ben"]["mask_path"].iloc[0]), same)
    st = study.case_status(1).set_index("case_id")
    assert st.loc[ids[0], "dice"] == 1.0 and st.loc[ids[1], "dice"] < 0.8
    assert st["decided"].tolist() == [True, False, True] and study.disagreements()["case_id"].tolist() == [ids[1]]
    assert readers_summary(study).set_index("reader").loc["ben", "disagreed"] == 1
    assert "double reads: 2 masks, mean Dice" in panel_html(study)
    assert ids[1] not in set(study.agreed_labels()["case_id"])

    panel = AdjudicationPanel(study, "dr_s", ds.load_image, min_view_seconds=0)
    assert panel.current == ids[1] and panel.show_of.options == ("ana", "ben") and "Dice 0." in panel.answers.value
    png_ana = panel.image.value
    panel.show_of.value = "ben"
    assert panel.image.value != png_ana  # each reader's mask, in turn
    panel.show_of.value = "ana"
    panel.b_keep.click()
    cur = study.labels().set_index("case_id")
    assert cur.loc[ids[1], "annotator"] == "dr_s" and "ana's mask kept" in cur.loc[ids[1], "note"]
    assert np.array_equal(read_mask(cur.loc[ids[1], "mask_path"]), ana_masks[ids[1]])
    assert study.case_status(1)["decided"].all() and panel.current is None
    study.check_round_decided(1)

    f = tmp_path / "r.json"
    f.write_text(json.dumps({token_digest("t"): "dr_s"}))
    page = reader_page({STUDY_ENV: str(study.folder), READERS_ENV: str(f), "QUERY_STRING": "token=t",
                        ADJUDICATORS_ENV: "dr_s"})
    assert "shift-click" in page.children[0].value and page.children[2].get_title(1) == "adjudicate"
    study.close()


def _check_3d_view(queue, ds, case_id: str) -> None:
    import nibabel as nib
    import numpy as np
    from ipyniivue import NiiVue

    queue.b_3d.value = True
    (nv,) = queue.view3d.children
    assert isinstance(nv, NiiVue) and queue.view3d.layout.display == "flex"
    image, mask = (nib.Nifti1Image.from_bytes(bytes(v.data)) for v in nv.volumes)
    assert np.allclose(image.get_fdata(), ds.load_image(case_id)[0])
    assert np.array_equal(mask.get_fdata().astype(np.int64), queue.editor.mask) and queue.editor.mask.any()
    assert np.allclose(image.affine, ds.affine(case_id))
    queue.b_3d.value = False
    assert queue.view3d.layout.display == "none" and not queue.view3d.children


def test_a_3d_segmentation_case_is_read_slice_by_slice(samples: Path, tmp_path: Path) -> None:
    import numpy as np

    from medwb.store import read_mask
    from medwb.ui.widgets.reader import reader_queue

    study, ds, ids = _segmentation_round(samples, tmp_path / "h", "segmentation_3d/hippocampus", 1)
    study.set_reads(ids, 2)
    ana = reader_queue(study, "ana", min_view_seconds=0)
    ben = reader_queue(study, "ben", min_view_seconds=0)
    assert ana.current == ben.current == ids[0] and ana.editor.slice.max == ds.load_image(ids[0]).shape[-1] - 1
    shape = ds.load_image(ids[0]).shape[1:]
    assert ana.view3d.layout.display == "none" and not ana.view3d.children
    for q in (ana, ben):
        q.editor.slice.value = shape[-1] // 2
        q.click(shape[0] // 2, shape[1] // 2)
        if q is ana:  # the 3D view beside the slices: the volume and the mask as edited so far, in world geometry
            _check_3d_view(ana, ds, ids[0])
        q.editor.b_save.click()
    masks = [read_mask(p) for p in study.labels(per_annotator=True)["mask_path"]]
    assert masks[0].shape == shape and masks[0].any() and np.array_equal(masks[0], masks[1])
    assert (masks[0].reshape(-1, shape[-1]).any(0)).sum() > 1  # a supervoxel spans several slices
    st = study.case_status(1)
    assert st["dice"].tolist() == [1.0] and st["decided"].all() and ana.done and ben.done
    study.close()


def test_review_next_round_shows_an_open_structure_round_with_its_pre_labels(samples: Path, tmp_path: Path) -> None:
    """The notebook's review_next_round on a structure round: the namings' pre-labels (not the cold start's
    blank chooser), each label noted 'structure model'."""
    from _fixtures import tiny_pneumonia_loop

    from medwb.al.oracle import ground_truth
    from medwb.al.structure import cluster_pool, pixel_embeddings
    from medwb.al.structure_round import name_cluster, open_structure_round
    from medwb.ui.widgets.review import review_next_round

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path, n_train=30, batch_size=4)
    try:
        X, _, ids = loop.arrays("train")
        clusters = cluster_pool(pixel_embeddings(X), ids, n_clusters=2, random_state=0)
        truth = ground_truth(ds)
        for k in range(2):
            name_cluster(study, clusters, k, truth(clusters.typical(k, 4)[0]), by="dr_a", shown=4)
        open_structure_round(study)
        named = dict(zip(study.structure_names()["case_id"], study.structure_names()["value"]))
        q = review_next_round(loop, annotator="dr_a", simulate=True)
        assert q.proposals == [named[c] for c in q.case_ids] and len(q.decisions) == 8
        lab = study.labels().set_index("case_id")
        assert lab["note"].str.startswith("structure model: ").all() and (lab["round"] == 1).all()
        assert [lab.loc[c, "source"] for c in q.case_ids] == ["human" if named[c] == truth(c) else "corrected"
                                                              for c in q.case_ids]
    finally:
        study.close()


def test_model_progress_tells_readers_what_retraining_did(samples: Path, tmp_path: Path) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.ui.widgets.reader import model_progress

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path)
    truth = ds.cohort.set_index("case_id")["label"]
    assert model_progress(study).startswith("No model yet")
    scores = []
    for _ in range(2):
        for c in loop.propose()["case_id"]:
            study.add_label(c, value=int(truth[c]), annotator="ana", round=loop.round)
        scores.append(loop.complete().metrics["val_auc"])
    text = model_progress(study)
    assert text.startswith("Model of round 2, trained on 8 labels: validation AUC")
    assert f"{scores[1]:.3f} ({scores[0]:.3f} before, {scores[1] - scores[0]:+.3f})" in text
    study.close()
