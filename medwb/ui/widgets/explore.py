"""Interactive 2D slice browser (ipywidgets) with mask overlay; a static figure grid without a front end.

Why a PNG in an ``ipywidgets.Image``: it is drawn by the core widget manager that ships with JupyterLab, so
the browser works offline with no extra JavaScript, and each redraw is one small image over the comm.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from medwb.ui.view import (
    overlay_mask,
    plane,
    plane_aspect,
    png_bytes,
    show_slices,
    spatial_array,
    static_views_enabled,
    to_rgb,
)

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset

IMAGE_CLASS = "medwb-slice-image"  # CSS class of the drawn image (the browser test looks for it)
BROWSER_CLASS = "medwb-slice-browser"  # CSS class of the whole browser (controls + image)


def _is_rgb(raw: np.ndarray, spatial_dims: int) -> bool:
    return spatial_dims == 2 and raw.ndim == 3 and raw.shape[0] in (3, 4)


class SliceBrowser:
    """Browse cases slice by slice: case, axis, slice, window/level, mask overlay on/off and opacity.

    ``load_image(case_id)`` returns a medwb array (C,H,W[,D]) or a plain (H,W[,D]) one; ``load_mask`` an
    integer mask of the same spatial shape or None; ``load_spacing`` the voxel size (mm) so anisotropic
    volumes (thick CT slices) are drawn unsquashed. Nothing is loaded until a case is shown.
    """

    def __init__(
        self,
        load_image: Callable[[str], np.ndarray],
        case_ids: Sequence[str],
        *,
        load_mask: Callable[[str], np.ndarray | None] | None = None,
        load_spacing: Callable[[str], Sequence[float] | None] | None = None,
        spatial_dims: int = 2,
        labels: Sequence[str] | None = None,
        display_px: int = 384,
        cache_size: int = 16,
    ) -> None:
        import ipywidgets as W

        if len(case_ids) == 0:
            raise ValueError("SliceBrowser needs at least one case id")
        self.case_ids = [str(c) for c in case_ids]
        self.spatial_dims = spatial_dims
        self.display_px = display_px
        self._load_image = lru_cache(maxsize=cache_size)(load_image)
        self._load_mask = lru_cache(maxsize=cache_size)(load_mask) if load_mask is not None else None
        self._load_spacing = load_spacing
        options = [(f"{c} ({lab})" if labels is not None else c, c)
                   for c, lab in zip(self.case_ids, labels if labels is not None else self.case_ids)]
        self.case = W.Dropdown(options=options, description="case")
        self.axis = W.ToggleButtons(options=[("0", 0), ("1", 1), ("2", 2)], value=2, description="axis",
                                    style={"button_width": "40px"})
        self.slice = W.IntSlider(value=0, min=0, max=0, description="slice", continuous_update=True)
        self.level = W.FloatSlider(description="level", continuous_update=True, readout_format=".3g")
        self.window = W.FloatSlider(description="window", continuous_update=True, readout_format=".3g")
        self.overlay = W.Checkbox(value=True, description="mask overlay", indent=False)
        self.opacity = W.FloatSlider(value=0.4, min=0.0, max=1.0, step=0.05, description="opacity")
        self.image = W.Image(format="png", layout=W.Layout(width=f"{display_px}px", height="auto"))
        self.image.add_class(IMAGE_CLASS)
        self.info = W.HTML()
        self._updating = False
        self.case.observe(lambda _: self._on_case(), names="value")
        self.axis.observe(lambda _: self._on_axis(), names="value")
        for w in (self.slice, self.level, self.window, self.overlay, self.opacity):
            w.observe(lambda _: self.redraw(), names="value")
        controls = [self.case]
        if spatial_dims == 3:
            controls += [self.axis, self.slice]
        controls += [self.level, self.window, W.HBox([self.overlay, self.opacity])]
        self.widget = W.HBox([W.VBox(controls), W.VBox([self.image, self.info])])
        self.widget.add_class(BROWSER_CLASS)
        self._on_case()

    @classmethod
    def from_dataset(cls, ds: Dataset, case_ids: Sequence[str] | None = None, *, max_cases: int = 500,
                     seed: int = 0, **kwargs: Any) -> SliceBrowser:
        """Browser over a ``medwb.data`` dataset (cases with masks first for segmentation)."""
        cohort = ds.cohort
        if case_ids is None:
            order = cohort
            if ds.task == "segmentation" and "mask" in cohort:
                order = cohort.assign(_m=cohort["mask"].notna()).sort_values("_m", ascending=False, kind="stable")
            case_ids = list(order["case_id"].astype(str))
            if len(case_ids) > max_cases:
                rng = np.random.default_rng(seed)
                case_ids = sorted(rng.choice(case_ids, size=max_cases, replace=False).tolist(), key=case_ids.index)
        by_id = cohort.set_index(cohort["case_id"].astype(str))
        labels = None
        if ds.task == "classification" and "label" in cohort:
            import pandas as pd

            labels = ["unlabelled" if pd.isna(v) else ds.classes.get(int(v), str(v))
                      for v in by_id.loc[list(case_ids), "label"]]
        spacing = by_id["spacing"] if "spacing" in by_id else None

        def load_spacing(case_id: str) -> tuple[float, ...] | None:
            text = None if spacing is None else spacing.get(case_id)
            if not isinstance(text, str):
                return None
            try:
                return tuple(float(v) for v in text.split("x"))
            except ValueError:
                return None

        return cls(ds.load_image, case_ids, load_mask=ds.load_mask if ds.task == "segmentation" else None,
                   load_spacing=load_spacing, spatial_dims=ds.ndim, labels=labels, **kwargs)

    # --- state ---------------------------------------------------------------------------------------------
    def _arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        raw = np.asarray(self._load_image(self.case.value))
        img = raw if _is_rgb(raw, self.spatial_dims) else spatial_array(raw, self.spatial_dims)
        mask = None
        if self._load_mask is not None:
            m = self._load_mask(self.case.value)
            if m is not None:
                mask = spatial_array(np.asarray(m), self.spatial_dims)
        return img, mask

    def _on_case(self) -> None:
        img, mask = self._arrays()
        finite = img[np.isfinite(img)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        plo, phi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        span = max(hi - lo, 1e-6)
        self._updating = True
        try:
            self.level.min, self.level.max = -1e30, 1e30  # widen first so the new range is always valid
            self.level.min, self.level.max, self.level.step = lo, lo + span, span / 200
            self.level.value = float((plo + phi) / 2)
            self.window.min, self.window.max = 0.0, 1e30
            self.window.min, self.window.max, self.window.step = span / 200, span * 2, span / 200
            self.window.value = float(max(phi - plo, span / 200))
        finally:
            self._updating = False
        self._on_axis(mask)

    def _on_axis(self, mask: np.ndarray | None = None) -> None:
        img, m = self._arrays()
        mask = m if mask is None else mask
        if self.spatial_dims == 3:
            n = img.shape[self.axis.value]
            self._updating = True
            try:
                self.slice.max = n - 1
                if mask is not None and np.any(mask > 0):
                    other = tuple(d for d in range(3) if d != self.axis.value)
                    self.slice.value = int(np.argmax((mask > 0).sum(axis=other)))
                else:
                    self.slice.value = n // 2
            finally:
                self._updating = False
        self.redraw()

    # --- drawing -------------------------------------------------------------------------------------------
    def current_rgb(self) -> np.ndarray:
        """The (H,W,3) uint8 picture the widget shows for the current controls."""
        img, mask = self._arrays()
        if self.spatial_dims == 3:
            img2 = plane(img, self.axis.value, int(self.slice.value))
            mask2 = None if mask is None else plane(mask, self.axis.value, int(self.slice.value))
        else:
            img2, mask2 = img, mask
        lo = self.level.value - self.window.value / 2
        hi = self.level.value + self.window.value / 2
        rgb = to_rgb(img2, lo=lo, hi=hi)
        if self.overlay.value and mask2 is not None:
            rgb = overlay_mask(rgb, mask2, opacity=self.opacity.value)
        return rgb

    def pixel_aspect(self) -> float:
        """Height/width of one displayed pixel for the current case and axis (1 for 2-D images)."""
        sp = self._load_spacing(self.case.value) if self._load_spacing is not None else None
        if sp is None:
            return 1.0
        if self.spatial_dims == 3:
            return plane_aspect(sp, self.axis.value)
        return float(sp[0]) / float(sp[1]) if len(sp) >= 2 and sp[1] else 1.0

    def display_size(self, shape: tuple[int, int]) -> tuple[int, int]:
        """(width, height) in pixels: the physical aspect kept, longest side ``display_px``."""
        rows, cols = shape
        h_phys, w_phys = rows * self.pixel_aspect(), float(cols)
        f = self.display_px / max(h_phys, w_phys)
        return max(1, round(w_phys * f)), max(1, round(h_phys * f))

    def redraw(self) -> None:
        if self._updating:
            return
        rgb = self.current_rgb()
        self.image.value = png_bytes(rgb, size=self.display_size(rgb.shape[:2]))
        img, mask = self._arrays()
        fg = "" if mask is None else f", foreground voxels {int((mask > 0).sum())}"
        self.info.value = f"<small>{self.case.value}: shape {tuple(img.shape)}{fg}</small>"

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def browse(ds: Dataset, *, static: bool | None = None, max_cases: int = 500, grid_cases: int = 12, seed: int = 0,
           **kwargs: Any) -> Any:
    """The exploration notebook's slice browser: a live widget, or a static grid when there is no front end."""
    if not static_views_enabled(static):
        return SliceBrowser.from_dataset(ds, max_cases=max_cases, seed=seed, **kwargs).widget
    cohort = ds.cohort
    ids = list(cohort["case_id"].astype(str))
    if ds.task == "segmentation" and "mask" in cohort:
        ids = list(cohort.loc[cohort["mask"].notna(), "case_id"].astype(str)) or ids
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(ids), size=min(grid_cases, len(ids)), replace=False).tolist())
    chosen = [ids[i] for i in pick]
    images = [ds.load_image(c) for c in chosen]
    masks = [ds.load_mask(c) for c in chosen] if ds.task == "segmentation" else None
    return show_slices(images, masks, titles=chosen, spatial_dims=ds.ndim)
