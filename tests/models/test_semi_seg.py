"""medwb.models.semi_seg: mean-teacher training of a segmenter on labelled masks plus the unlabelled pool
(shapes, determinism, what it learns, the strong view, the balanced pseudo-label loss, bad input) and the
segmentation candidate of medwb.al.fit.fit_round."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from medwb.al.fit import check_semi_schedule, fit_round, validation_score
from medwb.errors import DataError
from medwb.models import TrainResult, build_classifier, build_segmenter, default_train_config
from medwb.models.augment import intensity_perturb
from medwb.models.semi_seg import (SemiSegConfig, balanced_pseudo_label_loss, cutmix_boxes,
                                   semi_seg_config_from, train_semi_segmentation)
from medwb.models.train import evaluate

SMALL = (8, 16, 32)


def disks(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Bright disks of random centre and radius on noise; the mask is the disk (label 1)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    X = rng.normal(0.2, 0.08, (n, 1, size, size)).astype(np.float32)
    Y = np.zeros((n, 1, size, size), np.int64)
    for i in range(n):
        cy, cx, r = rng.uniform(9, size - 9, 2).tolist() + [rng.uniform(4, 8)]
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        Y[i, 0][m] = 1
        X[i, 0][m] += 0.5
    return X, Y


@pytest.fixture(scope="module")
def data():
    X, Y = disks(4, 0)
    Xu, _ = disks(24, 1)
    Xv, Yv = disks(12, 2)
    return X, Y, Xu, Xv, Yv


def _tiny(**kw) -> SemiSegConfig:
    return SemiSegConfig(**{"epochs": 2, "steps_per_epoch": 2, "batch_size": 4, "mu": 1, "threshold": 0.6,
                            "rampup_epochs": 1, **kw})


def test_shapes_determinism_and_rng(data):
    X, Y, Xu, Xv, Yv = data
    before = torch.random.get_rng_state()
    runs = [train_semi_segmentation(build_segmenter(2, 1, 2, channels=SMALL), X, Y, Xu, Xv, Yv, config=_tiny(),
                                    progress=i == 0) for i in range(2)]
    assert torch.equal(before, torch.random.get_rng_state())  # the global RNG is untouched
    a, b = runs
    assert isinstance(a, TrainResult) and a.metric_name == "dice" and 1 <= a.best_epoch <= 2
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    row = a.history[0]
    for key in ("train_loss", "loss_l", "loss_u", "ramp", "mask_rate", "pseudo_foreground", "val_loss", "val_dice"):
        assert key in row and np.isfinite(row[key]), key
    assert 0 <= row["mask_rate"] <= 1 and 0 <= row["pseudo_foreground"] <= 1
    assert row["ramp"] < a.history[-1]["ramp"] == 1.0  # ramped in over rampup_epochs
    assert not a.model.training and a.model.decision == {}
    # another seed trains differently; without validation every epoch runs and the last teacher is kept
    c = train_semi_segmentation(build_segmenter(2, 1, 2, channels=SMALL), X, Y, Xu, config=_tiny(seed=1),
                                progress=False)
    assert c.best_epoch == 2 and not all(torch.equal(sa[k], c.model.state_dict()[k]) for k in sa)


def test_learns_from_few_masks(data):
    """Four labelled disks and the pool: the teacher segments held-out disks well (the unlabelled term is
    active: pseudo-labels cover most voxels by the end and include the foreground)."""
    X, Y, Xu, Xv, Yv = data
    res = train_semi_segmentation(build_segmenter(2, 1, 2, channels=SMALL), X, Y, Xu, Xv, Yv,
                                  config=SemiSegConfig(epochs=12, steps_per_epoch=6, batch_size=4, rampup_epochs=3),
                                  progress=False)
    assert res.val_metric > 0.8
    assert evaluate(res.model, Xv, Yv)["dice"] == pytest.approx(res.val_metric, abs=1e-6)
    last = res.history[-1]
    assert last["mask_rate"] > 0.5 and last["pseudo_foreground"] > 0.02 and last["loss_u"] > 0


def test_strong_view_changes_intensities_only():
    X, _ = disks(3, 5)
    x = torch.from_numpy(X)
    a = intensity_perturb(x, torch.Generator().manual_seed(0))
    b = intensity_perturb(x, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)  # seeded by the generator
    assert not torch.allclose(a, x)
    for i in range(3):  # the same anatomy at the same voxels: strongly correlated with the original
        assert np.corrcoef(a[i].ravel().numpy(), x[i].ravel().numpy())[0, 1] > 0.8


def test_balanced_pseudo_label_loss():
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    pseudo = torch.zeros(1, 4, 4, dtype=torch.long)
    pseudo[0, 0, 0] = 1  # one foreground voxel among 16
    conf = torch.ones(1, 4, 4, dtype=torch.bool)
    loss = balanced_pseudo_label_loss(logits, pseudo, conf, 2)
    loss.backward()
    # each class's voxels weigh the same in total: the one foreground voxel's gradient = all 15 background ones
    g = logits.grad[0, 1]
    assert abs(float(g[0, 0])) == pytest.approx(float(g.sum() - g[0, 0]), rel=1e-5)
    # nothing confident -> 0, and still differentiable
    zero = balanced_pseudo_label_loss(logits, pseudo, torch.zeros_like(conf), 2)
    assert zero.item() == 0.0 and zero.requires_grad


def test_bad_input(data):
    X, Y, Xu, Xv, Yv = data
    net = build_segmenter(2, 1, 2, channels=SMALL)
    with pytest.raises(DataError, match="segmenter"):
        train_semi_segmentation(build_classifier(2, 1, 2), X, Y[:, 0, 0, 0], Xu, config=_tiny())
    with pytest.raises(DataError, match="label map"):
        train_semi_segmentation(net, X, Y[:, :, :16], Xu, config=_tiny())
    with pytest.raises(DataError, match="0..1|spans"):
        train_semi_segmentation(net, X, Y * 2, Xu, config=_tiny())
    bad = Xu.copy()
    bad[3, 0, 0, 0] = np.nan
    with pytest.raises(DataError, match="X_unlabelled contains NaN"):
        train_semi_segmentation(net, X, Y, bad, config=_tiny())
    with pytest.raises(DataError, match="unlabelled pool has 1"):
        train_semi_segmentation(net, X, Y, Xu[:1], config=_tiny())
    with pytest.raises(DataError, match="only one of"):
        train_semi_segmentation(net, X, Y, Xu, Xv, None, config=_tiny())
    with pytest.raises(DataError, match="threshold"):
        SemiSegConfig(threshold=0)


def test_round_trains_both_candidates_and_keeps_one(data):
    X, Y, Xu, Xv, Yv = data
    cfg = default_train_config("segmentation", seed=0, spatial_dims=2, epochs=2)
    model, m = fit_round(build_segmenter(2, 1, 2, channels=SMALL), X, Y, (Xv, Yv), task="segmentation", config=cfg,
                         semi=True, X_unlabelled=Xu, test=(Xv, Yv), progress=False,
                         semi_schedule={"steps_per_epoch": 2, "threshold": 0.6})
    assert m["semi"] in (0.0, 1.0)
    assert m["val_score_semi"] == pytest.approx(m["val_dice"] if m["semi"] else m["val_score_semi"])
    assert {"test_dice_supervised", "test_dice_semi"} <= set(m)
    kept = m["test_dice_semi"] if m["semi"] else m["test_dice_supervised"]
    assert m["test_dice"] == pytest.approx(kept)
    assert validation_score({"val_dice": 0.7}) == 0.7


def test_schedule_checked_for_the_task():
    cfg = default_train_config("segmentation", spatial_dims=3)
    assert semi_seg_config_from(cfg).steps_per_epoch == 8 and semi_seg_config_from(cfg).batch_size == 8
    assert check_semi_schedule(cfg, {"rampup_epochs": 3}, "segmentation") == {"rampup_epochs": 3}
    with pytest.raises(DataError, match="distribution_alignment"):  # a FixMatch-only field
        check_semi_schedule(cfg, {"distribution_alignment": True}, "segmentation")
    with pytest.raises(DataError, match="mu=0"):
        check_semi_schedule(cfg, {"mu": 0}, "segmentation")


def test_cutmix_boxes_and_training(data):
    m = cutmix_boxes((4, 1, 8, 12, 16), torch.Generator().manual_seed(0))
    assert m.shape == (4, 8, 12, 16) and m.dtype == torch.bool
    share = m.float().mean((1, 2, 3))
    assert bool(((share > 0.1) & (share < 0.7)).all())
    for i in range(4):  # one box: its extent along each axis is filled completely
        idx = m[i].nonzero()
        lo, hi = idx.min(0).values, idx.max(0).values
        assert int(m[i, lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1].sum()) == len(idx)
    X, Y, Xu, Xv, Yv = data
    res = train_semi_segmentation(build_segmenter(2, 1, 2, channels=SMALL), X, Y, Xu, Xv, Yv,
                                  config=_tiny(cutmix=True), progress=False)
    assert np.isfinite(res.history[-1]["loss_u"])
