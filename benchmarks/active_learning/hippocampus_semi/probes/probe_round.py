"""What every hippocampus probe shares: the fixed label sets and splits of ``../../bench_seg_semi.py`` (imported from
there), the loop's supervised segmentation round, and the test Dice of given masks."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/active_learning: bench_seg_semi
from bench_seg_semi import fixed_set_inputs, random_label_set  # noqa: E402

from medwb.al.fit import fit_round  # noqa: E402
from medwb.metrics import dice  # noqa: E402
from medwb.models.networks import TrunkHeadNet, build_for_dataset  # noqa: E402
from medwb.models.train import default_train_config  # noqa: E402

SIZE = (32, 48, 32)


def train_round(data: str, seed: int, n: int, model: TrunkHeadNet | None = None, size: tuple[int, ...] = SIZE):
    """(model, metrics, val, test) of one supervised round on ``n`` random pool volumes (all when n >= pool), on
    volumes resized to ``size``."""
    ds, (Xp, yp), val, test = fixed_set_inputs(data, size)
    lab = random_label_set(seed, n, len(Xp))
    config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
    model = model if model is not None else build_for_dataset(ds, seed=seed)
    model, m = fit_round(model, Xp[lab], yp[lab], val, task=ds.task, config=config, semi=False, test=test,
                         progress=False)
    return model, m, val, test


def mean_dice(masks: np.ndarray, y: np.ndarray) -> float:
    """Mean over cases of the mean foreground Dice (classes 1, 2) of integer masks against y (N, 1, ...)."""
    return float(np.mean([dice(masks[i], y[i, 0], n_classes=3) for i in range(len(masks))]))
