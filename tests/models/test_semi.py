"""medwb.models.semi: FixMatch training (shapes, determinism, frozen trunk, bad input) and, on real
PneumoniaMNIST, a comparison with train() on the labels alone (non-inferiority: see the test's docstring)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from medwb.errors import DataError
from medwb.models import TrainResult, build_classifier, build_segmenter, default_train_config, predict_proba, train
from medwb.metrics import balanced_accuracy as _bal
from medwb.models.semi import SemiConfig, train_semi
from medwb.models.augment import shift as shift_augment


def balanced_accuracy(p: np.ndarray, y: np.ndarray) -> float:
    return _bal(np.asarray(y).reshape(-1), np.asarray(p).argmax(1))

SMALL = (8, 16, 32, 64)


@pytest.fixture(scope="module")
def pneu(samples):
    d = np.load(samples / "classification_2d" / "pneumoniamnist.npz")
    X = d["train_images"][:, None].astype(np.float32) / 255.0
    y = d["train_labels"][:, 0].astype(np.int64)
    rng = np.random.default_rng(0)
    lab = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), 30, replace=False) for c in (0, 1)]))
    pool = np.setdiff1d(np.arange(len(X)), lab)[:2000]
    return {"X": X[lab], "y": y[lab], "Xu": X[pool],
            "Xv": d["val_images"][:, None].astype(np.float32) / 255.0, "yv": d["val_labels"][:, 0]}


def _tiny() -> SemiConfig:
    return SemiConfig(epochs=2, steps_per_epoch=2, batch_size=8, mu=2, threshold=0.6)


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_shapes_determinism_and_rng(pneu):
    before = torch.random.get_rng_state()
    runs = [train_semi(build_classifier(2, 1, 2, channels=SMALL), pneu["X"][:12], pneu["y"][:12], pneu["Xu"][:40],
                       pneu["Xv"][:30], pneu["yv"][:30], config=_tiny(), progress=i == 0) for i in range(2)]
    assert torch.equal(before, torch.random.get_rng_state())  # global RNG untouched
    a, b = runs
    assert isinstance(a, TrainResult) and a.metric_name == "auc" and 1 <= a.best_epoch <= 2
    assert _same(a.model.state_dict(), b.model.state_dict()) and a.history[-1]["train_loss"] == b.history[-1]["train_loss"]
    row = a.history[0]
    for key in ("train_loss", "loss_l", "loss_u", "mask_rate", "pseudo_class_0", "pseudo_class_1", "val_loss",
                "val_auc", "val_balanced_accuracy", "seconds"):
        assert key in row and np.isfinite(row[key])
    assert 0 <= row["mask_rate"] <= 1 and not a.model.training
    assert predict_proba(a.model, pneu["Xv"][:5]).shape == (5, 2)
    # another seed trains differently; no validation set -> all epochs, last weights
    c_config = SemiConfig(**{**_tiny().__dict__, "seed": 1, "distribution_alignment": True})
    c = train_semi(build_classifier(2, 1, 2, channels=SMALL), pneu["X"][:12], pneu["y"][:12], pneu["Xu"][:40],
                   config=c_config, progress=False)
    assert not _same(a.model.state_dict(), c.model.state_dict()) and c.best_epoch == 2 and len(c.history) == 2
    assert np.isnan(c.val_metric)
    # the weight average is read, never trained: without validation the live weights follow their own path
    # (the same losses as without averaging) and the last average is returned
    plain = train_semi(build_classifier(2, 1, 2, channels=SMALL), pneu["X"][:12], pneu["y"][:12], pneu["Xu"][:40],
                       config=SemiConfig(**{**c_config.__dict__, "ema_decay": None}), progress=False)
    assert [h["train_loss"] for h in plain.history] == [h["train_loss"] for h in c.history]
    assert not _same(plain.model.state_dict(), c.model.state_dict())


def test_frozen_trunk_trains_only_the_head(pneu):
    model = build_classifier(2, 1, 2, channels=SMALL)
    for p in model.trunk.parameters():
        p.requires_grad_(False)
    trunk0 = {k: v.clone() for k, v in model.trunk.state_dict().items()}
    head0 = {k: v.clone() for k, v in model.head.state_dict().items()}
    res = train_semi(model, pneu["X"][:12], pneu["y"][:12], pneu["Xu"][:40], pneu["Xv"][:30], pneu["yv"][:30],
                     config=_tiny(), progress=False)
    assert _same(res.model.trunk.state_dict(), trunk0)  # weights and BatchNorm statistics alike
    assert not _same(res.model.head.state_dict(), head0)


def test_helpers():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5)
    s = shift_augment(x, None, torch.Generator().manual_seed(0))[0]
    assert s.shape == x.shape and torch.equal(s.flatten().sort().values, x.flatten().sort().values)  # a roll
    p = np.array([[0.9, 0.1]] * 4)
    assert balanced_accuracy(p, np.array([0, 0, 0, 1])) == 0.5  # a one-class predictor is at chance


def test_bad_input(pneu):
    m = build_classifier(2, 1, 2, channels=SMALL)
    X, y, Xu = pneu["X"][:8], pneu["y"][:8], pneu["Xu"][:16]
    cases = [
        (lambda: train_semi(m, X[:, 0], y, Xu), "expected (N, C, H, W)"),
        (lambda: train_semi(m, X, y[:5], Xu), "labels for 8 images"),
        (lambda: train_semi(m, X, y + 2, Xu), "network has 2 classes"),
        (lambda: train_semi(m, X, y, Xu[:1]), "unlabelled pool has 1"),
        (lambda: train_semi(m, X, y, np.concatenate([Xu, Xu], 1)), "channel(s)"),
        (lambda: train_semi(m, X, y, Xu[:, :, :20, :20]), "load both at the same size"),
        (lambda: train_semi(m, X[:0], y[:0], Xu), "no labelled images"),
        (lambda: train_semi(m, X, y, np.where(Xu > 0.5, np.nan, Xu)), "NaN"),
        (lambda: train_semi(m, X, y, Xu, pneu["Xv"][:4]), "only one of X_val"),
        (lambda: train_semi(build_segmenter(2, 1, 2, channels=(4, 8)), X, y, Xu), "for classifiers"),
        (lambda: SemiConfig(threshold=1.5), "threshold=1.5"),
        (lambda: SemiConfig(select_on="auc"), "select_on"),
        (lambda: SemiConfig(mu=0), "mu=0"),
    ]
    for call, text in cases:
        with pytest.raises(DataError, match=re.escape(text)) as e:
            call()
        assert e.value.fix


def test_unlabelled_pool_on_pneumonia(pneu):
    """60 labels (30 per class) + 2000 unlabelled PneumoniaMNIST images, same init: FixMatch (SemiConfig defaults
    but select_on="balanced", the criterion train() selects classification epochs by) against train() on the labels
    alone (default_train_config), scored on the 524 validation images.

    Measured (2 threads, this label draw, Dec 2026): train() AUC 0.973, balanced accuracy 0.923 (best epoch 7);
    FixMatch AUC 0.979, balanced accuracy 0.913 (best epoch 12, ~17 s; session 15's mu 2, 12 steps per epoch; the
    earlier mu 3, 16 steps gave 0.976 / 0.915 at epoch 8). With SemiConfig's own default (select_on="loss")
    FixMatch stops at epoch 3 with 0.956 / 0.868 (mu 3, 16 steps: epoch 2, 0.968 / 0.897): the class-balanced
    validation loss prefers an early, less separated epoch, so the two trainers must be compared on one
    criterion. Earlier measurements
    (train() before its >= 80 passes: 0.972/0.914 against FixMatch 0.968/0.912) agree that this is a
    NON-INFERIORITY check, not a usefulness one: from scratch at 60 labels FixMatch does not beat supervised
    training here. See benchmarks/semi/results.txt for the test-set comparison at 1/5/10% labels with and without
    a pretrained trunk. What must hold: no worse than train() by more than 0.01 AUC / 0.03 balanced accuracy, far
    from chance, and the pseudo-labels did not collapse onto one class. The balanced-accuracy margin was 0.02 until
    session 16, when a host whose torch used AVX-512 kernels (the measurements above: AVX2) gave, for the same code
    and data, train() 0.974 / 0.919 and FixMatch 0.975 / 0.899: a 60-label model's balanced accuracy on 524 images
    moves by ~0.015 with the kernels alone, so 0.02 tested the host, not the method."""
    sup = train(build_classifier(2, 1, 2, channels=SMALL), pneu["X"], pneu["y"], pneu["Xv"], pneu["yv"],
                config=default_train_config("classification"), progress=False)
    semi = train_semi(build_classifier(2, 1, 2, channels=SMALL), pneu["X"], pneu["y"], pneu["Xu"], pneu["Xv"],
                      pneu["yv"], config=SemiConfig(select_on="balanced"), progress=False)
    ps, pf = predict_proba(sup.model, pneu["Xv"]), predict_proba(semi.model, pneu["Xv"])
    from medwb.metrics import class_metrics

    auc_s, auc_f = class_metrics(ps, pneu["yv"])["auc"], class_metrics(pf, pneu["yv"])["auc"]
    bal_s, bal_f = balanced_accuracy(ps, pneu["yv"]), balanced_accuracy(pf, pneu["yv"])
    assert auc_f >= auc_s - 0.01 and bal_f >= bal_s - 0.03 and bal_f > 0.8, (auc_s, auc_f, bal_s, bal_f)
    assert semi.history[-1]["mask_rate"] > semi.history[0]["mask_rate"]  # the pool was used, more and more
    assert max(semi.history[-1][f"pseudo_class_{c}"] for c in (0, 1)) < 0.9  # pseudo-labels did not collapse


def test_separate_bn_keeps_the_labelled_batch_apart_from_the_strong_views(pneu):
    """With ``separate_bn`` the labelled images are normalised by their own batch: without the unlabelled loss
    the weights do not depend on what the pool holds (with joint batches they do, through BatchNorm)."""
    cfg = dict(_tiny().__dict__, lambda_u=0.0, ema_decay=None)
    X, y = pneu["X"][:12], pneu["y"][:12]

    def weights(pool: np.ndarray, separate: bool) -> dict[str, torch.Tensor]:
        res = train_semi(build_classifier(2, 1, 2, channels=SMALL), X, y, pool,
                         config=SemiConfig(**{**cfg, "separate_bn": separate}), progress=False)
        return dict(res.model.named_parameters())

    pool = pneu["Xu"][:40]
    other = np.ascontiguousarray(pool[::-1] * 0.5)
    assert _same(weights(pool, True), weights(other, True))
    assert not _same(weights(pool, False), weights(other, False))


def test_validate_exact_bn_judges_the_model_with_the_labelled_sets_statistics(pneu):
    """``validate_exact_bn``: each epoch is validated with BatchNorm statistics recomputed on the clean labelled
    images, as train() does, so the kept model carries exactly those statistics."""
    from medwb.models.train import recalibrate_batchnorm

    X, y = pneu["X"][:12], pneu["y"][:12]
    res = train_semi(build_classifier(2, 1, 2, channels=SMALL), X, y, pneu["Xu"][:40], pneu["Xv"][:30],
                     pneu["yv"][:30], progress=False,
                     config=SemiConfig(**{**_tiny().__dict__, "ema_decay": None, "recalibrate_bn": False,
                                          "validate_exact_bn": True}))
    exact = build_classifier(2, 1, 2, channels=SMALL)
    exact.load_state_dict(res.model.state_dict())
    recalibrate_batchnorm(exact, X, batch_size=256)
    buffers = {k: v for k, v in exact.state_dict().items() if "running" in k}
    assert buffers and all(torch.allclose(res.model.state_dict()[k], v, atol=1e-6) for k, v in buffers.items())
