"""The one label writer of the active-learning code, the simulated oracle and stored labels as targets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.al.oracle import LabelAnswer, ground_truth, label_targets, record_label, simulated_oracle
from medwb.errors import DataError
from medwb.store import Study, read_mask

from _fixtures import PNEUMONIA, tiny_pneumonia_npz


@pytest.fixture()
def seg_study(tmp_path: Path) -> Study:
    s = Study.create(tmp_path / "seg", dataset_path="x", task="segmentation", classes={0: "bg", 1: "fg"})
    s.add_cases(pd.DataFrame({"case_id": ["a", "b"], "split": "train"}))
    yield s
    s.close()


def test_record_label_writes_value_or_mask_with_provenance(seg_study: Study, tmp_path: Path) -> None:
    cls = Study.create(tmp_path / "cls", dataset_path="x", task="classification", classes={0: "n", 1: "p"})
    cls.add_cases(pd.DataFrame({"case_id": ["c1"], "split": "train"}))
    lid = record_label(cls, "c1", LabelAnswer(value=1, source="corrected", annotator="dr_a", seconds=2.5,
                                              note="pre-label 0 -> 1"), round=3)
    row = cls.labels().set_index("label_id").loc[lid]
    assert (row["value"], row["source"], row["annotator"], row["seconds"], row["round"], row["note"]) == \
        (1, "corrected", "dr_a", 2.5, 3, "pre-label 0 -> 1")
    assert row["mask_path"] is None
    cls.close()

    m1 = np.zeros((6, 5), np.int64)
    m1[2:4, 1:3] = 1
    m2 = np.ones((6, 5), np.int64)
    first = record_label(seg_study, "a", LabelAnswer(mask=m1, annotator="dr_a"), round=1)
    second = record_label(seg_study, "a", LabelAnswer(mask=m2, source="corrected", annotator="dr_a"), round=1)
    hist = seg_study.labels(latest=False).set_index("label_id")
    p1, p2 = hist.loc[first, "mask_path"], hist.loc[second, "mask_path"]
    assert p1 != p2  # a later label of the same case, annotator and round never overwrites the earlier file
    assert np.array_equal(read_mask(p1), m1) and np.array_equal(read_mask(p2), m2)
    assert seg_study.labels().set_index("case_id").loc["a", "label_id"] == second


def test_simulated_oracle_answers_with_truth_and_provenance(samples: Path, tmp_path: Path) -> None:
    from medwb.data import open_dataset

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=10, n_val=4, n_test=4)
    ds = open_dataset(path, progress=False)
    truth = ds.cohort.set_index("case_id")["label"]
    oracle = simulated_oracle(ds, annotator="sim")
    cid = "train_00007"
    y = int(truth[cid])
    plain = oracle(cid, None)
    assert (plain.value, plain.source, plain.annotator) == (y, "human", "sim")
    assert oracle(cid, {"value": y}).source == "human"  # accepting a right pre-label is a person's decision
    assert oracle(cid, {"value": 1 - y}).source == "corrected"
    assert ground_truth(ds)(cid) == y


def test_simulated_oracle_refuses_cases_without_truth(samples: Path) -> None:
    from medwb.data import open_dataset

    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    unlabelled = ds.cohort.loc[ds.cohort["mask"].isna(), "case_id"]
    if len(unlabelled) == 0:
        pytest.skip("every bundled case has a mask")
    with pytest.raises(DataError, match="no ground-truth mask"):
        simulated_oracle(ds)(str(unlabelled.iloc[0]), None)
    cid = str(ds.cohort.loc[ds.cohort["mask"].notna(), "case_id"].iloc[0])
    ans = simulated_oracle(ds)(cid, None)
    assert np.array_equal(ans.mask, ds.load_mask(cid)[0]) and ans.source == "human"


def test_label_targets_reads_classes_and_resizes_masks(seg_study: Study) -> None:
    lab = pd.DataFrame({"value": pd.array([1, 0], dtype="Int64")})
    assert label_targets(lab, "classification", ()).tolist() == [1, 0]
    m = np.zeros((8, 8), np.int64)
    m[:4] = 1
    record_label(seg_study, "b", LabelAnswer(mask=m, annotator="x"))
    y = label_targets(seg_study.labels(), "segmentation", (4, 4))
    assert y.shape == (1, 1, 4, 4) and y.dtype == np.int64
    assert y[0, 0, :2].min() == 1 and y[0, 0, 2:].max() == 0  # nearest resize keeps the label values
