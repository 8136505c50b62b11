"""Label-free ellipse pre-labels: a head-shaped mask fitted to a bright elliptical ring, before any click (issue 13).

Why: a fetal head in ultrasound (HC18) is annotated as a filled ellipse along the outer skull, and the skull is a
bright, thick ring. Generic label-free cues (the largest bright object, Hough circles, clusters of regions, merges
cut at edges) miss it (Dice <= 0.52), because the brightest things in the picture are the uterine wall and the
placenta, not the head. A ring model does not: no label is used, only the shape.

How (:func:`ellipse_prelabel`), on an isotropic copy about 200 px wide:

1. bright ridges (``skimage.filters.sato``, ``black_ridges=False``) of the lightly smoothed image, scaled so its
   97th percentile is 1;
2. candidate centres on a grid; from each, rays at 64 angles; the strongest ridge along each ray is that centre's
   ring point. The centres whose ring points are strongest (a centre inside a bright ring sees it on every ray)
   are kept;
3. RANSAC from each kept centre's ring points: ellipses through 5 random points (a direct least-squares conic
   fit), scored by the mean ridge strength along their perimeter (capped at 1 per point, so one bright line
   cannot win), under plausibility constraints (axis ratio >= 0.55, short axis >= 6 % and long axis <= 45 % of
   the width, centre inside the image, >= 70 % of the perimeter inside it);
4. the best ellipse, grown outwards by ``OUTER_OFFSET`` working pixels (the ridge runs along the middle of the
   skull, the annotation along its outer edge: half a skull's thickness), filled at the image's own size.

Deterministic for a given ``random_state``. About 0.2 s of one CPU per 800x540 image. An image with no contrast
(constant) or without any plausible ellipse gives an **empty mask**, not an error, so a pool-wide pass never stops
on one bad case. Measured on the 253 HC18 subset cases (mean Dice 0.92): ``benchmarks/structure/regions/
hc18_prelabel.md``; the constants below were chosen on those cases, so other ultrasound may score lower.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from medwb.errors import DataError

WORK_WIDTH = 200  #: working width (px) of the isotropic copy the fit runs on
N_RAYS = 64  #: rays per candidate centre
N_CENTRES = 12  #: centres kept for RANSAC
N_TRIALS = 40  #: RANSAC samples (5 ring points each) per kept centre
MIN_AXIS_RATIO = 0.55  #: short / long axis
MIN_SHORT_AXIS = 0.06  #: short semi-axis, fraction of the working width
MAX_LONG_AXIS = 0.45  #: long semi-axis, fraction of the working width
MIN_INSIDE = 0.7  #: share of the perimeter inside the image
OUTER_OFFSET = 1.5  #: outward growth in working pixels (ridge centre -> outer skull edge)


def fit_ellipse(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float] | None:
    """(xc, yc, a, b, theta) of the ellipse through (or nearest, in least squares) the points; None if the points
    determine no ellipse. Halir and Flusser's numerically stable form of Fitzgibbon's direct fit."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    mx, my = x.mean(), y.mean()
    sc = max(x.std(), y.std(), 1e-12)
    x, y = (x - mx) / sc, (y - my) / sc
    d1 = np.stack([x * x, x * y, y * y], 1)
    d2 = np.stack([x, y, np.ones_like(x)], 1)
    s1, s2, s3 = d1.T @ d1, d1.T @ d2, d2.T @ d2
    try:
        t = -np.linalg.solve(s3, s2.T)
    except np.linalg.LinAlgError:
        return None
    m = s1 + s2 @ t
    m = np.array([m[2] / 2, -m[1], m[0] / 2])
    try:
        _, v = np.linalg.eig(m)
    except np.linalg.LinAlgError:
        return None
    v = np.real(v)
    cond = 4 * v[0] * v[2] - v[1] ** 2
    ok = np.flatnonzero(cond > 0)
    if ok.size == 0:
        return None
    a1 = v[:, ok[0]]
    a, b, c = a1
    d, e, f = t @ a1
    b, d, e = b / 2, d / 2, e / 2  # conic a x^2 + 2b xy + c y^2 + 2d x + 2e y + f = 0
    den = b * b - a * c
    if den >= 0:
        return None
    x0 = (c * d - b * e) / den
    y0 = (a * e - b * d) / den
    num = 2 * (a * e * e + c * d * d + f * b * b - 2 * b * d * e - a * c * f)
    root = np.sqrt((a - c) ** 2 + 4 * b * b)
    l1, l2 = num / (den * (root - (a + c))), num / (den * (-root - (a + c)))
    if not (l1 > 0 and l2 > 0):
        return None
    r1, r2 = np.sqrt(l1), np.sqrt(l2)
    theta = 0.5 * np.arctan2(-2 * b, c - a)
    # (r1 along theta, r2 across) in the centred, scaled frame -> original frame
    return float(x0 * sc + mx), float(y0 * sc + my), float(r1 * sc), float(r2 * sc), float(theta)


