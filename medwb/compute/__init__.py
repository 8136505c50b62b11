"""medwb.compute: where pool-wide work runs — in this process, or as Dask tasks on an embedded LocalCluster or an
existing cluster — and on which device.

``score_pool(model, data, case_ids, client=None | 'local' | 'tcp://HOST:PORT')`` scores a pool in shards of
case ids (``medwb score`` on the command line). The same code runs on a laptop and on a cluster; the same seed
gives the same numbers on both.

Why Dask, not Ray: pool work is independent numpy/torch tasks over shards of files, Dask's submit/gather; Dask
is pure Python from pip, embeds as a LocalCluster with no daemon, and SLURM/PBS/Kubernetes sites already start Dask
workers (dask-jobqueue). The longer answer is in docs/ARCHITECTURE.md.

Sits between ``medwb.models`` and ``medwb.al``: it may import data, store and models; al, pipelines and cli import it.
"""
from __future__ import annotations

from medwb.compute.cluster import SCHEDULER_ENV, dask_client
from medwb.compute.device import DEVICES, pick_device
from medwb.compute.score import score_pool, write_scores
from medwb.compute.source import model_input_size, resolve_model

__all__ = ["DEVICES", "SCHEDULER_ENV", "dask_client", "model_input_size", "pick_device", "resolve_model",
           "score_pool", "write_scores"]
