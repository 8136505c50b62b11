"""The case on a reader's screen: the image with its pre-label, its uncertainty map, zoom and window.

Why its own widget: the review queue decides what is stored; this only draws. A 28 px MedMNIST image or a CT
slice needs magnifying and a different intensity window than the default to be read, and a classification case
without an uncertainty map must not show a broken-image icon. The window is set in percentiles of the case's
own intensities (1-99 by default, the same robust window every medwb viewer uses), so it works for any modality
the data layer normalised; zoom magnifies the drawn image 1-4x. Beside the image goes a :class:`MapPanel`: a
segmentation case's uncertainty map, or a classifier's saliency map (blended over the image, so the reader sees
which part of it the model looked at) with its class probabilities under it.
"""
from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as W
import numpy as np

from medwb.errors import DataError
from medwb.ui.view import focus_index, overlay_mask, png_bytes, spatial_array, to_rgb


def slice2d(a: np.ndarray, spatial_dims: int, index: int | None = None) -> np.ndarray:
    """A 2-D view of a (C,)H,W[,D] array: 3-D volumes are cut along the last axis (at ``index`` or the middle)."""
    a = np.asarray(a)
    if spatial_dims == 2 and a.ndim == 3 and a.shape[0] in (3, 4):  # colour photo (fundus): to_rgb draws it
        return a
    s = spatial_array(a, spatial_dims)
    if spatial_dims == 3:
        k = s.shape[-1] // 2 if index is None else index
        return s[..., k]
    return s


def heat_rgb(a: np.ndarray) -> np.ndarray:
    """A map (uncertainty, saliency) as a colour image (magma, scaled to its own range)."""
    from matplotlib import colormaps

    a = np.asarray(a, dtype=np.float64)
    lo, hi = np.nanmin(a), np.nanmax(a)
    x = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (colormaps["magma"](np.nan_to_num(x))[..., :3] * 255).astype(np.uint8)


def blended(heat: np.ndarray, image_rgb: np.ndarray, blend: float) -> np.ndarray:
    """``heat`` with ``blend`` of the image showing through (the heat alone when 0 or when the shapes differ)."""
    if blend <= 0 or heat.shape != image_rgb.shape:
        return heat
    return ((1 - blend) * heat.astype(np.float64) + blend * image_rgb.astype(np.float64)).astype(np.uint8)


@dataclass(frozen=True)
class MapPanel:
    """What is drawn beside the image: a ``map`` (the image's spatial shape; None: no picture) under its ``title``
    (HTML), an ``html`` note under it, and ``blend``: how much of the image shows through the map (0: the map
    alone, as an uncertainty map; about 0.5 for a saliency map, whose meaning is where on the image it lies)."""

    map: np.ndarray | None = None
    title: str = "<b>uncertainty</b>"
    html: str = ""
    blend: float = 0.0


class CaseView:
    """Image (+ pre-label mask overlay) and uncertainty map of one case, with zoom and window sliders.

    ``show(case_id, image, mask, umap)`` draws a case (a 3-D volume is cut through its pre-label, else the
    middle, so the slice shown is the one the proposal is about); ``umap`` is a map or a :class:`MapPanel`.
    ``clear()`` empties the view.
    """

    def __init__(self, display_px: int = 320, spatial_dims: int = 2) -> None:
        self.display_px, self.spatial_dims = int(display_px), int(spatial_dims)
        self.image = W.Image(format="png", layout=W.Layout(width=f"{display_px}px", height="auto"))
        self.umap = W.Image(format="png", layout=W.Layout(width=f"{display_px}px", height="auto"))
        self.umap_title, self.note = W.HTML(MapPanel.title), W.HTML()
        self.umap_box = W.VBox([self.umap_title, self.umap, self.note])
        self.zoom = W.IntSlider(value=1, min=1, max=4, description="zoom", continuous_update=False)
        self.window = W.FloatRangeSlider(value=(1.0, 99.0), min=0.0, max=100.0, step=0.5, description="window %",
                                         continuous_update=False, readout_format=".1f")
        for w in (self.zoom, self.window):
            w.observe(lambda _: self._render(), names="value")
        self.widget = W.VBox([W.HBox([W.VBox([W.HTML("<b>image + pre-label</b>"), self.image]), self.umap_box]),
                              W.HBox([self.zoom, self.window])])
        self._case: tuple[np.ndarray, np.ndarray | None, np.ndarray | None] | None = None
        self.blend = 0.0

    def show(self, case_id: str, image: np.ndarray, mask: np.ndarray | None = None,
             umap: np.ndarray | MapPanel | None = None) -> None:
        panel = umap if isinstance(umap, MapPanel) else MapPanel(umap)
        umap = panel.map
        self.umap_title.value, self.note.value, self.blend = panel.title, panel.html, float(panel.blend)
        k, m2 = None, None
        img = np.asarray(image)
        if mask is not None:
            mask_full = spatial_array(mask, self.spatial_dims)
            if self.spatial_dims == 3:
                k = focus_index(mask_full.shape, mask_full)[-1]
            if tuple(mask_full.shape) != tuple(img.shape[-self.spatial_dims:]):
                raise DataError(None, f"pre-label mask of {case_id!r} has shape {mask_full.shape}, the image "
                                f"{tuple(img.shape[-self.spatial_dims:])}",
                                "pass pre-label masks at the image's own size (e.g. medwb.al.prelabels.prelabel_mask)")
            m2 = slice2d(mask_full, self.spatial_dims, k)
        u2 = None if umap is None else slice2d(np.asarray(umap), self.spatial_dims, k)
        self._case = (slice2d(img, self.spatial_dims, k), m2, u2)
        self._render()

    def clear(self) -> None:
        self._case = None
        self.image.value, self.umap.value, self.note.value = b"", b"", ""
        self.umap_box.layout.display = "none"

    def _render(self) -> None:
        if self._case is None:
            return
        img2d, m2, u2 = self._case
        finite = np.asarray(img2d, dtype=np.float64)
        finite = finite[np.isfinite(finite)]
        lo, hi = (np.percentile(finite, list(self.window.value)) if finite.size else (0.0, 1.0))
        gray = to_rgb(img2d, lo=float(lo), hi=float(hi))
        rgb = overlay_mask(gray, m2, opacity=0.4)
        px = self.display_px * int(self.zoom.value)
        scale = max(1, px // max(rgb.shape[:2]))
        # a long note under the map wraps at the map's width instead of squeezing the image
        self.image.layout.width = self.umap.layout.width = self.note.layout.max_width = f"{px}px"
        self.image.value = png_bytes(rgb, scale=scale)
        self.umap.value = b"" if u2 is None else png_bytes(blended(heat_rgb(u2), gray, self.blend), scale=scale)
        self.umap.layout.display = None if self.umap.value else "none"  # no map: no broken-image icon
        self.umap_box.layout.display = None if self.umap.value or self.note.value else "none"
