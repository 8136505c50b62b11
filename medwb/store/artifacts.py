"""Every file a study produced outside its folder: reports, exports, simulation outputs, sibling studies, caches.

Why: a purge must leave nothing, and the study folder is not the only place its data ends up (``medwb report
--out``, ``medwb simulate --out``, label exports to any path, the per-dataset statistics cache). Whoever writes
such a file registers it here, in the study's database; :func:`medwb.privacy.purge.purge_study` reads the table
(:func:`peek_artifacts`, before it destroys the database) and removes what it finds, naming what it could not reach.

Kinds: ``report``, ``export``, ``simulation`` (curves, summaries, tables of a simulation), ``study`` (a sibling
study folder of the same simulation), ``derived`` (a cache: re-computable data derived from the images).
A folder is purged whole (for a ``study``: like the study itself, its ``models/`` only with ``--models``).
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from medwb.errors import StoreError
from medwb.store.layout import StudyLayout
from medwb.store.schema import peek_rows
from medwb.store.values import now

if TYPE_CHECKING:
    from medwb.store.study import Study

KINDS = ("report", "export", "simulation", "study", "derived")


def register_artifacts(study: Study, paths: Iterable[str | Path], kind: str) -> int:
    """Record files or folders the study produced outside its folder (one transaction; re-registering a path
    only updates its kind). Paths inside the study are skipped: a purge removes them anyway. Returns how many
    were recorded."""
    if kind not in KINDS:
        raise StoreError(f"artifact kind {kind!r} is not one of {KINDS}. Fix: pick one of them")
    inside = study.folder.resolve()
    rows = []
    for p in paths:
        p = Path(p).resolve()
        if p == inside or inside in p.parents:
            continue
        rows.append((str(p), kind, now()))
    if rows:
        with study.transaction() as c:
            c.executemany("INSERT INTO artifacts (path, kind, created_at) VALUES (?,?,?) ON CONFLICT(path) DO UPDATE "
                          "SET kind = excluded.kind", rows)
    return len(rows)


def register_artifact(study: Study, path: str | Path, kind: str) -> int:
    """Record one file or folder (see :func:`register_artifacts`)."""
    return register_artifacts(study, [path], kind)


def artifacts(study: Study) -> pd.DataFrame:
    """The registered artifacts, oldest first: path (absolute), kind, created_at."""
    return study.query("SELECT path, kind, created_at FROM artifacts ORDER BY rowid")


def peek_artifacts(folder: str | Path, *, may_write: bool) -> list[tuple[str, str]]:
    """(path, kind) of the artifacts registered in the study in ``folder``, read without opening the study (purge
    reads them before it destroys the database). Empty for a database too old to have the table, or unreadable."""
    return [(str(p), str(k)) for p, k in peek_rows(StudyLayout(folder), "SELECT path, kind FROM artifacts ORDER BY rowid",
                                                   may_write=may_write)]
