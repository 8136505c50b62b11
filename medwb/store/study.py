"""The study store: one folder per study, an embedded SQLite database with full label provenance.

Why SQLite: no server, one file, ACID transactions. The database runs in WAL journal mode with
``synchronous=FULL`` so that a write that returned is on disk, and a process killed at any instant
leaves either the whole write or none of it (tests/test_store_crash.py kills a writer ≥ 20 times).

Folder layout::

    study.sqlite   the database (nothing else writes it)
    models/        checkpoints registered with add_model
    cache/         re-computable data (image caches) - safe to purge
    exports/       CSV / NIfTI exports for other tools
    maps/          explanation and uncertainty maps
    masks/         label masks (pre-labels, accepted and imported masks)

Provenance rules (docs/store.md): every label row says who (annotator), how (source: ``human`` = a person
chose the label, including accepting a pre-label; ``auto`` = the model's pre-label accepted without a person;
``corrected`` = a person changed the model's pre-label), when, how long it took, in which round and from which
model. Labels are never updated in place: a new label *supersedes* the same annotator's earlier label on the
case (and any ``auto`` label), and every change is written to ``label_history`` (from -> to) in the same
transaction. Two human annotators on one case are both kept.
"""
from __future__ import annotations

import json
import math
import os
import re
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medwb.atomic import atomic_write_bytes, fsync_dir
from medwb.errors import DataError, MedwbError, StoreError

SCHEMA_VERSION = 2
DB_NAME = "study.sqlite"
SUBFOLDERS = ("models", "cache", "exports", "maps", "masks")
SOURCES = ("human", "auto", "corrected")
VERDICTS = ("plausible", "partly", "implausible", "cannot_tell")
SPLITS = ("train", "val", "test", "unlabelled")
TASKS = ("classification", "segmentation")

# Columns of the cohort table stored in their own SQL columns; every other cohort column goes to ``meta`` JSON.
_CASE_COLUMNS = ("case_id", "split", "source", "sha256")

_SCHEMA_V1 = """
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    name TEXT NOT NULL,
    dataset_path TEXT NOT NULL,
    task TEXT NOT NULL CHECK (task IN ('classification', 'segmentation')),
    classes TEXT NOT NULL,
    created_at TEXT NOT NULL,
    medwb_version TEXT NOT NULL,
    schema_version INTEGER NOT NULL
);
CREATE TABLE cases (
    case_id TEXT PRIMARY KEY,
    split TEXT NOT NULL,
    source TEXT,
    sha256 TEXT,
    meta TEXT NOT NULL DEFAULT '{}',
    added_at TEXT NOT NULL
);
CREATE TABLE models (
    version TEXT PRIMARY KEY,
    round INTEGER NOT NULL,
    checkpoint_path TEXT NOT NULL,
    metrics TEXT NOT NULL,
    n_labeled INTEGER NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE labels (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    value INTEGER,
    mask_path TEXT,
    source TEXT NOT NULL CHECK (source IN ('human', 'auto', 'corrected')),
    annotator TEXT NOT NULL,
    seconds REAL,
    created_at TEXT NOT NULL,
    round INTEGER,
    model_version TEXT REFERENCES models(version),
    note TEXT NOT NULL DEFAULT '',
    superseded INTEGER NOT NULL DEFAULT 0 CHECK (superseded IN (0, 1)),
    CHECK (value IS NOT NULL OR mask_path IS NOT NULL)
);
CREATE INDEX labels_case ON labels(case_id, superseded);
CREATE TABLE label_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    label_id INTEGER NOT NULL REFERENCES labels(id),
    changed_by TEXT NOT NULL,
    changed_at TEXT NOT NULL,
    from_label_id INTEGER REFERENCES labels(id),
    from_value INTEGER,
    to_value INTEGER,
    from_mask TEXT,
    to_mask TEXT,
    from_source TEXT,
    to_source TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT ''
);
CREATE TABLE rounds (
    number INTEGER PRIMARY KEY,
    strategy TEXT NOT NULL,
    params TEXT NOT NULL,
    selected_ids TEXT NOT NULL,
    scores TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('started', 'finished')),
    started_at TEXT NOT NULL,
    finished_at TEXT
);
CREATE TABLE verdicts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    method TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('plausible', 'partly', 'implausible', 'cannot_tell')),
    reviewer TEXT NOT NULL,
    comment TEXT NOT NULL DEFAULT '',
    map_path TEXT,
    checks TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE TABLE review_queue (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    case_id TEXT NOT NULL REFERENCES cases(case_id),
    reason TEXT NOT NULL,
    source TEXT NOT NULL,
    flagged_by TEXT NOT NULL DEFAULT '',
    seconds REAL,
    created_at TEXT NOT NULL,
    resolved_at TEXT
);
"""



def _v1_to_v2(conn: sqlite3.Connection) -> None:
    """v2: remember the cohort's column order; a ``current_labels`` view for people reading the file with sqlite3."""
    if "cohort_columns" not in [r[1] for r in conn.execute("PRAGMA table_info(study)")]:
        conn.execute("ALTER TABLE study ADD COLUMN cohort_columns TEXT NOT NULL DEFAULT '[]'")
    conn.execute("CREATE VIEW IF NOT EXISTS current_labels AS SELECT * FROM labels WHERE id IN "
                 "(SELECT MAX(id) FROM labels WHERE superseded = 0 GROUP BY case_id)")


# Migration hook: MIGRATIONS[v] upgrades a database at schema version v to v + 1 (inside one transaction).
# A new study is built as v1 and migrated up, so every migration runs on every new study too.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}


