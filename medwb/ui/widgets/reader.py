"""The reader's page of the review app (``medwb review``): one reader's review queue fed by the store's leases.

Why a page of its own: in the app a reader never sees code or chooses who they are. The server names the reader
from the token in their link; this page shows that name (not editable), the open round's progress, and a
:class:`medwb.ui.widgets.review.ReviewQueue` whose cases come one at a time from the store's leases
(:class:`LeasedCases`), so two readers never see the same case and a case left open by a reader who went away
goes to the next one when its lease expires. A segmentation study's cases are read in the region-click editor
(:class:`medwb.ui.widgets.segmentation_review.SegmentationReviewQueue`, driving the same ReviewQueue): the mask
starts from the model's predicted mask the loop stored when it proposed the round (``Study.predicted_mask``; an
empty mask in a round before any model or a study made before masks were stored) and is corrected or built by
clicking the study's cached structure-model regions: saved unchanged it is the reader's label with source
``human`` (an accepted pre-label), edited ``corrected``. Two readers' masks agree at Dice >= 0.8
(``medwb.store.readers.MIN_DICE``). A reader whose case was decided by someone else meanwhile is told
so, and the next case is shown; nothing is overwritten. A classification case shows, beside the image, the
model's class probabilities with their MC-dropout spread and its saliency map, as the loop stored them when it
proposed the round (:func:`medwb.ui.widgets.class_evidence.class_evidence_panel`; nothing when none were stored).
Tabs: "adjudicate" for the senior readers named by the server, and "judge explanations" when the study holds
explanations (:func:`verdict_page`: the verdict panel with the reader's name as the reviewer).
Errors are shown as one plain sentence, never a traceback.
"""
from __future__ import annotations

import hashlib
import html
import json
import math
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import ipywidgets as W
import numpy as np
import pandas as pd

from medwb.al.structure_round import round_origin
from medwb.errors import MedwbError
from medwb.store import Study
from medwb.store.layout import StudyLayout
from medwb.store.readers import DEFAULT_TTL
from medwb.ui.widgets.case_view import MapPanel
from medwb.ui.widgets.class_evidence import class_evidence_panel
from medwb.ui.widgets.review import NextCase, ReviewQueue, earlier_notes
from medwb.ui.widgets.segmentation_review import SegmentationReviewQueue

#: environment of the app's kernels, set by medwb.pipelines.review_app
STUDY_ENV, READERS_ENV = "MEDWB_REVIEW_STUDY", "MEDWB_REVIEW_READERS"
TTL_ENV, ADJUDICATORS_ENV = "MEDWB_REVIEW_LEASE_SECONDS", "MEDWB_REVIEW_ADJUDICATORS"


def token_digest(token: str) -> str:
    """What the server keeps of a reader's token (sha256): the raw token lives only in the reader's link."""
    return hashlib.sha256(token.encode()).hexdigest()


def reader_from_query(query: str, readers_file: str | Path) -> str | None:
    """The reader a request's ``?token=`` names (``readers_file``: JSON {sha256(token): reader}), else None."""
    tokens = parse_qs(query).get("token", [])
    if not tokens:
        return None
    known = json.loads(Path(readers_file).read_text(encoding="utf-8"))
    return known.get(token_digest(tokens[-1]))


def stored_prelabel(study: Study, proposal: dict[str, object], case_id: str) -> tuple[object, str]:
    """(pre-label, warning) of a leased case: the proposal's class, or in a segmentation study the model's
    predicted mask stored for its round (None: none stored, the editor starts empty). A stored mask that cannot
    be read leaves the case without a pre-label and says why (the reader can still label it), never a traceback."""
    if study.task != "segmentation":
        return (None if proposal["prelabel"] is None else int(proposal["prelabel"])), ""
    try:
        return study.predicted_mask(int(proposal["round"]), case_id), ""
    except MedwbError as e:
        return None, f"<br><span style='color:#b00'>the model's mask could not be shown: {html.escape(str(e))}</span>"


