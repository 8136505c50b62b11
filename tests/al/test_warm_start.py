"""Rounds that continue the last round's model (the loop's ``warm_start``): the schedule, the checks, the start."""
from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from medwb.al.fit import AUTO_WARM_PASSES, check_warm_start, continued_passes, fit_continued
from medwb.al.loop import ActiveLearningLoop
from medwb.al.oracle import simulated_oracle
from medwb.errors import DataError
from medwb.models import TrainConfig, default_train_config
from medwb.models.train import batches_per_epoch, passes_config, scheduled_epochs
from medwb.store import Study


FAST = TrainConfig(epochs=1, min_epochs=1, batch_size=8, seed=0)


@pytest.mark.parametrize("n", [100, 480, 1200])
def test_passes_config_trains_the_asked_passes_to_the_end(n: int) -> None:
    config = default_train_config("classification", modality="microscopy")  # min_passes 80 from the start
    out = passes_config(config, n, 40)
    per_epoch = batches_per_epoch(n, out) * out.batch_size / n
    assert out.epochs * per_epoch >= 40 > (out.epochs - 1) * per_epoch  # 40 passes, not the start's 80
    assert out.patience == out.epochs and out.min_passes == 0 and out.min_epochs <= out.epochs
    assert out.lr == config.lr and out.augment == config.augment  # the round's own rate and augmentation
    with pytest.raises(DataError, match="at least 1 pass"):
        passes_config(config, n, 0)


def test_warm_start_is_checked_when_the_loop_is_made() -> None:
    assert check_warm_start(None, "classification") is None and check_warm_start(40, "classification") == 40
    assert check_warm_start(np.int64(40), "classification") == 40  # a notebook parameter read by numpy
    for bad in (0, -3, 2.5, True, "forty"):
        with pytest.raises(DataError, match="warm_start="):
            check_warm_start(bad, "classification")  # type: ignore[arg-type]
    with pytest.raises(DataError, match="classification rounds only"):
        check_warm_start(40, "segmentation")
    assert check_warm_start("auto", "classification") == "auto" and check_warm_start("auto", "segmentation") is None
    # a round continues only when asked and when it trains the supervised candidate alone
    config = default_train_config("classification")
    assert continued_passes(40, semi=False, self_train=False, n_labels=100, config=config) == 40
    assert continued_passes(None, semi=False, self_train=False, n_labels=1200, config=config) is None
    # FixMatch still ahead or a student: both from the trunk
    assert continued_passes(40, semi=True, self_train=False, n_labels=100, config=config) is None
    assert continued_passes(40, semi=False, self_train=True, n_labels=100, config=config) is None
    # "auto": only where an epoch of a start from the trunk is at most 2 whole passes (2D, from 512 labels: 40
    # epochs of 2 passes, then 80 epochs of 1) and would train more passes than the continuation; below, an epoch
    # is 3+ passes and a round costs about the same whatever its size
    assert scheduled_epochs(1023, config)[0] == config.epochs and scheduled_epochs(1024, config)[0] == 2 * config.epochs
    for n in (100, 475, 511):
        assert continued_passes("auto", semi=False, self_train=False, n_labels=n, config=config) is None
    for n in (512, 600, 720, 960, 1023, 1024, 1200, 2000, 3000):
        assert continued_passes("auto", semi=False, self_train=False, n_labels=n, config=config) == AUTO_WARM_PASSES
    # past max_steps' cap a fresh start trains its plain 40 epochs again: nothing to save
    assert scheduled_epochs(5000, config)[0] == config.epochs
    assert continued_passes("auto", semi=False, self_train=False, n_labels=5000, config=config) is None
    assert continued_passes("auto", semi=True, self_train=False, n_labels=1200, config=config) is None
    volumes = default_train_config("classification", spatial_dims=3)  # 3D: a short schedule, never raised
    assert continued_passes("auto", semi=False, self_train=False, n_labels=1200, config=volumes) is None


def test_fit_continued_starts_from_the_previous_model_and_leaves_it_alone(tiny) -> None:
    from medwb.models.networks import build_for_dataset
    from medwb.models.train import train

    _, ds = tiny
    X, y, _ = ds.arrays("train")
    val = ds.arrays("val")[:2]
    previous = train(build_for_dataset(ds, seed=0), X[:30], y[:30], *val, config=FAST, progress=False).model
    before = copy.deepcopy(previous.state_dict())
    still, m = fit_continued(previous, X[:40], y[:40], val, task="classification", config=replace(FAST, lr=0.0),
                             passes=1, progress=False)
    # a zero rate moves nothing: the round's start was the previous round's weights, not a fresh network
    assert all(torch.equal(p, before[k]) for k, p in still.named_parameters())
    assert m["warm_start"] == 1.0 and m["warm_passes"] == 1.0 and m["n_labeled"] == 40 and m["semi"] == 0.0
    moved, _ = fit_continued(previous, X[:40], y[:40], val, task="classification", config=FAST, passes=2,
                             progress=False)
    assert any(not torch.equal(p, before[k]) for k, p in moved.named_parameters())
    assert all(torch.equal(v, before[k]) for k, v in previous.state_dict().items())  # trained a copy


@pytest.mark.slow
def test_loop_continues_the_last_model_after_the_first_round(tiny, tmp_path: Path) -> None:
    path, ds = tiny
    study = Study.create(tmp_path / "s", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=6, train_config=FAST, seed=0, mc_passes=3,
                              progress=False, pretrain=False, semi=False, warm_start=3)
    first, second = loop.run(2, simulated_oracle(ds))  # no model before round 1: it trains from the start
    assert "warm_start" not in first.metrics
    assert second.metrics["warm_start"] == 1.0 and second.metrics["warm_passes"] == 3.0
    assert second.n_labeled == 12 and study.rounds().iloc[1]["params"]["warm_start"] == 3
    # the all-labels reference goes through fit() without a previous model: from the start
    _, ref = loop.fit(*loop.labelled_arrays()[1:])
    assert "warm_start" not in ref
    with pytest.raises(DataError, match="warm_start="):
        ActiveLearningLoop(study, ds, progress=False, pretrain=False, semi=False, warm_start=0)
    # the default, "auto": a round continues only where a fresh start's epoch is at most 2 whole passes and it
    # would train more than the continuation's passes; 12 labels in batches of 8 (min 1 batch: 1 pass an epoch,
    # 42 epochs of min_passes) are past that floor, 12 labels in 4+ batches (3 passes an epoch) are not
    for min_batches, continued in ((1, True), (4, False)):
        config = replace(FAST, epochs=21, min_passes=2 * AUTO_WARM_PASSES, min_batches_per_epoch=min_batches)
        auto = ActiveLearningLoop(Study.create(tmp_path / f"auto{min_batches}", dataset_path=str(path), task=ds.task,
                                               classes=ds.classes), ds, strategy="entropy", batch_size=6,
                                  train_config=config, seed=0, mc_passes=3, progress=False, pretrain=False, semi=False)
        assert auto.warm_start == "auto"
        second = auto.run(2, simulated_oracle(ds))[1]
        assert ("warm_start" in second.metrics) is continued
        if continued:
            assert second.metrics["warm_passes"] == AUTO_WARM_PASSES
    np.testing.assert_array_equal(sorted(study.labels()["case_id"]), sorted(set(study.labels()["case_id"])))
