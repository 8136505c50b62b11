"""Sanity and faithfulness checks on a tiny classifier trained on real PneumoniaMNIST, and the mask-energy
check on real reference masks (MSD hippocampus)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from medwb.data import open_dataset
from medwb.explain.attributions import attribute
from medwb.explain.checks import (auc, deletion_insertion_check, format_table, mask_energy_check, parameter_layers,
                                  perturbation_curves, randomization_check, randomize_layers, results_table,
                                  run_checks, similarity)
from medwb.models import predict_proba

from _fixtures import pneumonia_arrays


@pytest.fixture(scope="module")
def data(samples):
    return pneumonia_arrays(samples, n_train=800, n_val=200, n_test=12)


@pytest.fixture(scope="module")
def model(tiny_pneumonia_model):
    return tiny_pneumonia_model  # conftest: trained once per session, a private copy per module


def edge_map(model, X, target=None, *, batch_size=64, progress=False):
    """A model-independent 'explanation' (Sobel edges of the input): the negative control of Adebayo et al."""
    x = np.asarray(X, np.float32)
    return np.hypot(ndimage.sobel(x, axis=2), ndimage.sobel(x, axis=3)).sum(1, keepdims=True).astype(np.float32)


def test_randomize_layers_is_cumulative_from_the_top_and_leaves_original(model):
    names = parameter_layers(model)
    assert names[-1] == "head.1"  # output layer is randomized first
    before = {k: v.clone() for k, v in model.state_dict().items()}
    one = randomize_layers(model, 1, seed=0)
    sd1 = one.state_dict()
    assert not torch.equal(sd1["head.1.weight"], before["head.1.weight"])
    assert torch.equal(sd1["trunk.0.conv.weight"], before["trunk.0.conv.weight"])
    full = randomize_layers(model, None, seed=0).state_dict()
    assert not torch.equal(full["trunk.0.conv.weight"], before["trunk.0.conv.weight"])
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # deterministic for a seed
    assert torch.equal(randomize_layers(model, 3, seed=5).state_dict()["head.1.weight"],
                       randomize_layers(model, 3, seed=5).state_dict()["head.1.weight"])


def test_similarity_is_one_for_identical_maps(data):
    a = np.random.default_rng(0).random((3, 1, 28, 28)).astype(np.float32)
    rho, ssim = similarity(a, a)
    np.testing.assert_allclose(rho, 1.0)
    np.testing.assert_allclose(ssim, 1.0, atol=1e-6)


@pytest.mark.parametrize("method", ["gradcam", "ig"])
def test_randomization_drops_similarity_for_trained_model(model, data, method):
    r = randomization_check(model, data["Xt"], method=method, max_steps=4, progress=False,
                            **({"n_steps": 16} if method == "ig" else {}))
    assert r.passed, r.details
    assert len(r.details) == 4 and r.details.step.iloc[-1] == len(parameter_layers(model))
    assert r.value < 0.5 and r.extra["ssim_final"] < 0.5


def test_randomization_flags_a_model_independent_map(model, data):
    r = randomization_check(model, data["Xt"], method=edge_map, max_steps=3, progress=False)
    assert not r.passed  # edges of the input do not change with the weights: the check must say FAIL
    assert r.value > 0.99
    table = format_table(results_table([r]))
    assert "FAIL" in table and "edge_map" in table


def test_deletion_insertion_curves_and_random_baseline(model, data):
    X = data["Xt"]
    maps = attribute(model, X, method="ig", progress=False, n_steps=16)
    d, i = perturbation_curves(model, X, maps, steps=10)
    p = predict_proba(model, X)
    pred = p.argmax(1)
    np.testing.assert_allclose(d[:, 0], p[np.arange(len(X)), pred], atol=1e-5)  # nothing deleted yet
    np.testing.assert_allclose(i[:, -1], p[np.arange(len(X)), pred], atol=1e-5)  # everything inserted
    np.testing.assert_allclose(d[:, -1], i[:, 0], atol=1e-5)  # both ends are the all-baseline image
    assert auc(np.ones((1, 11)))[0] == pytest.approx(1.0)
    dc, ic = deletion_insertion_check(model, X, maps, method="ig", steps=10)
    assert dc.passed and dc.value < dc.reference  # IG deletes the evidence faster than a random map
    assert ic.check == "insertion_auc" and np.isfinite(ic.value)


def test_run_checks_table(model, data):
    X = data["Xt"][:6]
    maps = attribute(model, X, method="gradcam", progress=False)
    res = run_checks(model, X, maps, method="gradcam", max_steps=2, steps=8, progress=False)
    df = results_table(res)
    assert set(df.check) == {"randomization", "deletion_auc", "insertion_auc"}
    assert set(df.status) <= {"pass", "FAIL"} and df.value.notna().all()


def test_mask_energy_on_real_hippocampus_masks(samples):
    ds = open_dataset(samples / "segmentation_3d" / "hippocampus")
    X, Y, _ = ds.arrays("train", size=(32, 48, 32), max_cases=3, seed=0)
    fg = (Y > 0).astype(np.float32)
    inside = mask_energy_check(fg + 0.01, Y)  # a map concentrated on the structure
    area = fg.reshape(3, -1).mean(1)
    expected = (1.01 * area / (1.01 * area + 0.01 * (1 - area))).mean()
    assert inside.passed and inside.value == pytest.approx(expected) and inside.extra["pointing_game"] == 1.0
    assert inside.reference == pytest.approx(area.mean())
    uniform = mask_energy_check(np.ones_like(fg), Y)
    assert not uniform.passed  # a flat map is exactly the reference, not better
    assert uniform.value == pytest.approx(uniform.reference)
    outside = mask_energy_check(1.0 - fg, Y)
    assert not outside.passed and outside.value == pytest.approx(0.0)
