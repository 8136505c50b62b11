"""One shard of a pool, scored where it runs: read its pixels, MC-dropout uncertainty, prediction, embedding.

Why one function for both paths: the in-process loop and every Dask task call :func:`score_shard` with the same
shard and the same seed (derived from the global seed and the shard index, never from the worker), so a cluster
gives the numbers the laptop gives. On a worker the dataset is opened once per process from its path (the
worker reads the pixels itself, :mod:`medwb.compute.worker`) and only scores and embeddings travel back.
"""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from medwb.compute.device import pick_device
from medwb.compute.worker import file_stamp, undo_malloc_trim, worker_dataset

if TYPE_CHECKING:
    from torch import nn

    from medwb.data.dataset import Dataset

#: images of a segmentation shard scored together (T x K x voxels of these sit in memory at once)
SEGMENTATION_CHUNK = 16
#: one model per worker process: tasks on a multi-threaded worker take turns (MC mode toggles layer modes)
MODEL_LOCK = threading.Lock()


@dataclass(frozen=True)
class ScoreSpec:
    """How every shard is scored: the model's input grid, MC passes, the uncertainty measure, the device word,
    and (segmentation) how voxel uncertainty becomes one number per image."""

    size: tuple[int, ...] | None
    mc_samples: int
    uncertainty: str
    device: str
    voxel_reduce: str = "topk"


def plan_shards(case_ids: Sequence[str], shard_size: int) -> list[list[str]]:
    """The pool cut into consecutive shards of ``shard_size`` case ids (the last may be shorter)."""
    ids = [str(c) for c in case_ids]
    size = max(1, int(shard_size))
    return [ids[i:i + size] for i in range(0, len(ids), size)]


def shard_seed(seed: int, index: int) -> int:
    """The MC-dropout seed of shard ``index``: a function of the global seed and the index only."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def score_shard(model: nn.Module, dataset: Dataset | str, case_ids: Sequence[str], *, index: int, seed: int,
                spec: ScoreSpec) -> dict[str, Any]:
    """Scores of one shard: ``case_id``, ``prediction`` (class, or mean foreground probability for a
    segmenter), ``uncertainty`` (``spec.uncertainty`` of the MC samples; per image by ``spec.voxel_reduce``
    for a segmenter), ``embedding`` (trunk features, float32) and, for a classifier, ``probabilities``."""
    from medwb.models import decide, decision_of, embed
    from medwb.models.uncertainty import mc_dropout_proba, mc_uncertainty_maps, reduce_voxel_scores, score_map

    undo_malloc_trim()
    ds = worker_dataset(dataset, file_stamp(dataset)) if isinstance(dataset, str) else dataset
    ids = [str(c) for c in case_ids]
    X = ds.inputs(ids, spec.size, what=f"shard {index}")
    s = shard_seed(seed, index)
    out: dict[str, Any] = {"case_id": ids}
    with MODEL_LOCK:
        model.to(pick_device(spec.device))
        if getattr(model, "task", "classification") == "classification":
            mc = mc_dropout_proba(model, X, passes=spec.mc_samples, fast=True, seed=s)
            probs = mc.mean(0)
            out["prediction"] = decide(probs, decision_of(model))
            out["uncertainty"] = score_map(spec.uncertainty, probs=probs, mc_probs=mc).astype(np.float64)
            out["probabilities"] = probs.astype(np.float32)
        else:
            fg, unc = [], []
            for j in range(0, len(X), SEGMENTATION_CHUNK):
                maps = mc_uncertainty_maps(model, X[j:j + SEGMENTATION_CHUNK], passes=spec.mc_samples, fast=True,
                                           seed=s + j, kinds=(spec.uncertainty,))
                mean = maps["mean"]
                fg.append((1.0 - mean[:, 0]).reshape(len(mean), -1).mean(1))
                unc.append(reduce_voxel_scores(maps[spec.uncertainty], how=spec.voxel_reduce))
            out["prediction"] = np.concatenate(fg).astype(np.float64)
            out["uncertainty"] = np.concatenate(unc).astype(np.float64)
        out["embedding"] = embed(model, X)
    return out
