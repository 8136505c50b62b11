"""Several readers on one study: the open round's proposals, per-case leases, double reads, decided cases.

Why in the store: readers work from separate browsers and kernels (``medwb review``), and ipywidgets state is
not shared between them, so the study database is the only place they meet.

- **Proposals**: the loop stores what it proposed for the open round (case, pre-label, calibrated confidence,
  model version; :func:`save_proposals`), so a reader's page shows the pre-label without loading a model, and
  how many independent reads each case needs (``reads``, 1 by default; :func:`set_reads` asks for a double read).
- **Leases**: a reader *claims* a case (:func:`claim_case`): in one ``BEGIN IMMEDIATE`` transaction the store
  picks the first proposed case of the round this reader has not read, that is not adjudicated, and whose reads
  plus other readers' live leases are fewer than it needs, and leases it to this reader for ``ttl`` seconds. A
  single-read case is therefore shown to one reader at a time, a double-read case to two readers who do not see
  each other's answer (blind), and a case left open by a reader who went away goes to the next claim once its
  lease expires. A reader whose lease was lost is told so (:func:`holds_lease`) instead of writing. A case a
  reader flagged or rejected (an open review-queue entry of theirs) goes to another reader, with the comment.
- **Decided** (:func:`case_status`): a case is decided when it has its reads and they agree, or when a senior
  reader adjudicated it. Two classes agree when they are equal; two masks when their Dice
  (:func:`medwb.metrics.dice`) is at least ``min_dice`` (:data:`MIN_DICE`: two careful outlines of one structure
  never match pixel for pixel, so equality would send every double-read mask to adjudication) (:func:`medwb.store.labels.adjudicate`). :func:`disagreements` lists what waits for
  adjudication; :func:`agreed_labels` is what a model may train on (contested cases are left out until
  adjudicated); :func:`check_round_decided` refuses to close a round whose double reads are unfinished or
  contested.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medwb.errors import StoreError
from medwb.store.rounds import open_round

if TYPE_CHECKING:
    from medwb.store.study import Study

DEFAULT_TTL = 600.0  # seconds a claimed case stays with its reader without a decision
MIN_DICE = 0.8  # two readers' masks of a case agree at this Dice or above

_N_READ = "(SELECT COUNT(DISTINCT l.annotator) FROM labels l WHERE l.case_id = p.case_id AND l.superseded = 0)"
_MINE = "EXISTS (SELECT 1 FROM labels l WHERE l.case_id = p.case_id AND l.superseded = 0 AND l.annotator = :r)"
_ADJ = ("EXISTS (SELECT 1 FROM adjudications a JOIN labels l ON l.id = a.label_id WHERE a.case_id = p.case_id "
        "AND l.superseded = 0)")
_OTHERS = "(SELECT COUNT(*) FROM leases le WHERE le.case_id = p.case_id AND le.reader != :r AND le.expires_at > :t)"
_FLAGGED = ("EXISTS (SELECT 1 FROM review_queue q WHERE q.case_id = p.case_id AND q.resolved_at IS NULL "
            "AND q.flagged_by = :r)")  # this reader flagged / rejected it: it goes to another reader


def save_proposals(study: Study, round: int, case_ids: Sequence[str], prelabels: Sequence[int | None] | None = None,
                   confidence: Sequence[float] | None = None, model_version: str | None = None) -> None:
    """Store round ``round``'s proposed cases in order (replacing an earlier proposal of the same round; the
    number of reads a case was given is kept)."""
    ids = [str(c) for c in case_ids]
    n = len(ids)
    pre = [None] * n if prelabels is None else [None if p is None or pd.isna(p) else int(p) for p in prelabels]
    conf = [None] * n if confidence is None else \
        [None if c is None or pd.isna(c) or not math.isfinite(float(c)) else float(c) for c in confidence]
    if len(pre) != n or len(conf) != n:
        raise StoreError(f"round {round}: {n} cases but {len(pre)} pre-labels / {len(conf)} confidences. "
                         "Fix: pass one per case")
    with study.transaction() as c:
        reads = dict(c.execute("SELECT case_id, reads FROM proposals WHERE round = ?", (int(round),)).fetchall())
        c.execute("DELETE FROM proposals WHERE round = ?", (int(round),))
        c.executemany("INSERT INTO proposals (round, case_id, position, prelabel, confidence, model_version, reads) "
                      "VALUES (?,?,?,?,?,?,?)",
                      [(int(round), cid, i, pre[i], conf[i], model_version, int(reads.get(cid, 1)))
                       for i, cid in enumerate(ids)])


def _round_or_latest(study: Study, round: int | None) -> int | None:
    if round is not None:
        return int(round)
    row = study.conn.execute("SELECT MAX(round) FROM proposals").fetchone()
    return None if row[0] is None else int(row[0])


def set_reads(study: Study, case_ids: Iterable[str], reads: int, *, round: int | None = None) -> int:
    """Ask for ``reads`` independent (blind) reads of ``case_ids`` in the open round (or ``round``); returns how
    many proposed cases changed. A double read (``reads=2``) measures agreement and sends disagreements to
    adjudication."""
    if int(reads) < 1:
        raise StoreError(f"reads={reads}. Fix: 1 (one reader) or more (independent reads)")
    number = open_round(study) if round is None else int(round)
    if number is None:
        raise StoreError("no open round. Fix: propose the round's cases first (loop.propose())")
    ids = [str(c) for c in case_ids]
    with study.transaction() as c:
        known = {r[0] for r in c.execute("SELECT case_id FROM proposals WHERE round = ?", (number,))}
        missing = sorted(set(ids) - known)
        if missing:
            raise StoreError(f"case(s) {missing[:5]} are not proposed in round {number}. Fix: pick ids of "
                             "study.proposals()")
        cur = c.executemany("UPDATE proposals SET reads = ? WHERE round = ? AND case_id = ?",
                            [(int(reads), number, cid) for cid in ids])
    return int(cur.rowcount)


def claim_case(study: Study, reader: str, *, ttl: float = DEFAULT_TTL, round: int | None = None,
               clock: float | None = None) -> str | None:
    """Lease the next case of the open round (or ``round``) that ``reader`` may read (see the module doc) and
    return its id; None when nothing is left for this reader. A reader who already holds a live lease on a case
    they have not answered gets that case back (a reloaded page resumes where it was)."""
    reader = str(reader).strip()
    if not reader:
        raise StoreError("no reader name. Fix: pass the reader's name")
    if not ttl > 0:
        raise StoreError(f"ttl={ttl!r}. Fix: pass a lease length in seconds > 0")
    t = time.time() if clock is None else float(clock)
    number = open_round(study) if round is None else int(round)
    if number is None:
        return None
    args = {"r": reader, "t": t, "n": number}
    with study.transaction() as c:
        c.execute("DELETE FROM leases WHERE expires_at <= ?", (t,))
        c.execute("DELETE FROM leases WHERE EXISTS (SELECT 1 FROM labels l WHERE l.case_id = leases.case_id "
                  "AND l.superseded = 0 AND l.annotator = leases.reader)")  # answered: the lease has ended
        row = c.execute(f"SELECT p.case_id FROM proposals p JOIN leases le ON le.case_id = p.case_id "
                        f"AND le.reader = :r WHERE p.round = :n AND NOT {_MINE} AND NOT {_ADJ} "
                        f"ORDER BY le.leased_at LIMIT 1", args).fetchone()
        if row is None:
            row = c.execute(f"SELECT p.case_id FROM proposals p WHERE p.round = :n AND NOT {_MINE} AND NOT {_ADJ} "
                            f"AND NOT {_FLAGGED} AND {_N_READ} + {_OTHERS} < p.reads ORDER BY p.position LIMIT 1",
                            args).fetchone()
        if row is None:
            return None
        c.execute("INSERT OR REPLACE INTO leases (case_id, reader, round, leased_at, expires_at) VALUES (?,?,?,?,?)",
                  (row[0], reader, number, t, t + float(ttl)))
    return str(row[0])


def leased_proposal(study: Study, case_id: str, reader: str) -> dict[str, object] | None:
    """The proposal behind ``reader``'s lease on ``case_id`` (round, prelabel, confidence, model_version and the
    round's strategy, which says who proposed; None values where the proposal has none), or None without such a
    lease: a reader's page shows and records it."""
    row = study.conn.execute(
        "SELECT p.round, p.prelabel, p.confidence, p.model_version, r.strategy FROM leases le JOIN proposals p "
        "ON p.case_id = le.case_id AND p.round = le.round LEFT JOIN rounds r ON r.number = p.round "
        "WHERE le.case_id = ? AND le.reader = ?", (str(case_id), str(reader))).fetchone()
    return None if row is None else dict(zip(("round", "prelabel", "confidence", "model_version", "strategy"), row))


