"""The researcher's side of the review app: rounds that readers label (``medwb review``), retrained as they finish.

Why: with several readers the labels arrive in the study store from their browsers, not from the researcher's
notebook. :func:`run_review_rounds` is the researcher's "retrain and next batch" for them: it opens a round
(``loop.propose``: the proposals and pre-labels are stored, the readers' pages pick the cases up), optionally
asks for blind double reads of some of its cases, waits until the store says the round is done, then retrains
and closes it (``loop.complete``) and opens the next. A round is done when every proposed case is decided (its
reads agree, or it is adjudicated) or waits in the review queue (flagged or rejected by a reader); the loop
itself refuses to close a round whose double reads are unfinished or contested. The readers' pages continue
with the next round's cases by themselves, each label carrying its own round and model version.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import StoreError

if TYPE_CHECKING:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.store import Study


def round_done(study: Study, round: int) -> bool:
    """Whether every proposed case of ``round`` is decided, or waits in the review queue (flagged / rejected)."""
    st = study.case_status(round)
    if not len(st):
        return False
    queued = set(study.review_queue()["case_id"].astype(str))
    return bool(all(d or c in queued for c, d in zip(st["case_id"].astype(str), st["decided"])))


def run_review_rounds(loop: ActiveLearningLoop, *, rounds: int, double_reads: int = 0, poll_seconds: float = 5.0,
                      timeout_seconds: float | None = None, random_state: int = 0,
                      on_wait: Callable[[Study], None] | None = None,
                      on_round: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run the loop until the study holds ``rounds`` finished rounds, the labels coming from the readers.

    Each round: propose (or reopen the open round), ask for two blind reads of ``double_reads`` of its cases
    (drawn with ``random_state``), wait (polling the store every ``poll_seconds``; ``on_wait(study)`` is called
    each time, e.g. to refresh a :class:`medwb.ui.widgets.reader.ReadersPanel`) until :func:`round_done`, then
    retrain and close it. ``timeout_seconds`` bounds each wait (StoreError when it runs out: nothing is lost, call
    again to continue). ``on_round(row)`` is called as each round closes. Returns one row per round closed here:
    round, n_labeled, val_* metrics, model_version.
    """
    study = loop.study
    rows = []
    while loop.finished_rounds() < rounds:
        loop.propose()
        number = int(loop.round)
        st = study.case_status(number)
        ids = list(st["case_id"])  # the proposed cases, in proposal order
        if double_reads and not (st["reads"] > 1).any():
            rng = np.random.default_rng([int(random_state), number])
            pick = rng.choice(len(ids), size=min(int(double_reads), len(ids)), replace=False)
            study.set_reads([ids[i] for i in sorted(pick)], 2)
        t0 = time.monotonic()
        while not round_done(study, number):
            if timeout_seconds is not None and time.monotonic() - t0 > timeout_seconds:
                raise StoreError(f"round {number} was not finished by the readers within {timeout_seconds:.0f} s. "
                                 "Fix: nothing is lost; call run_review_rounds again to keep waiting")
            if on_wait is not None:
                on_wait(study)
            time.sleep(float(poll_seconds))
        r = loop.complete()
        rows.append({"round": r.round, "n_labeled": r.n_labeled, "model_version": r.model_version,
                     **{k: v for k, v in r.metrics.items() if k.startswith("val_")}})
        if on_round is not None:
            on_round(rows[-1])
    return pd.DataFrame(rows)


__all__ = ["round_done", "run_review_rounds"]
