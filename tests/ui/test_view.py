"""medwb.ui.view and the 2D slice browser, on real MSD hippocampus volumes (read with nibabel)."""
from __future__ import annotations

import io
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from medwb.ui import view
from medwb.ui.widgets.explore import SliceBrowser


@pytest.fixture(scope="module")
def hippo(samples: Path) -> list[tuple[np.ndarray, np.ndarray, tuple[float, ...], np.ndarray]]:
    """Three real (image, mask, spacing, affine) cases, channel-first like medwb.data returns them."""
    out = []
    for f in sorted((samples / "segmentation_3d/hippocampus/imagesTr").glob("*.nii.gz"))[:3]:
        im = nib.load(f)
        mask = np.asarray(nib.load(str(f).replace("imagesTr", "labelsTr")).dataobj).astype(np.int64)
        out.append((im.get_fdata().astype(np.float32)[None], mask[None], im.header.get_zooms(), im.affine))
    return out


def test_static_switch_env_and_argument(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(view.STATIC_ENV, "1")
    assert view.static_views_enabled() is True
    assert view.static_views_enabled(False) is False  # the explicit argument wins
    monkeypatch.setenv(view.STATIC_ENV, "0")
    assert view.static_views_enabled() is False
    monkeypatch.delenv(view.STATIC_ENV)
    assert view.static_views_enabled() is True  # plain pytest process: no IPython kernel, no front end


def test_spatial_array_drops_channel_axis() -> None:
    assert view.spatial_array(np.zeros((1, 4, 5, 6))).shape == (4, 5, 6)
    assert view.spatial_array(np.zeros((1, 4, 5))).shape == (4, 5)
    assert view.spatial_array(np.zeros((7, 4, 5))).shape == (7, 4, 5)  # no channel axis: a volume
    assert view.spatial_array(np.zeros((3, 4, 5)), spatial_dims=2).shape == (4, 5)
    with pytest.raises(ValueError, match="not a 2-D image"):
        view.spatial_array(np.zeros((2, 3, 4, 5)), spatial_dims=2)


def test_plane_orientation_and_aspect() -> None:
    vol = np.arange(4 * 5 * 6).reshape(4, 5, 6)
    np.testing.assert_array_equal(view.plane(vol, 2, 3), vol[:, :, 3])  # stored rows/cols, as the source viewer
    p0 = view.plane(vol, 0, 1)
    assert p0.shape == (6, 5) and p0[0, 0] == vol[1, 0, 5] and p0[-1, 0] == vol[1, 0, 0]  # last slice on top
    assert view.plane(vol, 1, 2).shape == (6, 4)
    assert view.plane_aspect((0.5, 0.5, 3.0), 2) == 1.0
    assert view.plane_aspect((0.5, 0.5, 3.0), 0) == 6.0
    assert view.spacing_from_affine(np.diag([0.8, 0.9, 2.5, 1.0])) == pytest.approx((0.8, 0.9, 2.5))


def test_focus_is_mask_centre(hippo) -> None:
    _, mask, _, _ = hippo[0]
    m = mask[0]
    c = view.focus_index(m.shape, m)
    assert m[c] > 0 or np.any(m[c[0]] > 0)  # the centre of mass lies in (or next to) the structure
    assert view.focus_index((10, 20), None) == (5, 10)


def test_static_volume_has_three_planes_with_contours(hippo) -> None:
    img, mask, spacing, _ = hippo[0]
    fig = view.show_volume(img, mask, spacing=spacing, static=True, title="hippocampus")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    # each plane goes through the mask centre, so every plane draws a contour of the labelled structure
    assert all(len(ax.collections) >= 1 for ax in fig.axes)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert np.asarray(Image.open(buf)).std() > 10


def test_niivue_widget_carries_image_and_mask(hippo) -> None:
    img, mask, _, affine = hippo[1]
    nv = view.show_volume(img, mask, backend="niivue", affine=affine)
    assert type(nv).__name__ == "NiiVue"
    assert [v.name for v in nv.volumes] == ["image.nii", "mask.nii"]
    # the bytes are a valid NIfTI of the same grid and geometry
    back = nib.Nifti1Image.from_bytes(nv.volumes[0].data)
    assert back.shape == img.shape[1:]
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    m = nib.Nifti1Image.from_bytes(nv.volumes[1].data)
    assert set(np.unique(np.asarray(m.dataobj))) == set(np.unique(mask))
    # label colours match the 2D browser; the crosshair starts on the structure
    lut = nv.volumes[1].colormap_label
    assert list(lut.labels) == ["background", "1", "2"]
    c = view.focus_index(mask.shape[1:], mask[0])
    assert nv.scene.crosshair_pos == pytest.approx([ci / (n - 1) for ci, n in zip(c, mask.shape[1:])])
    with pytest.raises(ValueError, match="does not match"):
        view.show_volume(img, mask[:, :-1], backend="niivue")


def test_itkwidgets_backend_explains_where_it_works(hippo) -> None:
    img, mask, _, _ = hippo[0]
    with pytest.raises(view.ViewerUnavailableError, match="separate env"):
        view.show_volume(img, mask, backend="itkwidgets")
    with pytest.raises(ValueError, match="unknown viewer backend"):
        view.show_volume(img, backend="vtk")


def test_show_slices_grid(hippo) -> None:
    fig = view.show_slices([h[0] for h in hippo], [h[1] for h in hippo], titles=["a", "b", "c"], ncols=2)
    assert len(fig.axes) == 4 and [a.get_title() for a in fig.axes[:3]] == ["a", "b", "c"]


def test_slice_browser_controls_change_the_picture(hippo) -> None:
    cases = {f"case{i}": h for i, h in enumerate(hippo)}
    b = SliceBrowser(lambda c: cases[c][0], list(cases), load_mask=lambda c: cases[c][1], spatial_dims=3)
    png = b.image.value
    assert max(Image.open(io.BytesIO(png)).size) >= 300  # upscaled for display
    m = cases["case0"][1][0]
    assert np.any(m.take(b.slice.value, axis=2) > 0)  # opens on a slice through the mask
    with_overlay = b.current_rgb()
    b.overlay.value = False
    without = b.current_rgb()
    assert np.any(with_overlay != without)
    assert b.image.value != png
    b.window.value = b.window.max
    assert b.current_rgb().std() < without.std()  # a wider window lowers contrast
    b.axis.value = 0
    assert b.slice.max == m.shape[0] - 1
    b.case.value = "case2"
    assert "case2" in b.info.value and b.slice.max == cases["case2"][0].shape[1] - 1


def test_explain_viewers_slice_browser_and_static_3d(hippo) -> None:
    """The live map viewers (medwb.ui.explain_view) on a real volume with a synthetic map over its mask."""
    from medwb.ui.explain_view import slice_browser, viewer_3d

    img, mask, _, affine = hippo[0]
    mp = (mask > 0).astype(np.float32)
    box = slice_browser(img, mp[None] if mp.ndim == 3 else mp, mask)
    slider = box.children[0]
    assert slider.max == img.shape[-1] - 1 and mask[0, :, :, slider.value].any()  # opens on the mask's centre
    fig = viewer_3d(img, mp, mask, affine=affine, static=True)
    assert isinstance(fig, Figure) and len(fig.axes) > 1


def test_show_explanations_and_overlays_display_what_exists(tmp_path, monkeypatch):
    """The report's explanation section and notebook 03's overlay grids: shown when present, a hint otherwise."""
    import pandas as pd
    from PIL import Image as PILImage

    import IPython.display
    from medwb.ui.display import show_explanations
    from medwb.ui.explain_view import show_overlays

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    (tmp_path / "overlays").mkdir()
    PILImage.new("RGB", (4, 4)).save(tmp_path / "overlays" / "gradcam.png")
    assert show_overlays(tmp_path, ["gradcam", "ig"]) == [tmp_path / "overlays" / "gradcam.png"]
    assert len(shown) == 1
    shown.clear()
    show_explanations(pd.DataFrame(), [])
    assert len(shown) == 1 and "No explanation outputs" in shown[0].data
    shown.clear()
    checks = pd.DataFrame({"method": ["gradcam"], "check": ["randomization"], "status": ["FAIL"]})
    show_explanations(checks, [tmp_path / "overlays" / "gradcam.png"], summary=checks, failed=["gradcam"])
    texts = [getattr(o, "data", "") for o in shown if isinstance(getattr(o, "data", None), str)]
    assert any("Checks failed" in t and "gradcam" in t for t in texts)
    assert any("Gallery: 1 of 1" in t for t in texts)
