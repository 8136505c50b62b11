"""Which cases are the active-learning pool (train), val and test, and their arrays at one input size.

Why here: a report or an explanation must score exactly the cases the loop held out, so the carving rule is a
pure function of the cohort (fixed seeds, no hidden state) and the result is saved in the study
(:mod:`medwb.store.pool`); the loop, the report and the simulation all read the same ids.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import DataError

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset

#: seed of the val/test carving: the same held-out cases for every AL seed and strategy
CARVE_SEED = 20240601
#: seed of the ``max_pool`` subset: the same pool for every AL seed and strategy
POOL_SEED = 12345
SPLITS = ("train", "val", "test")


def carve_splits(cohort: pd.DataFrame, *, pool_ids: Iterable[str] | None = None,
                 max_pool: int | None = None, name: str | None = None) -> dict[str, list[str]]:
    """Case ids of the pool (``train``), ``val`` and ``test`` from the cohort's ``split`` column.

    Datasets without a val/test split (MSD, image folders) get them carved from the labelled train cases with a
    fixed seed (15% val, 20% test). ``pool_ids`` keeps only those pool cases; ``max_pool`` then takes a fixed
    seeded subset of the pool. ``name`` (the dataset's) only labels the error of an empty split.
    """
    c = cohort
    ids = {s: [str(i) for i in c.loc[c["split"] == s, "case_id"]] for s in SPLITS}
    if not ids["val"] or not ids["test"]:
        order = list(np.random.default_rng(CARVE_SEED).permutation(ids["train"]))
        n = len(order)
        n_test = 0 if ids["test"] else max(1, round(0.20 * n))
        n_val = 0 if ids["val"] else max(1, round(0.15 * n))
        ids["test"] = ids["test"] or sorted(order[:n_test])
        ids["val"] = ids["val"] or sorted(order[n_test:n_test + n_val])
        held_out = set(order[:n_test + n_val])
        ids["train"] = [i for i in ids["train"] if i not in held_out]
    if pool_ids is not None:
        keep_ids = {str(p) for p in pool_ids}
        ids["train"] = [i for i in ids["train"] if i in keep_ids]
    if max_pool is not None and len(ids["train"]) > max_pool:
        keep = set(np.random.default_rng(POOL_SEED).choice(ids["train"], max_pool, replace=False).tolist())
        ids["train"] = [i for i in ids["train"] if i in keep]
    for s, v in ids.items():
        if not v:
            raise DataError(name, f"the {s!r} split is empty",
                            "give the dataset labelled train cases (cohort column 'split')")
    return ids


def seeded_subset(ids: Sequence[str], n: int, seed: int) -> list[str]:
    """A sorted seeded random subset of ``n`` ids (all of them when fewer): a quick pool for a notebook run."""
    return sorted(str(i) for i in np.random.default_rng(seed).choice(list(ids), min(n, len(ids)), replace=False))


def stratified_subset(y: np.ndarray, n: int, random_state: int) -> np.ndarray:
    """Sorted indices of about ``n`` cases drawn with the class proportions of ``y`` (at least 2 per class),
    seeded: the labelled fraction of a benchmark's "label x% at random" draw."""
    rng = np.random.default_rng(random_state)
    classes, counts = np.unique(y, return_counts=True)
    take = np.maximum(2, np.round(n * counts / counts.sum()).astype(int))
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), k, replace=False)
                                   for c, k in zip(classes, take)]))


class SplitArrays:
    """(X, y, case_ids) of each split at one input size, each dataset split read once and kept.

    A split may gather cases from several dataset splits (carved val/test come from ``train``): they are
    concatenated in sorted order of the dataset split names, each in the order of the wanted ids.
    y is ground truth: the loop uses it only for evaluation and the all-labels reference.
    """

    def __init__(self, dataset: Dataset, splits: Mapping[str, Sequence[str]],
                 size: tuple[int, ...] | None) -> None:
        self.dataset, self.size = dataset, size
        self.splits = {str(k): [str(c) for c in v] for k, v in splits.items()}
        self._source: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
        self._split: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}

    def __getitem__(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if split not in self._split:
            want = self.splits[split]
            src = {str(s) for s in self.dataset.cohort.set_index("case_id").loc[want, "split"]}
            Xs, ys, idss = [], [], []
            for s in sorted(src):
                if s not in self._source:
                    X, y, ids = self.dataset.arrays(s, size=self.size)
                    self._source[s] = (X, y, [str(i) for i in ids])
                X, y, ids = self._source[s]
                pos = {c: i for i, c in enumerate(ids)}
                sel = np.array([pos[c] for c in want if c in pos], dtype=int)
                Xs.append(X[sel])
                ys.append(y[sel])
                idss.extend(ids[i] for i in sel)
            self._split[split] = (np.concatenate(Xs), np.concatenate(ys), idss)
        return self._split[split]
