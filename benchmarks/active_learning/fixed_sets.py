"""The inputs of the fixed-label-set benchmarks of a classification pool (bench_warm_start.py,
bench_train_setting.py): the pool's arrays, its validation and test splits, and the pool's SimCLR trunk, read from
the cache when a simulation of the same pool and config made it (else pretrained there once).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from medwb.al.representation import pretrain_build_args, pretrained_representation
from medwb.data import open_dataset
from medwb.data.dataset import Dataset
from medwb.models.networks import build_for_dataset
from medwb.models.pretrain import PretrainResult, pretrain_config_on


Split = tuple[np.ndarray, np.ndarray]


def pool_inputs(data: str, cache: Path, pretrain: Mapping[str, object] | None = None
                ) -> tuple[Dataset, np.ndarray, np.ndarray, Split, Split, PretrainResult]:
    """(dataset, pool images, pool labels, (val X, y), (test X, y), pretrained trunk); ``cache``: the folder whose
    ``cache/`` holds (or gets) the trunk, e.g. a simulation's OUT; ``pretrain``: PretrainConfig fields changed from
    the network's default schedule (:func:`~medwb.models.pretrain.pretrain_config_on`), e.g. ``{"steps": 600}``."""
    ds = open_dataset(data, progress=False)
    Xp, yp, _ = ds.arrays("train")
    args = pretrain_build_args(lambda s: build_for_dataset(ds, seed=s), None)
    config = pretrain_config_on(pretrain, ds)  # None: the default schedule
    pre = pretrained_representation(cache, Xp, build_args=args, config=config, progress=False)
    return ds, Xp, yp, ds.arrays("val")[:2], ds.arrays("test")[:2], pre
