"""The review queue driven programmatically on real PneumoniaMNIST / CHASE_DB1 cases: every decision is in the
store at once, with the mapped source, the annotator, the time spent, the round and the model version."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from medwb.al.autolabel import commit_auto_labels, fit_autolabel, prelabel
from medwb.errors import StoreError
from medwb.store import Study
from medwb.ui.widgets.review import REVIEW_SOURCE, ReviewQueue

PAUSE = 0.03  # seconds "looking at" each case


@pytest.fixture()
def pneumonia(tmp_path: Path, samples: Path) -> dict:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        xtr, ytr = z["train_images"][:800], z["train_labels"][:800, 0]
        xv, yv = z["val_images"], z["val_labels"][:, 0]
    model = LogisticRegression(C=1.0, max_iter=300).fit(xtr.reshape(len(xtr), -1) / 255.0, ytr)
    ids = [f"val_{i:05d}" for i in range(len(yv))]
    study = Study.create(tmp_path / "s", dataset_path="pneumoniamnist.npz", task="classification",
                         classes={0: "normal", 1: "pneumonia"})
    study.add_cases(pd.DataFrame({"case_id": ids, "split": "val"}))
    ck = study.folder / "models" / "logreg.npy"
    np.save(ck, model.coef_)
    mv = study.add_model(1, ck, {"val_accuracy": float(model.score(xv.reshape(len(xv), -1) / 255.0, yv))})
    images = {c: (x[None] / 255.0).astype(np.float32) for c, x in zip(ids, xv)}
    coef = model.coef_.reshape(28, 28)
    yield {"study": study, "ids": ids, "y": yv, "probs": model.predict_proba(xv.reshape(len(xv), -1) / 255.0),
           "load": images.__getitem__, "umap": lambda c: np.abs(coef * images[c][0]), "mv": mv}
    study.close()


def test_decisions_are_written_with_provenance(pneumonia: dict) -> None:
    s, ids, probs = pneumonia["study"], pneumonia["ids"][:7], pneumonia["probs"][:7]
    pre = prelabel(probs, 1.0, threshold=np.inf)
    q = ReviewQueue(s, ids, pre.labels, pneumonia["load"], confidence=pre.confidence, uncertainty=pneumonia["umap"],
                    round=1, model_version=pneumonia["mv"], annotator="", min_view_seconds=0)
    assert q.image.value[:4] == b"\x89PNG" and q.umap.value[:4] == b"\x89PNG"
    assert "proposed class" in q.title.value
    with pytest.raises(StoreError, match="annotator"):
        q.accept()  # nobody named: nothing is written
    assert s.labels(latest=False).empty
    q.annotator.value = "dr_a"
    p = [int(v) for v in pre.labels]
    time.sleep(PAUSE)
    q.accept()
    time.sleep(PAUSE)
    q.change(1 - p[1])
    time.sleep(PAUSE)
    q.change(p[2])  # choosing the proposed class is an accept
    q.reject("rib fracture, not pneumonia")
    q.flag()
    q.keys.value = "x1"  # keyboard: '1' is the class shown as "1: pneumonia"
    q.keys.value = "a"
    assert q.done and q.keys.value == "" and "finished" in q.title.value
    labs = s.labels().set_index("case_id")
    assert labs.loc[ids[0], ["value", "source"]].tolist() == [p[0], "human"]
    assert "accepted pre-label" in labs.loc[ids[0], "note"]
    assert labs.loc[ids[1], ["value", "source"]].tolist() == [1 - p[1], "corrected"]
    assert labs.loc[ids[2], "source"] == "human"
    assert labs.loc[ids[5], ["value", "source"]].tolist() == [1, "corrected" if p[5] != 1 else "human"]
    assert labs.loc[ids[6], ["value", "source"]].tolist() == [p[6], "human"]
    assert ids[3] not in labs.index and ids[4] not in labs.index  # reject / flag write no label
    assert set(labs["annotator"]) == {"dr_a"} and set(labs["round"]) == {1} and set(labs["model_version"]) == {pneumonia["mv"]}
    assert (labs.loc[ids[:3], "seconds"] >= PAUSE).all()
    queue = s.review_queue().set_index("case_id")
    assert queue.loc[ids[3], "reason"].startswith("pre-label rejected") and "rib fracture" in queue.loc[ids[3], "reason"]
    assert queue.loc[ids[4], "flagged_by"] == "dr_a" and set(queue["source"]) == {REVIEW_SOURCE}
    assert [d["action"] for d in q.decisions] == ["accept", "change", "change", "reject", "flag", "change", "accept"]
    hist = s.label_history()
    assert len(hist) == 5 and set(hist["changed_by"]) == {"dr_a"}
    with pytest.raises(StoreError, match="finished"):
        q.accept()


def test_auto_then_oracle_review(pneumonia: dict) -> None:
    """The loop's path: auto-accept confident pre-labels (source auto), the simulated oracle reviews the rest."""
    s, ids, probs, y = pneumonia["study"], pneumonia["ids"], pneumonia["probs"], pneumonia["y"]
    t, choice = fit_autolabel(probs[:300], y[:300])  # calibrate on one half
    batch = list(range(300, 360))
    pre = prelabel(probs[batch], t, choice.threshold)
    rest = commit_auto_labels(s, [ids[i] for i in batch], pre, model_version=pneumonia["mv"], round=1)
    assert 0 < len(rest) < len(batch)
    truth = dict(zip(ids, y.tolist()))
    keep = [i for i in batch if ids[i] in rest]
    q = ReviewQueue(s, rest, pre.labels[[batch.index(i) for i in keep]], pneumonia["load"], annotator="oracle",
                    round=1, model_version=pneumonia["mv"])
    q.run_oracle(truth.__getitem__)
    labs = s.labels().set_index("case_id")
    assert len(labs) == len(batch)
    auto = labs[labs["source"] == "auto"]
    assert len(auto) == len(batch) - len(rest) and set(auto["annotator"]) == {f"model:{pneumonia['mv']}"}
    reviewed = labs.loc[rest]
    assert (reviewed["value"].to_numpy() == y[keep]).all()  # the oracle's labels are the truth
    wrong = pre.labels[[batch.index(i) for i in keep]] != y[keep]
    assert (reviewed["source"].to_numpy() == np.where(wrong, "corrected", "human")).all()


