"""Issue 15: the loop's pool scoring through medwb.compute. A round's model scores the pool shard by shard from the
files (``scoring="shards"``) or as Dask tasks on a real LocalCluster of 2 single-thread worker processes started by
the test on loopback (``scoring=client``): the same batch with the same scores either way, and the numbers are
those of ``score_pool`` (the pool's uncertainty the strategy ranks by, its embeddings for the diversity step)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.mark.parametrize("strategy", ["hybrid", "badge"])
def test_sharded_and_dask_scoring_pick_the_same_batch(samples: Path, tmp_path: Path, strategy: str) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.al.oracle import simulated_oracle
    from medwb.compute import score_pool
    from medwb.compute.cluster import dask_client
    from medwb.models import TrainConfig

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path, n_train=40, batch_size=4, strategy=strategy)
    loop.train_config = TrainConfig(epochs=1, min_epochs=1, batch_size=4, patience=1, seed=0)
    loop.mc_passes = 5
    loop.run_round(simulated_oracle(ds))  # round 1: cold start, then a model
    model = loop.current_model()[0]

    loop.scoring = "shards"
    ids_shards, scores_shards, name, params = loop._select(2)
    assert name == strategy and params["scoring"] == "shards" and len(ids_shards) == 4
    with dask_client("local", workers=2) as client:
        loop.scoring = client
        ids_dask, scores_dask, _, params_dask = loop._select(2)
    assert params_dask["scoring"] == "local"  # a LocalCluster's Client: said as such, not "dask"
    assert ids_dask == ids_shards
    np.testing.assert_allclose(scores_dask, scores_shards, rtol=1e-6)

    # the scores are score_pool's for the unlabelled pool with the round's seed (BALD: hybrid's base uncertainty)
    if strategy == "hybrid":
        done = set(loop.labeled()["case_id"].astype(str))
        pool = [c for c in loop.arrays("train")[2] if c not in done]
        table = score_pool(model, ds, pool, mc_samples=5, seed=params["random_state"], uncertainty="bald",
                           progress=False).set_index("case_id")
        np.testing.assert_allclose(scores_shards, table.loc[ids_shards, "uncertainty"].to_numpy(), rtol=1e-6)

    loop.scoring = None  # the in-memory path still works on the same study and names itself
    assert loop._select(2)[3]["scoring"] == "memory"
    study.close()


def test_scoring_name_tells_where_a_round_scored() -> None:
    from medwb.al.loop import scoring_name

    assert [scoring_name(s) for s in (None, "shards", "local")] == ["memory", "shards", "local"]
    assert scoring_name("tcp://10.0.0.5:8786") == "dask tcp://10.0.0.5:8786"  # a remote scheduler, by its address
