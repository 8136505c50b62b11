"""Review queue (ipywidgets): a person accepts, changes, rejects or flags each model pre-label.

Each case shows the image with its pre-label (class name + calibrated confidence, or the mask overlaid) and,
beside it, its uncertainty map (a classification case: the model's saliency map and class probabilities). Every
decision is written to the study at once, in its own transaction, so a kernel crash loses at most the case on
screen. The time per case runs from the moment the case is displayed to the decision.

Provenance mapping (docs/store.md):

==============================  ===================================================  ===========
decision                        written as                                           source
==============================  ===================================================  ===========
accept (a)                      ``add_label`` with the pre-label's value / mask      ``human``
                                (note: "accepted pre-label ...")
change to class c (digit, menu) ``add_label(value=c)``; c == pre-label counts as     ``corrected``
                                accept                                               (or human)
change(mask=...) (programmatic) ``add_label(mask_path=...)``                         ``corrected``
reject (r)                      no label; ``flag_for_review`` source                 -
                                ``review_widget`` reason "pre-label rejected"
flag (f)                        no label; ``flag_for_review`` source                 -
                                ``review_widget`` reason "flagged" + comment
undo (u)                        the previous decision taken back: its label          -
                                ``retract_label``-ed, or the queue entry it opened
                                closed; the case is shown again
==============================  ===================================================  ===========

``auto`` is never written here: it is reserved for pre-labels accepted with no person involved
(``medwb.al.autolabel.commit_auto_labels``). Masks that need real editing: reject them here, export with
``study.export_masks_nifti`` and edit in 3D Slicer / ITK-SNAP, re-import with ``study.import_masks``.

Keyboard: click into the "keys" box and type ``a`` accept, ``r`` reject, ``f`` flag, or a digit: the class whose
number the menu shows (menu "1: pneumonia": key ``1``); a digit that is no class number saves nothing and says
so. Each key acts at once and the box clears; the status line names the class saved ("saved case X as
1: pneumonia (corrected)"). (A plain ``ipywidgets.Text`` with continuous updates: no
extra front-end extension is needed, so it works offline in any JupyterLab.)

Too-fast decisions are refused: a case on screen for less than ``min_view_seconds`` (0.5 s) cannot be decided
(two key presses 40 ms apart used to decide two cases, the second one unseen); the status says so and nothing is
written. This holds for ``accept()``, ``change()``, ``reject()`` and ``flag()`` called from code too (tests that
decide at once pass ``min_view_seconds=0``); only ``run_oracle``, a simulated reader, is exempt.

Undo (key ``u`` or the button) goes back to this session's previous case and takes its decision back in the
store: a written label is retracted (``Study.retract_label``: kept in the file, superseded, what it had replaced is
current again, label_history says ``retracted``), a reject / flag's review-queue entry is closed; the case is shown
again to be decided afresh. Repeated undo walks back one case at a time. The session's decisions (case, class,
source, time) are listed under the buttons.

Programmatic use (tests, papermill's simulated oracle): ``accept()``, ``change(cls)``, ``reject()``, ``flag()``,
``undo()``.

Cases without a pre-label (the cold-start round has no model yet: ``proposals=None``, or ``None`` for one case)
show the image and the class chooser with nothing chosen; "accept" is disabled, the person picks a class (menu
or its digit; ``change(mask=...)`` for a mask) and the label is written with source ``human`` and the note
"chosen by the reader, no model proposal"; reject / flag put the case in the review queue as usual.
"""
from __future__ import annotations

import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd

from medwb.al.oracle import LabelAnswer, ground_truth, record_label
from medwb.errors import StoreError
from medwb.store import Study
from medwb.ui.widgets.case_view import CaseView, MapPanel
from medwb.ui.widgets.keys import KeyCatcher
from medwb.ui.widgets.review_text import (
    LETTER_KEYS,
    confidence_text,
    decision_text,
    decisions_html,
    digit_class,
    error_html,
    key_help,
    key_refusal,
    proposal_text,
)

if TYPE_CHECKING:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue

@dataclass(frozen=True)
class NextCase:
    """A case a :class:`CaseSource` hands out, with its proposal's provenance (a new round may have begun)."""

    case_id: str
    prelabel: Any = None
    confidence: float = float("nan")
    round: int | None = None
    model_version: str | None = None
    origin: str = ""  # who proposed when no model did (ReviewQueue's origin=), e.g. "structure model"


