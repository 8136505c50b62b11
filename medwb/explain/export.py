"""Export of explanation maps: overlays (image + heat map + mask, one colour scale, a colour bar) as matplotlib
figures and PNG files, maps as NIfTI. No widgets: the live viewers are :mod:`medwb.ui.explain_view`.

Why a shared scale: a reviewer compares maps across cases and methods, so the colour of a value must not
change from panel to panel. Non-negative maps (Grad-CAM, saliency) use ``inferno`` on [0, max over the
set]; signed maps (IG, occlusion) use a diverging ``RdBu_r`` symmetric around 0 (red = evidence for the
class), clipped at the 99.5th percentile of |map| so one hot voxel does not wash out the rest.

3D: a slice montage (static, papermill-safe); the ipywidgets slice browser and the offline ipyniivue viewer
live in ``medwb.ui.explain_view``. NIfTI maps carry the image's affine
(``ds.affine(case_id)``), so 3D Slicer / ITK-SNAP put them on top of the original scan.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medwb.errors import DataError


@dataclass(frozen=True)
class HeatScale:
    """Colour scale shared by a set of maps."""

    vmin: float
    vmax: float
    cmap: str
    signed: bool

    @property
    def label(self) -> str:
        return "attribution (signed; red = for the class)" if self.signed else "attribution"


def heat_scale(maps: np.ndarray | Sequence[np.ndarray], *, signed: bool | None = None) -> HeatScale:
    """One scale for a set of maps (see module docstring). ``signed`` defaults to "has negative values"."""
    vals = np.concatenate([np.asarray(m, np.float64).ravel() for m in (maps if isinstance(maps, (list, tuple))
                                                                       else [maps])])
    vals = vals[np.isfinite(vals)]
    if vals.size == 0:
        return HeatScale(0.0, 1.0, "inferno", False)
    if signed is None:
        signed = bool(vals.min() < 0)
    if signed:
        m = float(np.percentile(np.abs(vals), 99.5)) or float(np.abs(vals).max()) or 1.0
        return HeatScale(-m, m, "RdBu_r", True)
    hi = float(np.percentile(vals, 99.5)) or float(vals.max()) or 1.0
    return HeatScale(0.0, hi, "inferno", False)


def spatial(a: np.ndarray | None) -> np.ndarray | None:
    """(1,H,W[,D]) / (H,W[,D]) -> (H,W[,D]); colour images averaged to grey, else the first channel.

    Public because every viewer of a stored map (overlays here, the verdict panel, the 3D viewer) must reduce
    a model-input array to the same picture.
    """
    if a is None:
        return None
    a = np.asarray(a)
    while a.ndim > 2 and a.shape[0] == 1 and a.ndim in (3, 4):
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[1] > 4:  # (C,H,W) colour: grey for the overlay
        a = a.mean(0)
    if a.ndim == 4:
        a = a[0]
    return a


def focus_slice(map3d: np.ndarray, mask3d: np.ndarray | None = None, axis: int = 2) -> int:
    """Slice to show for a volume: through the mask's centre when there is a mask, else the map's peak."""
    if mask3d is not None and np.any(mask3d > 0):
        return int(round(np.argwhere(mask3d > 0)[:, axis].mean()))
    prof = np.abs(map3d).sum(axis=tuple(i for i in range(3) if i != axis))
    return int(np.argmax(prof)) if prof.any() else map3d.shape[axis] // 2


def _rgba(map2d: np.ndarray, scale: HeatScale, alpha: float) -> np.ndarray:
    """Colour the map on the shared scale; opacity grows with |value| so weak attribution does not veil the
    image (a constant-alpha overlay of a diverging map washes the whole image out in white)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    rgba = colormaps[scale.cmap](Normalize(scale.vmin, scale.vmax, clip=True)(map2d))
    top = max(abs(scale.vmin), abs(scale.vmax), 1e-12)
    rgba[..., 3] = alpha * np.clip(np.abs(map2d) / top, 0, 1) ** 0.5
    return rgba


def _draw(ax: Any, image2d: np.ndarray, map2d: np.ndarray, mask2d: np.ndarray | None, scale: HeatScale,
          alpha: float, title: str | None, failed: str | None) -> None:
    lo, hi = np.percentile(image2d, [1, 99]) if image2d.size else (0.0, 1.0)
    ax.imshow(image2d, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1e-6, interpolation="nearest")
    ax.imshow(_rgba(np.asarray(map2d, np.float64), scale, alpha), interpolation="nearest")
    if mask2d is not None and np.any(mask2d > 0):
        ax.contour((mask2d > 0).astype(float), levels=[0.5], colors=["lime"], linewidths=1.0)
    if title or failed:
        ax.set_title((title or "") + (f"\nFAIL: {failed}" if failed else ""), fontsize=8,
                     color="red" if failed else "black")
    ax.set_axis_off()