def ellipse_points(params: Sequence[float], n: int = 96) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of ``n`` points on the ellipse (xc, yc, a, b, theta): a along theta, b across."""
    xc, yc, a, b, th = params
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ct, st = np.cos(th), np.sin(th)
    return (xc + a * np.cos(t) * ct - b * np.sin(t) * st, yc + a * np.cos(t) * st + b * np.sin(t) * ct)


def _sample(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    return ndimage.map_coordinates(img, [y, x], order=1, mode="constant", cval=0.0)


def ring_score(params: Sequence[float], ridge: np.ndarray) -> float:
    """Mean ridge support (capped at 1 per point) along the ellipse; -1 when it breaks a plausibility rule."""
    xc, yc, a, b, _ = params
    h, w = ridge.shape
    if not (0 <= xc < w and 0 <= yc < h):
        return -1.0
    long, short = max(a, b), min(a, b)
    if short < MIN_SHORT_AXIS * w or long > MAX_LONG_AXIS * w or short / long < MIN_AXIS_RATIO:
        return -1.0
    x, y = ellipse_points(params)
    if ((x >= 0) & (x < w) & (y >= 0) & (y < h)).mean() < MIN_INSIDE:
        return -1.0
    return float(np.minimum(_sample(ridge, x, y), 1.0).mean())


def _grey(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3:  # channel-first (C, H, W), as Dataset.load_image gives it
        img = img.mean(0)
    if img.ndim != 2 or min(img.shape) < 16:
        raise DataError(None, f"ellipse pre-label: needs one 2D image (H,W) or (C,H,W), got shape {img.shape}",
                        "give a 2D image at least 16 px on each side")
    return img.astype(np.float32)


def fit_head_ellipse(image: np.ndarray, *, spacing: Sequence[float] | None = None,
                     random_state: int = 0) -> tuple[tuple[float, float, float, float, float], float] | None:
    """The best ring ellipse of ``image`` in its own pixel coordinates (x = column, y = row) and its ring score,
    or None when the image has no contrast or no plausible ellipse. ``spacing``: (row, column) pixel size."""
    from skimage import filters, transform

    img = _grey(image)
    H, W = img.shape
    sy, sx = (1.0, 1.0) if spacing is None else (float(spacing[0]), float(spacing[1]))
    if not (np.isfinite(img).all() and img.max() > img.min()):
        return None
    px = W * sx / WORK_WIDTH  # working pixel size, isotropic
    fy, fx = sy / px, sx / px  # image pixel -> working pixel
    h, w = max(round(H * fy), 16), max(round(W * fx), 16)
    small = transform.resize(img, (h, w), anti_aliasing=True, preserve_range=True)
    small = filters.gaussian(small, 1.0, preserve_range=True)
    ridge = filters.sato(small, sigmas=[1.5, 2.5], black_ridges=False)
    top = float(np.percentile(ridge, 97))
    if not top > 0:
        return None
    ridge = ridge / top
    ys, xs = np.mgrid[10:max(h - 10, 11):8, 10:max(w - 10, 11):8]
    centres = np.stack([xs.ravel(), ys.ravel()], 1).astype(float)
    ang = np.linspace(0, 2 * np.pi, N_RAYS, endpoint=False)
    rad = np.arange(8, MAX_LONG_AXIS * w, 1.0)
    X = centres[:, 0, None, None] + (np.cos(ang)[:, None] * rad[None])[None]
    Y = centres[:, 1, None, None] + (np.sin(ang)[:, None] * rad[None])[None]
    prof = _sample(ridge, X.ravel(), Y.ravel()).reshape(X.shape)  # centre x ray x radius
    peak = prof.argmax(2)
    support = np.minimum(prof.max(2), 1.5).mean(1)
    rng = np.random.default_rng(random_state)
    rays = np.arange(N_RAYS)
    best: tuple[float, tuple[float, float, float, float, float] | None] = (-1.0, None)
    for ci in np.argsort(-support, kind="stable")[:N_CENTRES]:
        px_, py_ = X[ci, rays, peak[ci]], Y[ci, rays, peak[ci]]
        for _ in range(N_TRIALS):
            pick = rng.choice(N_RAYS, 5, replace=False)
            params = fit_ellipse(px_[pick], py_[pick])
            if params is None:
                continue
            score = ring_score(params, ridge)
            if score > best[0]:
                best = (score, params)
    if best[1] is None or best[0] <= 0:
        return None
    xc, yc, a, b, th = best[1]
    x, y = ellipse_points((xc, yc, a + OUTER_OFFSET, b + OUTER_OFFSET, th), 360)
    # back to image pixels (pixel centres: working coordinate u <-> image (u + 0.5) / f - 0.5)
    x, y = (x + 0.5) / fx - 0.5, (y + 0.5) / fy - 0.5
    return fit_ellipse(x, y), best[0]


def ellipse_prelabel(image: np.ndarray, *, spacing: Sequence[float] | None = None,
                     random_state: int = 0) -> np.ndarray:
    """bool (H, W) mask: the filled best ring ellipse of a 2D image ((H,W) or channel-first (C,H,W)), at the
    image's own size; all False when no plausible ring is found (a constant image, say). ``spacing``: the
    (row, column) pixel size, so that an anisotropic image is fitted in physical space."""
    from skimage.draw import polygon

    img = _grey(image)
    mask = np.zeros(img.shape, bool)
    fit = fit_head_ellipse(img, spacing=spacing, random_state=random_state)
    if fit is None or fit[0] is None:
        return mask
    x, y = ellipse_points(fit[0], 720)
    rr, cc = polygon(y, x, shape=img.shape)
    mask[rr, cc] = True
    return mask


__all__ = ["ellipse_points", "ellipse_prelabel", "fit_ellipse", "fit_head_ellipse", "ring_score"]