def holds_lease(study: Study, case_id: str, reader: str, *, clock: float | None = None) -> bool:
    """Whether ``reader`` still holds a live lease on ``case_id`` (False once it expired): check before writing."""
    t = time.time() if clock is None else float(clock)
    row = study.conn.execute("SELECT expires_at FROM leases WHERE case_id = ? AND reader = ?",
                             (str(case_id), str(reader))).fetchone()
    return row is not None and float(row[0]) > t


def renew_lease(study: Study, case_id: str, reader: str, *, ttl: float = DEFAULT_TTL,
                clock: float | None = None) -> bool:
    """Extend ``reader``'s live lease on ``case_id`` (False, nothing changed, when it has expired)."""
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
    """Lease ``case_id`` to ``reader`` again (after an undo, or a lapsed lease on the case on screen); False
    when the case has all its reads or leases without this reader, or is adjudicated."""
    t = time.time() if clock is None else float(clock)
    args = {"r": str(reader), "t": t, "c": str(case_id)}
    with study.transaction() as c:
        row = c.execute(f"SELECT p.round FROM proposals p WHERE p.case_id = :c AND NOT {_ADJ} AND "
                        f"(SELECT COUNT(DISTINCT l.annotator) FROM labels l WHERE l.case_id = p.case_id AND "
                        f"l.superseded = 0 AND l.annotator != :r) + {_OTHERS} < p.reads "
                        "ORDER BY p.round DESC LIMIT 1", args).fetchone()
        if row is None:
            return False
        c.execute("INSERT OR REPLACE INTO leases (case_id, reader, round, leased_at, expires_at) VALUES (?,?,?,?,?)",
                  (str(case_id), str(reader), int(row[0]), t, t + float(ttl)))
    return True


