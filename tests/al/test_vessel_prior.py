"""Label-free vessel pre-labels (medwb.al.vessel_prior): dark thin ridges of a fundus-like photo, no label used."""
import numpy as np
import pytest

from medwb.al.vessel_prior import field_of_view, vessel_prelabel
from medwb.errors import DataError
from medwb.metrics import dice


def synthetic_fundus(size=400, seed=0):
    """A bright disc on black with uneven illumination, noise, and dark lines 2-7 px wide (the vessels)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size].astype(float)
    c = size / 2
    disc = (yy - c) ** 2 + (xx - c) ** 2 <= (0.45 * size) ** 2
    vessels = np.zeros((size, size), bool)
    for k, width in enumerate((2, 3, 4, 5, 7)):  # straight and curved vessels from near the centre outwards
        angle = 0.3 + 1.2 * k
        t = np.linspace(0, 0.4 * size, 400)
        py = c + t * np.sin(angle) + 8 * np.sin(t / 25 + k)
        px = c + t * np.cos(angle)
        for y0, x0 in zip(py, px):
            vessels |= (yy - y0) ** 2 + (xx - x0) ** 2 <= (width / 2) ** 2
    light = 150 + 60 * (1 - ((yy - c) ** 2 + (xx - c) ** 2) / (0.45 * size) ** 2)  # brighter in the middle
    green = np.where(vessels, light * 0.55, light) + rng.normal(0, 4, (size, size))
    image = np.stack([green * 1.4, green, green * 0.5]) * disc
    return np.clip(image, 0, 255).astype(np.float32), vessels & disc


def test_vessels_of_a_synthetic_fundus_are_found_without_a_label():
    image, truth = synthetic_fundus()
    mask = vessel_prelabel(image)
    assert mask.shape == truth.shape and mask.dtype == bool
    assert dice(mask, truth) > 0.7
    assert not mask[~field_of_view(image.mean(0))].any()  # nothing outside the photo's field


def test_same_mask_for_same_image_and_scaled_to_the_image_width():
    image, truth = synthetic_fundus()
    assert np.array_equal(vessel_prelabel(image, random_state=0), vessel_prelabel(image, random_state=5))
    big, big_truth = synthetic_fundus(size=800)
    assert dice(vessel_prelabel(big), big_truth) > 0.7


def test_anisotropic_pixels_give_a_mask_on_the_image_grid():
    image, truth = synthetic_fundus()
    squeezed = image[:, ::2, :]  # rows twice as far apart
    mask = vessel_prelabel(squeezed, spacing=(2.0, 1.0))
    assert mask.shape == squeezed.shape[1:] and dice(mask, truth[::2]) > 0.6


def test_no_contrast_gives_an_empty_mask_and_bad_shapes_a_clear_error():
    assert not vessel_prelabel(np.full((3, 64, 64), 7.0, np.float32)).any()
    assert not vessel_prelabel(np.zeros((64, 64), np.float32)).any()
    with pytest.raises(DataError, match="2D image"):
        vessel_prelabel(np.zeros((1, 8, 8, 8), np.float32))


def test_an_image_without_a_dark_surround_uses_the_whole_frame():
    assert field_of_view(np.full((50, 60), 100.0)).all()
