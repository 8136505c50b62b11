"""medwb.metrics on known answers and on real data: one convention per metric (Dice's empty masks included)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from _fixtures import noisy_scores, pneumonia_test_labels
from medwb import metrics
from medwb.errors import DataError


def test_sensitivity_specificity_on_known_confusion_matrix():
    # 40 positives: 30 found; 60 negatives: 45 rejected.
    y = np.array([1] * 40 + [0] * 60)
    pred = np.array([1] * 30 + [0] * 10 + [0] * 45 + [1] * 15)
    cm = metrics.confusion_matrix(y, pred, 2)
    assert cm.tolist() == [[45, 15], [10, 30]]
    r = metrics.rates_from_confusion(cm)
    assert r["sensitivity"][1] == pytest.approx(30 / 40)
    assert r["specificity"][1] == pytest.approx(45 / 60)
    assert r["ppv"][1] == pytest.approx(30 / 45)
    assert r["npv"][1] == pytest.approx(45 / 55)
    assert r["f1"][1] == pytest.approx(2 * 30 / (2 * 30 + 15 + 10))
    proba = np.stack([1 - pred, pred], axis=1).astype(float)
    m = metrics.classification_metrics(y, proba)
    assert m[("accuracy", "all")] == pytest.approx(75 / 100)
    assert m[("sensitivity", "positive")] == pytest.approx(0.75)


def test_auc_matches_sklearn_on_real_labels(samples):
    y = pneumonia_test_labels(samples)
    proba = noisy_scores(y)
    assert metrics.auc_binary(y, proba[:, 1]) == pytest.approx(roc_auc_score(y, proba[:, 1]), abs=1e-12)


def test_stratified_resampling_keeps_class_counts(samples):
    y = pneumonia_test_labels(samples)
    idx = metrics.stratified_bootstrap_indices(y, 50, random_state=0)
    for row in idx:
        assert np.bincount(y[row]).tolist() == np.bincount(y).tolist()


def test_ece_of_perfectly_calibrated_toy_is_near_zero():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 200_000)
    y = (rng.uniform(0, 1, p1.size) < p1).astype(int)  # outcomes drawn with exactly the stated probability
    proba = np.stack([1 - p1, p1], axis=1)
    assert metrics.expected_calibration_error(y, proba, n_bins=10) < 0.01
    # an over-confident model is visibly miscalibrated
    sharp = np.clip((p1 - 0.5) * 3 + 0.5, 0, 1)
    assert metrics.expected_calibration_error(y, np.stack([1 - sharp, sharp], 1)) > 0.05
    rel = metrics.reliability_table(y, proba, n_bins=10)
    assert rel["count"].sum() == y.size and len(rel) == 10


def test_kappa_identical_raters_is_one_and_chance_is_near_zero(samples):
    y = pneumonia_test_labels(samples)
    assert metrics.cohen_kappa(y, y) == 1.0
    rng = np.random.default_rng(0)
    assert abs(metrics.cohen_kappa(y, rng.permutation(y))) < 0.1
    with pytest.raises(DataError):
        metrics.cohen_kappa(y, y[:-1])




def test_dice_empty_mask_convention_is_monais():
    """Both empty -> 1.0; truth empty but predicted -> 0.0; the same in the per-pair and the MONAI batch form."""
    empty, blob = np.zeros((6, 6), int), np.zeros((6, 6), int)
    blob[1:4, 1:4] = 1
    assert metrics.dice(empty, empty) == 1.0
    assert metrics.dice(blob, empty) == 0.0 and metrics.dice(empty, blob) == 0.0
    assert metrics.dice(blob, blob) == 1.0
    pred = np.stack([empty, blob, blob])[:, None]
    truth = np.stack([empty, empty, blob])[:, None]
    per_class = metrics.dice_per_class(pred, truth, 2)
    assert per_class[:, 0].tolist() == [1.0, 0.0, 1.0]
    assert [metrics.dice(p, t, n_classes=2) for p, t in zip(pred, truth)] == [1.0, 0.0, 1.0]
    probs = np.stack([1 - pred[:, 0], pred[:, 0]], 1).astype(np.float32)  # one-hot "probabilities"
    assert metrics.dice_score(probs, truth) == pytest.approx(2 / 3)


def test_dice_classes_and_any_foreground():
    a = np.array([[0, 1, 1, 2]])
    b = np.array([[0, 1, 2, 2]])
    # class 1: 2*1/(2+1); class 2: 2*1/(1+2) -> mean 2/3; any foreground: 2*3/(3+3) = 1
    assert metrics.dice(a, b) == pytest.approx(2 / 3)
    assert metrics.dice(a != 0, b != 0) == 1.0
    # with n_classes, a class absent from both masks counts 1.0 (MONAI): (2/3 + 2/3 + 1) / 3
    assert metrics.dice(a, b, n_classes=4) == pytest.approx((2 / 3 + 2 / 3 + 1) / 3)
    with pytest.raises(DataError):
        metrics.dice(a, b[:, :3])


def test_dice_callers_share_the_convention():
    """The label audit, auto-labelling, training and the report all score through medwb.metrics."""
    from medwb.al.audit import mask_dice
    from medwb.al.autolabel import dice as autolabel_dice
    from medwb.models.train import dice_score
    from medwb.report.stats import segmentation_case_metrics

    rng = np.random.default_rng(0)
    a, b = rng.integers(0, 3, (2, 1, 8, 8)), rng.integers(0, 3, (2, 1, 8, 8))
    b[1] = 0
    a[1] = 0
    assert mask_dice(a[0], b[0]) == metrics.dice(a[0], b[0])
    assert autolabel_dice(a[0], b[0]) == metrics.dice(a[0] != 0, b[0] != 0)
    assert mask_dice(a[1], b[1]) == 1.0 == autolabel_dice(a[1], b[1])
    t = segmentation_case_metrics(a, b, n_classes=3)
    assert t.loc[t["case_id"] == "1", "dice"].tolist() == [1.0, 1.0]  # empty in both: 1.0, not NaN
    probs = np.eye(3, dtype=np.float32)[a[:, 0]].transpose(0, 3, 1, 2)
    assert dice_score(probs, b) == pytest.approx(float(metrics.dice_per_class(a, b, 3).mean()), abs=1e-6)


def test_class_metrics_auc_agrees_with_rank_auc(samples):
    y = pneumonia_test_labels(samples)
    proba = noisy_scores(y)
    m = metrics.class_metrics(proba, y)
    assert m["auc"] == pytest.approx(metrics.auc_binary(y, proba[:, 1]), abs=1e-12)
    assert m["accuracy"] == pytest.approx(metrics.classification_metrics(y, proba)[("accuracy", "all")])
    assert np.isnan(metrics.class_metrics(proba, np.ones_like(y))["auc"])


def test_bootstrap_ci_is_seeded_and_brackets_the_estimate(samples):
    y = pneumonia_test_labels(samples)
    proba = noisy_scores(y)
    e1 = metrics.bootstrap_ci(metrics.ece, y, proba, n_bootstrap=100, stratify=y, random_state=0)
    e2 = metrics.bootstrap_ci(metrics.ece, y, proba, n_bootstrap=100, stratify=y, random_state=0)
    assert e1 == e2 and e1[1] <= e1[0] <= e1[2]