#: the cases two or more people read (a model's auto label is no reader): the only ones that can be contested
_READ_TWICE = ("IN (SELECT case_id FROM labels WHERE superseded = 0 AND substr(annotator, 1, 6) != 'model:' "
               "GROUP BY case_id HAVING COUNT(DISTINCT annotator) >= 2)")


def _reads_by_case(study: Study, among: str = "", args: Sequence[object] = ()) -> tuple[
        dict[str, dict[str, int | str | None]], dict[str, int | str | None], dict[str, str]]:
    """Current answer of each (case, annotator) that is a read (not an adjudication), the live adjudicated answer
    of each case (the class, or in a segmentation study the mask file) and who adjudicated it. ``among``: an SQL
    ``IN (...)`` the case id must be in (with ``args``), so a round's status reads its own cases' labels, not every
    label of the study. The adjudicator's label is not a read: the readers' agreement stays theirs."""
    seg = study.task == "segmentation"
    col = "mask_path" if seg else "value"

    def answer(v: int | str | None) -> int | str | None:  # a label's class, or its mask file's path
        return None if v is None else str(study.path(str(v))) if seg else int(v)

    adj: dict[str, int | str | None] = {}
    by: dict[str, str] = {}
    for c, who, v in study.conn.execute(
            f"SELECT a.case_id, l.annotator, l.{col} FROM adjudications a JOIN labels l ON l.id = a.label_id "
            f"WHERE l.superseded = 0 {'AND a.case_id ' + among if among else ''} ORDER BY a.id", args):
        adj[str(c)] = answer(v)
        by[str(c)] = str(who)
    reads: dict[str, dict[str, int | str | None]] = {}
    for cid, who, v in study.conn.execute(f"SELECT case_id, annotator, {col} FROM labels WHERE superseded = 0 "
                                          f"{'AND case_id ' + among if among else ''} ORDER BY id", args):
        if by.get(str(cid)) != str(who):
            reads.setdefault(str(cid), {})[str(who)] = answer(v)
    return reads, adj, by


