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
    from medwb.data.case_images import Images
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


class PoolInputs:
    """The active-learning loop's view of its splits at one input size: in memory (:class:`SplitArrays`, each
    dataset split read once and kept) or, with ``stream``, never holding the pool: its cases are read when asked
    for (:meth:`rows`, :meth:`images`: a :class:`~medwb.data.case_images.CaseImages`), and val / test are read by
    their own ids (a carved val split does not load the whole train split). ``self[split]`` gives (X, y, ids) in
    both modes (streamed: read on first use and kept; the pool only when a caller asks for all of it, e.g. the
    all-labels reference of a simulation)."""

    def __init__(self, dataset: Dataset, splits: Mapping[str, Sequence[str]], size: tuple[int, ...] | None, *,
                 stream: bool = False) -> None:
        self.dataset, self.size, self.stream = dataset, size, bool(stream)
        self.memory = SplitArrays(dataset, splits, size)
        self.splits = self.memory.splits
        self._read: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}

    def __getitem__(self, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
        if not self.stream:
            return self.memory[split]
        if split not in self._read:
            from medwb.data.dataset import case_targets

            ids = self.splits[split]
            self._read[split] = (self.rows(ids), case_targets(self.dataset, ids, self.size), list(ids))
        return self._read[split]

    def pool_ids(self) -> list[str]:
        return list(self.splits["train"])

    def _positions(self, case_ids: Sequence[str]) -> np.ndarray:
        pos = {c: i for i, c in enumerate(self.memory["train"][2])}
        return np.array([pos[str(c)] for c in case_ids], dtype=int)

    def rows(self, case_ids: Sequence[str]) -> np.ndarray:
        """Model inputs (N, C, *size) of these cases (pool or not when streamed; pool cases in memory)."""
        if self.stream:
            if not len(case_ids):
                from medwb.data.case_images import CaseImages

                return np.empty((0, *CaseImages(self.dataset, self.pool_ids()[:1], self.size).shape[1:]), np.float32)
            return self.dataset.inputs([str(c) for c in case_ids], self.size, what=f"{len(case_ids)} case(s)")
        return self.memory["train"][0][self._positions(case_ids)]

    def truth(self, case_ids: Sequence[str]) -> np.ndarray:
        """Ground truth of these pool cases (simulations measure auto-label errors with it)."""
        if self.stream:
            from medwb.data.dataset import case_targets

            return case_targets(self.dataset, case_ids, self.size)
        return self.memory["train"][1][self._positions(case_ids)]

    def images(self, case_ids: Sequence[str] | None = None) -> Images:
        """These pool cases (default: the whole pool) as pretraining, FixMatch and embeddings take them."""
        ids = self.pool_ids() if case_ids is None else [str(c) for c in case_ids]
        if self.stream:
            from medwb.data.case_images import CaseImages

            return CaseImages(self.dataset, ids, self.size) if ids else self.rows([])
        X = self.memory["train"][0]
        return X if case_ids is None else X[self._positions(ids)]

    def spatial_size(self) -> tuple[int, ...]:
        """The spatial size the network sees."""
        if self.size is not None:
            return tuple(int(v) for v in self.size)
        return tuple(int(v) for v in (self.images(self.pool_ids()[:1]) if self.stream
                                      else self.memory["train"][0]).shape[2:])
