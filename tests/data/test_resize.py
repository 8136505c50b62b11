"""Resizing keeps a mask on its image: label maps are resized centre-aligned, as the image's linear resize is."""
from __future__ import annotations

import numpy as np

from medwb.data.dataset import resize
from medwb.metrics import dice


def _ball(shape: tuple[int, ...], centre: tuple[float, ...], radius: float) -> np.ndarray:
    grid = np.indices(shape).astype(float)
    return (sum((g - c) ** 2 for g, c in zip(grid, centre)) <= radius ** 2).astype(np.int64)


def test_a_mask_resized_down_and_back_stays_on_its_image() -> None:
    # a thin two-class structure (the hippocampus' scale), on a grid 34x48x40 -> 32x48x32 -> back, as training does
    shape = (34, 48, 40)
    head = _ball(shape, (17, 20, 20), 5)
    truth = head + 2 * _ball(shape, (17, 29, 20), 4) * (1 - head)
    back = resize(resize(truth[None], (32, 48, 32), "mask"), truth.shape, "mask")[0]
    assert back.dtype == np.int64 and set(np.unique(back)) <= {0, 1, 2}
    assert dice(back, truth, n_classes=3) > 0.9  # torch's plain "nearest" drifts half a voxel per resize

    # and the mask's centre of mass moves with the image's (linear) resize, not by a drift of its own (plain
    # "nearest": half a voxel off along the axes that shrink)
    image = resize((truth > 0).astype(np.float32)[None], (32, 48, 32), "image")[0]
    small = resize(truth[None], (32, 48, 32), "mask")[0] > 0
    grid = np.indices(image.shape).reshape(3, -1)
    com_image = (grid * image.ravel()).sum(1) / image.sum()
    com_mask = (grid * small.ravel()).sum(1) / small.sum()
    assert np.abs(com_image - com_mask).max() < 0.1
