"""The study's cases: the cohort table as registered (medwb.data contract), and the checks every write makes
against it (a case id must be known, a label value must be a class)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from medwb.errors import DataError, StoreError
from medwb.store.values import dumps, jsonable_column, now

if TYPE_CHECKING:
    from medwb.store.study import Study

#: the ``cases.split`` values a cohort may carry (the dataset's official split; carved splits: medwb.store.pool)
SPLITS = ("train", "val", "test", "unlabelled")
# Columns of the cohort table stored in their own SQL columns; every other cohort column goes to ``meta`` JSON.
CASE_COLUMNS = ("case_id", "split", "source", "sha256")
#: ids per ``IN (...)`` lookup (under SQLite's default limit of bound parameters)
CHUNK = 900


def add_cases(study: Study, cohort: pd.DataFrame) -> int:
    """Register the cases of a cohort table (medwb.data contract). Re-adding an identical case is a no-op;
    a case whose sha256 changed is refused (the data under the study changed). Returns how many were new."""
    if "case_id" not in cohort.columns or "split" not in cohort.columns:
        raise DataError(None, "the cohort table has no case_id/split column", "pass ds.cohort from medwb.data.open_dataset")
    ids = cohort["case_id"].astype(str)
    dup = ids[ids.duplicated()]
    if len(dup):
        raise DataError(None, f"duplicate case ids in the cohort: {sorted(set(dup))[:5]}", "make case_id unique")
    bad = sorted(set(cohort["split"].astype(str)) - set(SPLITS))
    if bad:
        raise DataError(None, f"unknown split values {bad}", f"use one of {SPLITS}")
    extra = [c for c in cohort.columns if c not in CASE_COLUMNS]
    ts = now()
    # what is already there is read inside the write transaction (BEGIN IMMEDIATE: one writer at a time), so two
    # processes adding the same cases cannot both find them new and collide on the primary key (IntegrityError)
    with study.transaction() as c:
        rows = _new_rows(study, c, cohort, ids.tolist(), extra, ts)
        cols = json.loads(c.execute("SELECT cohort_columns FROM study").fetchone()[0])
        cols += [str(col) for col in cohort.columns if str(col) not in cols]
        c.executemany("INSERT INTO cases (case_id, split, source, sha256, meta, added_at) VALUES (?,?,?,?,?,?)", rows)
        c.execute("UPDATE study SET cohort_columns = ?", (json.dumps(cols),))
    return len(rows)


def _known(conn: sqlite3.Connection, ids: list[str]) -> dict[str, str | None]:
    """sha256 of the ``ids`` already registered: primary-key lookups in chunks (no read of the whole table)."""
    out: dict[str, str | None] = {}
    for i in range(0, len(ids), CHUNK):
        part = ids[i:i + CHUNK]
        out.update(conn.execute(f"SELECT case_id, sha256 FROM cases WHERE case_id IN ({','.join('?' * len(part))})",
                                part).fetchall())
    return out


def _new_rows(study: Study, conn: sqlite3.Connection, cohort: pd.DataFrame, ids: list[str], extra: list[Any],
              ts: str) -> list[tuple[Any, ...]]:
    """The rows to insert for the cases not yet registered; a known case whose sha256 changed is refused.
    Built column by column (a million-case cohort)."""
    existing = _known(conn, ids)
    shas = jsonable_column(cohort["sha256"]) if "sha256" in cohort.columns else [None] * len(ids)
    for cid, sha in zip(ids, shas):
        old = existing.get(cid) if existing else None
        if old and sha and sha != old:
            raise StoreError(f"{study.db_path}: case {cid!r} is already in the study with a different sha256. "
                             "Fix: the image changed on disk; start a new study or restore the original file")
    new = [i for i, cid in enumerate(ids) if cid not in existing] if existing else range(len(ids))
    if not len(new):
        return []
    sub = cohort.iloc[list(new)] if existing else cohort
    keys = [str(col) for col in extra]
    order = sorted(range(len(keys)), key=keys.__getitem__)  # the keys as dumps() sorts them
    values = [jsonable_column(sub[extra[j]]) for j in order]
    metas = [json.dumps(dict(zip([keys[j] for j in order], vals))) for vals in zip(*values)] if values else \
        [dumps({})] * len(sub)
    source = jsonable_column(sub["source"]) if "source" in sub.columns else [None] * len(sub)
    return list(zip([ids[i] for i in new], sub["split"].astype(str).tolist(), source,
                    [shas[i] for i in new], metas, [ts] * len(sub)))


def cases(study: Study) -> pd.DataFrame:
    """The cohort table as registered (case_id, split, source, sha256 and every other cohort column).
    Note: a ``label`` column here is the dataset's own label, not a study label (see ``Study.labels``)."""
    df = study.query("SELECT case_id, split, source, sha256, meta FROM cases ORDER BY rowid")
    meta = pd.DataFrame(json.loads("[" + ",".join(df.pop("meta").tolist()) + "]"), index=df.index)  # one parse
    out = pd.concat([df, meta], axis=1)
    order = json.loads(study.conn.execute("SELECT cohort_columns FROM study").fetchone()[0])
    out = out[[c for c in order if c in out.columns] + [c for c in out.columns if c not in order]]
    for col in out.columns:  # integer columns with gaps (label, ndim, ...) come back as nullable Int64
        vals = out[col].dropna()
        if col == "label" or (len(vals) and out[col].isna().any()
                              and all(isinstance(v, int) and not isinstance(v, bool) for v in vals)):
            out[col] = pd.array(out[col], dtype="Int64")
    return out


def case_ids(study: Study) -> list[str]:
    """The registered case ids in registration order (cheaper than :func:`cases` when only ids are needed)."""
    return [r[0] for r in study.conn.execute("SELECT case_id FROM cases ORDER BY rowid")]


def check_case(study: Study, case_id: str) -> None:
    """Raise a DataError naming the fix unless ``case_id`` is a registered case."""
    if study.conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (case_id,)).fetchone() is None:
        raise DataError(study.db_path, f"unknown case id {case_id!r}", "add the case with study.add_cases(ds.cohort) first, or check the id")


def check_value(study: Study, value: Any, where: str | Path | None = None) -> int:
    """``value`` as an int class of the study, or a DataError (about ``where``, default the database) naming the
    classes."""
    try:
        v = int(value)
        if v != value and not isinstance(value, str):
            raise ValueError
    except (TypeError, ValueError):
        raise DataError(where or study.db_path, f"label value {value!r} is not an integer class", f"use one of {sorted(study.classes)}") from None
    if v not in study.classes:
        raise DataError(where or study.db_path, f"label value {v} is not one of the study's classes {study.classes}",
                        f"use one of {sorted(study.classes)}")
    return v