def mask_file_dice(a: str, b: str) -> float:
    """Dice of two stored mask files, cached while neither file changes (a case's status is read often)."""
    return _file_dice(str(a), Path(a).stat().st_mtime_ns, str(b), Path(b).stat().st_mtime_ns)


@lru_cache(maxsize=4096)
def _file_dice(a: str, _a_time: int, b: str, _b_time: int) -> float:
    from medwb.metrics import dice
    from medwb.store.masks import read_mask

    return dice(read_mask(a).squeeze(), read_mask(b).squeeze())


def _people(got: dict[str, int | str | None]) -> list[int | str | None]:
    return [v for a, v in got.items() if not a.startswith("model:")]  # a model's auto label is no reader


def lowest_dice(got: dict[str, int | str | None]) -> float:
    """The lowest Dice between two readers' masks of one case (annotator -> mask file); nan under two masks."""
    masks = [p for p in _people(got) if p is not None]
    return min((mask_file_dice(a, b) for a, b in combinations(masks, 2)), default=float("nan"))


def agreement_rule(study: Study, min_dice: float = MIN_DICE) -> Callable[[object, object], bool]:
    """When two readers' answers agree: equal classes, or (segmentation) masks with Dice >= ``min_dice``."""
    if not 0.0 <= float(min_dice) <= 1.0:
        raise StoreError(f"min_dice={min_dice!r}. Fix: a Dice between 0 and 1 (default {MIN_DICE})")
    if study.task != "segmentation":
        return lambda a, b: a == b
    return lambda a, b: a is not None and b is not None and mask_file_dice(str(a), str(b)) >= float(min_dice)


def _contested(got: dict[str, int | str | None], same: Callable[[object, object], bool]) -> bool:
    """Readers' current answers on one case (annotator -> class or mask file) that disagree: two or more people,
    two of whose answers are not the ``same`` (:func:`agreement_rule`)."""
    return any(not same(a, b) for a, b in combinations(_people(got), 2))


def case_status(study: Study, round: int | None = None, *, min_dice: float = MIN_DICE) -> pd.DataFrame:
    """One row per proposed case of ``round`` (default: the latest with proposals): case_id, reads (needed),
    readers (who answered), values (their classes, same order; None for masks), agree (classes equal, masks at
    Dice >= ``min_dice``), adjudicated (value, mask file or None), adjudicator (who, or None), decided, status (a
    short phrase), leased_to (live leases), dice (the lowest Dice between the readers' masks; nan for classes or
    under two masks). An adjudicator's answer is not one of the readers."""
    number = _round_or_latest(study, round)
    cols = ["round", "case_id", "reads", "readers", "values", "agree", "adjudicated", "adjudicator", "decided",
            "status", "leased_to", "dice"]
    if number is None:
        return pd.DataFrame(columns=cols)
    p = study.query("SELECT case_id, reads FROM proposals WHERE round = ? ORDER BY position", (number,))
    reads, adj, by = _reads_by_case(study, "IN (SELECT case_id FROM proposals WHERE round = ?)", (number,))
    same, seg = agreement_rule(study, min_dice), study.task == "segmentation"
    t = time.time()
    leased: dict[str, list[str]] = {}
    for cid, who in study.conn.execute("SELECT case_id, reader FROM leases WHERE expires_at > ? ORDER BY leased_at",
                                       (t,)):
        leased.setdefault(str(cid), []).append(str(who))
    rows = []
    for cid, need in zip(p["case_id"].astype(str), p["reads"].astype(int)):
        got = reads.get(cid, {})
        values = [None] * len(got) if seg else list(got.values())
        agree = not _contested(got, same)
        a = adj.get(cid)
        decided = cid in adj or (len(got) >= need and agree)
        status = ("adjudicated" if cid in adj else "decided" if decided else
                  "readers disagree: adjudication needed" if not agree else
                  "not read" if not got else f"waiting for {need - len(got)} more read(s)")
        rows.append([number, cid, need, list(got), values, agree, a, by.get(cid), decided, status, leased.get(cid, []),
                     lowest_dice(got) if seg else float("nan")])
    return pd.DataFrame(rows, columns=cols)


