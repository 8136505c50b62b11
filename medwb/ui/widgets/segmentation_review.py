"""Review queue of a segmentation study: each case's mask is built, or its pre-label corrected, by region clicks.

Why: the classification queue shows a pre-label a person accepts or changes with one key; a mask cannot be
changed with one key, and drawing it from nothing outside medwb (3D Slicer) was the only way a segmentation round
got its labels. Here the case is shown in a :class:`~medwb.ui.widgets.region_click.RegionClickEditor` over the
structure model's regions (:func:`medwb.al.regions.study_regions`, computed once per case and cached in the
study), starting from the pre-label when there is one: in the notebook the loop's model's mask, in the review
app the predicted mask the loop stored when it proposed the round (``Study.predicted_mask``).

The decisions are the ordinary :class:`~medwb.ui.widgets.review.ReviewQueue`'s, which this class drives (one
home for the provenance rules, the minimum viewing time, undo by retraction and several readers' leases):

==========================  ===========================================================  =================
decision                    written as                                                   source
==========================  ===========================================================  =================
save mask, no pre-label     ``add_label(mask=...)``, note "region-click, N clicks: ..."  ``human``
save mask, pre-label        the same; unchanged pre-label                                ``human``
                            changed pre-label                                            ``corrected``
reject / flag               no label; the review queue (as in ReviewQueue)               -
previous case               the last decision taken back (label retracted), case again   -
==========================  ===========================================================  =================

The mask is stored spatial (H,W[,D], int64 class values) and reads back equal with ``medwb.store.read_mask``.
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import ipywidgets as W
import numpy as np

from medwb.al.regions import RegionConfig, spacing_of, study_regions, with_edge_bands
from medwb.errors import StoreError
from medwb.store import Study
from medwb.store.masks import spatial
from medwb.ui.widgets.region_click import RegionClickEditor
from medwb.ui.widgets.review import CaseSource, ReviewQueue
from medwb.ui.widgets.review_text import error_html

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset


def click_note(clicks: int, origin: str = "") -> str:
    """The start of a region-click label's note: how many clicks it took (and who proposed, when not a model)."""
    tag = f"region-click, {clicks} click{'' if clicks == 1 else 's'}"
    return f"{origin}: {tag}" if origin else tag


