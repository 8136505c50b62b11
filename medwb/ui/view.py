"""One viewing entry point for notebooks: ``show_volume`` / ``show_slices`` pick the backend.

Why one function: notebooks must not care whether they run in a live JupyterLab (interactive WebGL viewer),
under papermill (no front end: a widget would render as an empty placeholder in the HTML report) or in a
separate classic-Notebook environment that has itkwidgets. Backends:

* ``"niivue"`` (default in a live kernel): ipyniivue 2.4, an anywidget whose JavaScript ships inside the
  wheel, so it renders in JupyterLab 4 with no network. Multiplanar slices + 3D render, mask as an overlay.
* ``"itkwidgets"``: opt-in, only in a separate env (itkwidgets 0.32.6 + classic Notebook 6.4 + ipywidgets
  7.6.5); see docs/viewers.md for why it cannot live in the default environment.
* ``"static"``: matplotlib, three orthogonal slices through the mask (or the volume centre) with the mask
  contour. Chosen automatically when there is no front end.

"No front end" is decided by :func:`static_views_enabled`: an explicit ``static=`` argument wins, then the
``MEDWB_STATIC_VIEWS`` environment variable (``medwb explore`` sets it to 1 for its papermill kernel), then
"not inside an IPython kernel at all" (plain scripts). A papermill kernel cannot be told apart from a live
one reliably (both have comms), hence the explicit switch.
"""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from medwb.errors import MedwbError

STATIC_ENV = "MEDWB_STATIC_VIEWS"
BACKENDS = ("auto", "niivue", "itkwidgets", "static")
# Overlay colours for mask labels 1..n (label 0 = background is never drawn). Cyan first: it stands out on
# grey scans and on red fundus photographs alike.
LABEL_COLORS = np.array(
    [[70, 240, 240], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
     [145, 30, 180], [240, 50, 230], [210, 245, 60], [250, 190, 212]],
    dtype=np.uint8,
)


class ViewerUnavailableError(MedwbError):
    """The requested viewer backend cannot run in this environment."""


