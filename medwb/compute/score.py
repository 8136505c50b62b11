"""Score a whole pool in shards of case ids, in this process or as Dask tasks: one row per case.

Why shards: a pool of 100k images never sits in memory at the model's input size; each shard reads its own
pixels, and only scores and embeddings (a few hundred bytes per case) are kept.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.compute.device import check_device
from medwb.compute.shard import ScoreSpec, plan_shards, score_shard
from medwb.compute.source import model_input_size, resolve_model
from medwb.errors import DataError

if TYPE_CHECKING:
    from torch import nn

    from medwb.data.dataset import Dataset


def score_pool(model_or_checkpoint: nn.Module | str | Path, dataset: Dataset | str | Path,
               case_ids: Sequence[str] | None = None, *, shard_size: int = 512, mc_samples: int = 20,
               seed: int = 0, client: Any = None, device: str = "auto", uncertainty: str = "entropy",
               workers: int | None = None, size: Sequence[int] | None = None, voxel_reduce: str = "topk",
               progress: bool = True) -> pd.DataFrame:
    """One row per case of ``case_ids`` (default: every case of ``dataset``), in their order: ``case_id``,
    ``predicted_class`` and ``probabilities`` (classifier) or ``mean_foreground`` (segmenter), ``uncertainty``
    (``uncertainty`` of ``mc_samples`` MC-dropout passes) and ``embedding`` (float32 trunk features).

    ``model_or_checkpoint``: a module, a checkpoint file or a study folder (its latest model). ``client``:
    None (this process), ``'local'`` (a LocalCluster of ``workers`` single-thread processes, stopped after), a
    scheduler address or a ``distributed.Client``; on Dask the model is sent to each worker once and the
    workers read the pixels from ``dataset``'s path. Same ``seed`` and ``shard_size`` -> the same numbers on
    every path. ``size``: the model's input grid (default: the checkpoint's, else the data's default).
    ``voxel_reduce``: how a segmenter's voxel uncertainty becomes one number per image ("topk", "mean", ...).
    """
    from medwb.data import Dataset, open_dataset
    from medwb.models.uncertainty import MAP_KINDS, SCORE_KINDS

    check_device(device)
    model, meta, _ = resolve_model(model_or_checkpoint)
    ds = dataset if isinstance(dataset, Dataset) else open_dataset(dataset, progress=False)
    ids = ds.case_ids() if case_ids is None else [str(c) for c in case_ids]
    if not ids:
        raise DataError(ds.path, "no cases to score", "pass case ids of the dataset (or None for all of them)")
    segmenter = getattr(model, "task", "classification") == "segmentation"
    kinds = MAP_KINDS if segmenter else SCORE_KINDS
    if uncertainty not in kinds:
        raise DataError(None, f"uncertainty {uncertainty!r} cannot be computed for this model",
                        f"use one of {', '.join(kinds)}")
    grid = tuple(int(s) for s in size) if size is not None else model_input_size(ds, meta)
    spec = ScoreSpec(size=grid, mc_samples=int(mc_samples), uncertainty=uncertainty, device=device,
                     voxel_reduce=voxel_reduce)
    shards = plan_shards(ids, shard_size)
    if client is None:
        from tqdm.auto import tqdm

        parts = [score_shard(model, ds, shard, index=i, seed=seed, spec=spec)
                 for i, shard in enumerate(tqdm(shards, desc="scoring shards", disable=not progress))]
    else:
        parts = _score_on_dask(model, str(Path(ds.path).resolve()), shards, seed=seed, spec=spec, client=client,
                               workers=workers, progress=progress)
    return _frame(parts, segmenter, meta, spec, seed)


def _score_on_dask(model: nn.Module, path: str, shards: list[list[str]], *, seed: int, spec: ScoreSpec,
                   client: Any, workers: int | None, progress: bool) -> list[dict[str, Any]]:
    """One Dask task per shard; the model is scattered to every worker once (broadcast), results come back in
    shard order."""
    import copy
    import uuid

    from distributed import progress as dask_progress

    from medwb.compute.cluster import dask_client
    from medwb.models import device_of

    with dask_client(client, workers=workers) as c:
        on_cpu = model if device_of(model).type == "cpu" else copy.deepcopy(model).cpu()  # a CPU worker unpickles it
        model_f = c.scatter(on_cpu, broadcast=True, hash=False)
        run = uuid.uuid4().hex[:8]
        futures = [c.submit(score_shard, model_f, path, shard, index=i, seed=seed, spec=spec, pure=False,
                            key=f"medwb-score-{run}-{i}") for i, shard in enumerate(shards)]
        try:
            if progress:
                dask_progress(futures)
            return c.gather(futures)
        finally:
            c.cancel([*futures, model_f])


def _frame(parts: list[dict[str, Any]], segmenter: bool, meta: dict[str, Any], spec: ScoreSpec,
           seed: int) -> pd.DataFrame:
    """The shards' scores as one table, with how they were made in ``attrs`` (kept in the Parquet file)."""
    cat = {k: [v for p in parts for v in p[k]] if k == "case_id" else np.concatenate([p[k] for p in parts])
           for k in parts[0]}
    df = pd.DataFrame({"case_id": cat["case_id"]})
    if segmenter:
        df["mean_foreground"] = cat["prediction"]
    else:
        df["predicted_class"] = cat["prediction"].astype(np.int64)
        df["probabilities"] = list(cat["probabilities"])
    df["uncertainty"] = cat["uncertainty"]
    df["embedding"] = list(cat["embedding"])
    df.attrs.update({"uncertainty": spec.uncertainty, "mc_samples": spec.mc_samples, "seed": int(seed),
                     "input_size": list(spec.size) if spec.size else None,
                     "model_version": meta.get("model_version")})
    return df


def write_scores(df: pd.DataFrame, path: str | Path) -> Path:
    """Write the table of :func:`score_pool` as Parquet (crash-safe: all or nothing)."""
    from medwb.atomic import atomic_write

    return atomic_write(Path(path), lambda f: df.to_parquet(f, index=False))
