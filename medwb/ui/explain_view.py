"""Live viewers of explanation maps in a notebook: an ipywidgets slice browser and the offline 3D viewer.

The static pictures (overlays, slice montages, PNG/NIfTI export) are :mod:`medwb.explain.export`; these are
their interactive counterparts and so live with every other widget in ``medwb.ui``.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medwb.explain.export import HeatScale, focus_slice, heat_scale, overlay_figure, slice_montage, spatial

if TYPE_CHECKING:
    import ipywidgets
    from matplotlib.figure import Figure


def slice_browser(image: np.ndarray, map_: np.ndarray, mask: np.ndarray | None = None, *, axis: int = 2,
                  scale: HeatScale | None = None, alpha: float = 0.7) -> ipywidgets.VBox:
    """ipywidgets slider over the slices of a volume (live notebooks). Returns the widget box."""
    import ipywidgets as w
    from IPython.display import display
    import matplotlib.pyplot as plt

    img, mp, mk = spatial(image), spatial(map_), spatial(mask)
    scale = scale or heat_scale(mp)
    out = w.Output()
    slider = w.IntSlider(value=focus_slice(mp, mk, axis), min=0, max=img.shape[axis] - 1, description="slice")

    def render(*_: Any) -> None:
        k = slider.value
        fig = overlay_figure([np.take(img, k, axis)], [np.take(mp, k, axis)],
                             [None if mk is None else np.take(mk, k, axis)], titles=[f"slice {k}"], scale=scale,
                             alpha=alpha, ncols=1, cell_size=4.0)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close("all")

    slider.observe(render, names="value")
    render()
    return w.VBox([slider, out])


def viewer_3d(image: np.ndarray, map_: np.ndarray, mask: np.ndarray | None = None, *,
              affine: np.ndarray | None = None, scale: HeatScale | None = None, opacity: float = 0.5,
              static: bool | None = None) -> Any | Figure:
    """The offline 3D viewer of ``medwb.ui.view`` (ipyniivue) with the map as a coloured overlay volume; a static
    slice montage when there is no live front end (papermill, scripts)."""
    from medwb.ui import view

    if view.static_views_enabled(static):
        return slice_montage(image, map_, mask, scale=scale)
    from ipyniivue import Volume

    mp = spatial(map_).astype(np.float32)
    scale = scale or heat_scale(mp)
    nv = view.niivue_view(spatial(image), None if mask is None else spatial(mask), affine=affine)
    aff = np.eye(4) if affine is None else np.asarray(affine, np.float64)
    shown = np.abs(mp) if scale.signed else mp
    nv.add_volume(Volume(data=view.nifti_bytes(shown, aff), name="attribution.nii", colormap="warm",
                         opacity=opacity, cal_min=float(max(scale.vmax, 1e-12) * 0.2), cal_max=float(scale.vmax)))
    return nv


def show_overlays(maps_dir: str | Path, methods: Sequence[str]) -> list[Path]:
    """Display each method's overlay grid (``MAPS/overlays/<method>.png`` written by ``medwb explain``) inline;
    returns the grids shown (a method without one is skipped)."""
    from IPython.display import Image, display

    grids = [Path(maps_dir) / "overlays" / f"{m}.png" for m in methods]
    grids = [g for g in grids if g.exists()]
    for g in grids:
        display(Image(filename=str(g)))
    return grids