class LeasedCases:
    """A :class:`medwb.ui.widgets.review.CaseSource` over the store: each next case is claimed with a lease
    (``Study.claim_case``), its pre-label (class, or the model's stored predicted mask) and confidence come from
    the stored proposals, a decision ends the lease, an undo takes it again; :meth:`evidence` is what is drawn
    beside a classification case (the model's stored class probabilities and saliency map of its round)."""

    def __init__(self, study: Study, reader: str, *, ttl: float = DEFAULT_TTL,
                 clock: Callable[[], float] = time.time) -> None:
        self.study, self.reader, self.ttl, self.clock = study, reader, float(ttl), clock
        self.warnings: dict[str, str] = {}  # case -> why its stored pre-label is not shown
        self.rounds: dict[str, int] = {}  # case -> the round that proposed it

    def next_case(self) -> NextCase | None:
        cid = self.study.claim_case(self.reader, ttl=self.ttl, clock=self.clock())
        if cid is None:
            return None
        r = self.study.leased_proposal(cid, self.reader)
        if r is None:
            return NextCase(cid)
        conf, self.rounds[cid] = r["confidence"], int(r["round"])
        pre, self.warnings[cid] = stored_prelabel(self.study, r, cid)
        return NextCase(cid, pre, float("nan") if conf is None else float(conf), int(r["round"]),
                        None if r["model_version"] is None else str(r["model_version"]),
                        round_origin(r["strategy"]))  # a structure round's labels say so in their note

    def lost(self, case_id: str) -> str | None:
        now = self.clock()
        if self.study.holds_lease(case_id, self.reader, clock=now):
            self.study.renew_lease(case_id, self.reader, ttl=self.ttl, clock=now)
            return None
        if self.study.retake_case(case_id, self.reader, ttl=self.ttl, clock=now):  # lapsed, but nobody took it
            return None
        return (f"case {case_id} went to another reader after your hold on it expired (or was decided meanwhile), "
                "so your answer was not saved")

    def decided(self, case_id: str) -> None:
        self.study.release_case(case_id, self.reader)

    def note(self, case_id: str) -> str:
        return earlier_notes(self.study, case_id) + self.warnings.get(case_id, "")

    def undone(self, case_id: str) -> None:
        self.study.retake_case(case_id, self.reader, ttl=self.ttl, clock=self.clock())

    def evidence(self, case_id: str) -> MapPanel | None:
        return class_evidence_panel(self.study, self.rounds.get(case_id), case_id)

    def uncertainty(self, case_id: str) -> np.ndarray | None:
        """The model's entropy map stored with a segmentation case's predicted mask (None: none, or unreadable:
        the editor then shows no map and uncut edge bands, the case stays workable)."""
        r = self.rounds.get(case_id)
        try:
            return None if r is None else self.study.predicted_uncertainty(r, case_id)
        except MedwbError:
            return None


def round_progress(study: Study, status: pd.DataFrame | None = None) -> str:
    """One line on the latest proposed round: cases decided, double reads waiting, disagreements, who reads now."""
    st = study.case_status() if status is None else status  # Study.case_status(), when already read
    if not len(st):
        return "No round is open: the researcher starts one (propose) and the cases appear here."
    n, done = len(st), int(st["decided"].sum())
    busy = sorted({r for rs in st["leased_to"] for r in rs})
    open_ = int((~st["agree"] & st["adjudicated"].isna()).sum())
    return (f"Round {int(st['round'].iloc[0])}: {done} of {n} cases decided"
            + (f"; {open_} disagreement(s) wait for adjudication" if open_ else "")
            + (f"; being read now by {', '.join(busy)}" if busy else ""))


def model_progress(study: Study) -> str:
    """One line on what the model learned from the readers' labels: the latest model's validation score, and the
    change since the model before it (issue 14: a reader sees that retraining used their work)."""
    from medwb.al.curves import VALIDATION_METRICS

    m = study.models()
    if not len(m):
        return "No model yet: the first model is trained when the first round is decided."
    last = m.iloc[-1]
    key = next((k for k in VALIDATION_METRICS if isinstance(last["metrics"].get(k), (int, float))
                and math.isfinite(last["metrics"][k])), None)
    text = f"Model of round {int(last['round'])}, trained on {int(last['n_labeled'])} labels"
    if key is None:
        return text + "."
    now = float(last["metrics"][key])
    text += f": validation {key[4:].upper() if key == 'val_auc' else key[4:]} {now:.3f}"
    before = m.iloc[-2]["metrics"].get(key) if len(m) > 1 else None
    if isinstance(before, (int, float)) and math.isfinite(before):
        text += f" ({float(before):.3f} before, {now - float(before):+.3f})"
    return text + "."


