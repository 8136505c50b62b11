"""Region-click mask editor (issue 13): build a segmentation mask by clicking the structure model's regions in.

Why: outlining a structure point by point is the most expensive label there is; with the image cut into regions
that follow its edges (:mod:`medwb.al.regions`), one click on a coarse region takes the bulk of an object and a
few fine ones refine its edge. This module only draws and forwards clicks: the edit itself is
:func:`medwb.al.regions.toggle_region`, and nothing here writes to the store (the review queue does, see
:mod:`medwb.ui.widgets.segmentation_review`).

- :class:`ClickImage`: a tiny anywidget (its JavaScript ships in this file, nothing is downloaded) that shows a
  PNG and reports each click as ``(row, col, shift)`` in *image* pixels, whatever size the page draws it at.
  ``ipywidgets.Image`` reports no click position at all.
- :class:`RegionClickEditor`: one case at a time (:meth:`RegionClickEditor.load`): the image (a 3-D volume one
  slice at a time along its last axis), the mask overlaid in a colour per class, the region edges of the chosen
  level drawn thinly; class picker by name, add / remove mode (shift-click removes), undo, clear, clicks counter.
"""
from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import anywidget
import ipywidgets as W
import numpy as np
import traitlets

from medwb.al.regions import level_names, region_at, toggle_region
from medwb.errors import DataError
from medwb.store.masks import spatial
from medwb.ui.view import focus_index, overlay_mask, png_bytes, to_rgb
from medwb.ui.widgets.case_view import heat_rgb, slice2d
from medwb.ui.widgets.keys import KeyCatcher
from medwb.ui.widgets.review_text import error_html

_ESM = r"""
function render({ model, el }) {
  const img = document.createElement("img");
  img.className = "medwb-click-image";
  img.draggable = false;
  img.alt = "image: click a region";
  img.style.cssText = "display:block;cursor:crosshair;user-select:none;max-width:none;height:auto";
  const draw = () => {
    const src = model.get("src");
    img.style.display = src ? "block" : "none";  // nothing to show: no broken-image icon
    if (src) img.src = src;
    img.style.width = model.get("width_px") + "px";
  };
  draw();
  model.on("change:src", draw);
  model.on("change:width_px", draw);
  // shift-click would select the page's text; keep the press for the image
  img.addEventListener("mousedown", (e) => { e.preventDefault(); e.stopPropagation(); });
  img.addEventListener("click", (e) => {
    e.preventDefault();
    e.stopPropagation();
    const r = img.getBoundingClientRect();
    const rows = model.get("rows"), cols = model.get("cols");
    if (!(r.width > 0 && r.height > 0 && rows > 0 && cols > 0)) return;
    // page pixels -> image pixels: the PNG may be drawn larger or smaller than the image (zoom, CSS)
    const col = Math.min(cols - 1, Math.max(0, Math.floor((e.clientX - r.left) / r.width * cols)));
    const row = Math.min(rows - 1, Math.max(0, Math.floor((e.clientY - r.top) / r.height * rows)));
    model.send({ type: "click", row: row, col: col, shift: e.shiftKey });
  });
  el.appendChild(img);
}
export default { render };
"""