def overlay_figure(images: Sequence[np.ndarray] | np.ndarray, maps: Sequence[np.ndarray] | np.ndarray,
                   masks: Sequence[np.ndarray | None] | np.ndarray | None = None, *, titles: Sequence[str] | None = None,
                   scale: HeatScale | None = None, alpha: float = 0.7, ncols: int = 4, failed: str | None = None,
                   suptitle: str | None = None, cell_size: float = 2.2):
    """Grid of overlays (2D images, or the focus slice of 3D volumes) with one shared colour bar.

    ``failed``: names of failed checks for this method; shown in red on every panel and in the title so a
    failing explanation is never presented as if it were trustworthy.
    """
    from matplotlib.figure import Figure

    n = len(images)
    if n == 0 or len(maps) != n:
        raise DataError(None, f"{n} images but {len(maps)} maps", "pass one map per image")
    masks_l = list(masks) if masks is not None else [None] * n
    scale = scale or heat_scale([np.asarray(m) for m in maps])
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(cell_size * ncols + 0.8, cell_size * nrows + 0.5), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for i, ax in enumerate(axes):
        if i >= n:
            ax.set_axis_off()
            continue
        img, mp, mk = spatial(images[i]), spatial(maps[i]), spatial(masks_l[i])
        if img.ndim == 3:
            k = focus_slice(mp, mk)
            img, mp, mk = img[..., k], mp[..., k], None if mk is None else mk[..., k]
            t = f"{titles[i] if titles else ''} (slice {k})".strip()
        else:
            t = titles[i] if titles else None
        _draw(ax, img, mp, mk, scale, alpha, t, failed)
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig.colorbar(ScalarMappable(Normalize(scale.vmin, scale.vmax), scale.cmap), ax=list(axes), shrink=0.8,
                 label=scale.label)
    if suptitle or failed:
        fig.suptitle((suptitle or "") + (f"  [FAILED CHECK: {failed}]" if failed else ""), fontsize=10,
                     color="red" if failed else "black")
    return fig


def slice_montage(image: np.ndarray, map_: np.ndarray, mask: np.ndarray | None = None, *, n_slices: int = 12,
                  axis: int = 2, scale: HeatScale | None = None, alpha: float = 0.7, ncols: int = 6,
                  title: str | None = None, failed: str | None = None):
    """Evenly spaced slices of one volume along ``axis`` (restricted to where map or mask is non-zero)."""
    img, mp, mk = spatial(image), spatial(map_), spatial(mask)
    if img.ndim != 3:
        raise DataError(None, f"slice_montage needs a volume, got shape {np.shape(image)}", "use overlay_figure for 2D")
    support = np.abs(mp) > 0 if mk is None or not np.any(mk) else mk > 0
    idx = np.where(support.any(axis=tuple(i for i in range(3) if i != axis)))[0]
    lo, hi = (idx.min(), idx.max()) if idx.size else (0, img.shape[axis] - 1)
    ks = np.unique(np.linspace(lo, hi, n_slices).round().astype(int))
    take = lambda a, k: None if a is None else np.take(a, k, axis=axis)  # noqa: E731
    return overlay_figure([take(img, k) for k in ks], [take(mp, k) for k in ks], [take(mk, k) for k in ks],
                          titles=[f"slice {k}" for k in ks], scale=scale or heat_scale(mp), alpha=alpha,
                          ncols=ncols, failed=failed, suptitle=title, cell_size=1.8)


# ---------------------------------------------------------------------------------------------------- export
def save_png(fig_or_rgb: Any, path: str | Path, *, dpi: int = 120) -> Path:
    """Write a matplotlib Figure or an (H,W,3) uint8 array as PNG (encrypted inside an encrypted study,
    :mod:`medwb.explain.stored`); returns the path."""
    import io

    from medwb.explain.stored import write_file

    buf = io.BytesIO()
    if hasattr(fig_or_rgb, "savefig"):
        fig_or_rgb.savefig(buf, dpi=dpi, format="png")
    else:
        from PIL import Image

        Image.fromarray(np.ascontiguousarray(np.asarray(fig_or_rgb, np.uint8))).save(buf, format="PNG")
    return write_file(path, buf.getvalue())


def save_nifti(map_: np.ndarray, affine: np.ndarray | None, path: str | Path) -> Path:
    """Write one map (1,H,W[,D]) or (H,W[,D]) as float32 NIfTI with the image's 4x4 ``affine`` (2D maps get a
    singleton third axis), so 3D Slicer opens it aligned with the scan. Encrypted inside an encrypted study."""
    import nibabel as nib

    a = spatial(np.asarray(map_, np.float32))
    if a.ndim == 2:
        a = a[..., None]
    aff = np.eye(4) if affine is None else np.asarray(affine, np.float64)
    if aff.shape != (4, 4):
        raise DataError(path, f"affine has shape {aff.shape}", "pass the 4x4 matrix from ds.affine(case_id)")
    img = nib.Nifti1Image(np.ascontiguousarray(a, np.float32), aff)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"medwb attribution map"
    data = img.to_bytes()
    if str(path).endswith(".gz"):
        import gzip

        data = gzip.compress(data, compresslevel=6, mtime=0)
    from medwb.explain.stored import write_file

    return write_file(path, data)
