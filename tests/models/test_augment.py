"""Label-safe augmentation (medwb.models.augment) and the cosine schedule of train()."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medwb.errors import DataError
from medwb.models import TrainConfig, build_classifier, build_segmenter, default_train_config, train
from medwb.models.augment import augment_batch, check_augment, default_augment
from medwb.models.train import batches_per_epoch


def _symmetries(img: torch.Tensor) -> list[torch.Tensor]:
    out = []
    for t in (False, True):
        base = img.transpose(-1, -2) if t else img
        for f1 in (False, True):
            for f2 in (False, True):
                v = base.flip(-1) if f1 else base
                out.append(v.flip(-2) if f2 else v)
    return out


def test_dihedral_gives_each_image_one_of_its_8_symmetries_and_moves_its_mask() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.arange(64 * 2 * 8 * 8, dtype=torch.float32).reshape(64, 2, 8, 8)
    y = (x[:, :1] % 3).long()  # a mask with the image's geometry
    xa, ya = augment_batch(x, y, g, "dihedral")
    seen = set()
    for i in range(len(x)):
        # undo the batch's common shift by matching against every symmetry of every shift
        matches = [(k, s) for s in [(a, b) for a in range(-2, 3) for b in range(-2, 3)]
                   for k, v in enumerate(_symmetries(torch.roll(x[i], s, (-2, -1)))) if torch.equal(v, xa[i])]
        assert matches, f"image {i} is not a shifted symmetry of its input"
        k, s = matches[0]
        assert torch.equal(_symmetries(torch.roll(y[i], s, (-2, -1)))[k], ya[i]), "the mask did not move with it"
        seen.add(k)
    assert len(seen) >= 6  # per-image draws, not one transform for the batch


def test_flip_leaves_class_labels_and_none_leaves_everything() -> None:
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(8, 3, 6, 6), torch.arange(8)
    assert torch.equal(augment_batch(x, y, g, "flip")[1], y)
    xn, yn = augment_batch(x, y, g, "none")
    assert xn is x and yn is y
    x3 = torch.rand(4, 1, 4, 6, 6)  # 3D: every axis may flip, only equal last two axes transpose
    assert augment_batch(x3, None, g, "dihedral")[0].shape == x3.shape
    xr = torch.rand(4, 1, 6, 8)  # not square: no transpose, shape kept
    assert augment_batch(xr, None, g, "dihedral")[0].shape == xr.shape


def test_intensity_moves_the_mask_with_the_shift_only() -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.rand(4, 1, 6, 8, 8)
    y = (torch.rand(4, 1, 6, 8, 8) > 0.5).long()
    xa, ya = augment_batch(x, y, g, "intensity")
    shifts = [s for s in itertools.product(range(-2, 3), repeat=3)
              if torch.equal(torch.roll(y, s, (2, 3, 4)), ya)]
    assert shifts, "the mask is the shifted mask, nothing else"
    xs = torch.roll(x, shifts[0], (2, 3, 4))
    assert xa.shape == x.shape and not torch.allclose(xa, xs)  # intensities changed
    for i in range(4):  # a monotone-ish change of the same voxels: strongly correlated with the shifted image
        r = torch.corrcoef(torch.stack([xa[i].flatten(), xs[i].flatten()]))[0, 1]
        assert float(r) > 0.8


def test_check_and_default_augment() -> None:
    assert check_augment(True) == "shift" and check_augment(False) == "none"
    with pytest.raises(DataError, match="unknown augmentation"):
        check_augment("rotate")
    with pytest.raises(DataError, match="unknown augmentation"):
        TrainConfig(augment="mixup")
    with pytest.raises(DataError, match="learning-rate schedule"):
        TrainConfig(lr_schedule="step")
    assert default_augment("microscopy") == "dihedral" and default_augment("Dermoscopy") == "dihedral"
    assert default_augment("XR") == "shift" and default_augment(None) == "shift"
    assert default_train_config("classification", modality="microscopy").augment == "dihedral"
    assert default_train_config("classification", modality="microscopy", augment="none").augment == "none"
    assert default_train_config("segmentation", modality="MR").augment == "shift"


@pytest.mark.parametrize("n,bs,min_b", [(100, 32, 0), (40, 32, 0), (10, 32, 0), (20, 8, 8), (17, 8, 0)])
def test_batches_per_epoch_counts_the_steps_train_takes(n: int, bs: int, min_b: int) -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((n, 1, 8, 8)).astype(np.float32), np.arange(n) % 2
    steps = []
    net = build_classifier(2, 1, 2, channels=(4, 8))
    orig = torch.optim.AdamW.step

    def counting(self, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        steps.append(1)
        return orig(self, *a, **k)

    torch.optim.AdamW.step = counting  # type: ignore[method-assign]
    try:
        train(net, X, y, config=TrainConfig(epochs=1, batch_size=bs, min_batches_per_epoch=min_b), progress=False)
    finally:
        torch.optim.AdamW.step = orig  # type: ignore[method-assign]
    assert len(steps) == batches_per_epoch(n, TrainConfig(batch_size=bs, min_batches_per_epoch=min_b))


def test_cosine_schedule_ends_near_zero_and_constant_keeps_the_rate() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.random((16, 1, 8, 8)).astype(np.float32), rng.integers(0, 2, (16, 1, 8, 8))
    rates: dict[str, list[float]] = {"cosine": [], "constant": []}
    for kind in rates:
        net = build_segmenter(2, 1, 2, channels=(4, 8, 16), features=4)
        orig = torch.optim.AdamW.step

        def record(self, *a, _kind=kind, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
            rates[_kind].append(self.param_groups[0]["lr"])
            return orig(self, *a, **k)

        torch.optim.AdamW.step = record  # type: ignore[method-assign]
        try:
            train(net, X, y, config=TrainConfig(epochs=3, batch_size=4, lr=1e-3, lr_schedule=kind), progress=False)
        finally:
            torch.optim.AdamW.step = orig  # type: ignore[method-assign]
    assert rates["constant"] == [1e-3] * 12
    assert rates["cosine"][0] == pytest.approx(1e-3) and rates["cosine"][-1] < 0.05e-3
    assert all(a >= b for a, b in zip(rates["cosine"], rates["cosine"][1:]))


def test_min_passes_raises_the_epochs_of_larger_labelled_sets_only() -> None:
    """2D classification rounds get >= 80 passes over the labels: a few hundred labels already have them in 40
    epochs of 32 batches; 1200 labels get 79 epochs (run to the end of the cosine schedule); the all-labels pool is
    capped by max_steps and keeps 40; 3D classification trains its own shorter schedule."""
    from medwb.models.train import CLASSIFIER_MIN_PASSES, scheduled_epochs

    c2 = default_train_config("classification", modality="microscopy")
    c3 = default_train_config("classification", modality="CT", spatial_dims=3)
    assert c2.min_passes == CLASSIFIER_MIN_PASSES and c3.min_passes == 0
    assert scheduled_epochs(240, c2) == (40, 8) and scheduled_epochs(11959, c2) == (40, 8)
    epochs, patience = scheduled_epochs(1200, c2)
    assert epochs == patience == 79
    assert epochs * batches_per_epoch(1200, c2) * c2.batch_size >= (CLASSIFIER_MIN_PASSES - 1) * 1200
    assert scheduled_epochs(2400, c2)[0] * batches_per_epoch(2400, c2) <= c2.max_steps  # the steps cap
    assert scheduled_epochs(1200, c3) == (15, 6) and c3.min_batches_per_epoch == 8 and c3.select_on == "loss"
    assert default_train_config("segmentation").min_passes == 0

    # train() runs the raised schedule: 192 cases in batches of 32, 6 epochs asked, 10 passes wanted -> 10 epochs
    rng = np.random.default_rng(0)
    X, y = rng.random((192, 1, 8, 8)).astype(np.float32), np.arange(192) % 2
    cfg = TrainConfig(epochs=6, batch_size=32, min_passes=10, patience=1, min_epochs=1)
    assert scheduled_epochs(192, cfg) == (10, 10)
    res = train(build_classifier(2, 1, 2, channels=(4, 8)), X, y, X[:40], y[:40], config=cfg, progress=False)
    assert len(res.history) == 10  # no early stop inside a raised schedule


def test_a_cosine_schedule_run_to_its_end_validates_its_second_half_only() -> None:
    """validate_from skips validation, not training: the same weights every epoch, the same validation rows where
    both runs validate, and an epoch kept from the validated half. Early stopping and constant rates validate
    every epoch."""
    from dataclasses import replace

    from medwb.models.train import CLASSIFIER_VALIDATE_FROM, first_validated_epoch

    assert default_train_config("classification").validate_from == CLASSIFIER_VALIDATE_FROM
    assert default_train_config("segmentation").validate_from == 0.0
    half = TrainConfig(validate_from=0.5)
    assert first_validated_epoch(80, 80, half) == 41 and first_validated_epoch(7, 7, half) == 4
    assert first_validated_epoch(40, 8, half) == 1  # early stopping needs every epoch
    assert first_validated_epoch(80, 80, replace(half, lr_schedule="constant")) == 1  # no late best epoch to expect
    assert first_validated_epoch(80, 80, TrainConfig()) == 1 and first_validated_epoch(1, 1, half) == 1

    rng = np.random.default_rng(0)
    X, y = rng.random((64, 1, 8, 8)).astype(np.float32), np.arange(64) % 2
    cfg = TrainConfig(epochs=6, patience=6, batch_size=16, min_epochs=1, seed=0)
    runs = {share: train(build_classifier(2, 1, 2, channels=(4, 8)), X, y, X[:24], y[:24],
                         config=replace(cfg, validate_from=share), progress=False) for share in (0.0, 0.5)}
    every, half_run = runs[0.0].history, runs[0.5].history
    assert [("val_loss" in r) for r in half_run] == [False] * 3 + [True] * 3
    assert all("val_loss" in r for r in every)
    for a, b in zip(every[3:], half_run[3:]):  # the same training: the same validation rows
        assert a["train_loss"] == b["train_loss"] and a["val_loss"] == b["val_loss"]
    assert runs[0.5].best_epoch >= 4