def test_segmentation_review_on_chase(tmp_path: Path, samples: Path) -> None:
    root = samples / "segmentation_2d" / "chase_db1"
    names = ["Image_01L", "Image_01R"]
    img = {n: np.moveaxis(np.asarray(Image.open(root / "images" / f"{n}.jpg"), dtype=np.float32) / 255.0, -1, 0) for n in names}
    m1 = {n: (np.asarray(Image.open(root / "manual_1stHO" / f"{n}_1stHO.png").convert("L")) > 127).astype(np.int64)[None] for n in names}
    m2 = {n: (np.asarray(Image.open(root / "manual_2ndHO" / f"{n}_2ndHO.png").convert("L")) > 127).astype(np.int64)[None] for n in names}
    s = Study.create(tmp_path / "seg", dataset_path=root, task="segmentation", classes={0: "background", 1: "vessel"})
    s.add_cases(pd.DataFrame({"case_id": names, "split": "train"}))
    # observer 1's masks play the pre-label, observer 2 reviews: the first is corrected, the second accepted
    q = ReviewQueue(s, names, [m1[n] for n in names], img.__getitem__, annotator="observer_2", min_view_seconds=0,
                    uncertainty=lambda c: (m1[c][0] != m2[c][0]).astype(float))
    assert q.image.value[:4] == b"\x89PNG" and q.b_change.disabled
    with pytest.raises(StoreError, match="segmentation"):
        q.change(1)
    q.change(mask=m2[names[0]])
    q.accept()
    labs = s.labels().set_index("case_id")
    from medwb.store import read_mask

    assert labs.loc[names[0], "source"] == "corrected" and np.array_equal(read_mask(labs.loc[names[0], "mask_path"]), m2[names[0]])
    assert labs.loc[names[1], "source"] == "human" and np.array_equal(read_mask(labs.loc[names[1], "mask_path"]), m1[names[1]])
    s.close()


