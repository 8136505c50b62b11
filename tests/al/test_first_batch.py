"""The first, model-free batch: the label-free cold start for 2D classification, a random batch in 3D and for
segmentation, where random batches led to better models (benchmarks/active_learning/recipes/
adrenalmnist3d_first_batch, hippocampus_medwb, hc18_random_first_batch)."""
from __future__ import annotations

from pathlib import Path

import pytest

from medwb.al.scoring import first_batch_strategy
from medwb.errors import ConfigError


def test_auto_is_the_cold_start_for_2d_classes_and_random_in_3d_and_for_masks() -> None:
    assert first_batch_strategy("auto", "classification", 2) == "cold_start"
    assert first_batch_strategy("auto", "segmentation", 3) == "random"
    assert first_batch_strategy("auto", "segmentation", 2) == "random"
    assert first_batch_strategy("auto", "classification", 3) == "random"
    assert first_batch_strategy("cold_start", "classification", 3) == "cold_start"  # asked for: kept
    with pytest.raises(ConfigError, match="unknown acquisition strategy"):
        first_batch_strategy("typical", "classification", 2)


def test_a_3d_classification_loop_starts_with_a_random_batch(samples: Path, tmp_path: Path) -> None:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.store import Study

    ds = open_dataset(samples / "classification_3d" / "adrenalmnist3d.npz", progress=False)
    with Study.create(tmp_path / "s", dataset_path=str(ds.path), task=ds.task, classes=ds.classes) as study:
        loop = ActiveLearningLoop(study, ds, strategy="hybrid", batch_size=4, seed=0, progress=False,
                                  pretrain=False, semi=False, max_pool=40)
        assert loop.cold_start == "random"
        batch = loop.propose()
        assert len(batch) == 4
        assert list(study.rounds()["strategy"]) == ["random"]  # what the store says round 1 was
        asked = ActiveLearningLoop(study, ds, strategy="hybrid", batch_size=4, seed=0, progress=False,
                                   pretrain=False, semi=False, max_pool=40, cold_start="cold_start")
        assert asked.cold_start == "cold_start"
