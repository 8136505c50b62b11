"""Several readers on one study: the open round's proposals and per-case leases.

Why in the store: readers work from separate browsers and kernels (``medwb review``), and ipywidgets state is
not shared between them, so the study database is the only place they meet. A reader *claims* a case: in one
``BEGIN IMMEDIATE`` transaction the store picks the first proposed case of the round that has no current
label and no live lease of another reader, and leases it to this reader for ``ttl`` seconds. Two readers can
therefore never be shown the same case at once; a reader who leaves (closed tab, lost connection) holds the
case only until the lease expires, then the next claim hands it to someone else. Deciding a case writes its
label (:mod:`medwb.store.labels`) and ends the lease; a reader whose lease was lost meanwhile is told so by
:func:`holds_lease` instead of overwriting the other reader's decision.

Proposals: the loop stores what it proposed for the open round (case, pre-label, calibrated confidence, model
version; :func:`save_proposals`), so a reader's page shows the model's pre-label without loading a model.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from medwb.errors import StoreError

if TYPE_CHECKING:
    from medwb.store.study import Study

DEFAULT_TTL = 600.0  # seconds a claimed case stays with its reader without a decision


def save_proposals(study: Study, round: int, case_ids: Sequence[str], prelabels: Sequence[int | None] | None = None,
                   confidence: Sequence[float] | None = None, model_version: str | None = None) -> None:
    """Store round ``round``'s proposed cases in order (replacing an earlier proposal of the same round)."""
    ids = [str(c) for c in case_ids]
    n = len(ids)
    pre = [None] * n if prelabels is None else [None if p is None or pd.isna(p) else int(p) for p in prelabels]
    conf = [None] * n if confidence is None else \
        [None if c is None or pd.isna(c) or not math.isfinite(float(c)) else float(c) for c in confidence]
    if len(pre) != n or len(conf) != n:
        raise StoreError(f"round {round}: {n} cases but {len(pre)} pre-labels / {len(conf)} confidences. "
                         "Fix: pass one per case")
    with study.transaction() as c:
        c.execute("DELETE FROM proposals WHERE round = ?", (int(round),))
        c.executemany("INSERT INTO proposals (round, case_id, position, prelabel, confidence, model_version) "
                      "VALUES (?,?,?,?,?,?)",
                      [(int(round), cid, i, pre[i], conf[i], model_version) for i, cid in enumerate(ids)])


def proposals(study: Study, round: int | None = None) -> pd.DataFrame:
    """The stored proposals of ``round`` (default: the highest round with proposals), in proposal order, with
    ``labelled`` (the case has a current label) and ``reader`` / ``expires_at`` of a live lease."""
    if round is None:
        row = study.conn.execute("SELECT MAX(round) FROM proposals").fetchone()
        if row[0] is None:
            return pd.DataFrame(columns=["round", "case_id", "position", "prelabel", "confidence", "model_version",
                                         "labelled", "reader", "expires_at"])
        round = int(row[0])
    df = study.query(
        "SELECT p.round, p.case_id, p.position, p.prelabel, p.confidence, p.model_version, "
        "EXISTS (SELECT 1 FROM labels l WHERE l.case_id = p.case_id AND l.superseded = 0) AS labelled, "
        "le.reader, le.expires_at FROM proposals p LEFT JOIN leases le "
        "ON le.case_id = p.case_id AND le.expires_at > ? WHERE p.round = ? ORDER BY p.position",
        (time.time(), int(round)))
    df["labelled"] = df["labelled"].astype(bool)
    return df


def _open_round(study: Study) -> int | None:
    row = study.conn.execute("SELECT MAX(number) FROM rounds WHERE status = 'started'").fetchone()
    return None if row[0] is None else int(row[0])


