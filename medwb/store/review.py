"""Second looks: reviewers' verdicts on explanation maps, and the review queue of cases flagged for a person."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medwb.errors import StoreError
from medwb.store.values import dumps, now

if TYPE_CHECKING:
    from medwb.store.study import Study

VERDICTS = ("plausible", "partly", "implausible", "cannot_tell")


def record_verdict(
    study: Study,
    case_id: str,
    method: str,
    verdict: str,
    reviewer: str,
    comment: str = "",
    map_path: str | Path | None = None,
    checks: Mapping[str, Any] | None = None,
) -> int:
    """A reviewer's judgement of an explanation map for a case; a later one by the same reviewer for the same
    (case, method) supersedes it in :func:`verdicts` (the earlier row stays as history)."""
    case_id = str(case_id)
    study.check_case(case_id)
    if verdict not in VERDICTS:
        raise StoreError(f"verdict {verdict!r} is not one of {VERDICTS}. Fix: pick one of them")
    if not method or not reviewer:
        raise StoreError("method and reviewer must be non-empty. Fix: pass the XAI method name and who reviewed")
    with study.transaction() as c:
        cur = c.execute(
            "INSERT INTO verdicts (case_id, method, verdict, reviewer, comment, map_path, checks, created_at) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (case_id, method, verdict, reviewer, comment, study.rel(map_path), dumps(dict(checks or {})), now()),
        )
    return int(cur.lastrowid)


def verdicts(study: Study, *, history: bool = False) -> pd.DataFrame:
    """The current verdicts, with ``checks`` as a dict and ``map_path`` absolute.

    The table is append-only (a re-judged map keeps its earlier verdict as history), so by default only the
    latest row per (case, method, reviewer) is returned: a reviewer who changes their mind is counted once.
    ``history=True`` returns every row ever recorded.
    """
    where = "" if history else \
        " WHERE id IN (SELECT MAX(id) FROM verdicts GROUP BY case_id, method, reviewer)"
    df = study.query(f"SELECT * FROM verdicts{where} ORDER BY id")
    df["checks"] = [json.loads(x) for x in df["checks"]]
    df["map_path"] = [None if p is None else str(study.path(p)) for p in df["map_path"]]
    return df


def flag_for_review(
    study: Study, case_ids: Iterable[str], *, reason: str, source: str, flagged_by: str = "", seconds: float | None = None
) -> int:
    """Put cases in the review queue for a second look (e.g. source='label_audit'). A case already open in the
    queue for the same source and the same flagger is not duplicated; another reader's flag of it is a row of its
    own, with their reason (issue 14: a second reader's flag and comment were dropped while the page said
    "saved"). Returns how many were added."""
    ids = [str(c) for c in case_ids]
    for cid in ids:
        study.check_case(cid)
    ts = now()
    added = 0
    with study.transaction() as c:
        for cid in ids:
            if c.execute("SELECT 1 FROM review_queue WHERE case_id = ? AND source = ? AND IFNULL(flagged_by, '') = ? "
                         "AND resolved_at IS NULL", (cid, source, flagged_by)).fetchone():
                continue
            c.execute("INSERT INTO review_queue (case_id, reason, source, flagged_by, seconds, created_at) VALUES (?,?,?,?,?,?)",
                      (cid, reason, source, flagged_by, seconds, ts))
            added += 1
    return added


def review_queue(study: Study, open_only: bool = True) -> pd.DataFrame:
    """The review queue (open entries only by default)."""
    sql = "SELECT * FROM review_queue" + (" WHERE resolved_at IS NULL" if open_only else "") + " ORDER BY id"
    return study.query(sql)


def resolve_review(study: Study, case_id: str, source: str | None = None) -> int:
    """Close the open review-queue entries of a case (all, or those of one source)."""
    with study.transaction() as c:
        if source is None:
            cur = c.execute("UPDATE review_queue SET resolved_at = ? WHERE case_id = ? AND resolved_at IS NULL", (now(), str(case_id)))
        else:
            cur = c.execute("UPDATE review_queue SET resolved_at = ? WHERE case_id = ? AND source = ? AND resolved_at IS NULL",
                            (now(), str(case_id), source))
    return int(cur.rowcount)
