"""Auto-labeling on real PneumoniaMNIST probabilities (a pixel logistic regression, deliberately weakly
regularised so that it is over-confident) and on real CHASE_DB1 vessel masks."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.linear_model import LogisticRegression

from medwb.al.autolabel import (
    apply_temperature,
    autolabel_report,
    cases_like_batch,
    choose_threshold,
    error_upper_bound,
    fit_autolabel,
    fit_temperature,
    image_confidence,
    is_correct,
    nll,
    prelabel,
)
from medwb.errors import DataError

N_FIT = 2500  # training images used to fit the model; the rest of the training split is held out


@pytest.fixture(scope="module")
def pneumonia_probs(samples: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        x = z["train_images"].reshape(-1, 784) / 255.0
        y = z["train_labels"][:, 0]
        xv, yv = z["val_images"].reshape(-1, 784) / 255.0, z["val_labels"][:, 0]
    model = LogisticRegression(C=10.0, max_iter=300).fit(x[:N_FIT], y[:N_FIT])
    return {"val": (model.predict_proba(xv), yv), "held": (model.predict_proba(x[N_FIT:]), y[N_FIT:])}


def test_temperature_lowers_nll(pneumonia_probs: dict) -> None:
    pv, yv = pneumonia_probs["val"]
    ph, yh = pneumonia_probs["held"]
    t = fit_temperature(pv, yv)
    assert t > 1.0  # the weakly regularised model is over-confident
    assert nll(apply_temperature(pv, t), yv) < nll(pv, yv)
    assert nll(apply_temperature(ph, t), yh) < nll(ph, yh)  # and it carries over to held-out cases
    assert np.array_equal(apply_temperature(ph, t).argmax(1), ph.argmax(1))  # classes unchanged


def test_threshold_keeps_error_below_target_on_held_out(pneumonia_probs: dict) -> None:
    pv, yv = pneumonia_probs["val"]
    ph, yh = pneumonia_probs["held"]
    t, choice = fit_autolabel(pv, yv, target_error=0.02)
    assert choice.error_upper <= 0.02 and np.isfinite(choice.threshold)
    assert choice.error_upper >= choice.error_val  # the conservative bound, not the raw rate, opened the gate
    rep = autolabel_report(prelabel(ph, t, choice.threshold), yh)
    assert rep["n"] == len(yh) and 0.3 < rep["coverage"] < 1.0  # a real share is auto-accepted, not everything
    assert rep["auto_error"] <= 0.02  # measured on held-out ground truth
    assert rep["error_non_auto"] > rep["auto_error"]  # the uncertain rest is where the errors are
    # a stricter target accepts fewer cases
    _, strict = fit_autolabel(pv, yv, target_error=0.005)
    assert strict.threshold > choice.threshold or not np.isfinite(strict.threshold)
    rep_nogt = autolabel_report(prelabel(ph, t, choice.threshold))
    assert "auto_error" not in rep_nogt and rep_nogt["coverage"] == rep["coverage"]


def test_threshold_chosen_on_validation_cases_like_an_uncertain_batch(pneumonia_probs: dict) -> None:
    pv, yv = pneumonia_probs["val"]
    ph, _ = pneumonia_probs["held"]
    u_val, u_held = 1 - pv.max(1), 1 - ph.max(1)
    random_batch = np.random.default_rng(0).choice(len(ph), 100, replace=False)
    hard_batch = np.argsort(-u_held)[:100]  # chosen for its uncertainty, as an AL strategy does
    keep_random, keep_hard = cases_like_batch(u_val, u_held[random_batch]), cases_like_batch(u_val, u_held[hard_batch])
    assert keep_random.mean() > 0.9  # a random batch is judged by (nearly) the whole split
    assert 0 < keep_hard.sum() < keep_random.sum()  # an uncertain one by the harder validation cases only
    t_all, whole = fit_autolabel(pv, yv, target_error=0.05)
    t_like, like = fit_autolabel(pv, yv, target_error=0.05, threshold_cases=keep_hard)
    assert t_like == t_all  # the temperature still uses the whole split
    assert like.n_val == keep_hard.sum() and like.threshold >= whole.threshold
    # novelty (e.g. distance to the labelled set) narrows it further: a batch of far-away cases, as core-set picks
    far_val = np.arange(len(yv), dtype=float)
    both = cases_like_batch(u_val, u_held[random_batch], far_val, np.array([len(yv) - 50.0, len(yv) - 1.0]))
    assert both.sum() <= 50 and not (both & ~keep_random).any()
    _, never = fit_autolabel(pv, yv, threshold_cases=np.zeros(len(yv), bool))
    assert not np.isfinite(never.threshold)
    with pytest.raises(DataError, match="one flag per validation case"):
        fit_autolabel(pv, yv, threshold_cases=np.ones(3, bool))


def test_choose_threshold_is_conservative() -> None:
    # 100 validation cases all correct: the 95% upper bound (~2.95%) is still above 2%, so nothing is accepted
    conf = np.linspace(0.5, 1.0, 100)
    assert not np.isfinite(choose_threshold(conf, np.ones(100, bool), 0.02).threshold)
    assert error_upper_bound(0, 149) <= 0.02 < error_upper_bound(0, 147)
    # 400 cases, the 30 least confident wrong: the gate opens down to where the bound just stays <= 2%
    conf = np.linspace(0.5, 1.0, 400)
    correct = np.arange(400) >= 30
    ch = choose_threshold(conf, correct, 0.02)
    k, e = ch.n_accepted_val, ch.errors_val
    assert ch.threshold == pytest.approx(conf[400 - k]) and e == (~correct[400 - k:]).sum()
    assert 0 < e < 30 and error_upper_bound(e, k) <= 0.02 < error_upper_bound(e + 1, k + 1)  # one lower breaks it
    with pytest.raises(DataError):
        choose_threshold(conf, correct[:10])


def test_segmentation_confidence_and_correctness(samples: Path) -> None:
    root = samples / "segmentation_2d" / "chase_db1"
    m1 = (np.asarray(Image.open(root / "manual_1stHO" / "Image_01L_1stHO.png").convert("L")) > 127).astype(int)
    m2 = (np.asarray(Image.open(root / "manual_2ndHO" / "Image_01L_2ndHO.png").convert("L")) > 127).astype(int)
    # probabilities that put 0.9 on observer 1's mask, and a second image with no predicted foreground
    p_fg = np.where(m1 == 1, 0.9, 0.1)
    probs = np.stack([np.stack([1 - p_fg, p_fg]), np.stack([np.full(m1.shape, 0.7), np.full(m1.shape, 0.3)])])
    conf = image_confidence(probs)
    assert conf[0] == pytest.approx(0.9)  # mean max-prob over predicted foreground only
    assert conf[1] == pytest.approx(0.7)  # no foreground: mean over all pixels
    pre = prelabel(probs, 1.0, threshold=0.8)
    assert pre.labels.shape == (2, 1, *m1.shape) and pre.auto_accept.tolist() == [True, False]
    assert np.array_equal(pre.labels[0, 0], m1)
    truth = np.stack([m2, np.zeros_like(m2)])[:, None]
    ok = is_correct(pre.labels, truth, dice_ok=0.6)
    assert ok[1]  # two empty masks agree
    rep = autolabel_report(pre, truth, dice_ok=0.6)
    assert rep["coverage"] == 0.5 and rep["n_auto_errors"] == int(not ok[0])
    t = fit_temperature(probs, np.stack([m1, np.zeros_like(m1)]))
    assert 0.05 <= t <= 20


def test_min_cases_to_certify_is_where_the_bound_first_meets_the_target() -> None:
    from medwb.al.autolabel import error_upper_bound, min_cases_to_certify

    for target, level in ((0.05, 0.95), (0.02, 0.95), (0.05, 0.5)):
        n = min_cases_to_certify(target, level)
        assert error_upper_bound(0, n, level) <= target < error_upper_bound(0, n - 1, level)
    assert min_cases_to_certify(0.05) == 59
