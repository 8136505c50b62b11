"""Checkpoints record the spatial input size the network was trained on, and the report and explain read it
(a study trained at a custom size must be scored and explained at that size, not at the loop's default)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.al.loop import ActiveLearningLoop
from medwb.al.oracle import simulated_oracle
from medwb.models import TrainConfig, build_classifier, load_checkpoint, predict_proba, train
from medwb.store import Study

FAST = TrainConfig(epochs=1, min_epochs=1, batch_size=8, seed=0)


def _subset(samples: Path, dst: Path, n_train: int = 60, n_val: int = 20, n_test: int = 30) -> Path:
    return tiny_pneumonia_npz(samples / PNEUMONIA, dst, n_train=n_train, n_val=n_val, n_test=n_test)


def test_loop_checkpoint_records_size_and_report_explain_use_it(samples: Path, tmp_path: Path) -> None:
    from medwb.data import open_dataset
    from medwb.explain.run import model_input_size, resolve_model
    from medwb.data.dataset import default_size
    from medwb.report.sections import evaluate_final_model

    path = _subset(samples, tmp_path / "pneumonia.npz")
    ds = open_dataset(path, progress=False)
    assert default_size(ds) is None  # the default is the native 28x28: a custom size must be recorded
    study = Study.create(tmp_path / "study", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="random", batch_size=10, train_config=FAST, seed=0,
                              size=(16, 16), progress=False, pretrain=False, semi=False)
    loop.run(1, simulated_oracle(ds))
    ckpt = Path(study.models().iloc[-1]["checkpoint_path"])
    model, meta = load_checkpoint(ckpt)
    assert meta["size"] == [16, 16] and meta["round"] == 1
    assert meta["splits"] == loop.split_ids() and set(meta["splits"]) == {"train", "val", "test"}

    ev = evaluate_final_model(study, ds)
    assert ev.size == (16, 16)
    X16, y16, ids16 = ds.arrays("test", size=(16, 16))
    assert ev.case_ids == [str(i) for i in ids16]
    np.testing.assert_allclose(ev.proba, predict_proba(model, X16), rtol=1e-5, atol=1e-6)
    X28, _, _ = ds.arrays("test")
    assert not np.allclose(ev.proba, predict_proba(model, X28), atol=1e-4)  # the native size scores differently

    _, meta_study, opened = resolve_model(tmp_path / "study")  # explain on a study folder: its latest model
    opened.close()
    assert model_input_size(ds, meta_study) == (16, 16)
    assert model_input_size(ds, {}) is None  # an old checkpoint without size falls back to the default
    study.close()


def test_train_checkpoint_records_size(samples: Path, tmp_path: Path) -> None:
    d = np.load(samples / "classification_2d" / "pneumoniamnist.npz")
    X = (d["train_images"][:40, None, :20, :24] / 255.0).astype(np.float32)  # real pixels, a 20x24 crop
    y = d["train_labels"][:40].ravel().astype(np.int64)
    train(build_classifier(2, 1, 2, seed=0), X, y, task="classification", config=FAST,
          checkpoint=tmp_path / "m.pt", progress=False)
    _, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["size"] == [20, 24]