class CaseSource(Protocol):
    """Where a queue gets its next case when it runs out, and who may still decide a case: with several readers
    the store's leases (:class:`medwb.ui.widgets.reader.LeasedCases`)."""

    def next_case(self) -> NextCase | None: ...
    def lost(self, case_id: str) -> str | None: ...   # why this reader may not decide the case any more
    def decided(self, case_id: str) -> None: ...
    def undone(self, case_id: str) -> None: ...
    def note(self, case_id: str) -> str: ...   # HTML shown with the case: earlier readers' flags and comments


def earlier_notes(study: Study, case_id: str) -> str:
    """The review-queue history of a case (who flagged or rejected it, why), as HTML for the case's title: a case
    that comes back is shown with what was said about it."""
    q = study.review_queue(open_only=False)
    q = q[q["case_id"].astype(str) == str(case_id)]
    if q.empty:
        return ""
    items = "; ".join(f"{html.escape(str(r.flagged_by) or '?')}: {html.escape(str(r.reason))}"
                      for r in q.itertuples(index=False))
    return f"<br><span style='color:#8a5300'>earlier: {items}</span>"


class FixedCases:
    """The :class:`CaseSource` of a queue given all its cases up front (one reader): nothing more, none lost."""

    def __init__(self, study: Study) -> None:
        self.study = study

    def note(self, case_id: str) -> str:
        return earlier_notes(self.study, case_id)

    def next_case(self) -> None:
        return None

    def lost(self, case_id: str) -> None:
        return None

    def decided(self, case_id: str) -> None:
        pass

    def undone(self, case_id: str) -> None:
        pass


REVIEW_SOURCE = "review_widget"
NO_PROPOSAL_NOTE = "chosen by the reader, no model proposal"


