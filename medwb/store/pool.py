"""The pool's carved splits, persisted: which case is train, val or test for this study.

Why in the store: a split carved from the pool (e.g. a validation set drawn from the training cases) must be the
same after a crash, on resume and in the report, so it is saved once in the study database (table ``splits``,
schema v3) and read back from there, never carved again. Saving is idempotent; saving *different* splits into a
study that has some is refused, because every label, model and metric of the study was made against the first.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

from medwb.errors import StoreError

if TYPE_CHECKING:
    from medwb.store.study import Study

#: the split names a carved split may use, in the order they are written
SPLIT_NAMES = ("train", "val", "test")


def save_splits(study: Study, splits: Mapping[str, Sequence[str]]) -> None:
    """Persist the carved splits ``{'train': [...], 'val': [...], 'test': [...]}`` (any subset of the three names)
    in one transaction, each case id with its split and its position in the list.

    Idempotent: the same assignment of cases to splits again is a no-op (the order first saved is kept). A
    different assignment raises :class:`StoreError`: a study keeps the splits it was started with."""
    unknown = sorted(set(splits) - set(SPLIT_NAMES))
    if unknown:
        raise StoreError(f"split names {unknown} are not among {SPLIT_NAMES}. Fix: name the splits 'train', 'val', 'test'")
    rows: list[tuple[str, str, int]] = []
    seen: dict[str, str] = {}
    for name in SPLIT_NAMES:
        for cid in splits.get(name, ()):
            cid = str(cid)
            if cid in seen:
                raise StoreError(f"case {cid!r} is in both the {seen[cid]!r} and the {name!r} split. Fix: carve "
                                 "disjoint splits (each case in exactly one)")
            seen[cid] = name
            rows.append((cid, name, len(rows)))
    with study.transaction() as c:
        saved = dict(c.execute("SELECT case_id, split FROM splits").fetchall())
        if saved:
            if saved != seen:
                moved = sorted(k for k in set(saved) | set(seen) if saved.get(k) != seen.get(k))
                raise StoreError(f"{study.db_path}: this study already has different splits saved ({len(moved)} cases "
                                 f"differ, e.g. {moved[:3]}). Fix: use the saved splits (study.splits()), or start a new "
                                 "study folder for a new split")
            return
        c.executemany("INSERT INTO splits (case_id, split, position) VALUES (?,?,?)", rows)


def load_splits(study: Study) -> dict[str, list[str]] | None:
    """The saved splits as ``{'train': [...], 'val': [...], 'test': [...]}`` (lists in the order saved; a name
    that was not saved maps to an empty list), or None when this study has none."""
    rows = study.conn.execute("SELECT case_id, split FROM splits ORDER BY position").fetchall()
    if not rows:
        return None
    out: dict[str, list[str]] = {name: [] for name in SPLIT_NAMES}
    for cid, name in rows:
        out[name].append(cid)
    return out


def labelled_ids(study: Study, pool_ids: Iterable[str]) -> set[str]:
    """The ids among ``pool_ids`` that have a current (non-superseded) label in the study."""
    labelled = {r[0] for r in study.conn.execute("SELECT DISTINCT case_id FROM labels WHERE superseded = 0")}
    return {str(c) for c in pool_ids if str(c) in labelled}
