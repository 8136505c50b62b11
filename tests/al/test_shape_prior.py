"""The label-free ellipse pre-label of fetal heads (issue 13): a bright ring found without any label."""
import numpy as np
import pytest

from medwb.al.shape_prior import (
    ellipse_points,
    ellipse_prelabel,
    fit_ellipse,
    fit_head_ellipse,
)
from medwb.errors import DataError


def ellipse_mask(shape, xc, yc, a, b, theta):
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(float)
    u = (xx - xc) * np.cos(theta) + (yy - yc) * np.sin(theta)
    v = -(xx - xc) * np.sin(theta) + (yy - yc) * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1


def ring_image(shape=(270, 400), ellipse=(210, 140, 90, 65, 0.4), thickness=6, seed=0):
    """Ultrasound-like: a bright ring (the skull) with its outer edge on ``ellipse``, mid-grey inside, a brighter
    band of tissue at the bottom, multiplicative speckle; returns the image and the filled outer ellipse."""
    xc, yc, a, b, th = ellipse
    outer = ellipse_mask(shape, xc, yc, a, b, th)
    inner = ellipse_mask(shape, xc, yc, a - thickness, b - thickness, th)
    img = np.full(shape, 40.0)
    img[inner] = 80.0
    img[outer & ~inner] = 220.0
    img[-40:] = 150.0
    rng = np.random.default_rng(seed)
    img = img * rng.gamma(4.0, 0.25, size=shape)  # speckle, mean 1
    return np.clip(img, 0, 255).astype(np.uint8), outer


def dice(a, b):
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def test_direct_fit_recovers_an_ellipse_from_five_points():
    x, y = ellipse_points((50.0, 40.0, 30.0, 12.0, 0.7), 5)
    xc, yc, a, b, _ = fit_ellipse(x, y)
    assert np.allclose([xc, yc], [50, 40]) and np.allclose(sorted([a, b]), [12, 30])
    assert fit_ellipse(np.arange(6.0), np.arange(6.0)) is None  # collinear: no ellipse


def test_a_bright_ring_in_speckle_gives_its_ellipse():
    img, truth = ring_image()
    pre = ellipse_prelabel(img)
    assert pre.dtype == bool and pre.shape == img.shape
    assert dice(pre, truth) >= 0.9
    # channel-first input, as Dataset.load_image gives it, is the same image
    assert np.array_equal(ellipse_prelabel(img[None].astype(np.float32)), pre)


def test_anisotropic_spacing_is_fitted_in_physical_space():
    img, truth = ring_image(ellipse=(200, 130, 80, 80, 0.0))
    squeezed = img[::2]  # rows twice as far apart: the circle is an ellipse in pixels
    pre = ellipse_prelabel(squeezed, spacing=(2.0, 1.0))
    assert dice(pre, truth[::2]) >= 0.9


def test_same_random_state_same_mask_and_fit():
    img, _ = ring_image(seed=3)
    a = fit_head_ellipse(img, random_state=7)
    assert a == fit_head_ellipse(img, random_state=7)
    assert np.array_equal(ellipse_prelabel(img, random_state=7), ellipse_prelabel(img, random_state=7))


def test_blank_image_gives_an_empty_mask_and_a_wrong_shape_an_error():
    """Documented behaviour: no contrast -> no ring -> an all-False mask (a pool-wide pass never stops on it)."""
    for img in (np.zeros((120, 160)), np.full((120, 160), 77.0)):
        pre = ellipse_prelabel(img)
        assert pre.shape == (120, 160) and not pre.any()
        assert fit_head_ellipse(img) is None
    with pytest.raises(DataError):
        ellipse_prelabel(np.zeros((4, 8, 8, 8)))


def test_three_real_hc18_heads(shared_data):
    from medwb.data import open_dataset

    ds = open_dataset(shared_data / "seg2d" / "hc18_subset", progress=False)
    ids = ds.case_ids()[:3]
    scores = []
    for cid in ids:
        pre = ellipse_prelabel(ds.load_image(cid), spacing=ds.cohort.set_index("case_id").loc[cid, "pixel_size_mm"]
                               * np.ones(2), random_state=0)
        scores.append(dice(pre, ds.load_mask(cid)[0] > 0))
    assert np.mean(scores) >= 0.6, scores