def static_views_enabled(static: bool | None = None) -> bool:
    """True when views must be static figures (papermill, scripts), False in a live notebook front end."""
    if static is not None:
        return bool(static)
    env = os.environ.get(STATIC_ENV, "").strip().lower()
    if env in ("1", "true", "yes", "on"):
        return True
    if env in ("0", "false", "no", "off"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython ships with ipykernel
        return True
    shell = get_ipython()
    return shell is None or not hasattr(shell, "kernel")


def spatial_array(image: np.ndarray, spatial_dims: int | None = None) -> np.ndarray:
    """Drop the channel axis of a medwb array: (C,H,W[,D]) -> (H,W[,D]); plain (H,W[,D]) passes through.

    Without ``spatial_dims`` a 4-D array is channel-first 3-D, a 3-D array with a leading axis of 1 is
    channel-first 2-D and any other 3-D array is a volume. Multi-channel images show their first channel
    (RGB 2-D images are handled by :func:`to_rgb`).
    """
    a = np.asarray(image)
    if spatial_dims is None:
        spatial_dims = 3 if a.ndim == 4 or (a.ndim == 3 and a.shape[0] != 1) else 2
    if a.ndim == spatial_dims + 1:
        a = a[0]
    if a.ndim != spatial_dims:
        raise ValueError(f"image of shape {a.shape} is not a {spatial_dims}-D image (with optional channel axis)")
    return a


def window_to_uint8(a: np.ndarray, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """Map intensities to 0..255 with a window [lo, hi] (default: 1st-99th percentile, robust to outliers)."""
    a = np.asarray(a, dtype=np.float32)
    finite = a[np.isfinite(a)]
    if lo is None or hi is None:
        plo, phi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
        lo = float(plo) if lo is None else lo
        hi = float(phi) if hi is None else hi
    if hi <= lo:
        hi = lo + 1e-6
    out = np.clip((np.nan_to_num(a, nan=lo) - lo) / (hi - lo), 0, 1)
    return (out * 255).astype(np.uint8)


def to_rgb(image2d: np.ndarray, *, lo: float | None = None, hi: float | None = None) -> np.ndarray:
    """(H,W) grey or (3,H,W)/(H,W,3) colour slice -> (H,W,3) uint8 with the window applied."""
    a = np.asarray(image2d)
    if a.ndim == 3 and a.shape[0] in (3, 4) and a.shape[-1] not in (3, 4):
        a = np.moveaxis(a[:3], 0, -1)
    if a.ndim == 3 and a.shape[-1] in (3, 4):
        return window_to_uint8(a[..., :3], lo, hi)
    g = window_to_uint8(a, lo, hi)
    return np.repeat(g[..., None], 3, axis=-1)


def overlay_mask(rgb: np.ndarray, mask2d: np.ndarray | None, *, opacity: float = 0.4) -> np.ndarray:
    """Blend label colours of a 2-D integer mask onto an (H,W,3) uint8 image."""
    if mask2d is None or opacity <= 0:
        return rgb
    m = np.asarray(mask2d).astype(np.int64)
    out = rgb.astype(np.float32)
    for lab in np.unique(m):
        if lab <= 0:
            continue
        sel = m == lab
        color = LABEL_COLORS[(int(lab) - 1) % len(LABEL_COLORS)].astype(np.float32)
        out[sel] = (1 - opacity) * out[sel] + opacity * color
    return out.clip(0, 255).astype(np.uint8)


def png_bytes(rgb: np.ndarray, *, scale: int = 1, max_side: int | None = None,
              size: tuple[int, int] | None = None) -> bytes:
    """Encode an (H,W,3) uint8 image as PNG, upscaled by an integer factor (nearest: no blur of voxels)
    or, with ``max_side``, downscaled so a 1000-px photograph does not travel over the comm at full size.
    ``size=(width, height)`` resizes to exactly that (nearest when enlarging, Lanczos when shrinking)."""
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(rgb))
    if size is not None:
        w, h = max(1, int(size[0])), max(1, int(size[1]))
        shrink = w * h < img.width * img.height
        img = img.resize((w, h), Image.Resampling.LANCZOS if shrink else Image.Resampling.NEAREST)
    elif scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    if max_side is not None and max(img.size) > max_side:
        f = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * f)), max(1, round(img.height * f))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def focus_index(shape: Sequence[int], mask: np.ndarray | None) -> tuple[int, ...]:
    """Voxel to centre the views on: the mask's centre of mass if it has foreground, else the middle."""
    if mask is not None and np.any(mask > 0):
        idx = np.argwhere(mask > 0).mean(axis=0)
        return tuple(int(round(i)) for i in idx)
    return tuple(int(s) // 2 for s in shape)


def plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The 2-D slice of an (H,W,D) volume at ``index`` along ``axis``, oriented for display.

    Axis 2 (the slice axis of medwb arrays: DICOM series, NIfTI k) shows rows=H, cols=W as stored, like the
    source viewer; axes 0 and 1 show D vertically with the last slice at the top.
    """
    if axis == 2:
        return volume[:, :, index]
    p = volume[index, :, :] if axis == 0 else volume[:, index, :]
    return p.T[::-1]


def plane_aspect(spacing: Sequence[float] | None, axis: int) -> float:
    """Height/width of one displayed pixel of :func:`plane` (so anisotropic voxels are not squashed)."""
    if spacing is None or len(spacing) < 3:
        return 1.0
    sp = [float(x) if x and np.isfinite(x) and x > 0 else 1.0 for x in list(spacing)[:3]]
    row, col = {2: (0, 1), 0: (2, 1), 1: (2, 0)}[axis]
    return sp[row] / sp[col]


def spacing_from_affine(affine: np.ndarray | None) -> tuple[float, ...] | None:
    """Voxel sizes (mm) = lengths of the affine's first three columns."""
    if affine is None:
        return None
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(np.linalg.norm(a[:3, i])) for i in range(3))