def reader_queue(study: Study, reader: str, *, ttl: float = DEFAULT_TTL, min_view_seconds: float = 0.5,
                 clock: Callable[[], float] = time.time) -> ReviewQueue | SegmentationReviewQueue:
    """The review queue of ``reader`` on the study's open round: cases claimed one by one from the store (a
    segmentation study's in the region-click editor)."""
    from medwb.data import open_dataset

    ds = open_dataset(study.dataset_path)  # round and model version come with each case (NextCase)
    source = LeasedCases(study, reader, ttl=ttl, clock=clock)
    if study.task == "segmentation":
        seg = SegmentationReviewQueue(study, ds, [], annotator=reader, min_view_seconds=min_view_seconds,
                                      source=source, uncertainty=source.uncertainty)
        seg.queue.annotator.disabled = True  # the link names the reader; nobody types another reader's name
        return seg
    q = ReviewQueue(study, [], [], ds.load_image, confidence=[], uncertainty=source.evidence, annotator=reader,
                    spatial_dims=ds.ndim, min_view_seconds=min_view_seconds, source=source)
    q.annotator.disabled = True
    return q


def _message(text: str, colour: str = "#333") -> W.HTML:
    return W.HTML(f"<p style='font-size:1.1em;color:{colour}'>{html.escape(text)}</p>")


def reader_page(env: dict[str, str] | None = None) -> W.Widget:
    """The app's page for the reader named by the request's token (environment set by the server and Voilà:
    study folder, token digests, ``QUERY_STRING``). Any failure becomes one plain sentence, never a traceback."""
    env = dict(os.environ if env is None else env)
    try:
        reader = reader_from_query(env.get("QUERY_STRING", ""), env[READERS_ENV])
        if reader is None:
            return _message("This link does not name a reader. Open the link you were given (it ends in "
                            "?token=...), or ask the researcher for yours.", "#b00")
        study = Study.open(env[STUDY_ENV])
        q = reader_queue(study, reader, ttl=float(env.get(TTL_ENV, DEFAULT_TTL)))
        rq = q.queue if isinstance(q, SegmentationReviewQueue) else q  # the decisions' queue
        progress = W.HTML()

        def refresh(_: object = None) -> None:
            progress.value = (f"{html.escape(round_progress(study))}<br><small>"
                              f"{html.escape(model_progress(study))}</small>")

        refresh()
        rq.status.observe(refresh, names="value")
        how = ("click the image to add the region under the pointer (shift-click removes it), pick the level and "
               "the class, then <b>save mask</b>" if rq.segmentation else "keys: a accept, r reject, f flag, u undo, "
               "or the class number shown in the menu. Click the <b>keys</b> box first")
        head = W.HTML(f"<h3>medwb review: {html.escape(reader)}</h3>"
                      f"<p>study <code>{html.escape(study.name)}</code>; {how}.</p>")
        pages = [("read", q.widget)]
        if reader in [a.strip() for a in env.get(ADJUDICATORS_ENV, "").split(",")]:
            from medwb.ui.widgets.adjudicate import AdjudicationPanel

            pages.append(("adjudicate", AdjudicationPanel(study, reader, rq.load_image,
                                                          spatial_dims=rq.spatial_dims).widget))
        if (verdicts := verdict_page(study, reader)) is not None:
            pages.append(("judge explanations", verdicts))
        if len(pages) == 1:
            return W.VBox([head, progress, q.widget])
        tabs = W.Tab(children=[w for _, w in pages])
        for i, (title, _) in enumerate(pages):
            tabs.set_title(i, title)
        return W.VBox([head, progress, tabs])
    except MedwbError as e:
        return _message(f"The review page could not open: {e}", "#b00")
    except Exception as e:  # the app's boundary: a reader gets a sentence, the server's log the traceback
        import traceback

        traceback.print_exc()
        return _message(f"The review page could not open ({type(e).__name__}: {e}). Tell the researcher.", "#b00")


def verdict_page(study: Study, reader: str) -> W.Widget | None:
    """The explanation verdict panel (:class:`medwb.ui.widgets.verdict.VerdictPanel`) of the study's explanations,
    the reviewer fixed to the reader the link names (a reader cannot judge under another name); None when the
    study holds no explanation (no ``index.csv`` in ``StudyLayout.explanation_folders``)."""
    from medwb.ui.widgets.verdict import VerdictPanel

    for folder in StudyLayout(study.folder).explanation_folders():
        if (folder / "index.csv").is_file():
            panel = VerdictPanel(folder, study, reviewer=reader)
            panel.reviewer.disabled = True
            return panel.widget
    return None