def _migrate(conn: sqlite3.Connection, version: int, db: Path) -> None:
    """Apply MIGRATIONS from ``version`` up to SCHEMA_VERSION inside the caller's open transaction."""
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise StoreError(f"{db}: no migration from schema version {version}. Fix: upgrade medwb")
        MIGRATIONS[version](conn)
        version += 1
        conn.execute("UPDATE study SET schema_version = ?", (version,))
        conn.execute(f"PRAGMA user_version={version}")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


def _jsonable(v: Any) -> Any:
    """Plain Python value for JSON: numpy scalars -> int/float, NA/NaN -> None."""
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) else f
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, np.ndarray):
        return [_jsonable(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (pd.Timestamp, datetime)):
        return v.isoformat()
    return v


def _dumps(v: Any) -> str:
    return json.dumps(_jsonable(v), sort_keys=True)


def safe_name(case_id: str) -> str:
    """A file-name-safe form of a case id (exports, masks)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(case_id)).strip("._") or "case"


def read_mask(path: str | Path) -> np.ndarray:
    """Read a mask file (.npy, .npz first array, .nii/.nii.gz, .png/.jpg) as an int64 array, as stored."""
    p = Path(path)
    if not p.is_file():
        raise DataError(p, "mask file not found", "check the path, or re-export the masks from the study")
    name = p.name.lower()
    try:
        if name.endswith(".npy"):
            arr = np.load(p, allow_pickle=False)
        elif name.endswith(".npz"):
            with np.load(p, allow_pickle=False) as z:
                arr = z[z.files[0]]
        elif name.endswith((".nii", ".nii.gz")):
            import nibabel as nib

            arr = np.asarray(nib.load(str(p)).dataobj)
        elif name.endswith((".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")):
            from PIL import Image

            with Image.open(p) as im:
                arr = np.asarray(im.convert("L"))
        else:
            raise DataError(p, "unknown mask file type", "use .npy, .nii.gz or .png")
    except DataError:
        raise
    except Exception as e:  # corrupt file of a known type
        raise DataError(p, f"cannot read mask ({type(e).__name__}: {e})", "re-save the mask as .nii.gz or .npy") from e
    arr = np.asarray(arr)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DataError(p, "mask holds non-integer values", "save label values as integers (0 = background)")
    elif arr.dtype.kind not in "iub":
        raise DataError(p, f"mask has dtype {arr.dtype}", "save label values as integers (0 = background)")
    return arr.astype(np.int64)


def _spatial(mask: np.ndarray, ndim: int | None) -> np.ndarray:
    """Drop a leading channel axis and trailing singleton axes so masks from any tool compare to 'HxW[xD]'."""
    m = np.asarray(mask)
    while m.ndim > (ndim or 2) and m.shape[0] == 1:
        m = m[0]
    while m.ndim > (ndim or 2) and m.shape[-1] == 1:
        m = m[..., 0]
    return m


def _parse_shape(s: Any) -> tuple[int, ...] | None:
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return None
    if isinstance(s, (list, tuple)):
        return tuple(int(x) for x in s)
    parts = re.split(r"[x,\s()]+", str(s).strip())
    try:
        return tuple(int(x) for x in parts if x)
    except ValueError:
        return None


_CREATING_PREFIX = ".study.sqlite.creating-"


def _half_created(db: Path) -> bool:
    """True only for a database that provably holds nothing: a 0-byte file, or a readable SQLite file with no
    table at all (what a create killed inside its transaction leaves). Anything else, including an unreadable
    file, is treated as a study and never discarded."""
    try:
        if db.stat().st_size == 0:
            wal = db.with_name(db.name + "-wal")
            return not wal.exists() or wal.stat().st_size == 0 or _no_tables(db)
    except OSError:
        return False
    return _no_tables(db)


def _no_tables(db: Path) -> bool:
    try:
        conn = sqlite3.connect(str(db), timeout=30.0, isolation_level=None)
        try:
            return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            conn.close()
    except sqlite3.Error:
        return False


def _remove_stale_creations(folder: Path) -> None:
    """Delete temporary databases of creates whose process no longer runs (killed mid-create)."""
    for p in folder.glob(_CREATING_PREFIX + "*"):
        try:
            pid = int(p.name[len(_CREATING_PREFIX):].split("-")[0])
        except ValueError:
            continue
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            for q in (p, p.with_name(p.name + "-journal")):
                q.unlink(missing_ok=True)


class Study:
    """A study folder and its provenance database. Create with :meth:`create`, reopen with :meth:`open`."""

    def __init__(self, folder: str | Path, conn: sqlite3.Connection) -> None:
        self.folder = Path(folder)
        self._conn = conn
        row = conn.execute(
            "SELECT name, dataset_path, task, classes, created_at, medwb_version FROM study WHERE id = 1"
        ).fetchone()
        self.name, self.dataset_path, self.task, classes, self.created_at, self.medwb_version = row
        self.classes: dict[int, str] = {int(k): v for k, v in json.loads(classes).items()}

    # ------------------------------------------------------------------ opening
    @staticmethod
    def _connect(db: Path) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE / COMMIT ourselves, one transaction per write.
        conn = sqlite3.connect(str(db), timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @classmethod
    def create(
        cls,
        folder: str | Path,
        *,
        dataset_path: str | Path,
        task: str,
        classes: Mapping[int, str] | Sequence[str],
        name: str | None = None,
    ) -> Study:
        """Make a new study folder. Refuses a folder that already holds a study (open it instead)."""
        import medwb

        folder = Path(folder)
        db = folder / DB_NAME
        if db.exists() and not _half_created(db):
            raise StoreError(f"{db}: a study already exists here. Fix: use Study.open({str(folder)!r}) or pick a new folder")
        if task not in TASKS:
            raise StoreError(f"task {task!r} is not one of {TASKS}. Fix: pass task='classification' or 'segmentation'")
        if not isinstance(classes, Mapping):
            classes = dict(enumerate(classes))
        try:
            cls_map = {int(k): str(v) for k, v in classes.items()}
        except (TypeError, ValueError) as e:
            raise StoreError(f"classes {classes!r} must map integer label values to names. Fix: e.g. {{0: 'normal', 1: 'pneumonia'}}") from e
        if not cls_map:
            raise StoreError("classes is empty. Fix: pass the dataset's classes, e.g. ds.classes")
        folder.mkdir(parents=True, exist_ok=True)
        for sub in SUBFOLDERS:
            (folder / sub).mkdir(exist_ok=True)
        _remove_stale_creations(folder)
        if db.exists():  # a half-created database from a killed create of an older medwb: it holds no data
            for p in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm"), db.with_name(db.name + "-journal")):
                p.unlink(missing_ok=True)
        # Atomic creation: the database is built completely in a temporary file beside it (rollback journal, no
        # WAL sidecars), fsynced, and only then linked into place. A kill at any point leaves no study.sqlite or
        # a complete one; os.link refuses to overwrite a study that another process created meanwhile.
        tmp = folder / f"{_CREATING_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            conn = sqlite3.connect(str(tmp), timeout=30.0, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=DELETE")
                conn.execute("PRAGMA synchronous=FULL")
                conn.execute("PRAGMA foreign_keys=ON")
                conn.execute("BEGIN IMMEDIATE")
                for stmt in _SCHEMA_V1.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.execute(
                    "INSERT INTO study (id, name, dataset_path, task, classes, created_at, medwb_version, schema_version) "
                    "VALUES (1, ?, ?, ?, ?, ?, ?, ?)",
                    (name or folder.name, str(dataset_path), task, json.dumps({str(k): v for k, v in cls_map.items()}),
                     _now(), medwb.__version__, 1),
                )
                conn.execute("PRAGMA user_version=1")
                _migrate(conn, 1, db)
                conn.execute("COMMIT")
            finally:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, db)  # atomic and never clobbers an existing study
            except FileExistsError:
                raise StoreError(f"{db}: a study was created here meanwhile. Fix: use Study.open({str(folder)!r})") from None
            except OSError:  # a file system without hard links
                if db.exists():
                    raise StoreError(f"{db}: a study was created here meanwhile. Fix: use Study.open({str(folder)!r})") from None
                os.replace(tmp, db)
            fsync_dir(folder)
        finally:
            tmp.unlink(missing_ok=True)
        conn = cls._connect(db)
        return cls(folder, conn)

    @classmethod
    def open(cls, folder: str | Path) -> Study:
        """Open an existing study, upgrading its schema through MIGRATIONS if it is older."""
        folder = Path(folder)
        db = folder / DB_NAME
        if not db.is_file():
            raise StoreError(f"{db}: no study here. Fix: check the folder, or make one with Study.create(...)")
        conn = None
        try:
            conn = cls._connect(db)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'study'").fetchone() is None:
                raise sqlite3.DatabaseError("no 'study' table")
        except sqlite3.DatabaseError as e:
            if conn is not None:
                conn.close()
            if _half_created(db):
                raise StoreError(f"{db}: an empty, half-created study database (a Study.create was interrupted); it "
                                 "holds no data. Fix: run Study.create(...) on this folder again (it replaces the "
                                 "empty file)") from e
            raise StoreError(f"{db}: not a medwb study database ({e}). Fix: restore the study folder from a backup") from e
        if version > SCHEMA_VERSION:
            conn.close()
            raise StoreError(f"{db}: schema version {version} is newer than this medwb ({SCHEMA_VERSION}). "
                             "Fix: upgrade medwb")
        if version < SCHEMA_VERSION:
            try:
                conn.execute("BEGIN IMMEDIATE")
                _migrate(conn, version, db)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                conn.close()
                raise
        for sub in SUBFOLDERS:
            (folder / sub).mkdir(exist_ok=True)
        return cls(folder, conn)

    def close(self) -> None:
        """Close the database connection (a checkpoint folds the WAL into the main file)."""
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error:
            pass
        self._conn.close()

    def __enter__(self) -> Study:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Study({str(self.folder)!r}, task={self.task!r}, classes={self.classes})"

    @property
    def db_path(self) -> Path:
        return self.folder / DB_NAME

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is committed, or none of it (also on a crash)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    def _df(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        cur = self._conn.execute(sql, params)
        cols = [d[0] for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=cols)

    def _rel(self, path: str | Path | None) -> str | None:
        """Store paths inside the study folder relative to it, so a moved study still resolves them."""
        if path is None:
            return None
        p = Path(path)
        try:
            return p.resolve().relative_to(self.folder.resolve()).as_posix()
        except ValueError:
            return str(p.resolve())

    def path(self, stored: str | None) -> Path | None:
        """Absolute path of a path stored in the database."""
        if stored is None or (isinstance(stored, float) and math.isnan(stored)):
            return None
        p = Path(stored)
        return p if p.is_absolute() else self.folder / p

    # ------------------------------------------------------------------ cases
    def add_cases(self, cohort: pd.DataFrame) -> int:
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
        existing = dict(self._conn.execute("SELECT case_id, sha256 FROM cases").fetchall())
        extra = [c for c in cohort.columns if c not in _CASE_COLUMNS]
        rows = []
        now = _now()
        for rec in cohort.to_dict("records"):
            cid = str(rec["case_id"])
            sha = _jsonable(rec.get("sha256"))
            if cid in existing:
                if sha and existing[cid] and sha != existing[cid]:
                    raise StoreError(f"{self.db_path}: case {cid!r} is already in the study with a different sha256. "
                                     "Fix: the image changed on disk; start a new study or restore the original file")
                continue
            meta = {c: _jsonable(rec[c]) for c in extra}
            rows.append((cid, str(rec["split"]), _jsonable(rec.get("source")), sha, _dumps(meta), now))
        cols = json.loads(self._conn.execute("SELECT cohort_columns FROM study").fetchone()[0])
        cols += [str(c) for c in cohort.columns if str(c) not in cols]
        with self._tx() as c:
            c.executemany("INSERT INTO cases (case_id, split, source, sha256, meta, added_at) VALUES (?,?,?,?,?,?)", rows)
            c.execute("UPDATE study SET cohort_columns = ?", (json.dumps(cols),))
        return len(rows)

    def cases(self) -> pd.DataFrame:
        """The cohort table as registered (case_id, split, source, sha256 and every other cohort column).
        Note: a ``label`` column here is the dataset's own label, not a study label (see :meth:`labels`)."""
        df = self._df("SELECT case_id, split, source, sha256, meta FROM cases ORDER BY rowid")
        meta = pd.DataFrame([json.loads(m) for m in df.pop("meta")], index=df.index)
        out = pd.concat([df, meta], axis=1)
        order = json.loads(self._conn.execute("SELECT cohort_columns FROM study").fetchone()[0])
        out = out[[c for c in order if c in out.columns] + [c for c in out.columns if c not in order]]
        for col in out.columns:  # integer columns with gaps (label, ndim, ...) come back as nullable Int64
            vals = out[col].dropna()
            if col == "label" or (len(vals) and out[col].isna().any()
                                  and all(isinstance(v, int) and not isinstance(v, bool) for v in vals)):
                out[col] = pd.array(out[col], dtype="Int64")
        return out

    def _check_case(self, case_id: str) -> None:
        if self._conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (case_id,)).fetchone() is None:
            raise DataError(self.db_path, f"unknown case id {case_id!r}", "add the case with study.add_cases(ds.cohort) first, or check the id")

    def _check_value(self, value: Any, where: str | Path | None = None) -> int:
        try:
            v = int(value)
            if v != value and not isinstance(value, str):
                raise ValueError
        except (TypeError, ValueError):
            raise DataError(where or self.db_path, f"label value {value!r} is not an integer class", f"use one of {sorted(self.classes)}") from None
        if v not in self.classes:
            raise DataError(where or self.db_path, f"label value {v} is not one of the study's classes {self.classes}",
                            f"use one of {sorted(self.classes)}")
        return v

    # ------------------------------------------------------------------ labels
    def add_label(
        self,
        case_id: str,
        *,
        value: int | None = None,
        mask_path: str | Path | None = None,
        source: str = "human",
        annotator: str,
        seconds: float | None = None,
        round: int | None = None,
        model_version: str | None = None,
        note: str = "",
    ) -> int:
        """Record one label decision (one transaction, with its label_history row). Returns the label id.

        Supersedes this annotator's earlier label on the case and any ``auto`` label; other annotators'
        labels stay (agreement is computed from them)."""
        row = self._validate_label(case_id, value, mask_path, source, annotator, seconds, round, model_version, note)
        with self._tx():
            return self._insert_label_in_tx(*row)

    def add_labels(self, records: Iterable[Mapping[str, Any]]) -> list[int]:
        """Many labels at once (keys as in :meth:`add_label`), all validated first, then written in ONE
        transaction: all of them or none (a simulated oracle labelling a batch pays one disk sync, not one each)."""
        rows = [self._validate_label(r["case_id"], r.get("value"), r.get("mask_path"), r.get("source", "human"),
                                     r.get("annotator", ""), r.get("seconds"), r.get("round"), r.get("model_version"),
                                     r.get("note", "")) for r in records]
        with self._tx():
            return [self._insert_label_in_tx(*row) for row in rows]

    def _validate_label(self, case_id: Any, value: Any, mask_path: str | Path | None, source: str, annotator: str,
                        seconds: float | None, round: int | None, model_version: str | None, note: str) -> tuple:
        """Check one label against the study (case, class, source, files, model); returns the row to insert."""
        case_id = str(case_id)
        if source not in SOURCES:
            raise StoreError(f"label source {source!r} is not one of {SOURCES}. Fix: 'human' (a person chose it, "
                             "also when accepting a pre-label), 'auto' (pre-label accepted without a person), "
                             "'corrected' (a person changed the pre-label)")
        if not annotator or not str(annotator).strip():
            raise StoreError("annotator is empty. Fix: pass who made the label (a person's name, or 'model:<version>' for auto labels)")
        self._check_case(case_id)
        if value is None and mask_path is None:
            raise StoreError(f"label for {case_id!r} has neither value nor mask_path. Fix: pass value= (class) or mask_path= (mask file)")
        if self.task == "classification" and value is None:
            raise StoreError(f"{case_id!r}: a classification study needs value=. Fix: pass the class index")
        if value is not None:
            value = self._check_value(value)
        if mask_path is not None and not Path(mask_path).is_file():
            raise DataError(mask_path, "mask file not found", "save the mask first (study.save_mask) and pass its path")
        if seconds is not None and (not np.isfinite(seconds) or seconds < 0):
            raise StoreError(f"seconds={seconds!r} must be a non-negative number. Fix: pass the time spent, or None")
        if model_version is not None:
            if self._conn.execute("SELECT 1 FROM models WHERE version = ?", (model_version,)).fetchone() is None:
                raise StoreError(f"model version {model_version!r} is not registered. Fix: register it with study.add_model(...) first")
        return (case_id, value, self._rel(mask_path), source, str(annotator), None if seconds is None else float(seconds),
                None if round is None else int(round), model_version, str(note or ""))

    def labels(self, latest: bool = True, *, per_annotator: bool = False) -> pd.DataFrame:
        """Label rows. ``latest=True``: the current label of each labelled case (one row per case: its most recent
        non-superseded label). ``per_annotator=True``: the current label of each (case, annotator) - use for
        agreement. ``latest=False``: every row ever written, superseded ones included (``superseded`` column)."""
        base = ("SELECT id AS label_id, case_id, value, mask_path, source, annotator, seconds, created_at, round, "
                "model_version, note, superseded FROM labels")
        if not latest:
            df = self._df(base + " ORDER BY id")
        elif per_annotator:
            df = self._df(base + " WHERE superseded = 0 ORDER BY id")
        else:
            df = self._df(base + " WHERE id IN (SELECT MAX(id) FROM labels WHERE superseded = 0 GROUP BY case_id) ORDER BY id")
        df["value"] = pd.array(df["value"], dtype="Int64")
        df["round"] = pd.array(df["round"], dtype="Int64")
        df["seconds"] = df["seconds"].astype(float)
        df["superseded"] = df["superseded"].astype(bool)
        df["class_name"] = [self.classes.get(int(v)) if v is not pd.NA else None for v in df["value"]]
        df["mask_path"] = [None if p is None else str(self.path(p)) for p in df["mask_path"]]
        return df

    def label_history(self) -> pd.DataFrame:
        """The audit log: every label change - who, when, from -> to (value, mask, source) and why."""
        df = self._df("SELECT * FROM label_history ORDER BY id")
        for col in ("from_value", "to_value", "from_label_id"):
            df[col] = pd.array(df[col], dtype="Int64")
        return df

    def save_mask(self, case_id: str, mask: np.ndarray, *, tag: str) -> Path:
        """Write a label mask into ``masks/`` (int, .npy) and return its path, for add_label(mask_path=...)."""
        self._check_case(str(case_id))
        m = np.asarray(mask)
        if m.dtype.kind == "f" and not np.all(m == np.round(m)):
            raise DataError(None, f"mask for {case_id!r} has non-integer values", "pass label values (argmax), not probabilities")
        m = m.astype(np.int64)
        bad = sorted(set(np.unique(m).tolist()) - set(self.classes))
        if bad:
            raise DataError(None, f"mask for {case_id!r} holds values {bad} outside the classes {self.classes}", "map them to class values")
        out = self.folder / "masks" / f"{safe_name(case_id)}__{safe_name(tag)}.npy"
        _atomic_save_npy(out, m)
        return out

    # ------------------------------------------------------------------ rounds and models
    def start_round(
        self, number: int, strategy: str, params: Mapping[str, Any], selected_ids: Sequence[str], scores: Sequence[float] | np.ndarray
    ) -> None:
        """Record the start of round ``number`` and its selection. Restarting an unfinished round (after a crash)
        replaces its selection; a finished round cannot be restarted."""
        number = int(number)
        selected = [str(s) for s in selected_ids]
        sc = [_jsonable(float(s)) for s in np.asarray(scores, dtype=float).ravel()]
        if len(sc) not in (0, len(selected)):
            raise StoreError(f"round {number}: {len(selected)} selected ids but {len(sc)} scores. Fix: pass one score per id")
        missing = [s for s in selected if self._conn.execute("SELECT 1 FROM cases WHERE case_id = ?", (s,)).fetchone() is None]
        if missing:
            raise DataError(self.db_path, f"round {number} selects unknown case ids {missing[:5]}", "add the cases first")
        row = self._conn.execute("SELECT status FROM rounds WHERE number = ?", (number,)).fetchone()
        if row and row[0] == "finished":
            raise StoreError(f"round {number} is already finished. Fix: start round {self.current_round() + 1}")
        with self._tx() as c:
            c.execute(
                "INSERT OR REPLACE INTO rounds (number, strategy, params, selected_ids, scores, status, started_at, finished_at) "
                "VALUES (?,?,?,?,?, 'started', ?, NULL)",
                (number, str(strategy), _dumps(dict(params)), json.dumps(selected), json.dumps(sc), _now()),
            )

    def finish_round(self, number: int) -> None:
        """Mark a round finished (its labels and model are saved)."""
        with self._tx() as c:
            cur = c.execute("UPDATE rounds SET status = 'finished', finished_at = ? WHERE number = ?", (_now(), int(number)))
            if cur.rowcount == 0:
                raise StoreError(f"round {number} was never started. Fix: call start_round({number}, ...) first")

    def current_round(self) -> int:
        """The highest round number recorded (started or finished), 0 when none. Use :meth:`rounds` for status."""
        row = self._conn.execute("SELECT MAX(number) FROM rounds").fetchone()
        return int(row[0]) if row[0] is not None else 0

    def last_finished_round(self) -> int:
        """The highest finished round, 0 when none: a resumed study continues after it."""
        row = self._conn.execute("SELECT MAX(number) FROM rounds WHERE status = 'finished'").fetchone()
        return int(row[0]) if row[0] is not None else 0

    def rounds(self) -> pd.DataFrame:
        """Rounds with strategy, params (dict), selected_ids (list), scores (list), status and timestamps."""
        df = self._df("SELECT * FROM rounds ORDER BY number")
        for col in ("params", "selected_ids", "scores"):
            df[col] = [json.loads(x) for x in df[col]]
        return df

    def add_model(self, round: int, checkpoint_path: str | Path, metrics: Mapping[str, Any]) -> str:
        """Register a trained model (its checkpoint must exist). Returns its version, e.g. ``r3-v7``."""
        cp = Path(checkpoint_path)
        if not cp.exists():
            raise DataError(cp, "checkpoint not found", "save the checkpoint (medwb.models.save_checkpoint) before registering it")
        with self._tx() as c:
            n = c.execute("SELECT COUNT(*) FROM models").fetchone()[0] + 1
            version = f"r{int(round)}-v{n}"
            n_labeled = c.execute("SELECT COUNT(DISTINCT case_id) FROM labels WHERE superseded = 0").fetchone()[0]
            c.execute(
                "INSERT INTO models (version, round, checkpoint_path, metrics, n_labeled, created_at) VALUES (?,?,?,?,?,?)",
                (version, int(round), self._rel(cp), _dumps(dict(metrics)), int(n_labeled), _now()),
            )
        return version

    def models(self) -> pd.DataFrame:
        """Registered models: version, round, checkpoint_path (absolute), metrics (dict), n_labeled, created_at."""
        df = self._df("SELECT * FROM models ORDER BY created_at, rowid")
        df["metrics"] = [json.loads(x) for x in df["metrics"]]
        df["checkpoint_path"] = [str(self.path(p)) for p in df["checkpoint_path"]]
        return df

    def metrics_curve(self) -> pd.DataFrame:
        """Long table for learning curves: one row per (model, numeric metric): round, model_version, n_labeled,
        metric, value. n_labeled is the number of labelled cases when the model was registered."""
        rows = []
        for rec in self.models().to_dict("records"):
            for k, v in _flatten(rec["metrics"]).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool) and v is not None and math.isfinite(v):
                    rows.append({"round": rec["round"], "model_version": rec["version"], "n_labeled": rec["n_labeled"],
                                 "metric": k, "value": float(v)})
        return pd.DataFrame(rows, columns=["round", "model_version", "n_labeled", "metric", "value"])

    # ------------------------------------------------------------------ XAI verdicts and review queue
    def record_verdict(
        self,
        case_id: str,
        method: str,
        verdict: str,
        reviewer: str,
        comment: str = "",
        map_path: str | Path | None = None,
        checks: Mapping[str, Any] | None = None,
    ) -> int:
        """A reviewer's judgement of an explanation map for a case."""
        case_id = str(case_id)
        self._check_case(case_id)
        if verdict not in VERDICTS:
            raise StoreError(f"verdict {verdict!r} is not one of {VERDICTS}. Fix: pick one of them")
        if not method or not reviewer:
            raise StoreError("method and reviewer must be non-empty. Fix: pass the XAI method name and who reviewed")
        with self._tx() as c:
            cur = c.execute(
                "INSERT INTO verdicts (case_id, method, verdict, reviewer, comment, map_path, checks, created_at) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (case_id, method, verdict, reviewer, comment, self._rel(map_path), _dumps(dict(checks or {})), _now()),
            )
        return int(cur.lastrowid)

    def verdicts(self) -> pd.DataFrame:
        df = self._df("SELECT * FROM verdicts ORDER BY id")
        df["checks"] = [json.loads(x) for x in df["checks"]]
        df["map_path"] = [None if p is None else str(self.path(p)) for p in df["map_path"]]
        return df

    def flag_for_review(
        self, case_ids: Iterable[str], *, reason: str, source: str, flagged_by: str = "", seconds: float | None = None
    ) -> int:
        """Put cases in the review queue for a second look (e.g. source='label_audit'). Cases already open in the
        queue for the same source are not duplicated. Returns how many were added."""
        ids = [str(c) for c in case_ids]
        for cid in ids:
            self._check_case(cid)
        now = _now()
        added = 0
        with self._tx() as c:
            for cid in ids:
                if c.execute("SELECT 1 FROM review_queue WHERE case_id = ? AND source = ? AND resolved_at IS NULL",
                             (cid, source)).fetchone():
                    continue
                c.execute("INSERT INTO review_queue (case_id, reason, source, flagged_by, seconds, created_at) VALUES (?,?,?,?,?,?)",
                          (cid, reason, source, flagged_by, seconds, now))
                added += 1
        return added

    def review_queue(self, open_only: bool = True) -> pd.DataFrame:
        sql = "SELECT * FROM review_queue" + (" WHERE resolved_at IS NULL" if open_only else "") + " ORDER BY id"
        return self._df(sql)

    def resolve_review(self, case_id: str, source: str | None = None) -> int:
        """Close the open review-queue entries of a case (all, or those of one source)."""
        with self._tx() as c:
            if source is None:
                cur = c.execute("UPDATE review_queue SET resolved_at = ? WHERE case_id = ? AND resolved_at IS NULL", (_now(), str(case_id)))
            else:
                cur = c.execute("UPDATE review_queue SET resolved_at = ? WHERE case_id = ? AND source = ? AND resolved_at IS NULL",
                                (_now(), str(case_id), source))
        return int(cur.rowcount)

    # ------------------------------------------------------------------ import / export
    def export_labels_csv(self, path: str | Path, latest: bool = True, *, encrypt_with: Any = None) -> Path:
        """Write the labels (current ones by default) with their provenance to CSV (atomically). With
        ``encrypt_with`` (a ``medwb.privacy.crypto.Key``) the file is AES-GCM encrypted; the plaintext never
        touches the disk."""
        data = self.labels(latest=latest).to_csv(index=False).encode()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if encrypt_with is not None:
            from medwb.privacy.crypto import write_encrypted

            write_encrypted(path, data, encrypt_with)
        else:
            atomic_write_bytes(path, data)
        return path

    def import_labels_csv(self, path: str | Path, annotator: str, source: str = "human", *, decrypt_with: Any = None) -> int:
        """Import class labels from a CSV with columns ``case_id`` and ``value`` (class index) or ``class_name``;
        optional ``seconds``. All rows are validated first and written in one transaction (all or nothing).
        ``decrypt_with``: the ``medwb.privacy.crypto.Key`` of an encrypted CSV (a wrong key is a CryptoError)."""
        path = Path(path)
        if source not in SOURCES:
            raise StoreError(f"label source {source!r} is not one of {SOURCES}. Fix: pick one of them")
        if not path.is_file():
            raise DataError(path, "label CSV not found", "check the path")
        try:
            if decrypt_with is not None:
                import io

                from medwb.privacy.crypto import read_encrypted

                df = pd.read_csv(io.BytesIO(read_encrypted(path, decrypt_with)), dtype=str, keep_default_na=False)
            else:
                df = pd.read_csv(path, dtype=str, keep_default_na=False)
        except MedwbError:
            raise
        except Exception as e:
            raise DataError(path, f"cannot read as CSV ({type(e).__name__}: {e})", "save it as comma-separated text with a header row") from e
        if "case_id" not in df.columns or not ({"value", "class_name", "label"} & set(df.columns)):
            raise DataError(path, f"columns {list(df.columns)} lack case_id and value/class_name",
                            "give the CSV a header 'case_id,value' (class index) or 'case_id,class_name'")
        known = {r[0] for r in self._conn.execute("SELECT case_id FROM cases")}
        by_name = {v: k for k, v in self.classes.items()}
        todo = []
        for i, rec in enumerate(df.to_dict("records"), start=2):
            cid = rec["case_id"].strip()
            if cid not in known:
                raise DataError(path, f"line {i}: unknown case id {cid!r}", "use the study's case ids (study.cases())")
            raw = (rec.get("value") or rec.get("label") or "").strip()
            if raw == "" and rec.get("class_name", "").strip():
                name = rec["class_name"].strip()
                if name not in by_name:
                    raise DataError(path, f"line {i}: class name {name!r} is not one of {list(by_name)}", "fix the class name")
                v = by_name[name]
            else:
                try:
                    v = int(float(raw))
                    if float(raw) != v:
                        raise ValueError
                except (ValueError, OverflowError):
                    raise DataError(path, f"line {i}: value {raw!r} is not a class index", f"use one of {sorted(self.classes)}") from None
                if v not in self.classes:
                    raise DataError(path, f"line {i}: value {v} is not one of the classes {self.classes}", f"use one of {sorted(self.classes)}")
            sec = rec.get("seconds", "").strip()
            try:
                todo.append((cid, v, float(sec) if sec else None))
                if sec and not (0 <= float(sec) < float("inf")):
                    raise ValueError
            except ValueError:
                raise DataError(path, f"line {i}: seconds {sec!r} is not a number", "leave it empty or give seconds") from None
        self.add_labels({"case_id": cid, "value": v, "source": source, "annotator": annotator, "seconds": sec,
                         "note": f"imported from {path.name}"} for cid, v, sec in todo)
        return len(todo)

    def _insert_label_in_tx(self, case_id: str, value: int | None, rel_mask: str | None, source: str, annotator: str,
                            seconds: float | None, round: int | None, model_version: str | None, note: str) -> int:
        c = self._conn
        now = _now()
        prev = c.execute("SELECT id, value, mask_path, source FROM labels WHERE case_id = ? AND superseded = 0 ORDER BY id DESC LIMIT 1",
                         (case_id,)).fetchone()
        cur = c.execute(
            "INSERT INTO labels (case_id, value, mask_path, source, annotator, seconds, created_at, round, model_version, note) "
            "VALUES (?,?,?,?,?,?,?,?,?,?)",
            (case_id, value, rel_mask, source, annotator, seconds, now, round, model_version, note),
        )
        lid = int(cur.lastrowid)
        c.execute("UPDATE labels SET superseded = 1 WHERE case_id = ? AND id != ? AND superseded = 0 AND (annotator = ? OR source = 'auto')",
                  (case_id, lid, annotator))
        c.execute(
            "INSERT INTO label_history (case_id, label_id, changed_by, changed_at, from_label_id, from_value, to_value, from_mask, "
            "to_mask, from_source, to_source, reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (case_id, lid, annotator, now, prev[0] if prev else None, prev[1] if prev else None, value,
             prev[2] if prev else None, rel_mask, prev[3] if prev else None, source, note),
        )
        return lid

    def export_masks_nifti(
        self, folder: str | Path, affine_lookup: Callable[[str], np.ndarray] | None = None, case_ids: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Write the current mask labels as ``<case>.nii.gz`` (spatial axes only; 2D masks as HxWx1) for editing in
        3D Slicer / ITK-SNAP, plus ``manifest.csv`` (file -> case_id, label_id, source). ``affine_lookup(case_id)``
        gives the 4x4 affine (e.g. ``ds.affine``), identity otherwise. Returns the manifest."""
        import nibabel as nib

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        labs = self.labels()
        labs = labs[labs["mask_path"].notna()]
        if case_ids is not None:
            labs = labs[labs["case_id"].isin([str(c) for c in case_ids])]
        ndim = self._ndim()
        rows = []
        for rec in labs.to_dict("records"):
            m = _spatial(read_mask(rec["mask_path"]), ndim)
            if m.ndim == 2:
                m = m[..., None]
            aff = np.eye(4) if affine_lookup is None else np.asarray(affine_lookup(rec["case_id"]), dtype=float)
            if aff.shape != (4, 4):
                raise DataError(None, f"affine for {rec['case_id']!r} has shape {aff.shape}", "affine_lookup must return a 4x4 matrix")
            fname = f"{safe_name(rec['case_id'])}.nii.gz"
            img = nib.Nifti1Image(m.astype(np.int16), aff)
            img.header.set_intent("label")
            tmp = folder / f".{fname}.tmp.nii.gz"
            nib.save(img, str(tmp))
            os.replace(tmp, folder / fname)
            rows.append({"file": fname, "case_id": rec["case_id"], "label_id": rec["label_id"], "source": rec["source"],
                         "annotator": rec["annotator"]})
        manifest = pd.DataFrame(rows, columns=["file", "case_id", "label_id", "source", "annotator"])
        atomic_write_bytes(folder / "manifest.csv", manifest.to_csv(index=False).encode())
        return manifest

    def _ndim(self) -> int | None:
        row = self._conn.execute("SELECT meta FROM cases LIMIT 1").fetchone()
        if row is None:
            return None
        nd = json.loads(row[0]).get("ndim")
        return int(nd) if nd is not None else None

    def import_masks(
        self,
        folder: str | Path,
        annotator: str,
        *,
        source: str | None = None,
        seconds: float | None = None,
        shape_lookup: Callable[[str], Sequence[int]] | None = None,
    ) -> pd.DataFrame:
        """Import edited masks (.nii/.nii.gz/.npy/.png) from a folder, matched to cases by ``manifest.csv`` or by
        file name. Each mask is checked against the case image's shape (cases' ``shape`` column, or
        ``shape_lookup(case_id)``) and its values against the classes; everything is validated before anything is
        written, then written in one transaction. ``source=None`` decides per case: ``corrected`` if the mask
        differs from the model's pre-label it replaces, else ``human``. Returns (case_id, label_id, source, changed)."""
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(folder, "mask folder not found", "pass the folder the edited masks were saved to")
        if source is not None and source not in SOURCES:
            raise StoreError(f"label source {source!r} is not one of {SOURCES}. Fix: pick one of them, or None to decide per case")
        cases = self.cases().set_index("case_id")
        by_safe = {safe_name(c): c for c in cases.index}
        manifest: dict[str, str] = {}
        if (folder / "manifest.csv").is_file():
            mf = pd.read_csv(folder / "manifest.csv", dtype=str)
            manifest = dict(zip(mf["file"], mf["case_id"]))
        files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                       and p.name.lower().endswith((".nii", ".nii.gz", ".npy", ".png")))
        if not files:
            raise DataError(folder, "no mask files (.nii.gz, .nii, .npy, .png)", "save the edited masks into this folder")
        ndim = self._ndim()
        current = self.labels().set_index("case_id")
        todo = []
        for f in files:
            stem = re.sub(r"(\.nii\.gz|\.nii|\.npy|\.png)$", "", f.name, flags=re.I)
            cid = manifest.get(f.name) or (stem if stem in cases.index else by_safe.get(stem))
            if cid is None:
                raise DataError(f, "file name matches no case of the study", "name the file <case_id>.nii.gz or keep the export's manifest.csv")
            m = _spatial(read_mask(f), ndim)
            want = tuple(shape_lookup(cid)) if shape_lookup else _parse_shape(cases.at[cid, "shape"] if "shape" in cases.columns else None)
            if want is None:
                raise StoreError(f"{f}: the study does not know the image shape of {cid!r}. Fix: pass shape_lookup=lambda c: ds.load_image(c).shape[1:]")
            if tuple(m.shape) != tuple(want):
                raise DataError(f, f"mask shape {tuple(m.shape)} differs from the image shape {tuple(want)} of {cid!r}",
                                "save the mask on the case's own image grid (do not crop or resample)")
            bad = sorted(set(np.unique(m).tolist()) - set(self.classes))
            if bad:
                raise DataError(f, f"mask values {bad} are not classes of the study {self.classes}", f"use only {sorted(self.classes)}")
            prev_mask = None
            prev_src = None
            if cid in current.index and current.at[cid, "mask_path"]:
                prev_src = current.at[cid, "source"]
                prev_mask = _spatial(read_mask(current.at[cid, "mask_path"]), ndim)
            changed = prev_mask is None or prev_mask.shape != m.shape or bool(np.any(prev_mask != m))
            if source is not None:
                src = source
            elif prev_src == "auto":  # the mask replaces a model pre-label
                src = "corrected" if changed else "human"
            else:
                src = "human"
            todo.append((cid, f, m, src, changed))
        if not annotator or not str(annotator).strip():
            raise StoreError("annotator is empty. Fix: pass who edited the masks")
        out = []
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
        saved = []
        for cid, f, m, src, changed in todo:
            p = self.folder / "masks" / f"{safe_name(cid)}__{safe_name(annotator)}_{stamp}.npy"
            _atomic_save_npy(p, m)
            saved.append(p)
        with self._tx():
            for (cid, f, m, src, changed), p in zip(todo, saved):
                note = f"imported from {f.name}" + ("" if changed else " (unchanged pre-label)")
                lid = self._insert_label_in_tx(cid, None, self._rel(p), src, annotator, seconds, None, None, note)
                out.append({"case_id": cid, "label_id": lid, "source": src, "changed": changed})
        return pd.DataFrame(out, columns=["case_id", "label_id", "source", "changed"])


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _atomic_save_npy(path: Path, arr: np.ndarray) -> None:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