def _affine(spacing: Sequence[float] | None, affine: np.ndarray | None) -> np.ndarray:
    if affine is not None:
        return np.asarray(affine, dtype=np.float64)
    a = np.eye(4)
    if spacing is not None:
        sp = [float(s) for s in spacing][:3]
        a[: len(sp), : len(sp)] = np.diag(sp)
    return a


def static_orthogonal(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    spacing: Sequence[float] | None = None,
    title: str | None = None,
    spatial_dims: int | None = None,
):
    """Matplotlib figure: three orthogonal slices (or the single 2-D image) with the mask contour."""
    from matplotlib.figure import Figure

    img = spatial_array(image, spatial_dims)
    msk = None if mask is None else spatial_array(mask, img.ndim)
    sp = list(spacing)[: img.ndim] if spacing is not None else [1.0] * img.ndim
    if img.ndim == 2:
        planes = [("image", img, msk, (sp[0] / sp[1]) if sp[1] else 1.0)]
    else:
        c = focus_index(img.shape, msk)
        planes = []
        names = ("axis 0", "axis 1", "axis 2")
        for ax in range(3):
            mplane = None if msk is None else plane(msk, ax, c[ax])
            planes.append((f"{names[ax]} = {c[ax]}", plane(img, ax, c[ax]), mplane, plane_aspect(sp, ax)))
    fig = Figure(figsize=(3.2 * len(planes), 3.4), layout="constrained")
    axes = fig.subplots(1, len(planes), squeeze=False)[0]
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0))
    for axis, (name, pl, mplane, aspect) in zip(axes, planes):
        axis.imshow(pl, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1e-6, aspect=aspect,
                    interpolation="nearest")
        if mplane is not None and np.any(mplane > 0):
            for lab in np.unique(mplane[mplane > 0]):
                color = LABEL_COLORS[(int(lab) - 1) % len(LABEL_COLORS)] / 255.0
                axis.contour((mplane == lab).astype(float), levels=[0.5], colors=[color], linewidths=1.2)
        axis.set_title(name, fontsize=9)
        axis.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def nifti_bytes(volume: np.ndarray, affine: np.ndarray, *, dtype: Any = np.float32) -> bytes:
    """An in-memory .nii file (what ipyniivue's ``Volume(data=...)`` expects)."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume, dtype=dtype), affine)
    img.header.set_xyzt_units("mm")
    return img.to_bytes()


def niivue_view(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    height: int = 420,
    mask_opacity: float = 0.5,
    spatial_dims: int | None = None,
):
    """ipyniivue widget: multiplanar slices + 3D render of ``image``, ``mask`` as a coloured overlay."""
    try:
        from ipyniivue import MultiplanarType, NiiVue, ShowRender, SliceType, Volume
    except ImportError as e:  # pragma: no cover - a pinned dependency
        raise ViewerUnavailableError(f"ipyniivue is not importable ({e}). Fix: pip install -c constraints.txt "
                                     "ipyniivue==2.4.4") from e
    img = spatial_array(image, spatial_dims)
    sd = img.ndim
    if sd == 2:
        img = img[..., None]
    aff = _affine(spacing, affine)
    finite = img[np.isfinite(img)]
    lo, hi = (np.percentile(finite, [1, 99.5]) if finite.size else (0.0, 1.0))
    volumes = [Volume(data=nifti_bytes(img, aff), name="image.nii", colormap="gray",
                      cal_min=float(lo), cal_max=float(hi) if hi > lo else float(lo) + 1e-6)]
    if mask is not None:
        m = spatial_array(mask, sd)
        if m.ndim == 2:
            m = m[..., None]
        if m.shape != img.shape:
            raise ValueError(f"mask shape {m.shape} does not match image shape {img.shape}")
        labels = [int(v) for v in np.unique(m) if v > 0]
        mask_vol = Volume(data=nifti_bytes(m, aff, dtype=np.float32), name="mask.nii", opacity=mask_opacity)
        # one colour per label value, the same colours as the 2D browser and static figures
        top = max(labels, default=1)
        lut = {"R": [0], "G": [0], "B": [0], "A": [0], "I": [0], "labels": ["background"]}
        for lab in range(1, top + 1):
            r, g, b = (int(x) for x in LABEL_COLORS[(lab - 1) % len(LABEL_COLORS)])
            for key, val in zip("RGBAI", (r, g, b, 255, lab)):
                lut[key].append(val)
            lut["labels"].append(str(lab))
        mask_vol.set_colormap_label(lut)
        volumes.append(mask_vol)
    nv = NiiVue(height=height, slice_type=SliceType.MULTIPLANAR, multiplanar_show_render=ShowRender.ALWAYS,
                multiplanar_layout=MultiplanarType.GRID, is_colorbar=False, back_color=(0, 0, 0, 1),
                drag_and_drop_enabled=False)
    nv.load_volumes(volumes)
    rot = aff[:3, :3]
    if mask is not None and np.allclose(rot, np.diag(np.diag(rot))) and np.all(np.diag(rot) > 0):
        # axis-aligned, non-flipped grid: voxel fractions are niivue's; start the crosshair on the mask
        c = focus_index(img.shape, m)
        nv.scene.crosshair_pos = [float(ci) / max(n - 1, 1) for ci, n in zip(c, img.shape)]
    return nv


def itkwidgets_view(image: np.ndarray, mask: np.ndarray | None = None, *, spacing: Sequence[float] | None = None,
                    spatial_dims: int | None = None):
    """itkwidgets 0.32 viewer. Only in its own env: classic Notebook 6.4 + ipywidgets 7.6.5 (docs/viewers.md)."""
    try:
        import itkwidgets  # type: ignore[import-not-found]
    except ImportError as e:
        raise ViewerUnavailableError(
            "itkwidgets is not installed in this environment. Fix: it needs ipywidgets 7 and the classic "
            "Notebook 6.4, so install it in a separate env (docs/viewers.md), or use backend='niivue'"
        ) from e
    img = np.ascontiguousarray(spatial_array(image, spatial_dims), dtype=np.float32)
    kwargs: dict[str, Any] = {}
    if mask is not None:
        kwargs["label_image"] = np.ascontiguousarray(spatial_array(mask, img.ndim), dtype=np.uint8)
    if spacing is not None:
        import itk  # type: ignore[import-not-found]

        itk_img = itk.image_view_from_array(img.T.copy())  # itk is x-fastest: reverse numpy axis order
        itk_img.SetSpacing([float(s) for s in spacing][: img.ndim])
        return itkwidgets.view(itk_img, **kwargs)
    return itkwidgets.view(img, **kwargs)


def show_volume(
    image: np.ndarray,
    mask: np.ndarray | None = None,
    *,
    backend: str = "auto",
    spacing: Sequence[float] | None = None,
    affine: np.ndarray | None = None,
    title: str | None = None,
    static: bool | None = None,
    spatial_dims: int | None = None,
    height: int = 420,
):
    """View a 2-D/3-D image with an optional label mask; returns a widget (live front end) or a Figure.

    ``backend="auto"`` -> ipyniivue in a live kernel, a static matplotlib figure when
    :func:`static_views_enabled` says there is no front end. Display the result (last expression of a cell).
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown viewer backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        backend = "static" if static_views_enabled(static) else "niivue"
    if backend == "static":
        sp = spacing if spacing is not None else spacing_from_affine(affine)
        return static_orthogonal(image, mask, spacing=sp, title=title, spatial_dims=spatial_dims)
    if backend == "niivue":
        return niivue_view(image, mask, spacing=spacing, affine=affine, height=height, spatial_dims=spatial_dims)
    return itkwidgets_view(image, mask, spacing=spacing, spatial_dims=spatial_dims)


