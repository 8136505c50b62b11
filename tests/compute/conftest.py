"""A small real pool (200 PneumoniaMNIST cases in their own npz, so a worker opens a small file) and a tiny
trained classifier as a checkpoint: what every compute test scores."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_pool(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """200 real cases (the first 120 test and 80 val images of the bundled PneumoniaMNIST) as one npz."""
    z = np.load(samples / "classification_2d" / "pneumoniamnist.npz")
    path = tmp_path_factory.mktemp("pool") / "pneumonia200.npz"
    np.savez(path, test_images=z["test_images"][:120], test_labels=z["test_labels"][:120],
             val_images=z["val_images"][:80], val_labels=z["val_labels"][:80])
    return path


@pytest.fixture(scope="session")
def checkpoint(samples: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny PneumoniaMNIST classifier (trained in ~15 s: 400 cases, 2 epochs; it asserts val AUC > 0.8) saved
    as a medwb checkpoint, what `medwb score` takes."""
    from _fixtures import train_tiny_pneumonia_model

    from medwb.models import save_checkpoint

    model = train_tiny_pneumonia_model(samples, n_train=400, n_val=200, epochs=2, seed=0)
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "tiny.pt")