class ClickImage(anywidget.AnyWidget):
    """A PNG (``src``: a ``data:image/png;base64,...`` URL) drawn ``width_px`` wide; clicks come back in the
    pixel grid of the image it shows (``rows`` x ``cols``), not in page pixels. ``on_click(callback)`` gets
    ``(row, col, shift)``; :meth:`handle_message` is what a front-end message runs."""

    _esm = _ESM
    src = traitlets.Unicode("").tag(sync=True)
    rows = traitlets.Int(0).tag(sync=True)
    cols = traitlets.Int(0).tag(sync=True)
    width_px = traitlets.Int(480).tag(sync=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.click_callbacks: list[Callable[[int, int, bool], None]] = []
        self.on_msg(self.handle_message)

    def on_click(self, callback: Callable[[int, int, bool], None]) -> None:
        self.click_callbacks.append(callback)

    def handle_message(self, widget: Any, content: Any, buffers: Any) -> None:
        if not isinstance(content, dict) or content.get("type") != "click":
            return
        row, col = int(content["row"]), int(content["col"])
        if not (0 <= row < self.rows and 0 <= col < self.cols):
            return  # a click from a stale page, before the new image arrived
        for cb in self.click_callbacks:
            cb(row, col, bool(content.get("shift", False)))

    def show_png(self, png: bytes, rows: int, cols: int, width_px: int) -> None:
        self.rows, self.cols, self.width_px = int(rows), int(cols), int(width_px)
        self.src = "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def region_edges(reg2d: np.ndarray) -> np.ndarray:
    """Pixels where the region id changes to the right or below: one-pixel lines between regions."""
    e = np.zeros(reg2d.shape, bool)
    e[:, :-1] |= reg2d[:, 1:] != reg2d[:, :-1]
    e[:-1, :] |= reg2d[1:, :] != reg2d[:-1, :]
    return e


def nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """Source index of each of ``n_out`` output pixels resampling ``n_in`` (pixel centres aligned)."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(int), n_in - 1)


def compose(rgb: np.ndarray, mask2d: np.ndarray, reg2d: np.ndarray | None, width: int, *,
            opacity: float = 0.45) -> np.ndarray:
    """The picture drawn: the image resampled to ``width`` pixels, the mask blended in per class and the region
    edges computed at the drawn size (so they stay one pixel thin when a small image is magnified)."""
    from PIL import Image

    h, w = mask2d.shape
    height = max(1, round(h * width / w))
    ri, ci = nearest_index(height, h), nearest_index(width, w)
    mode = Image.Resampling.NEAREST if width >= w else Image.Resampling.LANCZOS
    out = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((width, height), mode))
    out = overlay_mask(out, mask2d[ri][:, ci], opacity=opacity)
    if reg2d is not None:
        e = region_edges(reg2d[ri][:, ci])
        out = out.copy()
        out[e] = (0.45 * out[e] + 0.55 * np.array([255, 215, 0])).astype(np.uint8)
    return out


HELP = ("<b>Click a region</b> to add it to the mask as the chosen class; <b>shift-click</b> (or mode "
        "'remove') takes it out again. Coarse regions take the bulk of a structure in one click, fine ones refine "
        "its edge. ")
#: the editor's letter keys (digits choose the class by its value): pressed anywhere on the editor
EDITOR_KEYS = {"u": "undo click", "s": "save mask", "m": "add / remove", "l": "next region level",
               "e": "region edges on / off", ",": "previous slice", ".": "next slice"}
HELP_3D = ("In a 3-D volume a region is a <b>supervoxel</b>: one click adds (or removes) it in <b>every slice it "
           "spans</b>, not only the one shown - move the slice slider to check the neighbouring slices.")


class RegionClickEditor:
    """Edit one case's mask by region clicks: ``load(image, regions, prelabel)`` then :meth:`click` (what the
    page's clicks call), :meth:`undo`, :meth:`clear`; ``mask`` is the current mask (spatial, int64), ``clicks``
    the clicks used. ``classes`` {value: name}: the picker shows the names and edits with the value.
    ``on_save(editor)``: what the "save mask" button does (nothing is stored here).
    """

    def __init__(self, classes: Mapping[int, str], *, spatial_dims: int = 2, display_px: int = 480,
                 on_save: Callable[[RegionClickEditor], Any] | None = None) -> None:
        self.spatial_dims, self.display_px, self.on_save = int(spatial_dims), int(display_px), on_save
        opts = [(str(n), int(v)) for v, n in sorted(classes.items()) if int(v) != 0]
        if not opts:
            raise DataError(None, f"classes {dict(classes)} have no foreground class",
                            "give the study its structure classes (0 is the background)")
        self.canvas = ClickImage(width_px=self.display_px)
        self.canvas.on_click(lambda r, c, s: self.ui(lambda: self.click(r, c, shift=s)))
        self.label = W.ToggleButtons(options=opts, description="class", tooltip="the class a click adds")
        self.level = W.ToggleButtons(options=[("regions", 0)], description="regions")
        self.mode = W.ToggleButtons(options=[("add", "add"), ("remove", "remove")], value="add", description="click",
                                    tooltips=["click adds the region", "click removes the region (or shift-click)"])
        self.slice = W.IntSlider(value=0, min=0, max=0, description="slice", continuous_update=True)
        self.zoom = W.IntSlider(value=1, min=1, max=4, description="zoom", continuous_update=False)
        self.edges = W.Checkbox(value=True, description="region edges", indent=False)
        self.b_undo = W.Button(description="undo click", icon="undo")
        self.b_clear = W.Button(description="clear mask", tooltip="start from an empty mask (undo brings it back)")
        self.b_save = W.Button(description="save mask", button_style="success", disabled=on_save is None)
        self.counter, self.info, self.umap = W.HTML(), W.HTML(), W.Image(format="png")
        self.umap_box = W.VBox([W.HTML("<b>uncertainty</b>"), self.umap], layout=W.Layout(display="none"))
        self.help = W.HTML(HELP + (HELP_3D if self.spatial_dims == 3 else ""))
        keys = {k: v for k, v in EDITOR_KEYS.items() if self.spatial_dims == 3 or "slice" not in v}
        self.catcher = KeyCatcher(hint="keys (click the picture first): digit = class value / " + " / ".join(
            f"{k} {v}" for k, v in keys.items()))
        self.catcher.on_key(lambda k: self.ui(lambda: self.key(k)))
        for w in (self.level, self.slice, self.zoom, self.edges):
            w.observe(lambda _: self.render(), names="value")
        self.b_undo.on_click(lambda _: self.ui(self.undo))
        self.b_clear.on_click(lambda _: self.ui(self.clear))
        self.b_save.on_click(lambda _: self.on_save and self.on_save(self))
        self.slice.layout.display = None if self.spatial_dims == 3 else "none"
        self.widget = W.VBox([
            self.help, W.HBox([self.label, self.mode]), self.level,
            W.HBox([self.canvas, self.umap_box]),
            W.HBox([self.slice, self.zoom, self.edges]),
            W.HBox([self.b_undo, self.b_clear, self.b_save, self.counter]), self.info, self.catcher])
        self.image: np.ndarray | None = None
        self.regions: np.ndarray | None = None
        self.mask = self.start = np.zeros((0, 0), np.int64)
        self.history: list[np.ndarray] = []
        self.clicks, self.window, self.uncertainty = 0, (0.0, 1.0), None

    # ------------------------------------------------------------------ a case
    def load(self, image: np.ndarray, regions: np.ndarray, prelabel: np.ndarray | None = None, *,
             uncertainty: np.ndarray | None = None, names: list[str] | None = None) -> None:
        """Show a case: ``image`` (C,H,W[,D]) as loaded, its ``regions`` (L,H,W[,D]) and an optional pre-label
        mask to start from (any channel axis of 1 dropped); the slice shown first goes through the pre-label.
        ``names``: the levels' button names (default :func:`~medwb.al.regions.level_names`)."""
        img, reg = np.asarray(image), np.asarray(regions)
        grid = tuple(img.shape[-self.spatial_dims:])
        if reg.ndim != self.spatial_dims + 1 or tuple(reg.shape[1:]) != grid:
            raise DataError(None, f"regions of shape {reg.shape} for an image of spatial shape {grid}",
                            "compute the regions on the case's own grid (medwb.al.regions.study_regions)")
        start = np.zeros(grid, np.int64) if prelabel is None else spatial(prelabel, self.spatial_dims).astype(np.int64)
        if start.shape != grid:
            raise DataError(None, f"pre-label of shape {start.shape} for an image of spatial shape {grid}",
                            "pass the pre-label at the image's own size")
        self.image, self.regions, self.mask, self.start = img, reg, start.copy(), start
        self.uncertainty = None if uncertainty is None else spatial(uncertainty, self.spatial_dims)
        self.history, self.clicks, self.info.value = [], 0, ""
        finite = img[np.isfinite(img)].astype(np.float64)
        self.window = tuple(np.percentile(finite, [1, 99])) if finite.size else (0.0, 1.0)
        names = list(names) if names is not None else level_names(len(reg))
        if len(names) != len(reg):
            raise DataError(None, f"{len(names)} level names for {len(reg)} region levels", "name every level once")
        level = min(self.level.value, len(reg) - 1) if self.level.options else 0
        self.level.options = list(zip(names, range(len(reg))))
        self.level.value = level
        if self.spatial_dims == 3:
            self.slice.max = grid[-1] - 1
            self.slice.value = focus_index(grid, start)[-1]
        self.set_enabled(True)
        self.render()

    def unload(self) -> None:
        """Nothing to edit (the queue is finished): empty picture, buttons off."""
        self.image = self.regions = None
        self.canvas.src, self.umap_box.layout.display = "", "none"
        self.counter.value = self.info.value = ""
        self.set_enabled(False)

    def set_enabled(self, on: bool) -> None:
        for w in (self.b_undo, self.b_clear, self.b_save, self.label, self.level, self.mode, self.slice):
            w.disabled = not on or (w is self.b_save and self.on_save is None)

    @property
    def changed(self) -> bool:
        """Whether the mask differs from the one this case started from (pre-label or empty)."""
        return not np.array_equal(self.mask, self.start)

    # ------------------------------------------------------------------ edits
    def voxel(self, row: int, col: int) -> tuple[int, ...]:
        """The voxel under a click on the picture: (row, col) of a 2-D image, (row, col, slice) of a volume."""
        return (int(row), int(col)) if self.spatial_dims == 2 else (int(row), int(col), int(self.slice.value))

    def click(self, row: int, col: int, *, shift: bool = False) -> int:
        """Add the region under image pixel (row, col) as the chosen class at the chosen level (shift or mode
        'remove': take it out); returns how many voxels changed. Every click counts, even one that changes
        nothing (it is effort spent)."""
        if self.regions is None:
            raise DataError(None, "no case is loaded", "nothing to edit: the queue is finished")
        add = self.mode.value == "add" and not shift
        level, label = int(self.level.value), int(self.label.value)
        rid = region_at(self.regions, level, self.voxel(row, col))
        new = toggle_region(self.mask, self.regions, level, rid, label=label, add=add)
        self.clicks += 1
        n = int(np.count_nonzero(new != self.mask))
        if n:
            self.history.append(self.mask)
            self.mask = new
        where = ""
        if self.spatial_dims == 3:
            ks = np.flatnonzero((self.regions[level] == rid).any(axis=(0, 1)))
            where = f", a supervoxel in slices {ks.min()}-{ks.max()}"
        verb = "added as " + self.label.label if add else "removed (" + self.label.label + ")"
        self.info.value = f"region {rid} ({self.level.label}{where}) {verb}: {n} voxel(s) changed"
        self.render()
        return n

    def key(self, key: str) -> None:
        """A key pressed on the editor (:data:`EDITOR_KEYS`; a digit picks the foreground class of that value)."""
        if self.regions is None:
            return
        if key.isdigit():
            if int(key) not in {v for _, v in self.label.options}:
                raise DataError(None, f"key {key}: no foreground class with that value",
                                f"press one of {', '.join(str(v) for _, v in self.label.options)}")
            self.label.value = int(key)
        elif key == "u":
            self.undo()
        elif key == "s" and self.on_save is not None:
            self.on_save(self)
        elif key == "m":
            self.mode.value = "remove" if self.mode.value == "add" else "add"
        elif key == "l":
            self.level.value = (int(self.level.value) + 1) % len(self.level.options)
        elif key == "e":
            self.edges.value = not self.edges.value
        elif key in ",." and self.spatial_dims == 3:
            self.slice.value = min(self.slice.max, max(0, int(self.slice.value) + (1 if key == "." else -1)))

    def undo(self) -> None:
        """Take the last change back (clicks that changed nothing are skipped)."""
        if not self.history:
            raise DataError(None, "nothing to undo on this case", "click a region first")
        self.mask = self.history.pop()
        self.info.value = "last change undone"
        self.render()

    def clear(self) -> None:
        """An empty mask (undo brings the previous one back)."""
        self.history.append(self.mask)
        self.mask = np.zeros_like(self.mask)
        self.info.value = "mask cleared"
        self.render()

    # ------------------------------------------------------------------ drawing
    def render(self) -> None:
        if self.image is None or self.regions is None:
            return
        k = int(self.slice.value) if self.spatial_dims == 3 else None
        img2d = slice2d(self.image, self.spatial_dims, k)
        m2, r2 = slice2d(self.mask, self.spatial_dims, k), slice2d(self.regions[int(self.level.value)], self.spatial_dims, k)
        width = self.display_px * int(self.zoom.value)
        pic = compose(to_rgb(img2d, lo=self.window[0], hi=self.window[1]), m2, r2 if self.edges.value else None, width)
        self.canvas.show_png(png_bytes(pic), m2.shape[0], m2.shape[1], width)
        if self.uncertainty is not None:
            u = slice2d(self.uncertainty, self.spatial_dims, k)
            self.umap.value = png_bytes(compose(heat_rgb(u), np.zeros(u.shape, np.int64), None, width))
        self.umap_box.layout.display = None if self.uncertainty is not None else "none"
        fg = int(np.count_nonzero(self.mask))
        self.counter.value = (f"<b>{self.clicks}</b> click(s); mask: {fg} voxel(s)"
                              + (" - <i>changed</i>" if self.changed else ""))

    def ui(self, action: Callable[[], Any]) -> None:
        """Run an edit from the page: a refusal is shown, not lost in the kernel log."""
        try:
            action()
        except DataError as e:
            self.info.value = error_html(str(e))