class ReviewQueue:
    """A queue of pre-labelled cases for one annotator: ``study`` (decisions go here), ``case_ids`` and their
    ``proposals`` (classes, or (1,H,W[,D]) masks; ``None``, for all or per case: the person chooses),
    ``load_image(case_id)``, optional ``confidence`` and ``uncertainty(case_id)`` map, ``round``, ``model_version``
    and ``origin`` (provenance; origin: who proposed when no model did, e.g. "structure model", starts each note),
    ``annotator``, ``spatial_dims``, ``min_view_seconds`` (a case shown for less cannot be decided), ``clock``
    (tests inject one) and ``source`` (:class:`CaseSource`: more cases, lost leases).
    """

    def __init__(
        self,
        study: Study,
        case_ids: Sequence[str],
        proposals: Sequence[Any] | np.ndarray | None,
        load_image: Callable[[str], np.ndarray],
        *,
        confidence: Sequence[float] | np.ndarray | None = None,
        uncertainty: Callable[[str], np.ndarray | MapPanel | None] | None = None,
        round: int | None = None,
        model_version: str | None = None,
        origin: str = "",
        annotator: str = "",
        spatial_dims: int = 2,
        display_px: int = 320,
        min_view_seconds: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
        source: CaseSource | None = None,
    ) -> None:
        import ipywidgets as W

        self.study = study
        self.case_ids = [str(c) for c in case_ids]
        self.proposals = [None] * len(self.case_ids) if proposals is None else list(proposals)
        if len(self.proposals) != len(self.case_ids):
            raise StoreError(f"{len(self.case_ids)} cases but {len(self.proposals)} pre-labels. Fix: pass one pre-label per case")
        self.confidence = None if confidence is None else [float(c) for c in np.asarray(confidence, dtype=float)]
        self.source: CaseSource = source or FixedCases(study)
        self.segmentation = study.task == "segmentation"
        self.load_image, self.uncertainty, self.spatial_dims, self.display_px = load_image, uncertainty, spatial_dims, display_px
        self.round, self.model_version, self.origin = round, model_version, str(origin)
        if not (np.isfinite(min_view_seconds) and min_view_seconds >= 0):
            raise StoreError(f"min_view_seconds={min_view_seconds!r}. Fix: pass a number of seconds >= 0 (0: no minimum)")
        self.min_view_seconds = float(min_view_seconds)
        self._simulated = False  # run_oracle: a simulated reader is not held to the minimum viewing time
        self._clock = clock
        self.position = 0
        self.decisions: list[dict[str, Any]] = []
        self._shown_at = clock()

        class_opts = [(f"{v}: {n}", v) for v, n in sorted(study.classes.items())]
        self._class_values = [v for _, v in class_opts]
        self.annotator = W.Text(value=annotator, description="annotator", placeholder="your name")
        self.title = W.HTML()
        self.view = CaseView(display_px, spatial_dims)
        self.image, self.umap = self.view.image, self.view.umap
        self.class_menu = W.Dropdown(options=class_opts, description="class", disabled=self.segmentation)
        self.b_accept = W.Button(description="accept (a)", button_style="success")
        self.b_change = W.Button(description="set class", button_style="info", disabled=self.segmentation)
        self.b_reject = W.Button(description="reject (r)", button_style="danger")
        self.b_flag = W.Button(description="flag (f)", button_style="warning")
        self.b_undo = W.Button(description="undo (u)", tooltip="back to the previous case; its decision is taken back")
        self.comment = W.Text(description="comment", placeholder="optional, saved with flag/reject")
        self.keys = W.Text(description="keys", placeholder=key_help(study.classes, self.segmentation),
                           continuous_update=True, layout=W.Layout(width="32em"))
        self.status = W.HTML()
        self.history = W.HTML()
        self.b_accept.on_click(lambda _: self._ui(self.accept))
        self.b_change.on_click(lambda _: self._ui(lambda: self.change(self.class_menu.value)))
        self.b_reject.on_click(lambda _: self._ui(self.reject))
        self.b_flag.on_click(lambda _: self._ui(self.flag))
        self.b_undo.on_click(lambda _: self._ui(self.undo))
        self.keys.observe(self._on_key, names="value")
        self.catcher = KeyCatcher(hint="keys work anywhere on this panel: click the image, then type")
        self.catcher.on_key(lambda k: self._on_key({"new": k}))
        self.widget = W.VBox([
            W.HBox([self.annotator, self.keys]), self.catcher,
            self.title,
            self.view.widget,
            W.HBox([self.b_accept, self.class_menu, self.b_change, self.b_reject, self.b_flag, self.b_undo]),
            self.comment,
            self.status,
            self.history,
        ])
        self._show()

    # ------------------------------------------------------------------ display
    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)
        self._shown_at = self._clock()  # the clock starts when the person can see the case

    @property
    def done(self) -> bool:
        return self.position >= len(self.case_ids)

    @property
    def current(self) -> str | None:
        return None if self.done else self.case_ids[self.position]

    def has_prelabel(self, i: int | None = None) -> bool:
        """Whether case ``i`` (default: the one on screen) came with a model pre-label."""
        i = self.position if i is None else i
        return i < len(self.proposals) and self.proposals[i] is not None

    def _show(self) -> None:
        if self.done and (nxt := self.source.next_case()) is not None:
            self.case_ids.append(nxt.case_id), self.proposals.append(nxt.prelabel)
            self.confidence = (self.confidence or [np.nan] * self.position) + [float(nxt.confidence)]
            self.round, self.model_version, self.origin = nxt.round, nxt.model_version, nxt.origin  # its provenance
        self.history.value = decisions_html(self.decisions, self.study.classes)
        self.b_undo.disabled = not self.decisions
        for b in (self.b_accept, self.b_change, self.b_reject, self.b_flag):
            b.disabled = self.done or (b is self.b_change and self.segmentation)
        if self.done:
            self.title.value = (f"<b>Queue finished</b>: {len(self.decisions)} decisions saved to {self.study.folder}"
                                " (u / undo: back to the last case)")
            self.view.clear()
            return
        i, cid = self.position, self.case_ids[self.position]
        conf = confidence_text(None if self.confidence is None else self.confidence[i], ", ",
                               n_classes=len(self.study.classes))
        self.title.value = (f"case {i + 1}/{len(self.case_ids)}: <code>{cid}</code> - "
                            f"{proposal_text(self.proposals[i], self.study.classes, self.segmentation)}{conf}"
                            f"{self.source.note(cid)}")
        prop = np.asarray(self.proposals[i]) if self.segmentation and self.has_prelabel(i) else None
        u = None if self.uncertainty is None else self.uncertainty(cid)
        self.view.show(cid, np.asarray(self.load_image(cid)), prop, u)
        self.b_accept.disabled = not self.has_prelabel(i)  # nothing to accept: the person chooses the class
        if not self.segmentation:  # without a pre-label no default: a class must be chosen, not clicked through
            v = int(self.proposals[i]) if self.has_prelabel(i) else None
            if v is None or v in self._class_values:
                self.class_menu.value = v
        self.comment.value = ""
        self._shown_at = self._clock()

    # ------------------------------------------------------------------ decisions
    def _who(self) -> str:
        who = self.annotator.value.strip()
        if not who:
            raise StoreError("no annotator name. Fix: type your name in the 'annotator' field (or pass annotator=...)")
        return who

    def _take(self) -> tuple[int, str, str, float]:
        if self.done:
            raise StoreError("the review queue is finished. Fix: build a new ReviewQueue for the next batch (or undo to go back)")
        cid, seen = self.case_ids[self.position], max(0.0, self._clock() - self._shown_at)
        if why := self.source.lost(cid):  # another reader has it now: off this queue, say so
            [seq.pop(self.position) for seq in (self.case_ids, self.proposals, self.confidence or [])]
            self._show()
            raise StoreError(f"{why}. Fix: nothing to do, the next case is shown")
        if seen < self.min_view_seconds and not self._simulated:
            raise StoreError(f"case {cid!r} was on screen {seen:.2f} s only, under the {self.min_view_seconds:g} s "
                             "minimum, so it was not decided. Fix: look at the case, then decide")
        return self.position, cid, self._who(), seen

    def _record(self, cid: str, action: str, seconds: float, **info: Any) -> dict[str, Any]:
        rec = {"case_id": cid, "action": action, "seconds": seconds, "index": self.position,
               "annotator": self.annotator.value.strip(), "at": datetime.now().strftime("%H:%M:%S"), **info}
        self.decisions.append(rec)
        self.position += 1
        self.source.decided(cid)
        what = decision_text(rec, self.study.classes)
        what = f"as {what}" if "source" in rec else f"{what}: review queue, no label"
        self.status.value = f"saved case <code>{cid}</code> {what} ({seconds:.1f} s)"
        self._show()
        return rec

    def _write_label(self, i: int, cid: str, who: str, seconds: float, *, value: int | None, mask: np.ndarray | None,
                     source: str, note: str) -> int:
        note = f"{self.origin}: {note}" if self.origin else note  # where the pre-label came from, with the label
        answer = LabelAnswer(value=value, mask=mask, source=source, annotator=who, seconds=seconds, note=note)
        return record_label(self.study, cid, answer, round=self.round, model_version=self.model_version)

    def accept(self) -> dict[str, Any]:
        """The person agrees with the pre-label: source ``human`` (a person decided), noted as an accepted pre-label."""
        if not self.done and not self.has_prelabel():
            raise StoreError(f"case {self.current!r} has no pre-label to accept. Fix: choose its class (menu + "
                             "'set class', its digit key, or change(cls))")
        i, cid, who, sec = self._take()
        conf = confidence_text(None if self.confidence is None else self.confidence[i], " (", ")")
        if self.segmentation:
            lid = self._write_label(i, cid, who, sec, value=None, mask=np.asarray(self.proposals[i]), source="human",
                                    note=f"accepted pre-label mask{conf}")
            return self._record(cid, "accept", sec, label_id=lid, source="human")
        v = int(self.proposals[i])
        lid = self._write_label(i, cid, who, sec, value=v, mask=None, source="human", note=f"accepted pre-label {v}{conf}")
        return self._record(cid, "accept", sec, label_id=lid, source="human", value=v)

    def change(self, cls: int | None = None, *, mask: np.ndarray | None = None) -> dict[str, Any]:
        """The person replaces the pre-label with class ``cls`` (or, programmatically, a corrected ``mask``):
        source ``corrected``; choosing the proposed class itself is an accept (``human``). Without a pre-label
        the person's choice is written as ``human``."""
        i, cid, who, sec = self._take()
        if not self.has_prelabel(i):
            if mask is None and self.segmentation:
                raise StoreError("this segmentation case has no pre-label. Fix: change(mask=...) with a mask, or "
                                 "reject and draw it in 3D Slicer (study.export_masks_nifti / import_masks)")
            if mask is None and cls is None:
                raise StoreError("choose the class first. Fix: pick it in the menu (or its digit key), or change(cls) "
                                 "with one of " + str(self._class_values))
            v = None if mask is not None else self.study.check_value(cls)
            lid = self._write_label(i, cid, who, sec, value=v, mask=None if mask is None else np.asarray(mask),
                                    source="human", note=NO_PROPOSAL_NOTE)
            return self._record(cid, "choose", sec, label_id=lid, source="human",
                                **({} if v is None else {"value": v}), proposed=None)
        if mask is not None:
            m, prop = np.asarray(mask), np.asarray(self.proposals[i])
            same = m.size == prop.size and np.array_equal(m.reshape(prop.shape), prop)
            src = "human" if same else "corrected"
            lid = self._write_label(i, cid, who, sec, value=None, mask=m, source=src,
                                    note="mask unchanged from pre-label" if same else "corrected pre-label mask")
            return self._record(cid, "change", sec, label_id=lid, source=src)
        if self.segmentation:
            raise StoreError("change(cls) needs a class label; this is a segmentation study. Fix: pass change(mask=...) "
                             "or reject and edit the mask in 3D Slicer (study.export_masks_nifti / import_masks)")
        if cls is None:
            raise StoreError("change() needs the new class. Fix: change(cls) with one of " + str(self._class_values))
        v = self.study.check_value(cls)
        proposed = int(self.proposals[i])
        src = "human" if v == proposed else "corrected"
        note = f"accepted pre-label {proposed}" if v == proposed else f"pre-label {proposed} -> {v}"
        lid = self._write_label(i, cid, who, sec, value=v, mask=None, source=src, note=note)
        return self._record(cid, "change", sec, label_id=lid, source=src, value=v, proposed=proposed)

    def reject(self, reason: str = "") -> dict[str, Any]:
        """The pre-label is wrong and the person gives no label here: the case goes to the review queue."""
        i, cid, who, sec = self._take()
        text = reason or self.comment.value.strip()
        what = "pre-label rejected" if self.has_prelabel(i) else "no label given"
        n = self.study.flag_for_review([cid], source=REVIEW_SOURCE, flagged_by=who, seconds=sec,
                                       reason=f"{what}: needs a correct label{': ' + text if text else ''}")
        return self._record(cid, "reject", sec, queued=n)

    def flag(self, reason: str = "") -> dict[str, Any]:
        """Unsure: ask for a second look without deciding (review queue, no label written)."""
        _, cid, who, sec = self._take()
        text = reason or self.comment.value.strip()
        n = self.study.flag_for_review([cid], source=REVIEW_SOURCE, flagged_by=who, seconds=sec,
                                       reason=f"flagged for a second look{': ' + text if text else ''}")
        return self._record(cid, "flag", sec, queued=n)

    def undo(self) -> dict[str, Any]:
        """Back to this session's previous case, its decision taken back in the store so no stale label or open
        review-queue entry outlives it (the label is retracted, not deleted); the case is then decided afresh."""
        if not self.decisions:
            raise StoreError("nothing to undo in this session. Fix: undo goes back over this queue's own decisions")
        d = self.decisions[-1]
        if d.get("label_id") is not None:
            self.study.retract_label(d["label_id"], by=d["annotator"], reason="undone in the review queue")
        elif d.get("queued"):  # only an entry this decision opened: an older open one is not ours to close
            self.study.resolve_review(d["case_id"], source=REVIEW_SOURCE)
        self.decisions.pop()
        self.position = d["index"]
        self.source.undone(d["case_id"])
        self._show()
        self.status.value = (f"undone: case <code>{d['case_id']}</code> ({decision_text(d, self.study.classes)}) "
                             "is taken back and shown again; decide it afresh")
        return d

    def run_oracle(self, truth: Callable[[str], Any], *, max_cases: int | None = None) -> list[dict[str, Any]]:
        """Simulated reviewer (papermill, benchmarks): accepts a correct pre-label, otherwise changes it to the
        ground truth ``truth(case_id)`` (class, or mask for segmentation); without a pre-label it chooses the truth."""
        out, self._simulated = [], True
        try:
            while not self.done and (max_cases is None or len(out) < max_cases):
                i, cid = self.position, self.case_ids[self.position]
                t = truth(cid)
                if not self.has_prelabel(i):
                    out.append(self.change(mask=np.asarray(t)) if self.segmentation else self.change(int(t)))
                elif self.segmentation:
                    t, prop = np.asarray(t), np.asarray(self.proposals[i])
                    same = t.size == prop.size and np.array_equal(t.reshape(prop.shape), prop)
                    out.append(self.accept() if same else self.change(mask=np.asarray(t)))
                else:
                    out.append(self.accept() if int(t) == int(self.proposals[i]) else self.change(int(t)))
        finally:
            self._simulated = False
        return out

    # ------------------------------------------------------------------ UI plumbing
    def _ui(self, action: Callable[[], Any]) -> None:
        """Run a decision from a button/key: errors are shown in the widget instead of lost in the log."""
        try:
            action()
        except (StoreError, ValueError) as e:
            self.status.value = error_html(f"not saved: {e}")

    def _on_key(self, change: dict[str, Any]) -> None:
        text = change["new"]
        if not text:
            return
        key = text[-1].lower()
        self.keys.value = ""
        if key in LETTER_KEYS:
            self._ui(getattr(self, LETTER_KEYS[key]))
        elif not self.segmentation and (v := digit_class(key, self.study.classes)) is not None:
            self._ui(lambda: self.change(v))
        else:
            self.status.value = error_html(key_refusal(key, self.study.classes, self.segmentation))