def claim_case(study: Study, reader: str, *, ttl: float = DEFAULT_TTL, round: int | None = None,
               clock: float | None = None) -> str | None:
    """Lease the next undecided case of the open round (or ``round``) to ``reader`` and return its id; None
    when every proposed case is decided or leased to another reader. A reader who already holds a live lease on
    an undecided case gets that case back (a reloaded page resumes where it was)."""
    reader = str(reader).strip()
    if not reader:
        raise StoreError("no reader name. Fix: pass the reader's name")
    if not ttl > 0:
        raise StoreError(f"ttl={ttl!r}. Fix: pass a lease length in seconds > 0")
    t = time.time() if clock is None else float(clock)
    number = _open_round(study) if round is None else int(round)
    if number is None:
        return None
    undecided = ("SELECT p.case_id FROM proposals p WHERE p.round = ? AND NOT EXISTS "
                 "(SELECT 1 FROM labels l WHERE l.case_id = p.case_id AND l.superseded = 0)")
    with study.transaction() as c:
        c.execute("DELETE FROM leases WHERE expires_at <= ?", (t,))
        c.execute(f"DELETE FROM leases WHERE case_id NOT IN ({undecided})", (number,))  # decided: lease ended
        row = c.execute(f"SELECT case_id FROM leases WHERE reader = ? AND case_id IN ({undecided}) "
                        "ORDER BY leased_at LIMIT 1", (reader, number)).fetchone()
        if row is None:
            row = c.execute(f"SELECT p.case_id FROM proposals p WHERE p.round = ? AND p.case_id IN ({undecided}) "
                            "AND p.case_id NOT IN (SELECT case_id FROM leases) ORDER BY p.position LIMIT 1",
                            (number, number)).fetchone()
        if row is None:
            return None
        c.execute("INSERT OR REPLACE INTO leases (case_id, reader, round, leased_at, expires_at) VALUES (?,?,?,?,?)",
                  (row[0], reader, number, t, t + float(ttl)))
    return str(row[0])


def holds_lease(study: Study, case_id: str, reader: str, *, clock: float | None = None) -> bool:
    """Whether ``reader`` still holds a live lease on ``case_id`` (False once it expired or another reader took
    the case over): check before writing a decision."""
    t = time.time() if clock is None else float(clock)
    row = study.conn.execute("SELECT reader, expires_at FROM leases WHERE case_id = ?", (str(case_id),)).fetchone()
    return row is not None and row[0] == str(reader) and float(row[1]) > t


def renew_lease(study: Study, case_id: str, reader: str, *, ttl: float = DEFAULT_TTL,
                clock: float | None = None) -> bool:
    """Extend ``reader``'s live lease on ``case_id`` (False, nothing changed, when it is not theirs any more)."""
    t = time.time() if clock is None else float(clock)
    with study.transaction() as c:
        cur = c.execute("UPDATE leases SET expires_at = ? WHERE case_id = ? AND reader = ? AND expires_at > ?",
                        (t + float(ttl), str(case_id), str(reader), t))
    return cur.rowcount == 1


def release_case(study: Study, case_id: str, reader: str) -> bool:
    """End ``reader``'s lease on ``case_id`` (after a decision, or when they hand it back)."""
    with study.transaction() as c:
        cur = c.execute("DELETE FROM leases WHERE case_id = ? AND reader = ?", (str(case_id), str(reader)))
    return cur.rowcount == 1


def retake_case(study: Study, case_id: str, reader: str, *, ttl: float = DEFAULT_TTL,
                clock: float | None = None) -> bool:
    """Lease ``case_id`` to ``reader`` again after an undo made it undecided; False when another reader holds a
    live lease on it."""
    t = time.time() if clock is None else float(clock)
    with study.transaction() as c:
        row = c.execute("SELECT reader FROM leases WHERE case_id = ? AND expires_at > ?", (str(case_id), t)).fetchone()
        if row is not None and row[0] != str(reader):
            return False
        num = _open_round(study)
        c.execute("INSERT OR REPLACE INTO leases (case_id, reader, round, leased_at, expires_at) VALUES (?,?,?,?,?)",
                  (str(case_id), str(reader), num, t, t + float(ttl)))
    return True
