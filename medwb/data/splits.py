"""Which cases are the active-learning pool, the validation split and the test split.

Datasets without an official val/test split (MSD, image folders) get them carved from the labelled train
cases with a fixed seed (15% val, 20% test), the same for every AL seed, so all strategies are judged on one
test set. ``max_pool`` keeps a fixed seeded subset of the pool (the same for every AL seed).

(Copied verbatim from ``ActiveLearningLoop.split_ids`` on the report branch so the report can carve the
splits without importing the loop; the data/loop owner's version replaces this file at merge.)
"""
from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from medwb.errors import DataError


def carve_splits(cohort: pd.DataFrame, *, pool_ids: Iterable[str] | None = None,
                 max_pool: int | None = None) -> dict[str, list[str]]:
    """Case ids of the pool (``train``), ``val`` and ``test`` under the loop's rules (see module doc)."""
    c = cohort
    ids = {s: [str(i) for i in c.loc[c["split"] == s, "case_id"]] for s in ("train", "val", "test")}
    if not ids["val"] or not ids["test"]:
        order = list(np.random.default_rng(20240601).permutation(ids["train"]))
        n = len(order)
        n_test = 0 if ids["test"] else max(1, round(0.20 * n))
        n_val = 0 if ids["val"] else max(1, round(0.15 * n))
        ids["test"] = ids["test"] or sorted(order[:n_test])
        ids["val"] = ids["val"] or sorted(order[n_test:n_test + n_val])
        ids["train"] = [i for i in ids["train"] if i not in set(order[:n_test + n_val])]
    if pool_ids is not None:
        keep_pool = {str(p) for p in pool_ids}
        ids["train"] = [i for i in ids["train"] if i in keep_pool]
    if max_pool is not None and len(ids["train"]) > max_pool:  # same subset for every AL seed
        keep = set(np.random.default_rng(12345).choice(ids["train"], max_pool, replace=False).tolist())
        ids["train"] = [i for i in ids["train"] if i in keep]
    for s, v in ids.items():
        if not v:
            raise DataError(None, f"the {s!r} split is empty",
                            "give the dataset labelled train cases (cohort column 'split')")
    return ids
