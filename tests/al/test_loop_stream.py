"""Issue 15: ``ActiveLearningLoop(stream=True)`` never holds its pool in memory. Each step reads the cases it
needs from the files (labelled set, batch, pretraining and FixMatch batch by batch, cold-start embeddings) and
scores the pool shard by shard; its rounds are the in-memory loop's (same scoring): the same batches, labels
and weights. On real PneumoniaMNIST (the default pipeline: SimCLR + FixMatch) and the MSD hippocampus (3D)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from medwb.al.loop import ActiveLearningLoop
from medwb.al.oracle import simulated_oracle
from medwb.data import open_dataset
from medwb.data.case_images import CaseImages
from medwb.models import TrainConfig, load_checkpoint
from medwb.models.pretrain import PretrainConfig
from medwb.store import Study

from _fixtures import PNEUMONIA, tiny_pneumonia_npz


def _rounds(study: Study) -> list[list[str]]:
    return [list(map(str, r)) for r in study.rounds()["selected_ids"]]


def _weights(study: Study) -> dict[str, torch.Tensor]:
    return load_checkpoint(study.models().iloc[-1]["checkpoint_path"])[0].state_dict()


def _never_loaded_whole(loop: ActiveLearningLoop) -> bool:
    return not loop.data.memory._source and not loop.data.memory._split


def test_streamed_loop_runs_the_in_memory_rounds_without_loading_the_pool(samples: Path, tmp_path: Path) -> None:
    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=60, n_val=16, n_test=10)
    ds = open_dataset(path, progress=False)
    kw = dict(strategy="hybrid", batch_size=6, seed=0, progress=False, mc_passes=4,
              train_config=TrainConfig(epochs=2, min_epochs=1, batch_size=8, seed=0),
              pretrain_config=PretrainConfig(epochs=1, batch_size=16, seed=0), scoring="shards")
    runs = {}
    for stream in (False, True):
        study = Study.create(tmp_path / f"s{int(stream)}", dataset_path=str(path), task=ds.task, classes=ds.classes)
        loop = ActiveLearningLoop(study, ds, stream=stream, **kw)
        assert loop.semi and loop.pretrain  # the default pipeline: pretraining and FixMatch on the pool
        if stream:
            assert isinstance(loop.data.images(), CaseImages) and isinstance(loop.unlabelled_arrays()[0], CaseImages)
        loop.run(2, simulated_oracle(ds))
        runs[stream] = (_rounds(study), study.labels()[["case_id", "value"]].sort_values("case_id").to_numpy(),
                        _weights(study), study.models().iloc[-1]["metrics"], study.rounds().iloc[-1]["params"])
        if stream:
            assert _never_loaded_whole(loop)
            assert loop.pool_size == 60 and len(loop.labelled_arrays()[1]) == 12 and _never_loaded_whole(loop)
        study.close()
    (ids0, lab0, w0, m0, p0), (ids1, lab1, w1, m1, p1) = runs[False], runs[True]
    assert ids0 == ids1 and len(ids1) == 2 and len(ids1[1]) == 6
    assert np.array_equal(lab0, lab1)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    assert m0["val_auc"] == m1["val_auc"] and m1["semi"] == m0["semi"]
    assert p1["scoring"] == p0["scoring"] == "shards"


def test_streamed_segmentation_loop_reads_cases_as_needed(hippocampus, tmp_path: Path) -> None:
    ds = hippocampus
    # self_train off for both: a streamed pool cannot self-train (uses_self_training), an in-memory one would
    kw = dict(strategy="hybrid", batch_size=3, max_pool=12, mc_passes=3, seed=0, progress=False, pretrain=False,
              semi=False, self_train=False, train_config=TrainConfig(epochs=1, min_epochs=1, batch_size=4, seed=0))
    runs = {}
    for stream in (False, True):
        study = Study.create(tmp_path / f"h{int(stream)}", dataset_path=str(ds.path), task=ds.task,
                             classes=ds.classes)
        loop = ActiveLearningLoop(study, ds, stream=stream, scoring="shards", **kw)
        loop.run(2, simulated_oracle(ds))
        batch = loop.propose()  # round 3's pre-label masks come from the files too
        assert len(batch) == 3
        runs[stream] = (_rounds(study), _weights(study), load_checkpoint(study.models().iloc[-1]["checkpoint_path"])[1])
        if stream:
            assert _never_loaded_whole(loop)
        study.close()
    assert runs[False][0] == runs[True][0]
    assert all(torch.equal(runs[False][1][k], runs[True][1][k]) for k in runs[False][1])
    assert runs[True][2]["size"] == runs[False][2]["size"]


def test_medwb_simulate_stream_runs_streamed_rounds(samples: Path, tmp_path: Path) -> None:
    from medwb.cli import main

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=40, n_val=10, n_test=10)
    out = tmp_path / "sim"
    assert main(["simulate", str(path), "--strategy", "entropy:scratch", "--budget", "0.2", "--rounds", "2",
                 "--seeds", "1", "--epochs", "1", "--mc-passes", "3", "--stream", "--out", str(out), "--quiet"]) == 0
    study = Study.open(out / "studies" / "entropy-scratch-seed0")
    rounds = study.rounds()
    assert len(rounds) == 2 and [p["scoring"] for p in rounds["params"]] == ["shards", "shards"]
    study.close()