@pytest.mark.slow  # open_dataset of the MSD folder imports MONAI (~4 s)
def test_3d_review_on_hippocampus(tmp_path: Path, samples: Path) -> None:
    """3-D: the slice shown is the one through the pre-label; the simulated oracle corrects a wrong mask."""
    from medwb.data import open_dataset
    from medwb.store import read_mask

    ds = open_dataset(samples / "segmentation_3d" / "hippocampus")
    ids = [c for c in ds.cohort["case_id"] if ds.load_mask(c) is not None][:2]
    s = Study.create(tmp_path / "h", dataset_path=samples / "segmentation_3d" / "hippocampus", task="segmentation",
                     classes=ds.classes)
    s.add_cases(ds.cohort)
    truth = {c: ds.load_mask(c) for c in ids}
    wrong = truth[ids[1]].copy()
    wrong[wrong == 2] = 1  # the pre-label merges the two hippocampus parts
    boundary = {c: np.abs(np.gradient(truth[c][0].astype(float))).sum(0) for c in ids}
    q = ReviewQueue(s, ids, [truth[ids[0]], wrong], ds.load_image, annotator="oracle", spatial_dims=3,
                    uncertainty=boundary.__getitem__)
    assert q.image.value[:4] == b"\x89PNG" and q.umap.value[:4] == b"\x89PNG"
    out = q.run_oracle(truth.__getitem__)
    assert [d["source"] for d in out] == ["human", "corrected"]
    labs = s.labels().set_index("case_id")
    assert np.array_equal(read_mask(labs.loc[ids[1], "mask_path"]), truth[ids[1]])
    from medwb.errors import DataError

    with pytest.raises(DataError, match="image's own size"):  # a mask on the wrong grid is refused
        ReviewQueue(s, ids[:1], [truth[ids[0]][:, :-1]], ds.load_image, annotator="oracle", spatial_dims=3)
    s.close()


def test_cold_start_without_prelabels(pneumonia: dict) -> None:
    """The cold-start round has no model: every case is shown with the class chooser, nothing to accept, and the
    person's choice is a ``human`` label with no model version; a mixed queue switches per case."""
    s, ids, y = pneumonia["study"], pneumonia["ids"][:4], pneumonia["y"][:4]
    q = ReviewQueue(s, ids, None, pneumonia["load"], round=1, annotator="dr_c", min_view_seconds=0)
    assert q.image.value[:4] == b"\x89PNG" and q.umap.value == b""
    assert "no pre-label" in q.title.value and "choose the class" in q.title.value
    assert q.b_accept.disabled and not q.b_change.disabled and q.class_menu.value is None
    with pytest.raises(StoreError, match="no pre-label to accept"):
        q.accept()
    q.b_change.click()  # nothing chosen in the menu yet: not saved, the error is shown
    assert "choose the class" in q.status.value and s.labels(latest=False).empty and q.position == 0
    time.sleep(PAUSE)
    q.class_menu.value = int(y[0])
    q.b_change.click()
    time.sleep(PAUSE)
    q.keys.value = str(int(y[1]))  # a digit key: the class number as the menu shows it
    q.reject("cannot tell on this image")
    rest = q.run_oracle(lambda c: int(pneumonia["y"][ids.index(c)]))
    assert [r["action"] for r in rest] == ["choose"] and q.done
    labs = s.labels(latest=False).set_index("case_id")
    assert list(labs.index) == [ids[0], ids[1], ids[3]]
    assert labs["value"].astype(int).tolist() == [int(y[0]), int(y[1]), int(y[3])]
    assert (labs["source"] == "human").all() and labs["model_version"].isna().all() and (labs["round"] == 1).all()
    assert (labs["annotator"] == "dr_c").all() and (labs["seconds"].iloc[:2] >= PAUSE).all()
    assert not labs["note"].str.contains("pre-label").any()
    rq = s.review_queue()
    assert rq["case_id"].tolist() == [ids[2]] and rq["reason"].iloc[0].startswith("no label given")

    # per-case None: a pre-labelled case can be accepted, the next one (no pre-label) cannot
    more = pneumonia["ids"][4:6]
    q2 = ReviewQueue(s, more, [1, None], pneumonia["load"], confidence=[0.9, None], round=2,
                     model_version=pneumonia["mv"], annotator="dr_c", min_view_seconds=0)
    assert not q2.b_accept.disabled and "proposed class" in q2.title.value and "confidence 0.900" in q2.title.value
    q2.accept()
    assert q2.b_accept.disabled and "no pre-label" in q2.title.value and "confidence" not in q2.title.value
    q2.change(0)
    labs = s.labels(latest=False).set_index("case_id")
    assert labs.loc[more[0], "note"].startswith("accepted pre-label 1")
    assert labs.loc[more[1], "source"] == "human" and not labs.loc[more[1], "note"].startswith("accepted")