def review_next_round(loop: ActiveLearningLoop, *, annotator: str,
                      simulate: bool = False) -> ReviewQueue | SegmentationReviewQueue | None:
    """Propose the loop's next batch (or reopen the unfinished round), auto-accept what the loop may, and show the
    rest in a :class:`ReviewQueue` (None when nothing waits for a person).

    Without a model yet (cold start) there is no pre-label: the reader picks each class. A segmentation round is
    shown in a :class:`~medwb.ui.widgets.segmentation_review.SegmentationReviewQueue`: each mask is built (or its
    pre-label corrected) by clicking the structure model's regions. An open structure round shows the namings'
    pre-labels, its labels noted "structure model". ``simulate``: the dataset's ground truth answers through the
    widget's own accept / change methods (papermill, tests).
    """
    from IPython.display import display

    from medwb.al.prelabels import proposed_mask, uncertainty_map
    from medwb.al.structure_round import round_origin
    from medwb.ui.widgets.class_evidence import class_evidence_panel

    ds = loop.ds
    batch = loop.commit_auto(loop.propose())
    model, version = loop.current_model()
    print(f"round {loop.round}: {len(batch)} case(s) waiting for a person"
          + ("" if model is None else f" (pre-labels from model {version})"))
    if not len(batch):
        return None
    rounds = loop.study.rounds()
    origin = round_origin(rounds[rounds["number"] == loop.round]["strategy"].iloc[0])
    if origin:  # a structure round: the named clusters' pre-labels, no model's
        proposals = batch["prelabel"].astype(int).tolist()
    elif model is None:
        proposals = None
        if ds.task == "segmentation" and not simulate:
            print("no model yet: build each mask by clicking its regions below (or draw them in 3D Slicer / "
                  "ITK-SNAP: study.export_masks_nifti, study.import_masks), then run loop.complete()")
    elif ds.task == "classification":
        proposals = batch["prelabel"].astype(int).tolist()
    else:
        proposals = [proposed_mask(loop, c)[None] for c in batch["case_id"]]  # the mask the app's readers see
    umap = None if model is None else (partial(class_evidence_panel, loop.study, loop.round)  # what the readers see
                                       if ds.task == "classification" else partial(uncertainty_map, loop))
    if ds.task == "segmentation":
        from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue

        q: ReviewQueue | SegmentationReviewQueue = SegmentationReviewQueue(
            loop.study, ds, batch["case_id"], proposals, uncertainty=umap, round=loop.round, model_version=version,
            annotator=annotator)
    else:
        q = ReviewQueue(loop.study, batch["case_id"], proposals, ds.load_image,
                        confidence=None if model is None or origin else batch["confidence"], uncertainty=umap,
                        round=loop.round, model_version=version, origin=origin, annotator=annotator,
                        spatial_dims=ds.ndim)
    display(q)
    if simulate:
        q.run_oracle(ground_truth(ds))
        display(pd.DataFrame(q.decisions).head(5))
    return q


def simulate_review_rounds(loop: ActiveLearningLoop, *, rounds: int, annotator: str) -> pd.DataFrame:
    """Run rounds through the review queue with the ground truth answering (papermill, tests) until the study
    holds ``rounds`` finished rounds; one row per round run: round, strategy, labels and its val_* metrics."""
    rows = []
    while loop.finished_rounds() < rounds:
        review_next_round(loop, annotator=annotator, simulate=True)
        r = loop.complete()
        rows.append({"round": r.round, "strategy": r.strategy, "n_labeled": r.n_labeled,
                     **{k: v for k, v in r.metrics.items() if k.startswith("val_")}})
    return pd.DataFrame(rows)
