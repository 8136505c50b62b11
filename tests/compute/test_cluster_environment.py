"""A local Dask cluster leaves this process's environment as it found it (its nanny writes worker settings there)."""
from __future__ import annotations

import os

from medwb.compute.cluster import dask_client


def _worker_threads() -> int:
    import torch

    return torch.get_num_threads()


def test_local_cluster_keeps_this_process_environment(monkeypatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    before = dict(os.environ)
    with dask_client("local", workers=1) as client:
        assert dict(os.environ) == before  # already while it runs: a subprocess started now gets our settings
        # its workers still get Dask's one thread each
        assert set(client.run(_worker_threads).values()) == {1}
    assert dict(os.environ) == before