def test_cold_start_segmentation_without_prelabel(tmp_path: Path, samples: Path) -> None:
    root = samples / "segmentation_2d" / "chase_db1"
    n = "Image_02L"
    img = np.moveaxis(np.asarray(Image.open(root / "images" / f"{n}.jpg"), dtype=np.float32) / 255.0, -1, 0)
    m = (np.asarray(Image.open(root / "manual_1stHO" / f"{n}_1stHO.png").convert("L")) > 127).astype(np.int64)[None]
    s = Study.create(tmp_path / "seg", dataset_path=root, task="segmentation", classes={0: "background", 1: "vessel"})
    s.add_cases(pd.DataFrame({"case_id": [n], "split": "train"}))
    q = ReviewQueue(s, [n], [None], lambda c: img, annotator="observer_1", min_view_seconds=0)
    assert q.image.value[:4] == b"\x89PNG" and q.b_accept.disabled and "no pre-label" in q.title.value
    with pytest.raises(StoreError, match="change\\(mask"):
        q.change()
    q.run_oracle(lambda c: m)
    from medwb.store import read_mask

    lab = s.labels().iloc[0]
    assert lab["source"] == "human" and np.array_equal(read_mask(lab["mask_path"]), m)
    s.close()


def test_review_next_round_cold_start_with_simulated_reviewer(samples: Path, tmp_path: Path, capsys) -> None:
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.ui.widgets.review import NO_PROPOSAL_NOTE, review_next_round

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=30, n_val=10, n_test=10)
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=4, seed=0, progress=False, pretrain=False, semi=False)
    q = review_next_round(loop, annotator="sim", simulate=True)
    assert q is not None and q.done and [d["action"] for d in q.decisions] == ["choose"] * 4
    labels = study.labels()
    truth = ds.cohort.set_index("case_id")["label"]
    assert sorted(labels["case_id"]) == sorted(study.rounds().iloc[0]["selected_ids"])
    assert all(int(v) == int(truth[c]) for c, v in zip(labels["case_id"], labels["value"]))
    # no model yet: no pre-label, the reader's choice is a human label of round 1
    assert set(labels["note"]) == {NO_PROPOSAL_NOTE} and set(labels["source"]) == {"human"}
    assert (labels["round"] == 1).all() and set(labels["annotator"]) == {"sim"}
    assert review_next_round(loop, annotator="sim", simulate=True) is None  # nothing waits in the round now
    assert "round 1: 0 case(s) waiting for a person" in capsys.readouterr().out
    study.close()


def test_digit_keys_choose_the_class_number_shown(pneumonia: dict) -> None:
    """Issue 14: the menu shows "0: normal" / "1: pneumonia", so key 1 is pneumonia (it used to store normal, the
    first menu entry); a digit that is no class number stores nothing and says so; the status names the class."""
    s, ids = pneumonia["study"], pneumonia["ids"][:4]
    q = ReviewQueue(s, ids, [0, 1, 0, None], pneumonia["load"], annotator="dr_k", min_view_seconds=0)
    assert [o[0] for o in q.class_menu.options] == ["0: normal", "1: pneumonia"]
    assert "0-1: class number as shown" in q.keys.placeholder
    q.keys.value = "1"  # pre-label normal, the reader types 1 for pneumonia
    assert s.labels().set_index("case_id").loc[ids[0], ["value", "source"]].tolist() == [1, "corrected"]
    assert f"saved case <code>{ids[0]}</code> as 1: pneumonia (corrected)" in q.status.value
    q.keys.value = "7"  # no class 7: refused, nothing stored, the same case stays on screen
    assert q.position == 1 and len(s.labels(latest=False)) == 1
    assert "no class 7" in q.status.value and "0: normal, 1: pneumonia" in q.status.value
    q.keys.value = "1"  # the pre-label itself: an accept
    assert "as 1: pneumonia (human)" in q.status.value
    q.accept()
    assert "as 0: normal (human)" in q.status.value
    q.keys.value = "0"  # no pre-label: the reader's choice
    assert "as 0: normal (human)" in q.status.value and q.done
    assert s.labels().set_index("case_id").loc[ids, "value"].tolist() == [1, 1, 0, 0]


