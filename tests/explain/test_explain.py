"""Attribution methods on real 2D (PneumoniaMNIST) and 3D (AdrenalMNIST3D, MSD hippocampus) data, overlays and
NIfTI export. A tiny classifier is trained once per test session on real images (a few seconds)."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch

from medwb.data import open_dataset
from medwb.errors import DataError
from medwb.explain.attributions import (METHOD_NAMES, SegmentationRegion, attribute, default_target_layer,
                                        occlusion_geometry, uncertainty_map)
from medwb.explain.checks import randomize_layers
from medwb.explain.export import heat_scale, overlay_figure, save_nifti, save_png, slice_montage
from medwb.models import build_classifier, build_segmenter

from _fixtures import pneumonia_arrays


@pytest.fixture(scope="module")
def pneumonia(samples):
    return pneumonia_arrays(samples, n_train=800, n_val=200, n_test=8)


@pytest.fixture(scope="module")
def trained_2d(tiny_pneumonia_model):
    return tiny_pneumonia_model  # conftest: trained once per session, a private copy per module


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_each_method_2d_shape_finite_and_model_dependent(trained_2d, pneumonia, method):
    X = pneumonia["Xt"]
    a = attribute(trained_2d, X, method=method, progress=False)
    assert a.shape == (len(X), 1, 28, 28) and a.dtype == np.float32
    assert np.isfinite(a).all() and np.abs(a).reshape(len(X), -1).max(1).min() > 0
    if method in ("gradcam", "gradcampp", "saliency"):
        assert a.min() >= 0
    # same target classes, fully randomized weights -> a different map (the method depends on the model)
    target = trained_2d(torch.as_tensor(X)).argmax(1).numpy()
    b = attribute(randomize_layers(trained_2d, seed=1), X, target, method=method, progress=False)
    rel = np.abs(a / np.abs(a).max() - b / max(np.abs(b).max(), 1e-12)).mean()
    assert rel > 0.02


def test_attribution_leaves_model_as_it_was(trained_2d, pneumonia):
    m = trained_2d
    m.train()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    hooks = sum(len(x._forward_hooks) + len(x._backward_hooks) for x in m.modules())
    inplace = [getattr(x, "inplace", None) for x in m.modules()]
    for method in ("gradcam", "gradcampp", "ig"):
        attribute(m, pneumonia["Xt"][:2], method=method, progress=False)
    assert m.training
    m.eval()
    assert sum(len(x._forward_hooks) + len(x._backward_hooks) for x in m.modules()) == hooks
    assert [getattr(x, "inplace", None) for x in m.modules()] == inplace
    assert all(torch.equal(state[k], v) for k, v in m.state_dict().items())


def test_target_is_respected_and_batching_is_invisible(trained_2d, pneumonia):
    X = pneumonia["Xt"]
    a0 = attribute(trained_2d, X, 0, method="ig", progress=False, n_steps=16)
    a1 = attribute(trained_2d, X, 1, method="ig", progress=False, n_steps=16)
    # two-class logits: the evidence for class 0 and class 1 differ
    assert not np.allclose(a0, a1)
    g1 = attribute(trained_2d, X, method="gradcam", batch_size=8, progress=False)
    g2 = attribute(trained_2d, X, method="gradcam", batch_size=3, progress=False)
    np.testing.assert_allclose(g1, g2, atol=1e-5)  # per-sample targets: no mixing across a batch


def test_default_target_layer_on_medwb_networks(samples):
    clf = build_classifier(2, 1, 2, seed=0)
    name = default_target_layer(clf)
    assert name.startswith("trunk.") and name == "trunk.3"  # last residual stage, before pooling
    seg = build_segmenter(3, 1, 3, seed=0)
    x = np.zeros((1, 1, 32, 48, 32), np.float32)
    lname = default_target_layer(seg, x)
    sizes = {}
    mods = dict(seg.named_modules())

    def record(_m, _i, o) -> None:
        sizes["s"] = o.shape[2:]

    h = mods[lname].register_forward_hook(record)
    seg(torch.as_tensor(x))
    h.remove()
    assert tuple(sizes["s"]) == (4, 6, 4)  # the bottleneck of a 4-level UNet


def test_each_method_3d_adrenal(samples):
    d = np.load(samples / "classification_3d" / "adrenalmnist3d.npz")
    X = d["test_images"][:2, None].astype(np.float32) / 255.0
    m = build_classifier(3, 1, 2, seed=0)
    for method in METHOD_NAMES:
        kw = {"occlusion": {"max_positions": 27}, "ig": {"n_steps": 8}}.get(method, {})
        a = attribute(m, X, method=method, progress=False, **kw)
        assert a.shape == (2, 1, 28, 28, 28) and np.isfinite(a).all() and np.abs(a).max() > 0
        b = attribute(randomize_layers(m, seed=3), X, [0, 0], method=method, progress=False, **kw)
        assert not np.allclose(a / np.abs(a).max(), b / max(np.abs(b).max(), 1e-12), atol=1e-3)


def test_occlusion_geometry_bounds_3d_cost():
    win, st = occlusion_geometry((40, 56, 40))
    n = np.prod([(s - w) // t + 1 for s, w, t in zip((40, 56, 40), win, st)])
    assert n <= 256 and all(t <= w for t, w in zip(st, win))
    win2, st2 = occlusion_geometry((28, 28))
    assert np.prod([(28 - w) // t + 1 for w, t in zip(win2, st2)]) <= 1024


def test_segmenter_region_attribution_on_hippocampus(samples):
    ds = open_dataset(samples / "segmentation_3d" / "hippocampus")
    X, Y, ids = ds.arrays("train", size=(32, 48, 32), max_cases=1, seed=0)
    seg = build_segmenter(3, 1, 3, seed=0).eval()
    logits = seg(torch.as_tensor(X))
    region = SegmentationRegion(seg)(torch.as_tensor(X))
    assert region.shape == (1, 3)
    pred = logits.argmax(1)
    np.testing.assert_allclose(region[0, 1].item(), logits[0, 1][pred[0] == 1].sum().item(), rtol=1e-4, atol=1e-3)
    for method in ("gradcam", "ig"):
        a = attribute(seg, X, 1, method=method, progress=False, n_steps=8) if method == "ig" else \
            attribute(seg, X, 1, method=method, progress=False)
        assert a.shape == (1, 1, 32, 48, 32) and np.isfinite(a).all()
    u = uncertainty_map(seg, X, passes=4, seed=0)  # the model's own uncertainty, second view
    assert u.shape == (1, 1, 32, 48, 32) and np.isfinite(u).all() and u.min() >= 0
    assert u.max() <= np.log(3) + 1e-5 and u.std() > 0
    np.testing.assert_allclose(u, uncertainty_map(seg, X, passes=4, seed=0))  # seeded


def test_overlays_png_and_nifti_affine(samples, tmp_path, trained_2d, pneumonia):
    X = pneumonia["Xt"][:4]
    a = attribute(trained_2d, X, method="ig", progress=False, n_steps=8)
    sc = heat_scale(a)
    assert sc.signed and sc.vmin == -sc.vmax
    fig = overlay_figure(X, a, titles=[f"case {i}" for i in range(4)], failed="randomization")
    p = save_png(fig, tmp_path / "o.png")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("FAIL" in (t.get_text() or "") for t in fig.texts)

    ds = open_dataset(samples / "segmentation_3d" / "hippocampus")
    cid = ds.cohort.case_id.iloc[0]
    img = ds.load_image(cid)
    aff = ds.affine(cid)
    m = np.random.default_rng(0).random(img.shape).astype(np.float32)
    out = save_nifti(m, aff, tmp_path / "map.nii.gz")
    back = nib.load(out)
    np.testing.assert_allclose(back.affine, aff)
    assert back.shape == img.shape[1:]
    np.testing.assert_allclose(np.asarray(back.dataobj), m[0])
    fig3 = slice_montage(img, m, ds.load_mask(cid), n_slices=6)
    save_png(fig3, tmp_path / "montage.png")
    assert (tmp_path / "montage.png").stat().st_size > 1000


def test_bad_input_raises_named_error(trained_2d):
    with pytest.raises(DataError, match="unknown attribution method"):
        attribute(trained_2d, np.zeros((1, 1, 28, 28), np.float32), method="lime")
    with pytest.raises(DataError, match="expected"):
        attribute(trained_2d, np.zeros((28, 28), np.float32))


@pytest.mark.slow
def test_run_explain_segmenter_on_hippocampus_with_uncertainty_view(samples, tmp_path):
    import pandas as pd

    from medwb.explain.run import run_explain
    from medwb.models import save_checkpoint

    ckpt = save_checkpoint(build_segmenter(3, 1, 3, seed=0), tmp_path / "seg.pt", {})
    out = tmp_path / "out"
    data = samples / "segmentation_3d" / "hippocampus"
    res = run_explain(ckpt, data, method="gradcam", cases=1, out_dir=out, select="misclassified", progress=False,
                      max_pool=4)
    idx = pd.read_csv(out / "index.csv", dtype={"case_id": str})
    assert set(idx.method) == {"gradcam", "uncertainty"} and len(idx) == 2
    assert idx.selection.str.contains("Dice").all()
    ck = pd.read_csv(out / "checks.csv")
    assert set(ck.check) == {"randomization", "deletion_auc", "insertion_auc", "mask_energy"}
    ds = open_dataset(data)
    for _, r in idx.iterrows():
        img = nib.load(out / r.map_nifti)
        assert img.shape == ds.load_image(r.case_id).shape[1:]  # back on the image's own grid
        np.testing.assert_allclose(img.affine, ds.affine(r.case_id))
    assert res.seconds["maps:gradcam"] < 30
