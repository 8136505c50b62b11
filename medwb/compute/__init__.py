"""medwb.compute: where pool-wide work runs — in this process, or as Dask tasks on an embedded LocalCluster or an
existing cluster — and on which device.

``score_pool(model, data, case_ids, client=None | 'local' | 'tcp://HOST:PORT')`` scores a pool in shards of
case ids (``medwb score`` on the command line). The same code runs on a laptop and on a cluster; the same seed
gives the same numbers on both.

Why Dask, not Ray: medwb's pool work is a bag of independent numpy/torch tasks over shards of files on a shared
filesystem, exactly Dask's ``submit``/``gather``. ``distributed`` is pure Python on pip with wheels for every
platform medwb supports, runs as an in-process LocalCluster with no daemon, and the clusters hospitals and
universities already run (SLURM/PBS through dask-jobqueue, Kubernetes) start Dask workers with one command.
Ray would add a ~100 MB binary runtime with its own object store and dashboard services, an actor model medwb
does not need, and a second scheduler beside the one SLURM sites already use. Dask's notebook progress bar and
the pandas/Parquet ecosystem come with it.

Sits beside the flow, below ``medwb.al``: it may import data, store and models; al, pipelines and cli import it.
"""
from __future__ import annotations

from medwb.compute.cluster import SCHEDULER_ENV, dask_client
from medwb.compute.device import DEVICES, pick_device
from medwb.compute.score import score_pool, write_scores
from medwb.compute.source import model_input_size, resolve_model

__all__ = ["DEVICES", "SCHEDULER_ENV", "dask_client", "model_input_size", "pick_device", "resolve_model",
           "score_pool", "write_scores"]
