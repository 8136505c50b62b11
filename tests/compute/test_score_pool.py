"""score_pool in this process against a real LocalCluster of 2 single-thread worker processes: the same rows.

The cluster is started by the test on loopback and closed after; the workers open the pool's npz themselves.
"""
from __future__ import annotations

import platform

import numpy as np
import pytest
from _scores import assert_same_scores

SETTINGS = dict(shard_size=32, mc_samples=8, seed=7, progress=False)


@pytest.fixture(scope="module")
def ids(small_pool) -> list[str]:
    """200 case ids in an order that is not the file's (val before test, a few swapped)."""
    from medwb.data import open_dataset

    ds = open_dataset(small_pool, progress=False)
    out = ds.case_ids("val") + ds.case_ids("test")
    out[3], out[150] = out[150], out[3]
    return out


@pytest.fixture(scope="module")
def in_process(checkpoint, small_pool, ids):
    from medwb.compute import score_pool

    return score_pool(checkpoint, small_pool, ids, **SETTINGS)


def test_in_process_scores_every_case_once(in_process, ids) -> None:
    df = in_process
    assert list(df["case_id"]) == ids
    assert set(df.columns) == {"case_id", "predicted_class", "probabilities", "uncertainty", "embedding"}
    assert set(df["predicted_class"]) <= {0, 1} and df["predicted_class"].nunique() == 2
    probs = np.stack(df["probabilities"].to_list())
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)
    assert np.stack(df["embedding"].to_list()).shape == (200, 64)
    assert (df["uncertainty"] >= 0).all() and df["uncertainty"].std() > 0
    assert df.attrs["mc_samples"] == 8 and df.attrs["uncertainty"] == "entropy"


def test_seed_and_shard_index_decide_the_samples(checkpoint, small_pool, ids, in_process) -> None:
    """Another seed gives other MC samples (the seed is used), the same seed the same ones."""
    from medwb.compute import score_pool

    again = score_pool(checkpoint, small_pool, ids, **SETTINGS)
    assert_same_scores(in_process, again)
    other = score_pool(checkpoint, small_pool, ids, **{**SETTINGS, "seed": 8})
    assert not np.allclose(other["uncertainty"], in_process["uncertainty"])
    np.testing.assert_allclose(np.stack(other["embedding"].to_list()), np.stack(in_process["embedding"].to_list()))


def test_local_cluster_of_two_workers_gives_the_in_process_rows(checkpoint, small_pool, ids, in_process) -> None:
    from medwb.compute import score_pool
    from medwb.compute.cluster import dask_client
    from medwb.compute.worker import undo_malloc_trim, worker_dataset

    with dask_client("local", workers=2) as client:  # medwb's own LocalCluster (loopback, this env kept)
        on_dask = score_pool(checkpoint, small_pool, ids, client=client, **SETTINGS)
        opened = client.run(lambda: worker_dataset.cache_info()._asdict())
        tuned = client.run(undo_malloc_trim)
    assert_same_scores(in_process, on_dask)
    if platform.libc_ver()[0] == "glibc":  # the nanny's MALLOC_TRIM_THRESHOLD_ (4-5x slower torch) was undone
        assert all(tuned.values()), tuned
    # each worker opened the pool's file itself, once, and read every later shard from that one opening
    assert sum(o["hits"] + o["misses"] for o in opened.values()) == -(-len(ids) // SETTINGS["shard_size"])
    assert all(o["misses"] <= 1 for o in opened.values())


def test_cuda_asked_without_a_gpu_is_a_clear_error(checkpoint, small_pool, ids) -> None:
    import torch

    from medwb.compute import score_pool
    from medwb.errors import ConfigError

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ConfigError, match="cuda.*'auto' or 'cpu'"):
        score_pool(checkpoint, small_pool, ids[:4], device="cuda", **SETTINGS)
    with pytest.raises(ConfigError, match="auto, cpu, cuda"):
        score_pool(checkpoint, small_pool, ids[:4], device="gpu", **SETTINGS)