class SegmentationReviewQueue:
    """Region-click review of a segmentation study's cases: ``study``, ``dataset`` (images and regions),
    ``case_ids`` and optional ``proposals`` (pre-label masks, None for all or per case: start empty).
    ``regions(case_id)``: the region maps (default: the study's cached structure model regions, ``config``);
    ``uncertainty(case_id)``: a map shown beside the case. The other arguments are :class:`ReviewQueue`'s.
    """

    def __init__(self, study: Study, dataset: Dataset, case_ids: Sequence[str],
                 proposals: Sequence[Any] | None = None, *,
                 regions: Callable[[str], np.ndarray] | None = None, config: RegionConfig | None = None,
                 uncertainty: Callable[[str], np.ndarray | None] | None = None, round: int | None = None,
                 model_version: str | None = None, origin: str = "", annotator: str = "", display_px: int = 480,
                 min_view_seconds: float = 0.5, clock: Callable[[], float] = time.monotonic,
                 source: CaseSource | None = None) -> None:
        if study.task != "segmentation":
            raise StoreError(f"{study.folder} is a {study.task} study. Fix: review its cases in the ReviewQueue "
                             "(region clicks build masks)")
        self.study, self.dataset, self.origin, self.uncertainty = study, dataset, str(origin), uncertainty
        self.regions = regions or partial(study_regions, study, dataset, config=config)
        # the decisions' logic; its own picture (CaseView) is not shown, the editor replaces it
        self.queue = ReviewQueue(study, case_ids, proposals, dataset.load_image, round=round,
                                 model_version=model_version, origin=origin, annotator=annotator,
                                 spatial_dims=dataset.ndim, display_px=display_px,
                                 min_view_seconds=min_view_seconds, clock=clock, source=source)
        self.editor = RegionClickEditor(study.classes, spatial_dims=dataset.ndim, display_px=display_px,
                                        on_save=lambda _: self.ui(self.save))
        self.title = W.HTML()
        self.b_reject = W.Button(description="reject", button_style="danger",
                                 tooltip="no label from me: the case goes to the review queue")
        self.b_flag = W.Button(description="flag", button_style="warning", tooltip="ask for a second look")
        self.b_back = W.Button(description="previous case", icon="undo",
                               tooltip="back to the last case decided; its saved mask is taken back")
        self.b_reject.on_click(lambda _: self.ui(self.reject))
        self.b_flag.on_click(lambda _: self.ui(self.flag))
        self.b_back.on_click(lambda _: self.ui(self.undo))
        # 3D studies: the volume and the mask being edited in an offline WebGL viewer (ipyniivue: multiplanar +
        # 3D render) beside the slices, on demand (it costs a volume transfer) and redrawn on "3D view" again
        self.b_3d = W.ToggleButton(description="3D view", icon="cube", value=False,
                                   tooltip="the volume with the mask as edited so far: slices in 3 planes + a 3D render")
        self.b_3d.observe(lambda _: self.ui(self.show_3d), names="value")
        self.view3d = W.VBox(layout=W.Layout(display="none", width="100%", min_width=f"{display_px}px"))
        q = self.queue
        row3d = [self.b_3d] if dataset.ndim == 3 else []
        self.widget = W.VBox([q.annotator, self.title, self.editor.widget,
                              W.HBox([self.b_reject, self.b_flag, self.b_back, *row3d]), self.view3d, q.comment,
                              q.status, q.history])
        self.loaded: tuple[int, str | None, int] | None = None
        self.sync()

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)

    # ------------------------------------------------------------------ state
    @property
    def done(self) -> bool:
        return self.queue.done

    @property
    def current(self) -> str | None:
        return self.queue.current

    @property
    def decisions(self) -> list[dict[str, Any]]:
        return self.queue.decisions

    def sync(self) -> None:
        """Show the queue's current case in the editor when it changed (a decision, an undo, a lost lease)."""
        q = self.queue
        key = (q.position, q.current, len(q.case_ids))
        self.b_back.disabled = not q.decisions
        self.b_reject.disabled = self.b_flag.disabled = q.done
        if key == self.loaded:
            return
        self.loaded = key
        if q.done:
            self.title.value = (f"<b>Queue finished</b>: {len(q.decisions)} decisions saved to "
                                f"{html.escape(str(self.study.folder))} ('previous case' goes back)")
            self.editor.unload()
            return
        i, cid = q.position, q.current
        prop = q.proposals[i]
        by = f" of model <code>{html.escape(q.model_version)}</code>" if q.model_version else ""
        start = (f"starts from the <b>pre-label</b>{by}: click to correct it, save as is to accept it"
                 if prop is not None else "no pre-label: <b>click the structure's regions in</b>")
        self.title.value = (f"case {i + 1}/{len(q.case_ids)}: <code>{html.escape(cid)}</code> - {start}"
                            f"{q.source.note(cid)}")
        u = None if self.uncertainty is None else self.uncertainty(cid)
        regions, names = self.regions(cid), None
        if prop is not None:  # thin regions along the pre-label's edges (cut where the model is unsure)
            regions, names = with_edge_bands(regions, spatial(prop, self.dataset.ndim),
                                             spacing=spacing_of(self.dataset, cid),
                                             uncertainty=None if u is None else spatial(u, self.dataset.ndim))
        self.editor.load(self.dataset.load_image(cid), regions, None if prop is None else np.asarray(prop),
                         uncertainty=u, names=names)
        if self.b_3d.value:  # the 3D view follows the case on screen
            self.show_3d()

    def show_3d(self) -> None:
        """Draw (or hide, with the toggle off) the 3D view of the case on screen with the editor's current mask,
        in the image's world geometry (its affine)."""
        from medwb.ui.view import niivue_view

        cid = self.current
        if not self.b_3d.value or cid is None or self.editor.image is None:
            self.view3d.children, self.view3d.layout.display = (), "none"
            return
        self.view3d.children = (niivue_view(self.editor.image, self.editor.mask, affine=self.dataset.affine(cid),
                                            spatial_dims=3, height=360),)
        self.view3d.layout.display = "flex"  # ipyniivue sizes its canvas to the box: it must have a width

    # ------------------------------------------------------------------ decisions
    def click(self, row: int, col: int, *, shift: bool = False) -> int:
        """A click on the picture at image pixel (row, col) (what the page sends): see RegionClickEditor.click."""
        return self.editor.click(row, col, shift=shift)

    def save(self) -> dict[str, Any]:
        """Store the mask on screen as this case's label (provenance: see the module's table) and go on."""
        e, q = self.editor, self.queue
        if not q.done and q.proposals[q.position] is None and not e.changed and not e.clicks:
            raise StoreError("nothing clicked: the mask is empty. Fix: click the structure's regions in, or "
                             "reject / flag the case if you cannot label it")
        clicks = e.clicks
        q.origin = click_note(clicks, self.origin)  # starts the label's note, as origin= does for every decision
        try:
            rec = q.change(mask=e.mask.copy())
        finally:
            q.origin = self.origin
            self.sync()
        rec["clicks"] = clicks
        return rec

    def reject(self, reason: str = "") -> dict[str, Any]:
        try:
            return self.queue.reject(reason)
        finally:
            self.sync()

    def flag(self, reason: str = "") -> dict[str, Any]:
        try:
            return self.queue.flag(reason)
        finally:
            self.sync()

    def undo(self) -> dict[str, Any]:
        """Back to the previous case, its decision taken back in the store (ReviewQueue.undo)."""
        try:
            return self.queue.undo()
        finally:
            self.sync()

    def run_oracle(self, truth: Callable[[str], Any], *, max_cases: int | None = None) -> list[dict[str, Any]]:
        """Simulated reader (papermill, tests): the ground truth mask saved through the queue's own change."""
        try:
            return self.queue.run_oracle(truth, max_cases=max_cases)
        finally:
            self.sync()

    def ui(self, action: Callable[[], Any]) -> None:
        """Run a decision from a button: a refusal is shown on the status line instead of lost in the log."""
        try:
            action()
        except (StoreError, ValueError) as err:
            self.queue.status.value = error_html(f"not saved: {err}")
