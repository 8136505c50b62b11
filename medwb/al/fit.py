"""How one round's network is trained: the loop's pipeline choices in one function.

Why here: the loop decides *what* to train on (the store's labels, the rest of the pool); this module decides
*how*: start from the pretrained trunk (:mod:`medwb.al.representation`) or from random init, then FixMatch on
the labelled cases plus the unlabelled pool (:func:`medwb.models.semi.train_semi`, classification) or supervised
training on the labelled cases only (:func:`medwb.models.train.train`). The all-labels reference of a simulation
goes through the same function, so every curve point and its reference share one recipe.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medwb.al.representation import finetune_config, with_pretrained

if TYPE_CHECKING:
    from medwb.data.dataset import Task
    from medwb.models import TrainConfig
    from medwb.models.networks import TrunkHeadNet
    from medwb.models.pretrain import PretrainResult


def uses_semi(task: Task, ndim: int, semi: bool | None) -> bool:
    """Whether rounds train with FixMatch: classification only (it needs class pseudo-labels); ``None`` means 2D
    only, since a 3D FixMatch step of 128 volumes costs seconds on a CPU and its schedule is not yet measured
    (``True`` asks for it in 3D too)."""
    return task == "classification" and (ndim == 2 if semi is None else bool(semi))


def fit_round(model: TrunkHeadNet, X: np.ndarray, y: np.ndarray, val: tuple[np.ndarray, np.ndarray], *,
              task: Task, config: TrainConfig, pretrained: PretrainResult | str | Path | None = None,
              finetune: str = "full", semi: bool = False, X_unlabelled: np.ndarray | None = None,
              test: tuple[np.ndarray, np.ndarray] | None = None,
              progress: bool = True) -> tuple[TrunkHeadNet, dict[str, float]]:
    """Train ``model`` on ``(X, y)`` with early stopping on ``val``; returns (model, metrics).

    ``pretrained``: load its trunk first and use ``finetune`` (``full`` or ``head``). ``semi``: FixMatch with
    ``X_unlabelled`` when the task is classification and at least 2 unlabelled images remain; otherwise
    supervised. Metrics: n_labeled, best_epoch, train_seconds, semi (1/0), val_* and, with ``test``, test_*.
    """
    from medwb.models.train import fit_and_evaluate, round_metrics

    if pretrained is not None:
        model, config = with_pretrained(model, pretrained), finetune_config(config, finetune)
    Xv, yv = val
    if semi and task == "classification" and X_unlabelled is not None and len(X_unlabelled) >= 2:
        from medwb.models.semi import semi_config_from, train_semi

        if config.freeze_trunk:
            for p in model.trunk.parameters():
                p.requires_grad_(False)
        res = train_semi(model, X, y, X_unlabelled, Xv, yv, config=semi_config_from(config), progress=progress)
        return res.model, {**round_metrics(res, len(y), Xv, yv, test), "semi": 1.0}
    model, metrics = fit_and_evaluate(model, X, y, Xv, yv, task=task, config=config, test=test, progress=progress)
    return model, {**metrics, "semi": 0.0}
