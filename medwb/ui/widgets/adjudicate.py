"""A senior reader's adjudication view: the cases whose readers disagree, each reader's answer, one decision.

Why: with double reads (``Study.set_reads``) two readers answer a case blind; when they differ, neither answer
may train the model (``Study.agreed_labels`` leaves the case out) until a senior reader decides. Their decision
is stored as an adjudication (``Study.adjudicate``: their label plus an ``adjudications`` row, one transaction),
the readers' own labels stay for the agreement statistics. Digit keys choose the class number as shown, as in
the review queue; a case on screen for less than ``min_view_seconds`` cannot be decided. In a segmentation study
the readers' masks disagree when their Dice is under the store's threshold; the adjudicator looks at each
reader's mask in turn ("show mask of") and keeps one of them (:meth:`AdjudicationPanel.keep_mask`). A
classification case shows, beside the image, the model's class probabilities and saliency map stored when the
round was proposed (what the readers saw, :mod:`medwb.ui.widgets.class_evidence`).
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable

import ipywidgets as W
import numpy as np

from medwb.errors import StoreError
from medwb.store import Study, read_mask
from medwb.ui.widgets.case_view import CaseView
from medwb.ui.widgets.class_evidence import latest_class_evidence_panel
from medwb.ui.widgets.keys import KeyCatcher
from medwb.ui.widgets.review_text import class_label, digit_class, error_html


class AdjudicationPanel:
    """The disagreements of ``study`` for ``adjudicator`` (``load_image(case_id)`` gives the pixels)."""

    def __init__(self, study: Study, adjudicator: str, load_image: Callable[[str], np.ndarray], *,
                 spatial_dims: int = 2, display_px: int = 320, min_view_seconds: float = 0.5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.study, self.adjudicator, self.load_image = study, str(adjudicator), load_image
        self.min_view_seconds, self._clock = float(min_view_seconds), clock
        self.title, self.answers, self.status = W.HTML(), W.HTML(), W.HTML()
        self.view = CaseView(display_px, spatial_dims)  # the review queue's drawing: zoom and window too
        self.image = self.view.image
        self.buttons = []
        self.segmentation = study.task == "segmentation"
        self.show_of = W.ToggleButtons(description="show mask of", options=[])
        self.show_of.observe(lambda _: self._draw_mask(), names="value")
        self.b_keep = W.Button(description="keep this mask", button_style="info",
                               tooltip="the mask shown becomes the case's adjudicated label")
        self.b_keep.on_click(lambda _: self._ui(lambda: self.keep_mask(self.show_of.value)))
        for v in [] if self.segmentation else sorted(study.classes):
            b = W.Button(description=class_label(study.classes, v), button_style="info")
            b.on_click(lambda _, v=v: self._ui(lambda: self.decide(v)))
            self.buttons.append(b)
        self.keys = W.Text(description="keys", placeholder="class number as shown", continuous_update=True)
        self.keys.observe(self._on_key, names="value")
        self.b_refresh = W.Button(description="refresh list")
        self.b_refresh.on_click(lambda _: self.refresh())
        self.catcher = KeyCatcher(hint="keys work anywhere on this panel: click the image, then type the class")
        self.catcher.on_key(lambda k: self._on_key({"new": k}))
        keys = [] if self.segmentation else [self.keys, self.catcher]  # class keys; a mask is kept by its button
        choose = W.HBox([self.show_of, self.b_keep]) if self.segmentation else W.HBox(self.buttons)
        self.widget = W.VBox([self.title, *keys, self.view.widget, self.answers, choose, W.HBox([self.b_refresh]),
                              self.status])
        self.decided: list[dict[str, object]] = []
        self.refresh()

    def refresh(self) -> None:
        """Read the current disagreements from the store (another adjudicator may have decided some)."""
        self.cases = self.study.disagreements()
        self._show()

    @property
    def current(self) -> str | None:
        return None if self.cases.empty else str(self.cases["case_id"].iloc[0])

    def _show(self) -> None:
        cid = self.current
        for b in [*self.buttons, self.b_keep]:
            b.disabled = cid is None
        if cid is None:
            self.title.value = "<b>No disagreement waits for adjudication.</b>"
            self.view.clear()
            self.answers.value = ""
            self.show_of.options = []
            return
        row = self.cases.iloc[0]
        self.title.value = (f"adjudication 1/{len(self.cases)}: case <code>{html.escape(cid)}</code>")
        self._shown_at = self._clock()
        if self.segmentation:
            self.answers.value = (f"readers: {html.escape(', '.join(row['readers']))}; their masks' Dice "
                                  f"{row['dice']:.2f}. Look at each mask, keep the right one.")
            self.show_of.options = list(row["readers"])  # draws the first reader's mask
            self._draw_mask()
            return
        self.answers.value = "readers: " + "; ".join(
            f"{html.escape(r)}: <b>{html.escape(class_label(self.study.classes, v))}</b>"
            for r, v in zip(row["readers"], row["values"]))
        # beside the image, what the readers saw: the model's class probabilities and saliency map of the round
        self.view.show(cid, np.asarray(self.load_image(cid)), None, latest_class_evidence_panel(self.study, cid))

    def _draw_mask(self) -> None:
        cid, who = self.current, self.show_of.value
        if cid is None or who is None:
            return
        row = self.cases.iloc[0]
        path = dict(zip(row["readers"], row["mask_files"]))[who]
        self.view.show(cid, np.asarray(self.load_image(cid)), read_mask(path))

    def _check(self) -> tuple[str, float]:
        """The case on screen and how long it was seen, once it may be decided (seen long enough, still open)."""
        cid = self.current
        if cid is None:
            raise StoreError("nothing to adjudicate. Fix: refresh the list later")
        seen = self._clock() - self._shown_at
        if seen < self.min_view_seconds:
            raise StoreError(f"case {cid!r} was on screen {seen:.2f} s only, under the {self.min_view_seconds:g} s "
                             "minimum, so it was not decided. Fix: look at the case, then decide")
        if cid not in set(self.study.disagreements()["case_id"]):
            self.refresh()
            raise StoreError(f"case {cid} was adjudicated by someone else meanwhile, so your answer was not saved")
        return cid, seen

    def keep_mask(self, reader: str) -> int:
        """Store ``reader``'s mask as the adjudicated label of the case on screen; returns the label id."""
        cid, seen = self._check()
        row = self.cases.iloc[0]
        masks = dict(zip(row["readers"], row["mask_files"]))
        if reader not in masks:
            raise StoreError(f"{reader!r} did not read case {cid}. Fix: keep the mask of one of {list(masks)}")
        lid = self.study.adjudicate(cid, mask=read_mask(masks[reader]), by=self.adjudicator, seconds=seen,
                                    note=f"{reader}'s mask kept (readers' Dice {row['dice']:.2f})")
        self.decided.append({"case_id": cid, "kept": reader, "label_id": lid})
        self.refresh()
        self.status.value = f"adjudicated case <code>{html.escape(cid)}</code>: {html.escape(reader)}'s mask kept"
        return lid

    def decide(self, value: int) -> int:
        """Store ``value`` as the adjudicated class of the case on screen; returns the label id."""
        cid, seen = self._check()
        v = self.study.check_value(value)
        lid = self.study.adjudicate(cid, value=v, by=self.adjudicator, seconds=seen)
        self.decided.append({"case_id": cid, "value": v, "label_id": lid})
        self.refresh()
        self.status.value = f"adjudicated case <code>{html.escape(cid)}</code> as {class_label(self.study.classes, v)}"
        return lid

    def _ui(self, action: Callable[[], object]) -> None:
        try:
            action()
        except (StoreError, ValueError) as e:
            self.status.value = error_html(f"not saved: {e}")

    def _on_key(self, change: dict[str, object]) -> None:
        text = str(change["new"])
        if not text:
            return
        self.keys.value = ""
        v = digit_class(text[-1], self.study.classes)
        if v is None:
            self.status.value = error_html(f"key {text[-1]}: no class with that number")
        else:
            self._ui(lambda: self.decide(v))