class FakeClock:
    """Seconds that move only when the test says so: no sleeping, no flaky timing."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_too_fast_second_key_is_refused(pneumonia: dict) -> None:
    """Issue 14: two key presses 40 ms apart decided two cases, the second unseen. With the default minimum
    (0.5 s) a case shown for less is not decided: the status says so and nothing is written."""
    s, ids, clock = pneumonia["study"], pneumonia["ids"][:3], FakeClock()
    q = ReviewQueue(s, ids, [0, 0, 1], pneumonia["load"], annotator="dr_t", clock=clock)
    assert q.min_view_seconds == 0.5
    clock.t += 2.0
    q.keys.value = "a"  # the first case was looked at: saved
    clock.t += 0.04
    q.keys.value = "a"  # 40 ms later, the second case: refused
    assert q.position == 1 and s.labels()["case_id"].tolist() == [ids[0]]
    assert "not saved" in q.status.value and "0.04 s only" in q.status.value and "0.5 s minimum" in q.status.value
    for decide in (q.accept, q.reject, q.flag, lambda: q.change(1)):  # from code too, reject/flag included
        with pytest.raises(StoreError, match="minimum"):
            decide()
    assert len(s.labels(latest=False)) == 1 and s.review_queue().empty
    with pytest.raises(StoreError, match="min_view_seconds"):
        ReviewQueue(s, ids, None, pneumonia["load"], min_view_seconds=-1)


def test_decision_after_the_minimum_is_saved(pneumonia: dict) -> None:
    s, ids, clock = pneumonia["study"], pneumonia["ids"][:2], FakeClock()
    q = ReviewQueue(s, ids, [0, 0], pneumonia["load"], annotator="dr_t", clock=clock)
    clock.t += 0.3
    q.keys.value = "1"
    assert q.position == 0 and s.labels(latest=False).empty
    clock.t += 0.2  # 0.5 s on screen in all: the same key now counts
    q.keys.value = "1"
    assert q.position == 1 and "as 1: pneumonia (corrected)" in q.status.value
    lab = s.labels().iloc[0]
    assert lab["case_id"] == ids[0] and lab["value"] == 1 and lab["seconds"] == pytest.approx(0.5)
    clock.t += 0.6
    q.reject()  # the next case's time starts when it is shown
    assert s.review_queue()["seconds"].tolist() == [pytest.approx(0.6)]
    q.undo()  # the case undone is shown afresh: the minimum counts again from now
    with pytest.raises(StoreError, match="minimum"):
        q.reject()


def test_undo_goes_back_and_takes_the_decision_back(pneumonia: dict) -> None:
    """Issue 14: u / undo returns to the previous case; its label is retracted (kept, superseded) or its review-queue
    entry closed, so the re-decision is the only current one; the session's decisions are listed in the widget."""
    s, ids = pneumonia["study"], pneumonia["ids"][:4]
    q = ReviewQueue(s, ids, [0, 1, 0, 1], pneumonia["load"], annotator="dr_u", min_view_seconds=0)
    assert q.b_undo.disabled and q.history.value == "" and "u undo" in q.keys.placeholder
    with pytest.raises(StoreError, match="nothing to undo"):
        q.undo()
    q.keys.value = "1"
    q.keys.value = "a"
    q.keys.value = "r"
    assert not q.b_undo.disabled and q.position == 3 and s.review_queue()["case_id"].tolist() == [ids[2]]
    rows = q.history.value.split("<tr>")[2:]  # newest first
    assert len(rows) == 3 and ids[2] in rows[0] and "review queue" in rows[0]
    assert ids[0] in rows[2] and "1: pneumonia" in rows[2] and "corrected" in rows[2]
    q.keys.value = "u"  # the reject is taken back: no open entry is left behind
    assert q.position == 2 and s.review_queue().empty and "undone" in q.status.value and ids[2] in q.title.value
    q.flag("second look")
    q.b_undo.click()
    assert s.review_queue().empty and q.position == 2
    q.undo()
    q.keys.value = "u"  # two more: back to the first case, both labels retracted
    assert q.position == 0 and s.labels().empty and len(s.labels(latest=False)) == 2 and len(q.decisions) == 0
    assert (s.label_history()["to_source"] == "retracted").sum() == 2
    q.keys.value = "0"  # decided afresh: normal after all
    q.keys.value = "r"  # the once accepted case is now rejected: no stale label of it stays current
    q.keys.value = "a"
    q.keys.value = "a"
    assert q.done and q.b_accept.disabled
    q.keys.value = "u"  # from the end of the queue too: the buttons come back
    assert q.current == ids[3] and not q.b_accept.disabled and not q.b_reject.disabled and ids[3] not in set(s.labels()["case_id"])
    q.keys.value = "a"
    labs = s.labels().set_index("case_id")
    assert labs.index.tolist() == [ids[0], ids[2], ids[3]] and labs["value"].tolist() == [0, 0, 1]
    assert s.review_queue()["case_id"].tolist() == [ids[1]] and s.review_queue()["reason"].iloc[0].startswith("pre-label rejected")
    assert [(d["case_id"], d["action"]) for d in q.decisions] == list(zip(ids, ["change", "reject", "accept", "accept"]))
    # an entry that was already open before this decision is not this decision's to close
    q2 = ReviewQueue(s, [ids[1]], [1], pneumonia["load"], annotator="dr_u", min_view_seconds=0)
    q2.flag()
    q2.undo()
    assert s.review_queue()["case_id"].tolist() == [ids[1]]
