"""What every session-21 hippocampus probe shares: the simulation's splits at 32x48x32, a seeded random label set
(as ``../../bench_seg_semi.py``), the loop's supervised segmentation round, and the test Dice of given masks."""
from __future__ import annotations

import numpy as np

from medwb.al.fit import fit_round
from medwb.data import open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.metrics import dice
from medwb.models.networks import TrunkHeadNet, build_for_dataset
from medwb.models.train import default_train_config

SIZE = (32, 48, 32)


def train_round(data: str, seed: int, n: int, model: TrunkHeadNet | None = None, size: tuple[int, ...] = SIZE):
    """(model, metrics, val, test) of one supervised round on ``n`` random pool volumes (all when n >= pool), on
    volumes resized to ``size``."""
    ds = open_dataset(data, progress=False)
    inputs = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), size)
    (Xp, yp, _), val, test = inputs["train"], inputs["val"][:2], inputs["test"][:2]
    lab = (np.sort(np.random.default_rng(seed).choice(len(Xp), n, replace=False)) if n < len(Xp)
           else np.arange(len(Xp)))
    config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
    model = model if model is not None else build_for_dataset(ds, seed=seed)
    model, m = fit_round(model, Xp[lab], yp[lab], val, task=ds.task, config=config, semi=False, test=test,
                         progress=False)
    return model, m, val, test


def mean_dice(masks: np.ndarray, y: np.ndarray) -> float:
    """Mean over cases of the mean foreground Dice (classes 1, 2) of integer masks against y (N, 1, ...)."""
    return float(np.mean([dice(masks[i], y[i, 0], n_classes=3) for i in range(len(masks))]))
