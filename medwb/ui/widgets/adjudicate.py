"""A senior reader's adjudication view: the cases whose readers disagree, each reader's answer, one decision.

Why: with double reads (``Study.set_reads``) two readers answer a case blind; when they differ, neither answer
may train the model (``Study.agreed_labels`` leaves the case out) until a senior reader decides. Their decision
is stored as an adjudication (``Study.adjudicate``: their label plus an ``adjudications`` row, one transaction),
the readers' own labels stay for the agreement statistics. Digit keys choose the class number as shown, as in
the review queue; a case on screen for less than ``min_view_seconds`` cannot be decided.
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable

import ipywidgets as W
import numpy as np

from medwb.errors import StoreError
from medwb.store import Study
from medwb.ui.widgets.case_view import CaseView
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
        for v in sorted(study.classes):
            b = W.Button(description=class_label(study.classes, v), button_style="info")
            b.on_click(lambda _, v=v: self._ui(lambda: self.decide(v)))
            self.buttons.append(b)
        self.keys = W.Text(description="keys", placeholder="class number as shown", continuous_update=True)
        self.keys.observe(self._on_key, names="value")
        self.b_refresh = W.Button(description="refresh list")
        self.b_refresh.on_click(lambda _: self.refresh())
        self.catcher = KeyCatcher(hint="keys work anywhere on this panel: click the image, then type the class")
        self.catcher.on_key(lambda k: self._on_key({"new": k}))
        self.widget = W.VBox([self.title, self.keys, self.catcher, self.view.widget, self.answers, W.HBox(self.buttons),
                              W.HBox([self.b_refresh]), self.status])
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
        for b in self.buttons:
            b.disabled = cid is None
        if cid is None:
            self.title.value = "<b>No disagreement waits for adjudication.</b>"
            self.view.clear()
            self.answers.value = ""
            return
        row = self.cases.iloc[0]
        self.title.value = (f"adjudication 1/{len(self.cases)}: case <code>{html.escape(cid)}</code>")
        self.answers.value = "readers: " + "; ".join(
            f"{html.escape(r)}: <b>{html.escape(class_label(self.study.classes, v))}</b>"
            for r, v in zip(row["readers"], row["values"]))
        self.view.show(cid, np.asarray(self.load_image(cid)))
        self._shown_at = self._clock()

    def decide(self, value: int) -> int:
        """Store ``value`` as the adjudicated class of the case on screen; returns the label id."""
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
