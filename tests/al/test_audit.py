"""Label audit on real data: flipped PneumoniaMNIST labels are found; CHASE_DB1's two observers are compared."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from medwb.errors import DataError
from medwb.al.audit import AUDIT_SOURCE, agreement, audit_study, find_label_issues, mask_dice, out_of_fold_proba
from medwb.store import Study

N, N_FLIP = 1500, 75  # 5% label noise


def _logreg(x: np.ndarray, y: np.ndarray) -> LogisticRegression:
    return LogisticRegression(C=1.0, max_iter=300).fit(x, y)


@pytest.mark.slow  # 5 logistic-regression fits + 1500 labels (~2-5 s)
def test_flipped_labels_are_flagged_and_queued(tmp_path: Path, samples: Path) -> None:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        x = z["train_images"][:N].reshape(N, -1) / 255.0
        y = z["train_labels"][:N, 0].astype(int)
    rng = np.random.default_rng(0)
    flip = rng.choice(N, N_FLIP, replace=False)
    noisy = y.copy()
    noisy[flip] = 1 - noisy[flip]
    ids = [f"train_{i:05d}" for i in range(N)]
    study = Study.create(tmp_path / "s", dataset_path="pneumoniamnist.npz", task="classification",
                         classes={0: "normal", 1: "pneumonia"})
    study.add_cases(pd.DataFrame({"case_id": ids, "split": "train"}))
    csv = tmp_path / "noisy.csv"
    pd.DataFrame({"case_id": ids, "value": noisy}).to_csv(csv, index=False)
    study.import_labels_csv(csv, annotator="annotator_1")

    probs = out_of_fold_proba(_logreg, x, noisy, folds=5, seed=0, progress=False)
    assert probs.shape == (N, 2) and np.allclose(probs.sum(1), 1)
    issues = audit_study(study, ids, probs)
    flagged = {int(c.split("_")[1]) for c in issues["case_id"]}
    recall = len(flagged & set(flip.tolist())) / N_FLIP
    precision = len(flagged & set(flip.tolist())) / len(flagged)
    assert recall >= 0.7, recall  # most flipped labels are found
    assert precision >= 0.4, precision  # far above the 5% a random pick would get
    assert (issues["self_confidence"].diff().dropna() >= 0).all()  # ranked most suspicious first
    queue = study.review_queue()
    assert set(queue["case_id"]) == set(issues["case_id"]) and set(queue["source"]) == {AUDIT_SOURCE}
    assert len(study.labels()) == N and (study.labels()["value"].to_numpy() == noisy).all()  # labels untouched
    # a second audit does not duplicate the open queue entries
    audit_study(study, ids, probs)
    assert len(study.review_queue()) == len(queue)
    with pytest.raises(DataError, match="fewer than folds"):
        out_of_fold_proba(_logreg, x[:12], np.r_[np.zeros(10), np.ones(2)].astype(int), folds=5)
    study.close()


def test_kappa_identical_and_disagreeing_raters(tmp_path: Path, samples: Path) -> None:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        y = z["val_labels"][:60, 0].astype(int)
    ids = [f"val_{i:05d}" for i in range(len(y))]
    s = Study.create(tmp_path / "k", dataset_path="p.npz", task="classification", classes={0: "normal", 1: "pneumonia"})
    s.add_cases(pd.DataFrame({"case_id": ids, "split": "val"}))
    other = y.copy()
    other[:10] = 1 - other[:10]
    for cid, a, c in zip(ids, y, other):
        s.add_label(cid, value=int(a), annotator="ann_a")
        s.add_label(cid, value=int(a), annotator="ann_b")
        s.add_label(cid, value=int(c), annotator="ann_c")
    ag = agreement(s).pairs.set_index(["annotator_a", "annotator_b"])
    assert ag.loc[("ann_a", "ann_b"), "kappa"] == pytest.approx(1.0)
    assert ag.loc[("ann_a", "ann_b"), "n_cases"] == len(y)
    from sklearn.metrics import cohen_kappa_score

    assert ag.loc[("ann_a", "ann_c"), "kappa"] == pytest.approx(cohen_kappa_score(y, other))
    assert ag.loc[("ann_a", "ann_c"), "percent_agreement"] == pytest.approx(50 / 60)
    s.close()


def test_dice_between_chase_observers(tmp_path: Path, samples: Path) -> None:
    root = samples / "segmentation_2d" / "chase_db1"
    names = ["Image_01L", "Image_01R", "Image_02L"]
    load = lambda p: (np.asarray(Image.open(p).convert("L")) > 127).astype(np.int64)  # noqa: E731
    s = Study.create(tmp_path / "c", dataset_path=root, task="segmentation", classes={0: "background", 1: "vessel"})
    s.add_cases(pd.DataFrame({"case_id": names, "split": "train"}))
    direct = []
    for n in names:
        m1, m2 = load(root / "manual_1stHO" / f"{n}_1stHO.png"), load(root / "manual_2ndHO" / f"{n}_2ndHO.png")
        s.add_label(n, mask_path=s.save_mask(n, m1, tag="1stHO"), annotator="observer_1")
        s.add_label(n, mask_path=s.save_mask(n, m2, tag="2ndHO"), annotator="observer_2")
        direct.append(2 * (m1 & m2).sum() / (m1.sum() + m2.sum()))
    ag = agreement(s)
    got = ag.cases.set_index("case_id")["dice"].loc[names].to_numpy()
    assert np.allclose(got, direct)
    assert 0.6 < ag.pairs.iloc[0]["mean_dice"] < 0.95  # two experts agree well, but not perfectly, on thin vessels
    assert ag.pairs.iloc[0]["n_cases"] == 3
    assert mask_dice(np.zeros((4, 4)), np.zeros((4, 4))) == 1.0
    s.close()


def test_find_label_issues_input_check() -> None:
    with pytest.raises(DataError):
        find_label_issues(np.array([0, 1]), np.array([[0.5, 0.5]]))


def test_audit_pool_labels_waits_for_enough_labels_per_class(samples: Path, tmp_path: Path) -> None:
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.al.audit import audit_pool_labels
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import LabelAnswer
    from medwb.data import open_dataset

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=20, n_val=6, n_test=6)
    ds = open_dataset(path, progress=False)
    s = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(s, ds, strategy="random", batch_size=4, progress=False, pretrain=False, semi=False)
    batch = loop.propose()
    for cid in batch["case_id"]:
        loop.save_label(cid, LabelAnswer(value=0, annotator="a"))
    issues, message = audit_pool_labels(loop, folds=3)
    assert issues.empty and list(issues.columns)[:2] == ["case_id", "given"]
    assert message == "label audit needs >= 3 labels per class (have {0: 4})"
    assert s.review_queue().empty  # nothing flagged, nothing trained
    s.close()
