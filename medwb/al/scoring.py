"""Running the current model over the pool: the inputs every acquisition strategy takes.

Why apart from :mod:`medwb.al.acquire`: the strategies stay pure functions of arrays; this is the one place
that runs the network (MC-dropout passes, embeddings) to produce those arrays.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from medwb.al.acquire import check_strategy, image_scores_from_mc
from medwb.models.uncertainty import SCORE_KINDS

if TYPE_CHECKING:
    from distributed import Client
    from torch import nn

    from medwb.data.dataset import Dataset

#: strategies that use embeddings (the others skip the extra trunk pass over the pool).
NEEDS_EMBEDDINGS = frozenset({"coreset", "badge", "hybrid", "cold_start", "typiclust_then_hybrid", "hybrid_random"})


def first_batch_strategy(cold_start: str, task: str, ndim: int) -> str:
    """The strategy of the first, model-free batch: ``cold_start`` as asked, and for ``"auto"`` the label-free
    TypiClust ``cold_start`` for 2D classification, a random batch in 3D and for segmentation, where random
    batches led to better models. HC18 (2D, pool 164, 20% in 4 rounds of 9, 3 seeds, the default pipeline): a
    random first batch and hybrid picking after it reached test Dice 0.879 / 0.907 / 0.922 at 18 / 27 / 36 labels
    against 0.861 / 0.890 / 0.914 after TypiClust on pixel features, and were ahead of random picking from the same
    first batch in 7 of 9 paired rounds (benchmarks/active_learning/hc18_random_first_batch). 3D:
    AdrenalMNIST3D, 3 seeds, same SimCLR trunk and training, test AUC of the first model 0.853 (60 labels) and
    0.873 (120) from a random batch against 0.799 / 0.841 from the cold start in the SimCLR embedding and 0.811 /
    0.836 on a pixel PCA, random ahead on 6 of 6 draws; the 3D embedding's 20-NN test AUC is 0.75, no better than
    the pixels' (benchmarks/active_learning/recipes/adrenalmnist3d_first_batch). Hippocampus segmentation, 17 of
    169 volumes on the same pretrained UNet, two runs of 3 seeds: test Dice 0.812 / 0.821 from a random batch
    against 0.806 / 0.812 from the cold start, random ahead on 5 of 6 draws (hippocampus_medwb). On BloodMNIST the
    cold start won (0.952 against 0.938 at 60 labels, bloodmnist_first_batch)."""
    if cold_start != "auto":
        return check_strategy(cold_start)
    return "random" if int(ndim) == 3 or task == "segmentation" else "cold_start"


def score_kind(strategy: str) -> str:
    """The uncertainty a strategy ranks a segmentation pool by: its own when it is one
    (:data:`medwb.models.uncertainty.SCORE_KINDS`), else BALD (hybrid's base with MC samples). The one kind the
    round computes, in memory or in shards."""
    return strategy if strategy in SCORE_KINDS else "bald"


def segmentation_image_scores(model: nn.Module, X: np.ndarray, *, passes: int, seed: int, how: str = "topk",
                              chunk: int = 16, kinds: tuple[str, ...] = SCORE_KINDS,
                              embeddings: bool = False) -> dict[str, np.ndarray]:
    """Per-image uncertainty of a segmentation pool: MC-dropout voxel scores reduced per image (``how``: top-k%
    mean by default, so a small structure is not drowned by the background), ``chunk`` images at a time so
    T x N x K x voxels never sits in memory (chunk at i is seeded ``seed + i``). Returns ``score_<kind>``
    arrays for :func:`medwb.al.acquire.select`, for ``kinds`` (default: every kind), and with ``embeddings`` the
    pool's ``embeddings`` from the same trunk pass."""
    from medwb.models.uncertainty import mc_dropout_and_embeddings, mc_dropout_proba

    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(X), chunk):
        if embeddings:
            mc, emb = mc_dropout_and_embeddings(model, X[i:i + chunk], passes=passes, seed=seed + i)
            parts.setdefault("embeddings", []).append(emb)
        else:  # no embeddings pooled (or, without the fast path, computed by a second pass) to be dropped
            mc = mc_dropout_proba(model, X[i:i + chunk], passes=passes, fast=True, seed=seed + i)
        for key, val in image_scores_from_mc(mc, how=how, kinds=kinds).items():
            parts.setdefault(key, []).append(val)
    return {k: np.concatenate(v) for k, v in parts.items()}


