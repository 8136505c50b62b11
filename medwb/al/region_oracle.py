"""The simulated annotator of region-click annotation, and the manual outline it is measured against (issue 13).

Why: "region-click saves effort" is a claim to measure, not to assume. The simulated annotator knows the true
mask and, click after click, adds or removes the one region (any level of :func:`medwb.al.regions.over_segment`)
that raises the Dice with the truth most, until the Dice reaches a target. This is the standard "number of clicks
to reach Dice X" (NoC@90) of interactive segmentation, and it is an optimistic person: it never misclicks. The
manual alternative is counted as honestly: a polygon with a vertex every ``step`` pixels along the true contour,
slice by slice in 3D (:func:`outline_actions`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medwb.errors import DataError
from medwb.metrics import dice


@dataclass
class ClickResult:
    """What the simulated annotator did on one case: ``clicks`` (summed over classes), the final ``dice`` (mean
    over foreground classes), whether every class ``reached`` the target, the Dice after each click of each
    class (``curves``) and the mask it built."""

    clicks: int
    dice: float
    reached: bool
    curves: dict[int, list[float]] = field(default_factory=dict)
    mask: np.ndarray | None = None


def _greedy_binary(regions: np.ndarray, truth: np.ndarray, target: float, max_clicks: int) -> tuple[np.ndarray, list[float]]:
    """Click regions in (or out) for one binary structure: each click the region with the best Dice after it."""
    flat = [r.ravel() for r in regions]
    sizes = [int(r.max()) + 1 for r in flat]
    t = truth.ravel().astype(bool)
    n_t = float(t.sum())
    m = np.zeros_like(t)
    curve: list[float] = []
    score = 0.0 if n_t else 1.0
    while score < target and len(curve) < max_clicks:
        inter, size = float((m & t).sum()), float(m.sum())
        best, choice = score, None
        for k, (lab, n) in enumerate(zip(flat, sizes)):
            out_t = np.bincount(lab, weights=t & ~m, minlength=n)
            out_all = np.bincount(lab, weights=~m, minlength=n)
            in_t = np.bincount(lab, weights=t & m, minlength=n)
            in_all = np.bincount(lab, weights=m, minlength=n)
            for add, d in ((True, 2 * (inter + out_t) / (size + out_all + n_t)),
                           (False, 2 * (inter - in_t) / np.maximum(size - in_all + n_t, 1e-9))):
                j = int(np.argmax(d))
                if d[j] > best + 1e-12:
                    best, choice = float(d[j]), (k, j, add)
        if choice is None:  # no region improves: the regions cannot get closer to this structure
            break
        k, j, add = choice
        inside = flat[k] == j
        m = (m | inside) if add else (m & ~inside)
        score = best
        curve.append(score)
    return m.reshape(truth.shape), curve


def simulate_region_clicks(regions: np.ndarray, truth: np.ndarray, *, target: float = 0.9,
                           max_clicks: int = 500) -> ClickResult:
    """Build ``truth`` (spatial integer label map) from ``regions`` (``(L, *spatial)``) by greedy clicks, one
    foreground class after another (a person labels one structure at a time)."""
    truth = np.asarray(truth)
    if truth.shape != regions.shape[1:]:
        raise DataError(None, f"truth of shape {truth.shape} on regions of shape {regions.shape[1:]}",
                        "compare masks on the grid the regions were computed on")
    classes = [int(c) for c in np.unique(truth) if c != 0]
    mask = np.zeros(truth.shape, np.int64)
    curves: dict[int, list[float]] = {}
    reached = True
    for c in classes:
        m, curve = _greedy_binary(regions, truth == c, target, max_clicks)
        mask[m] = c
        curves[c] = curve
        reached &= bool(curve) and curve[-1] >= target
    n_classes = max(classes, default=0) + 1
    return ClickResult(clicks=sum(len(v) for v in curves.values()), dice=dice(mask, truth, n_classes=n_classes),
                       reached=reached, curves=curves, mask=mask)


def outline_actions(truth: np.ndarray, *, step: float = 5.0, axis: int = -1) -> int:
    """Vertices a manual outline of ``truth`` needs: one every ``step`` pixels along each contour of each
    foreground class (at least 3 per contour), slice by slice along ``axis`` in 3D."""
    from skimage.measure import find_contours

    truth = np.asarray(truth)
    if truth.ndim == 3:
        moved = np.moveaxis(truth, axis, 0)
        return sum(outline_actions(s, step=step) for s in moved)
    if truth.ndim != 2:
        raise DataError(None, f"a mask of shape {truth.shape}", "pass a 2D or 3D spatial label map")
    n = 0
    for c in np.unique(truth):
        if c == 0:
            continue
        padded = np.pad((truth == c).astype(float), 1)  # closes contours that touch the image border
        for contour in find_contours(padded, 0.5):
            length = float(np.sum(np.linalg.norm(np.diff(contour, axis=0), axis=1)))
            n += max(3, int(np.ceil(length / step)))
    return n
