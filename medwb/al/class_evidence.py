"""The model's evidence on a classification round's proposed cases, computed when the loop proposes them: the class
probabilities of MC-dropout passes (mean and spread per class) and the Grad-CAM of the proposed class at the
image's own size.

Why at proposal time: the loop holds the model then, while a reader's page in ``medwb review`` loads none and
showed one class and one number. :func:`save_round_class_evidence` stores both for every proposed case
(``Study.save_class_evidence``), and the readers' pages and notebook 02's queue draw them
(:mod:`medwb.ui.widgets.class_evidence`). The probabilities come from the one MC-dropout implementation
(:func:`medwb.models.uncertainty.mc_dropout_proba`, with the loop's ``mc_passes`` and seed), the map from the one
Grad-CAM (:func:`medwb.explain.attributions.gradcam`): the single import of ``medwb.al`` from a higher room, allowed
with its reason in ``tests/test_architecture.py``.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import DataError

if TYPE_CHECKING:
    from torch import nn

    from medwb.al.loop import ActiveLearningLoop


def mc_class_probabilities(model: nn.Module, X: np.ndarray, *, passes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(mean, std), each (N, K): the class probabilities of ``passes`` MC-dropout passes over the inputs ``X``."""
    from medwb.models.uncertainty import mc_dropout_proba

    mc = mc_dropout_proba(model, X, passes=passes, seed=seed)  # (T, N, K)
    return mc.mean(0).astype(np.float64), mc.std(0).astype(np.float64)


def saliency_maps(model: nn.Module, X: np.ndarray, targets: np.ndarray,
                  natives: list[tuple[int, ...]]) -> list[np.ndarray | None]:
    """Grad-CAM of class ``targets[i]`` for each input ``X[i]`` (the loop's size), resized (linear) to the image's
    own spatial shape ``natives[i]``; scaled to max 1. All None for a network Grad-CAM cannot hook (no
    convolution): the probabilities are stored without a map."""
    from medwb.data.dataset import resize
    from medwb.explain.attributions import gradcam

    try:
        cams = gradcam(model, X, np.array(targets, dtype=np.int64), progress=False)  # (N, 1, *size)
    except DataError:
        return [None] * len(X)
    return [np.asarray(resize(c, native, "image"), dtype=np.float32)[0] for c, native in zip(cams, natives)]


def save_round_class_evidence(loop: ActiveLearningLoop, batch: pd.DataFrame, *,
                              mc_batch: np.ndarray | None = None) -> None:
    """Store, for each case of the open round's pre-labelled classification ``batch`` (a model's pre-labels), the
    MC-dropout class probabilities and the Grad-CAM of its pre-label with the round and model version. A reopened
    round keeps what it has (same model, its map file present) and computes only the missing cases.
    ``mc_batch``: the MC samples (T, len(batch), K) of the batch's rows when the caller has them (the loop's
    pre-labelling computed them for the auto-accept threshold); otherwise they are computed here."""
    study, number, version = loop.study, loop.round, loop.current_model()[1]
    model = loop.current_model()[0]
    have = study.class_evidence(number)
    kept = {c for c, p, v in zip(have["case_id"], have["map_path"], have["model_version"])
            if v == version and (p is None or Path(p).is_file())}
    is_todo = (~batch["case_id"].astype(str).isin(kept) & batch["prelabel"].notna()).to_numpy()
    todo = batch[is_todo]
    if model is None or not len(todo):
        return
    cids = [str(c) for c in todo["case_id"]]
    Xb = loop.data.rows(cids)
    if mc_batch is None:
        mean, std = mc_class_probabilities(model, Xb, passes=loop.mc_passes, seed=loop.seed)
    else:
        mine = np.asarray(mc_batch, dtype=np.float64)[:, is_todo]
        mean, std = mine.mean(0), mine.std(0)
    maps = saliency_maps(model, Xb, todo["prelabel"].astype(int).to_numpy(),
                         [loop.ds.spatial_shape(c) for c in cids])
    for i, cid in enumerate(cids):
        study.save_class_evidence(number, cid, mean[i], std[i], passes=loop.mc_passes, model_version=version,
                                  saliency=maps[i], saliency_class=int(todo["prelabel"].iloc[i]))