def readers_summary(study: Study, status: pd.DataFrame | None = None) -> pd.DataFrame:
    """The researcher's live view of the latest round, one row per reader: cases they answered in it, double
    reads among them, how many of those the readers disagree on (different classes, masks under the Dice
    threshold), and the disagreements they settled as adjudicator."""
    st = study.case_status() if status is None else status  # Study.case_status(), when already read
    rows: dict[str, dict[str, int]] = {}

    def row(who: str) -> dict[str, int]:
        return rows.setdefault(who, {"answered": 0, "double_reads": 0, "disagreed": 0, "adjudicated": 0})

    for r in st.itertuples(index=False):
        for who in r.readers:
            d = row(who)
            d["answered"] += 1
            if r.reads > 1:
                d["double_reads"] += 1
                d["disagreed"] += int(not r.agree)
        if isinstance(r.adjudicator, str):  # None (or NaN once pandas has seen the column)
            row(r.adjudicator)["adjudicated"] += 1
    return pd.DataFrame([{"reader": k, **v} for k, v in sorted(rows.items())],
                        columns=["reader", "answered", "double_reads", "disagreed", "adjudicated"])


def double_read_kappa(study: Study, status: pd.DataFrame | None = None) -> tuple[int, float]:
    """(cases, Cohen's kappa) over the latest round's cases read by exactly two readers (nan under 2 cases)."""
    from medwb.metrics import cohen_kappa

    st = study.case_status() if status is None else status  # Study.case_status(), when already read
    pairs = [v for v in st["values"] if len(v) == 2 and None not in v]
    if len(pairs) < 2:
        return len(pairs), float("nan")
    return len(pairs), cohen_kappa([a for a, _ in pairs], [b for _, b in pairs])


def double_read_dice(status: pd.DataFrame) -> tuple[int, float]:
    """(cases, mean Dice) over the round's masks read by two or more readers (``dice``: their lowest pair)."""
    d = status["dice"].dropna() if "dice" in status else pd.Series(dtype=float)
    return len(d), float(d.mean()) if len(d) else float("nan")


def panel_html(study: Study) -> str:
    """The researcher's view as HTML: the round's progress, the agreement of double reads (Cohen's kappa of
    classes, mean Dice of masks), each reader's counts."""
    st = study.case_status()  # read once for the three parts
    if study.task == "segmentation":
        n, d = double_read_dice(st)
        agree = "" if d != d else f"<p>double reads: {n} masks, mean Dice {d:.2f}</p>"
    else:
        n, kappa = double_read_kappa(study, st)
        agree = "" if kappa != kappa else f"<p>double reads: {n} cases, Cohen's kappa {kappa:.2f}</p>"
    return f"<p>{html.escape(round_progress(study, st))}</p>{agree}" + readers_summary(study, st).to_html(index=False)


class ReadersPanel:
    """The researcher's notebook view of the readers at work (``display(ReadersPanel(study).widget)``): the
    round's progress, each reader's counts, the agreement of double reads. The readers' answers arrive in the
    store: ``refresh`` (button) re-reads it; ``every=S`` (or :meth:`watch`) re-reads it every S seconds in a
    background thread with its own store connection, until :meth:`stop`."""

    def __init__(self, study: Study, *, every: float | None = None) -> None:
        self.study = study
        self.html = W.HTML()
        self.button = W.Button(description="refresh")
        self.button.on_click(lambda _: self.refresh())
        self.widget = W.VBox([self.button, self.html])
        self._stop: threading.Event | None = None
        self.refresh()
        if every is not None:
            self.watch(every)

    def refresh(self) -> None:
        self.html.value = panel_html(self.study)

    def watch(self, every: float = 5.0) -> None:
        """Re-read the store every ``every`` seconds (a daemon thread; its own connection) until :meth:`stop`."""
        self.stop()
        stop = self._stop = threading.Event()
        folder = self.study.folder

        def run() -> None:
            with Study.open(folder) as s:
                while not stop.wait(float(every)):
                    self.html.value = panel_html(s)

        threading.Thread(target=run, name="medwb-readers-panel", daemon=True).start()

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._stop = None


__all__ = ["LeasedCases", "ReadersPanel", "double_read_dice", "double_read_kappa", "panel_html", "readers_summary", "reader_from_query", "reader_page", "reader_queue", "round_progress", "stored_prelabel", "token_digest"]