def _outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The inner boundary of ``mask``, ``width`` pixels thick."""
    from scipy.ndimage import binary_dilation
    from skimage.segmentation import find_boundaries

    edge = find_boundaries(mask, mode="inner")
    return (binary_dilation(edge, iterations=width - 1) & mask) if width > 1 else edge


def regions_figure(images: Sequence[np.ndarray], regions: Sequence[np.ndarray],
                   masks: Sequence[np.ndarray | None] | None = None, *, titles: Sequence[str] | None = None,
                   level: int = 1, cell_size: float = 3.0, prelabels: Sequence[np.ndarray | None] | None = None):
    """Static figure of the structure model's regions (issue 13): each case (a 2D image, or the slice of a volume
    through its mask's centre) with the boundaries of its regions at ``level`` in yellow and, where the case has
    one, its mask's outline in red: how well regions follow the structure before any click. ``prelabels``: a
    label-free pre-label per case (2D), outlined in cyan."""
    from matplotlib.figure import Figure
    from skimage.segmentation import find_boundaries

    n = len(images)
    if n == 0 or len(regions) != n:
        raise ValueError("regions_figure needs one region map per image")
    masks = list(masks) if masks is not None else [None] * n
    fig = Figure(figsize=(cell_size * n, cell_size + 0.4), layout="constrained")
    for i, axis in enumerate(fig.subplots(1, n, squeeze=False).ravel()):
        axis.set_axis_off()
        image, reg = np.asarray(images[i]), np.asarray(regions[i])[level]
        msk = None if masks[i] is None else np.asarray(masks[i]).reshape(reg.shape)
        if reg.ndim == 3:
            k = focus_index(reg.shape, msk)[2]
            image, reg, msk = image[..., k], reg[..., k], None if msk is None else msk[..., k]
        rgb = to_rgb(image[0] if image.shape[0] == 1 else image)
        rgb[find_boundaries(reg, mode="inner")] = (255, 220, 0)
        width = max(1, min(reg.shape) // 150)  # outlines stay visible on a large image drawn a few cm wide
        if msk is not None:
            rgb[_outline(msk > 0, width)] = (230, 30, 30)
        if prelabels is not None and prelabels[i] is not None and reg.ndim == 2:
            rgb[_outline(np.asarray(prelabels[i]).reshape(reg.shape) > 0, width)] = (0, 200, 255)
        axis.imshow(rgb, interpolation="nearest")
        title = (titles[i] if titles else "") + f" ({int(reg.max()) + 1} regions)"
        axis.set_title(title.strip(), fontsize=8)
    return fig


def show_slices(
    images: Sequence[np.ndarray],
    masks: Sequence[np.ndarray | None] | None = None,
    *,
    titles: Sequence[str] | None = None,
    ncols: int = 6,
    spatial_dims: int | None = None,
    cell_size: float = 1.8,
):
    """Static grid of 2-D images / middle-of-mask slices of volumes, mask contours drawn. Returns a Figure."""
    from matplotlib.figure import Figure

    n = len(images)
    if n == 0:
        raise ValueError("show_slices needs at least one image")
    masks = list(masks) if masks is not None else [None] * n
    ncols = max(1, min(ncols, n))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(cell_size * ncols, cell_size * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for i, axis in enumerate(axes):
        axis.set_axis_off()
        if i >= n:
            continue
        raw = np.asarray(images[i])
        rgb_2d = spatial_dims == 2 and raw.ndim == 3 and raw.shape[0] in (3, 4)
        img = raw if rgb_2d else spatial_array(raw, spatial_dims)
        msk = None if masks[i] is None else spatial_array(masks[i], 2 if rgb_2d else img.ndim)
        if not rgb_2d and img.ndim == 3:
            k = focus_index(img.shape, msk)[2]
            img = img[..., k]
            msk = None if msk is None else msk[..., k]
        axis.imshow(to_rgb(img), interpolation="nearest")
        if msk is not None and np.any(msk > 0):
            for lab in np.unique(msk[msk > 0]):
                color = LABEL_COLORS[(int(lab) - 1) % len(LABEL_COLORS)] / 255.0
                axis.contour((msk == lab).astype(float), levels=[0.5], colors=[color], linewidths=0.8)
        if titles is not None:
            axis.set_title(str(titles[i]), fontsize=7)
    return fig
