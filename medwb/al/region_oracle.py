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


def _greedy_binary(regions: np.ndarray, truth: np.ndarray, target: float, max_clicks: int,
                   start: np.ndarray | None = None) -> tuple[np.ndarray, list[float]]:
    """Click regions in (or out) for one binary structure: each click the region with the best Dice after it,
    from an empty mask or from ``start`` (a pre-label the person corrects).

    The counts of truth / mask voxels per region are updated from the voxels a click changed only, so a click
    costs the size of its region, not of the image (a fundus photo needs ~1000 clicks)."""
    flat = [r.ravel() for r in regions]
    sizes = [int(r.max()) + 1 for r in flat]
    t = truth.ravel().astype(bool)
    tw = t.astype(np.float64)
    n_t = float(t.sum())
    order = [np.argsort(lab, kind="stable") for lab in flat]
    starts = [np.concatenate([[0], np.cumsum(np.bincount(lab, minlength=n))]) for lab, n in zip(flat, sizes)]
    cnt_t = [np.bincount(lab, weights=tw, minlength=n) for lab, n in zip(flat, sizes)]
    cnt_all = [np.bincount(lab, minlength=n).astype(np.float64) for lab, n in zip(flat, sizes)]
    m = np.zeros_like(t) if start is None else np.asarray(start, bool).ravel().copy()
    mw = m.astype(np.float64)
    in_t = [np.bincount(lab, weights=tw * mw, minlength=n) for lab, n in zip(flat, sizes)]
    in_all = [np.bincount(lab, weights=mw, minlength=n) for lab, n in zip(flat, sizes)]
    inter, size = float((t & m).sum()), float(m.sum())
    curve: list[float] = []
    score = 2 * inter / (size + n_t) if size + n_t else 1.0
    while score < target and len(curve) < max_clicks:
        best, choice = score, None
        for k in range(len(flat)):
            for add, d in ((True, 2 * (inter + cnt_t[k] - in_t[k]) / (size + cnt_all[k] - in_all[k] + n_t)),
                           (False, 2 * (inter - in_t[k]) / np.maximum(size - in_all[k] + n_t, 1e-9))):
                j = int(np.argmax(d))
                if d[j] > best + 1e-12:
                    best, choice = float(d[j]), (k, j, add)
        if choice is None:  # no region improves: the regions cannot get closer to this structure
            break
        k, j, add = choice
        pix = order[k][starts[k][j]:starts[k][j + 1]]
        changed = pix[~m[pix]] if add else pix[m[pix]]
        m[changed] = add
        sign = 1.0 if add else -1.0
        for lvl, (lab, n) in enumerate(zip(flat, sizes)):
            in_t[lvl] += sign * np.bincount(lab[changed], weights=tw[changed], minlength=n)
            in_all[lvl] += sign * np.bincount(lab[changed], minlength=n)
        inter += sign * float(tw[changed].sum())
        size += sign * len(changed)
        score = best
        curve.append(score)
    return m.reshape(truth.shape), curve


def simulate_region_clicks(regions: np.ndarray, truth: np.ndarray, *, target: float = 0.9,
                           max_clicks: int = 500, start: np.ndarray | None = None) -> ClickResult:
    """Build ``truth`` (spatial integer label map) from ``regions`` (``(L, *spatial)``) by greedy clicks, one
    foreground class after another (a person labels one structure at a time). ``start``: a label map the
    person begins from (a label-free pre-label): a class already at ``target`` costs no click."""
    truth = np.asarray(truth)
    if truth.shape != regions.shape[1:] or (start is not None and np.shape(start) != truth.shape):
        raise DataError(None, f"truth of shape {truth.shape} (start {None if start is None else np.shape(start)}) "
                        f"on regions of shape {regions.shape[1:]}", "compare masks on the grid the regions were "
                        "computed on")
    classes = [int(c) for c in np.unique(truth) if c != 0]
    mask = np.zeros(truth.shape, np.int64)
    curves: dict[int, list[float]] = {}
    reached = True
    for c in classes:
        init = None if start is None else np.asarray(start) == c
        m, curve = _greedy_binary(regions, truth == c, target, max_clicks, init)
        mask[m] = c
        curves[c] = curve
        at_start = float(dice(init, truth == c)) if init is not None else 0.0
        reached &= (curve[-1] if curve else at_start) >= target
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