def proposals(study: Study, round: int | None = None, *, min_dice: float = MIN_DICE) -> pd.DataFrame:
    """The stored proposals of ``round`` (default: the latest round with proposals), in proposal order:
    round, case_id, position, prelabel, confidence, model_version, reads, labelled (at least one current label),
    decided (see :func:`case_status`)."""
    number = _round_or_latest(study, round)
    if number is None:
        return pd.DataFrame(columns=["round", "case_id", "position", "prelabel", "confidence", "model_version",
                                     "reads", "labelled", "decided"])
    df = study.query(
        "SELECT p.round, p.case_id, p.position, p.prelabel, p.confidence, p.model_version, p.reads, "
        "EXISTS (SELECT 1 FROM labels l WHERE l.case_id = p.case_id AND l.superseded = 0) AS labelled "
        "FROM proposals p WHERE p.round = ? ORDER BY p.position", (number,))
    df["labelled"] = df["labelled"].astype(bool)
    st = case_status(study, number, min_dice=min_dice).set_index("case_id")
    df["decided"] = [bool(st.loc[c, "decided"]) for c in df["case_id"]]
    return df


def disagreements(study: Study, *, min_dice: float = MIN_DICE) -> pd.DataFrame:
    """Cases whose current human labels differ between readers (masks: Dice < ``min_dice``) and that no one
    adjudicated yet: case_id, readers, values (their classes, same order; None for masks), mask_files (their mask
    files; None for classes), dice (lowest between the masks). This is the adjudication list of a senior reader."""
    reads, adj, _ = _reads_by_case(study, _READ_TWICE)
    same, seg = agreement_rule(study, min_dice), study.task == "segmentation"
    rows = [(cid, list(got), [None] * len(got) if seg else list(got.values()),
             list(got.values()) if seg else [None] * len(got), lowest_dice(got) if seg else float("nan"))
            for cid, got in reads.items() if cid not in adj and _contested(got, same)]
    return pd.DataFrame(rows, columns=["case_id", "readers", "values", "mask_files", "dice"])


def agreed_labels(study: Study, *, min_dice: float = MIN_DICE) -> pd.DataFrame:
    """``Study.labels(latest=True)`` without the contested cases (readers disagree, not adjudicated): the labels
    a model may train on. An adjudicated case carries the adjudicator's label."""
    cur = study.labels(latest=True)
    contested = set(disagreements(study, min_dice=min_dice)["case_id"])
    return cur[~cur["case_id"].astype(str).isin(contested)].reset_index(drop=True)


def check_round_decided(study: Study, round: int, *, min_dice: float = MIN_DICE) -> None:
    """Refuse to close ``round`` while a double-read case misses a read or its readers disagree without an
    adjudication (single-read cases left unlabelled, e.g. rejected ones, do not block)."""
    st = case_status(study, round, min_dice=min_dice)
    waiting = st[(st["reads"] > 1) & ~st["decided"]]
    if len(waiting):
        raise StoreError(f"round {round}: {len(waiting)} double-read case(s) are not decided yet "
                         f"({', '.join(f'{c}: {s}' for c, s in zip(waiting['case_id'][:5], waiting['status'][:5]))}). "
                         "Fix: let the readers finish and adjudicate the disagreements (medwb review), or drop the "
                         "extra read with study.set_reads(ids, 1)")