def pool_inputs(model: nn.Module, X_pool: np.ndarray, X_labeled: np.ndarray, *, task: str, strategy: str,
                passes: int, seed: int, voxel_reduce: str = "topk") -> dict[str, Any]:
    """Keyword inputs of :func:`medwb.al.acquire.select` for the unlabelled ``X_pool``: MC-dropout samples and
    mean probabilities (classification) or per-image ``score_<kind>`` (segmentation), plus pool and labelled
    embeddings when ``strategy`` uses them (the pool's from the MC pass's own trunk features)."""
    from medwb.models import embed
    from medwb.models.uncertainty import mc_dropout_and_embeddings

    out: dict[str, Any] = {}
    diverse = strategy in NEEDS_EMBEDDINGS
    if task == "classification":
        mc, emb = mc_dropout_and_embeddings(model, X_pool, passes=passes, seed=seed)
        out["mc_probs"], out["probs"] = mc, mc.mean(0)
        if diverse:
            out["embeddings"] = emb
    else:
        out.update(segmentation_image_scores(model, X_pool, passes=passes, seed=seed, how=voxel_reduce,
                                             kinds=(score_kind(strategy),), embeddings=diverse))
    if diverse:
        out["labeled_embeddings"] = embed(model, X_labeled) if len(X_labeled) else None
    return out


def selection_inputs(model: nn.Module | None, X_pool: np.ndarray, X_labeled: np.ndarray, *, strategy: str,
                     cold_start: str, task: str, passes: int, seed: int,
                     voxel_reduce: str = "topk", representation: Callable[[np.ndarray], np.ndarray] | None = None
                     ) -> tuple[str, dict[str, Any]]:
    """(strategy name, :func:`medwb.al.acquire.select` inputs) of one round: ``random`` stays random throughout
    (the honest baseline); before any model the label-free ``cold_start`` on pixel features, or on
    ``representation(X_pool)`` when given (a pretrained trunk's embedding); then ``strategy`` on the model's
    outputs (:func:`pool_inputs`)."""
    from medwb.al.acquire import pixel_features

    if strategy == "random":
        return "random", {"n_pool": len(X_pool)}
    if model is None:
        if cold_start == "random":
            return cold_start, {"n_pool": len(X_pool)}
        feats = representation(X_pool) if representation is not None else pixel_features(X_pool, random_state=seed)
        return cold_start, {"embeddings": feats}
    return strategy, pool_inputs(model, X_pool, X_labeled, task=task, strategy=strategy, passes=passes, seed=seed,
                                 voxel_reduce=voxel_reduce)


def sharded_pool_inputs(model: nn.Module, dataset: Dataset, pool_ids: Sequence[str], labeled_ids: Sequence[str], *,
                        strategy: str, passes: int, seed: int, size: tuple[int, ...] | None,
                        client: str | Client | None, voxel_reduce: str = "topk",
                        progress: bool = False) -> dict[str, Any]:
    """:func:`pool_inputs` for a pool that is not held in memory, or scored on a Dask cluster: the pool and the
    labelled cases go through :func:`medwb.compute.score_pool` in shards of case ids (``client`` None: in this
    process; ``"local"``, a scheduler address or a ``distributed.Client``: as Dask tasks that read their own
    pixels). Only per-case numbers come back: the uncertainty the strategy ranks by (``score_<kind>``: BALD for
    hybrid, as with MC samples in memory), the mean probabilities (classification, for BADGE) and the embeddings.
    Each shard's MC seed derives from ``seed`` and its index, so every path gives the same batch."""
    from medwb.compute import score_pool

    kind = score_kind(strategy)
    common = dict(seed=seed, client=client, size=size, voxel_reduce=voxel_reduce, progress=progress)
    pool = score_pool(model, dataset, [str(c) for c in pool_ids], mc_samples=passes, uncertainty=kind, **common)
    out: dict[str, Any] = {f"score_{kind}": pool["uncertainty"].to_numpy(dtype=np.float64)}
    if "probabilities" in pool:
        out["probs"] = np.stack(pool["probabilities"].to_list())
    if strategy in NEEDS_EMBEDDINGS:
        out["embeddings"] = np.stack(pool["embedding"].to_list())
        lab = [str(c) for c in labeled_ids]  # only their embeddings are used: one MC pass
        out["labeled_embeddings"] = np.stack(score_pool(model, dataset, lab, mc_samples=1, uncertainty=kind, **common)[
            "embedding"].to_list()) if lab else None
    return out
