"""The researcher's rounds with readers labelling from other threads through the store (as the app does)."""
from __future__ import annotations

import threading
from pathlib import Path

import pytest

from medwb.errors import StoreError


def test_rounds_advance_as_readers_decide(samples: Path, tmp_path: Path) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.al.review_rounds import round_done, run_review_rounds
    from medwb.store import Study

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path)
    truth = ds.cohort.set_index("case_id")["label"]
    stop = threading.Event()

    def reader(name: str, flip: bool) -> None:  # a reader's page: claim, answer (ben flips double reads)
        with Study.open(study.folder) as s:
            while not stop.is_set():
                c = s.claim_case(name)
                if c is None:
                    stop.wait(0.05)
                    continue
                rnd = int(s.conn.execute("SELECT round FROM leases WHERE case_id = ? AND reader = ?",
                                         (c, name)).fetchone()[0])
                v = int(truth[c])
                double = int(s.case_status(rnd).set_index("case_id").loc[c, "reads"]) > 1
                s.add_label(c, value=1 - v if (flip and double) else v, annotator=name, round=rnd)
                if double and flip:
                    s.adjudicate(c, value=v, by="dr_s")

    threads = [threading.Thread(target=reader, args=(n, n == "ben"), daemon=True) for n in ("ana", "ben")]
    for t in threads:
        t.start()
    try:
        out = run_review_rounds(loop, rounds=2, double_reads=2, poll_seconds=0.1, timeout_seconds=300)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert list(out["round"]) == [1, 2] and study.last_finished_round() == 2
    assert round_done(study, 1) and round_done(study, 2)
    lab = study.labels()
    assert len(lab) == 8 and all(int(v) == int(truth[c]) for c, v in zip(lab["case_id"], lab["value"]))
    assert set(lab["round"]) == {1, 2}  # each label carries the round it was proposed in
    st = study.case_status(2)
    assert (st["reads"] > 1).sum() == 2 and st["decided"].all()
    with pytest.raises(StoreError, match="not finished by the readers"):
        run_review_rounds(loop, rounds=3, poll_seconds=0.05, timeout_seconds=0.2)
    study.close()
