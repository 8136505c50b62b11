"""Label-free vessel pre-labels: the dark tubular structures of a fundus photo, before any click (issue 13).

Why: retinal vessels are 1-10 pixels wide and branch over the whole field, the costliest structure there is to
outline (a CHASE_DB1 photo has ~5000 outline vertices), and regions cannot express them (even 40 000 SLIC regions
per photo leave mixed regions along every vessel: ``benchmarks/structure/README.md``). Their shape is known without
a label: long, thin and darker than the retina around them. A multi-scale ridge filter finds exactly that.

How (:func:`vessel_prelabel`), at the image's own resolution:

1. the green channel of a colour photo (where vessels have their best contrast; the grey mean otherwise), scaled
   by its 0.5 / 99.5 percentiles;
2. the field of view: the image's bright disc (mean intensity above :data:`FOV_LEVEL` of its 99th percentile,
   opened, holes filled, largest component); an image without a dark surround uses the whole frame;
3. outside the field filled with the field's mean (so its rim is no edge), then contrast-limited adaptive
   histogram equalisation (``skimage.exposure.equalize_adapthist``: evens out the illumination from centre to
   rim); the ridge strength is kept only :data:`FOV_MARGIN` pixels inside the field;
4. dark ridges (``skimage.filters.sato``, ``black_ridges=True``) at :data:`SIGMAS` pixels, scaled by the image's
   physical width against :data:`REFERENCE_WIDTH` (an anisotropic image is resampled to square pixels first);
5. Otsu's threshold of the ridge strength inside the field (no vessel-density prior), components smaller than
   :data:`MIN_OBJECT` pixels (at the reference width) dropped.

Deterministic (``random_state`` is accepted for the call shape of every label-free pre-label, and unused). An
image with no contrast gives an **empty mask**, not an error, so a pool-wide pass never stops on one bad case.
Measured on all 28 CHASE_DB1 photos (``benchmarks/structure/regions/chase_prelabel.md``): the settings were
chosen on those photos, so expect less on other fundus sets.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medwb.errors import DataError

REFERENCE_WIDTH = 1000.0  #: image width (px) the scales below are set for (CHASE_DB1: 999 px, a 30-degree field)
SIGMAS = (1.0, 1.5, 2.0, 3.0, 4.0)  #: ridge scales in pixels at the reference width (vessels 1-10 px wide)
FOV_LEVEL = 0.08  #: field of view: mean intensity above this share of its 99th percentile
FOV_MARGIN = 8  #: pixels (at the reference width) the field of view is shrunk by
MIN_OBJECT = 100  #: smallest kept vessel component, pixels at the reference width
CLAHE_CLIP = 0.02  #: clip limit of the adaptive histogram equalisation


def _channels(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(vessel channel, brightness) of a 2D image given as (H, W) or channel-first (C, H, W)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or min(img.shape[1:]) < 16:
        raise DataError(None, f"vessel pre-label: needs one 2D image (H,W) or (C,H,W), got shape {np.shape(image)}",
                        "give a 2D image at least 16 px on each side")
    img = img.astype(np.float32)
    return (img[1] if img.shape[0] == 3 else img.mean(0)), img.mean(0)


def field_of_view(brightness: np.ndarray) -> np.ndarray:
    """bool mask of the bright field of a fundus photo; the whole frame when the image has no dark surround (the
    bright part would cover less than a fifth of it, or nearly all of it)."""
    from scipy import ndimage as ndi

    top = float(np.percentile(brightness, 99))
    fov = brightness > FOV_LEVEL * top if top > 0 else np.zeros(brightness.shape, bool)
    fov = ndi.binary_fill_holes(ndi.binary_opening(fov, iterations=2))
    labels, n = ndi.label(fov)
    if n > 1:
        fov = labels == (np.argmax(np.bincount(labels.ravel())[1:]) + 1)
    return fov if 0.2 <= fov.mean() < 0.98 else np.ones(brightness.shape, bool)


def vessel_strength(image: np.ndarray, *, spacing: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ridge strength, field of view) at the image's own size: steps 1-4 of the module doc. The strength is 0
    outside the field; both are all-zero / all-False for an image with no contrast."""
    from scipy.ndimage import binary_erosion, zoom
    from skimage.exposure import equalize_adapthist
    from skimage.filters import sato

    green, bright = _channels(image)
    H, W = green.shape
    if not (np.isfinite(green).all() and np.isfinite(bright).all()) or green.max() <= green.min():
        return np.zeros((H, W), np.float32), np.zeros((H, W), bool)
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    grid = (H, W)
    if max(sy, sx) / min(sy, sx) > 1.2:  # square pixels of the finer spacing, then back to the image grid
        f = (sy / min(sy, sx), sx / min(sy, sx))
        green, bright = zoom(green, f, order=1), zoom(bright, f, order=1)
    scale = green.shape[1] / REFERENCE_WIDTH
    field = field_of_view(bright)
    lo, hi = np.percentile(green[field], [0.5, 99.5])
    x = np.clip((green - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    x = np.where(field, x, x[field].mean())  # no edge where the field ends
    x = equalize_adapthist(x, clip_limit=CLAHE_CLIP).astype(np.float32)
    ridge = sato(x, sigmas=[max(0.5, s * scale) for s in SIGMAS], black_ridges=True).astype(np.float32)
    margin = round(FOV_MARGIN * scale)
    fov = binary_erosion(field, iterations=margin) if margin > 0 and not field.all() else field
    ridge[~fov] = 0
    if ridge.shape != grid:
        from skimage.transform import resize

        from medwb.al.regions import resample_labels

        ridge = resize(ridge, grid, order=1, preserve_range=True, anti_aliasing=False).astype(np.float32)
        fov = resample_labels(fov.astype(np.uint8), grid).astype(bool)
    return ridge, fov


def vessel_prelabel(image: np.ndarray, *, spacing: Sequence[float] | None = None,
                    random_state: int = 0) -> np.ndarray:
    """bool (H, W) mask of the dark vessels of a 2D photo ((H,W) or channel-first (C,H,W)) at its own size; all
    False when the image has no contrast. ``spacing``: the (row, column) pixel size."""
    from skimage.filters import threshold_otsu
    from skimage.morphology import remove_small_objects

    del random_state  # deterministic
    ridge, fov = vessel_strength(image, spacing=spacing)
    inside = ridge[fov]
    if inside.size == 0 or inside.max() <= inside.min():
        return np.zeros(ridge.shape, bool)
    mask = (ridge > threshold_otsu(inside)) & fov
    scale = ridge.shape[1] / REFERENCE_WIDTH
    return remove_small_objects(mask, max_size=max(0, round(MIN_OBJECT * scale * scale) - 1))  # drops < MIN_OBJECT


__all__ = ["field_of_view", "vessel_prelabel", "vessel_strength"]
