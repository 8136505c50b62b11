"""Split carving (pure, seeded) and the per-split arrays of the active-learning loop."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from medwb.data.splits import SplitArrays, carve_splits, seeded_subset
from medwb.errors import DataError


def _cohort(n_train: int, n_val: int = 0, n_test: int = 0) -> pd.DataFrame:
    rows = [(f"{s}_{i:03d}", s) for s, n in (("train", n_train), ("val", n_val), ("test", n_test)) for i in range(n)]
    return pd.DataFrame(rows, columns=["case_id", "split"])


def test_official_splits_are_kept_and_pool_subsets_are_seeded() -> None:
    c = _cohort(40, 5, 6)
    s = carve_splits(c)
    assert s["val"] == [f"val_{i:03d}" for i in range(5)] and len(s["test"]) == 6 and len(s["train"]) == 40
    sub = carve_splits(c, max_pool=10)
    assert len(sub["train"]) == 10 and sub["train"] == carve_splits(c, max_pool=10)["train"]  # fixed seed
    assert sub["train"] == sorted(sub["train"], key=s["train"].index)  # cohort order kept
    keep = s["train"][:7]
    assert carve_splits(c, pool_ids=keep)["train"] == keep
    assert carve_splits(c, pool_ids=keep, max_pool=20)["train"] == keep  # max_pool only shrinks


def test_missing_val_test_are_carved_disjoint_and_fixed() -> None:
    c = _cohort(100)
    s = carve_splits(c)
    assert (len(s["test"]), len(s["val"]), len(s["train"])) == (20, 15, 65)
    assert not set(s["train"]) & set(s["val"]) and not set(s["train"]) & set(s["test"])
    assert not set(s["val"]) & set(s["test"])
    assert s["val"] == sorted(s["val"]) and s["test"] == sorted(s["test"])
    order = list(np.random.default_rng(20240601).permutation(c["case_id"].tolist()))
    assert s["test"] == sorted(order[:20])  # today's rule: the seed 20240601 permutation
    assert carve_splits(c) == s


def test_empty_split_is_a_data_error() -> None:
    with pytest.raises(DataError, match="'train' split is empty"):
        carve_splits(_cohort(10, 2, 2), pool_ids=[], name="tiny")


def test_seeded_subset() -> None:
    ids = [f"c{i}" for i in range(30)]
    a = seeded_subset(ids, 5, 0)
    assert a == sorted(a) and len(a) == 5 and a == seeded_subset(ids, 5, 0) and a != seeded_subset(ids, 5, 1)
    assert seeded_subset(ids, 50, 0) == sorted(ids)


class _FakeDataset:
    """Two dataset splits with known pixels; counts how often each is read."""

    def __init__(self) -> None:
        self.cohort = _cohort(6, 3)
        self.reads: list[str] = []

    def arrays(self, split, size=None):
        self.reads.append(split)
        ids = self.cohort.loc[self.cohort["split"] == split, "case_id"].tolist()
        X = np.array([[[[float(i[-1])]]] for i in ids], np.float32) + (100 if split == "val" else 0)
        return X, np.arange(len(ids)), ids


def test_split_arrays_gathers_in_source_order_and_caches() -> None:
    ds = _FakeDataset()
    splits = {"train": ["train_004", "train_001"], "test": ["val_002", "train_005", "val_000"]}
    arr = SplitArrays(ds, splits, None)
    X, y, ids = arr["test"]
    assert ids == ["train_005", "val_002", "val_000"]  # sorted dataset splits, each in the wanted order
    assert X.ravel().tolist() == [5.0, 102.0, 100.0] and y.tolist() == [5, 2, 0]
    assert arr["train"][2] == ["train_004", "train_001"]
    arr["test"]
    assert sorted(ds.reads) == ["train", "val"]  # each dataset split read once


def test_stratified_subset_keeps_class_shares_and_is_seeded() -> None:
    from medwb.data.splits import stratified_subset

    y = np.array([0] * 100 + [1] * 300)
    idx = stratified_subset(y, 40, 3)
    assert np.bincount(y[idx]).tolist() == [10, 30] and (np.diff(idx) > 0).all()
    assert np.array_equal(idx, stratified_subset(y, 40, 3)) and not np.array_equal(idx, stratified_subset(y, 40, 4))
    rare = np.array([0] * 2 + [1] * 98)
    assert np.bincount(rare[stratified_subset(rare, 10, 0)]).tolist() == [2, 10]  # at least 2 of every class
