"""Fixtures shared by the active-learning tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from _fixtures import PNEUMONIA, tiny_pneumonia_npz


@pytest.fixture(scope="module")
def tiny(samples: Path, tmp_path_factory: pytest.TempPathFactory):
    """(path, Dataset) of a 60 / 20 / 20-case PneumoniaMNIST subset: loop rounds in seconds."""
    from medwb.data import open_dataset

    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path_factory.mktemp("data") / "pneumonia_tiny.npz",
                              n_train=60, n_val=20, n_test=20)
    return path, open_dataset(path, progress=False)
