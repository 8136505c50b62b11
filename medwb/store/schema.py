"""The study database: its SQL schema, migrations, connections and transactions.

Why SQLite: no server, one file, ACID transactions. The database runs in WAL journal mode with
``synchronous=FULL`` so that a write that returned is on disk, and a process killed at any instant leaves either
the whole write or none of it (tests/store/test_store_crash.py kills a writer 24 times). Every write is one
``BEGIN IMMEDIATE ... COMMIT`` (:func:`transaction`). A new database is built completely in a temporary file and
linked into place (:func:`create_database`), so a killed create never leaves half a study.

An encrypted study's database is a SQLCipher file opened through the same code: every connection comes from
:func:`medwb.store.cipher.connect`, which applies the key (docs/store.md, "Encryption").

Schema versions live in ``PRAGMA user_version`` (and ``study.schema_version``); :data:`MIGRATIONS` upgrades an
older database on open. A new study is built as v1 and migrated up, so every migration runs on every new study.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import pandas as pd

from medwb.atomic import exclusive_lock, fsync_dir
from medwb.errors import MedwbError, StoreError
from medwb.store import cipher
from medwb.store.cipher import DB_ERRORS
from medwb.store.layout import StudyLayout

T = TypeVar("T")

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key

SCHEMA_VERSION = 10

SCHEMA_V1 = """
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



def v1_to_v2(conn: sqlite3.Connection) -> None:
    """v2: remember the cohort's column order; a ``current_labels`` view for people reading the file with sqlite3."""
    if "cohort_columns" not in [r[1] for r in conn.execute("PRAGMA table_info(study)")]:
        conn.execute("ALTER TABLE study ADD COLUMN cohort_columns TEXT NOT NULL DEFAULT '[]'")
    conn.execute("CREATE VIEW IF NOT EXISTS current_labels AS SELECT * FROM labels WHERE id IN "
                 "(SELECT MAX(id) FROM labels WHERE superseded = 0 GROUP BY case_id)")


def v2_to_v3(conn: sqlite3.Connection) -> None:
    """v3: the carved train/val/test splits, persisted (medwb.store.pool), so a resumed study and its report see
    the same split. No foreign key to ``cases``: splits may be saved before the cases are registered."""
    conn.execute("CREATE TABLE IF NOT EXISTS splits (case_id TEXT PRIMARY KEY, "
                 "split TEXT NOT NULL CHECK (split IN ('train', 'val', 'test')), position INTEGER NOT NULL)")


def v3_to_v4(conn: sqlite3.Connection) -> None:
    """v4: several readers on one study (medwb.store.readers): the open round's pre-labels as proposed (so a
    reader's page needs no model) and how many independent reads each case needs, per-(case, reader) leases, and
    adjudications (which label a senior reader's decision is)."""
    conn.execute("CREATE TABLE IF NOT EXISTS proposals (round INTEGER NOT NULL, case_id TEXT NOT NULL, "
                 "position INTEGER NOT NULL, prelabel INTEGER, confidence REAL, model_version TEXT, "
                 "reads INTEGER NOT NULL DEFAULT 1 CHECK (reads >= 1), PRIMARY KEY (round, case_id))")
    conn.execute("CREATE TABLE IF NOT EXISTS leases (case_id TEXT NOT NULL, reader TEXT NOT NULL, round INTEGER, "
                 "leased_at REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (case_id, reader))")
    conn.execute("CREATE TABLE IF NOT EXISTS adjudications (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "case_id TEXT NOT NULL REFERENCES cases(case_id), label_id INTEGER NOT NULL REFERENCES labels(id), "
                 "adjudicator TEXT NOT NULL, created_at TEXT NOT NULL)")


def v4_to_v5(conn: sqlite3.Connection) -> None:
    """v5: the structure model's actions (medwb.store.structure): which cluster a person named, split or merged,
    by whom and when, with the cases a naming pre-labelled, so the names survive a restart."""
    conn.execute("CREATE TABLE IF NOT EXISTS structure_actions (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                 "action TEXT NOT NULL CHECK (action IN ('name', 'split', 'merge')), clusters TEXT NOT NULL, "
                 "value INTEGER, case_ids TEXT NOT NULL DEFAULT '[]', actor TEXT NOT NULL, created_at TEXT NOT NULL)")


def v5_to_v6(conn: sqlite3.Connection) -> None:
    """v6: every file a study produced outside its folder (medwb.store.artifacts: reports, exports, simulation
    outputs, sibling studies, caches), so a purge can remove them all."""
    conn.execute("CREATE TABLE IF NOT EXISTS artifacts (path TEXT PRIMARY KEY, kind TEXT NOT NULL, "
                 "created_at TEXT NOT NULL)")


#: v7's indexes (name, table and columns): what the store's per-case reads and writes look up, so a study of a
#: million cases answers them without scanning a table (docs/store.md, "Indexes")
INDEXES_V7 = (
    ("labels_current", "labels(superseded, case_id, annotator)"),  # current labels: latest, per reader, counts
    ("label_history_case", "label_history(case_id)"),  # retract_label reads the case's history
    ("review_queue_case", "review_queue(case_id, resolved_at)"),  # every human label resolves its case's entries
    ("adjudications_case", "adjudications(case_id)"),  # labels(latest=True) asks each case for its adjudication
    ("adjudications_label", "adjudications(label_id)"),
    ("proposals_case", "proposals(case_id)"),  # retake_case, a lease's proposal
    ("leases_expires", "leases(expires_at)"),  # every claim clears the expired leases
    ("verdicts_case", "verdicts(case_id)"),
)


def v6_to_v7(conn: sqlite3.Connection) -> None:
    """v7: indexes for a study of a million cases (issue 15): no per-case read or write scans a table."""
    for name, on in INDEXES_V7:
        conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON {on}")


def v7_to_v8(conn: sqlite3.Connection) -> None:
    """v8: the model's predicted masks of a segmentation round's proposed cases (medwb.store.predicted_masks),
    each with the round and the model version that predicted it: a reader's page in ``medwb review`` has no model,
    and without them its mask editor started empty."""
    conn.execute("CREATE TABLE IF NOT EXISTS predicted_masks (round INTEGER NOT NULL, "
                 "case_id TEXT NOT NULL REFERENCES cases(case_id), mask_path TEXT NOT NULL, "
                 "model_version TEXT NOT NULL REFERENCES models(version), created_at TEXT NOT NULL, "
                 "PRIMARY KEY (round, case_id))")


def v8_to_v9(conn: sqlite3.Connection) -> None:
    """v9: the model's class probabilities (MC-dropout mean and spread per class) and saliency map of a
    classification round's proposed cases (medwb.store.class_evidence), with the round and the model version: a
    reader's page in ``medwb review`` has no model, and without them it showed a class and one number."""
    conn.execute("CREATE TABLE IF NOT EXISTS class_evidence (round INTEGER NOT NULL, "
                 "case_id TEXT NOT NULL REFERENCES cases(case_id), mean TEXT NOT NULL, std TEXT NOT NULL, "
                 "passes INTEGER NOT NULL, map_path TEXT, map_class INTEGER, "
                 "model_version TEXT NOT NULL REFERENCES models(version), "
                 "created_at TEXT NOT NULL, PRIMARY KEY (round, case_id))")


def v9_to_v10(conn: sqlite3.Connection) -> None:
    """v10: a predicted mask may come from a label-free producer (the structure model's ellipse pre-label of a
    first round, before any model; medwb.al.prelabels.save_label_free_masks): ``producer`` says what made it
    ("model", or "structure:<kind>" with no model version). SQLite cannot drop a NOT NULL: the table is rebuilt."""
    conn.execute("CREATE TABLE predicted_masks_v10 (round INTEGER NOT NULL, "
                 "case_id TEXT NOT NULL REFERENCES cases(case_id), mask_path TEXT NOT NULL, "
                 "model_version TEXT REFERENCES models(version), producer TEXT NOT NULL DEFAULT 'model', "
                 "created_at TEXT NOT NULL, PRIMARY KEY (round, case_id), "
                 "CHECK ((producer = 'model') = (model_version IS NOT NULL)))")
    conn.execute("INSERT INTO predicted_masks_v10 (round, case_id, mask_path, model_version, producer, created_at) "
                 "SELECT round, case_id, mask_path, model_version, 'model', created_at FROM predicted_masks")
    conn.execute("DROP TABLE predicted_masks")
    conn.execute("ALTER TABLE predicted_masks_v10 RENAME TO predicted_masks")


#: every column (``table.column``) that holds a file's path (relative to the study folder when inside it, else absolute): what an
#: encryption of a plain study rewrites when it gives the files their pseudonymous names (medwb.store.convert)
PATH_COLUMNS = ("labels.mask_path", "label_history.from_mask", "label_history.to_mask", "models.checkpoint_path",
                "verdicts.map_path", "predicted_masks.mask_path", "class_evidence.map_path", "artifacts.path")


# Migration hook: MIGRATIONS[v] upgrades a database at schema version v to v + 1 (inside one transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: v1_to_v2, 2: v2_to_v3, 3: v3_to_v4, 4: v4_to_v5,
                                                                5: v5_to_v6, 6: v6_to_v7, 7: v7_to_v8,
                                                                8: v8_to_v9, 9: v9_to_v10}


def migrate(conn: sqlite3.Connection, version: int, db: Path) -> None:
    """Apply MIGRATIONS from ``version`` up to SCHEMA_VERSION inside the caller's open transaction."""
    while version < SCHEMA_VERSION:
        if version not in MIGRATIONS:
            raise StoreError(f"{db}: no migration from schema version {version}. Fix: upgrade medwb")
        MIGRATIONS[version](conn)
        version += 1
        conn.execute("UPDATE study SET schema_version = ?", (version,))
        conn.execute(f"PRAGMA user_version={version}")


#: how long opening a study waits out SQLITE_BUSY that SQLite's busy handler does not cover (seconds)
OPEN_BUSY_SECONDS = 30.0


def retry_busy(step: Callable[[], T]) -> T:
    """Run ``step`` (opening a study's database) again while SQLite answers busy, for up to
    :data:`OPEN_BUSY_SECONDS`. Why: in WAL mode the last connection to close a database takes an exclusive lock to
    clean up the WAL, and a connection that opens meanwhile gets SQLITE_BUSY at once, without the busy handler
    (sqlite.org/wal.html, "Sometimes Queries Return SQLITE_BUSY In WAL Mode"): six processes opening one new
    study at the same moment saw "database is locked" there."""
    deadline = time.monotonic() + OPEN_BUSY_SECONDS
    pause = 0.01
    while True:
        try:
            return step()
        except DB_ERRORS as e:
            if not cipher.busy(e) or time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def connect(db: Path, key: Key | None = None) -> sqlite3.Connection:
    """The store's connection: WAL, synchronous=FULL, foreign keys, 30 s busy timeout; autocommit off
    (``isolation_level=None``: we issue BEGIN IMMEDIATE / COMMIT ourselves, one transaction per write).
    ``key``: an encrypted study's key (SQLCipher). Opening waits out a moment's SQLITE_BUSY (:func:`retry_busy`)."""
    return retry_busy(lambda: _connect_once(db, key))


def _connect_once(db: Path, key: Key | None) -> sqlite3.Connection:
    """:func:`connect` without the retry (a caller that retries a longer opening step, :func:`open_database`)."""
    conn = cipher.connect(db, key, check_same_thread=False)
    try:
        conn.execute("PRAGMA busy_timeout=30000")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
    except BaseException:
        conn.close()
        raise
    return conn


#: SQLite primary result codes of a write the disk refused: SQLITE_IOERR (10; a file-size limit), SQLITE_FULL (13)
WRITE_FAILED = frozenset({10, 13})


def write_refused(e: BaseException) -> bool:
    """Whether ``e`` is SQLite refusing a write to disk (sqlite3 gives the result code; sqlcipher3 only the text)."""
    code = getattr(e, "sqlite_errorcode", None)
    if isinstance(code, int):
        return code & 0xFF in WRITE_FAILED
    return type(e).__name__ == "OperationalError" and any(
        m in str(e) for m in ("database or disk is full", "disk I/O error"))


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: all of it is committed, or none of it (also on a crash)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException as e:
        if conn.in_transaction:
            try:
                conn.execute("ROLLBACK")
            except Exception:  # noqa: BLE001 - SQLite may have rolled back itself (a failed write ends it)
                pass
        if write_refused(e):
            raise StoreError(f"the study database could not be written ({e}): the disk is full, over its quota or "
                             "a file-size limit, or failing. Nothing of this change was saved; the labels stored "
                             "before are intact. Fix: free space on the study's disk and repeat the last action"
                             ) from e
        raise


def query_df(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
    """The rows of a query as a DataFrame with the query's column names."""
    cur = conn.execute(sql, params)
    cols = [d[0] for d in cur.description]
    return pd.DataFrame(cur.fetchall(), columns=cols)


def half_created(db: Path, key: Key | None = None) -> bool:
    """True only for a database that provably holds nothing: a 0-byte file, or a readable SQLite file with no
    table at all (what a create killed inside its transaction leaves). Anything else, including an unreadable
    file, is treated as a study and never discarded."""
    try:
        if db.stat().st_size == 0:
            wal = db.with_name(db.name + "-wal")
            return not wal.exists() or wal.stat().st_size == 0 or _no_tables(db, key)
    except OSError:
        return False
    return _no_tables(db, key)


def _no_tables(db: Path, key: Key | None) -> bool:
    try:
        conn = cipher.connect(db, key)
        try:
            return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0
        finally:
            conn.close()
    except (*DB_ERRORS, MedwbError):
        return False


def remove_stale_creations(layout: StudyLayout) -> None:
    """Delete temporary databases of creates whose process no longer runs (killed mid-create)."""
    for p, pid in layout.creating_dbs():
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


def _build(tmp: Path, study_row: Sequence[Any], key: Key | None, db: Path) -> None:
    """Write the complete new database into ``tmp`` (rollback journal, no WAL sidecars) and fsync it."""
    conn = cipher.connect(tmp, key)
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("BEGIN IMMEDIATE")
        for stmt in SCHEMA_V1.split(";"):
            if stmt.strip():
                conn.execute(stmt)
        conn.execute(
            "INSERT INTO study (id, name, dataset_path, task, classes, created_at, medwb_version, schema_version) "
            "VALUES (1, ?, ?, ?, ?, ?, ?, ?)", (*study_row, 1))
        conn.execute("PRAGMA user_version=1")
        migrate(conn, 1, db)
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


def create_database(layout: StudyLayout, study_row: Sequence[Any], key: Key | None = None) -> sqlite3.Connection:
    """Build a new database atomically and return the store's connection to it.

    ``study_row``: (name, dataset_path, task, classes JSON, created_at, medwb_version) of the one ``study`` row.
    The database is built completely in a temporary file beside it (rollback journal, no WAL sidecars), fsynced,
    and only then linked into place. A kill at any point leaves no database or a complete one; os.link refuses to
    overwrite a study that another process created meanwhile. Creators of one folder take turns (its create lock),
    so one never removes a database another has just linked in as if it were a killed create's leftover.
    ``key``: the study is encrypted (SQLCipher) from its first byte; its marker is written before the database."""
    folder, db = layout.folder, layout.db
    meanwhile = StoreError(f"{db}: a study was created here meanwhile. Fix: use Study.open({str(folder)!r})")
    with exclusive_lock(layout.create_lock):  # creators take turns: none may delete or shadow a database another just linked
        remove_stale_creations(layout)
        if db.exists():
            if not half_created(db, key):
                raise meanwhile
            for p in layout.db_files():  # a half-created database from a killed create of an older medwb: no data
                p.unlink(missing_ok=True)
        if key is not None:  # the marker first: a database without it would be unreadable to every reader
            cipher.write_marker(layout, key)
        else:  # a marker left by a create killed before its database existed must not claim this study
            layout.encryption_marker.unlink(missing_ok=True)
        tmp = layout.creating_db(os.getpid(), os.urandom(4).hex())
        try:
            _build(tmp, study_row, key, db)
            try:
                os.link(tmp, db)  # atomic and never clobbers an existing study
            except FileExistsError:
                raise meanwhile from None
            except OSError:  # a file system without hard links
                if db.exists():
                    raise meanwhile from None
                os.replace(tmp, db)
            fsync_dir(folder)
        finally:
            tmp.unlink(missing_ok=True)
    return connect(db, key)


def open_database(layout: StudyLayout, key: Key | None = None) -> sqlite3.Connection:
    """Connect to an existing study database, upgrading its schema through MIGRATIONS if it is older.
    ``key``: the encrypted study's key, already checked against its marker (:func:`medwb.store.cipher.study_key`)."""
    db = layout.db
    if not db.is_file():
        raise StoreError(f"{db}: no study here. Fix: check the folder, or make one with Study.create(...)")
    def probe() -> tuple[sqlite3.Connection, int]:  # retried as a whole: the connection and its first reads
        conn = _connect_once(db, key)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'study'").fetchone() is None:
                raise sqlite3.DatabaseError("no 'study' table")
        except BaseException:
            conn.close()
            raise
        return conn, version

    try:
        conn, version = retry_busy(probe)
    except DB_ERRORS as e:
        if half_created(db, key):
            raise StoreError(f"{db}: an empty, half-created study database (a Study.create was interrupted); it "
                             "holds no data. Fix: run Study.create(...) on this folder again (it replaces the "
                             "empty file)") from e
        if key is None and not _sqlite_header(db):
            raise StoreError(f"{db}: not a medwb study database ({e}); an encrypted study whose marker "
                             f"{layout.encryption_marker.name} was removed looks like this. Fix: restore the marker "
                             "(or the study folder) from a backup") from e
        raise StoreError(f"{db}: not a medwb study database ({e}). Fix: restore the study folder from a backup") from e
    if version > SCHEMA_VERSION:
        conn.close()
        raise StoreError(f"{db}: schema version {version} is newer than this medwb ({SCHEMA_VERSION}). "
                         "Fix: upgrade medwb")
    if version < SCHEMA_VERSION:
        try:
            conn.execute("BEGIN IMMEDIATE")
            migrate(conn, version, db)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
            raise
    return conn


def _sqlite_header(db: Path) -> bool:
    """Whether ``db`` starts like a plain SQLite file (an encrypted one is random bytes from the first byte)."""
    try:
        with open(db, "rb") as f:
            return f.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


def peek_rows(layout: StudyLayout, sql: str, *, may_write: bool) -> list[tuple[Any, ...]]:
    """The rows of a read query on a study database, read without opening the study (purge uses it).
    ``immutable=1`` reads without creating -wal/-shm files; when a non-empty WAL holds writes not yet folded into
    the file, a caller that may write (``may_write``) reads with ``mode=ro``, which sees them. An encrypted study
    is read with its key when one is at hand. Empty when unreadable (or encrypted and no key)."""
    db = layout.db
    if not db.is_file():
        return []
    key = cipher.key_or_none(layout)
    wal = db.with_name(db.name + "-wal")
    pending = may_write and wal.is_file() and wal.stat().st_size > 0
    for mode in ((["mode=ro"] if pending else []) + ["immutable=1"] + (["mode=ro"] if may_write else [])):
        try:
            con = cipher.connect(db, key, uri=mode)
            try:
                return con.execute(sql).fetchall()
            finally:
                con.close()
        except (*DB_ERRORS, MedwbError):
            continue
    return []


def peek_dataset_path(layout: StudyLayout, *, may_write: bool) -> str | None:
    """The dataset path recorded in a study database, read without opening the study (purge reports it).
    None when unreadable."""
    rows = peek_rows(layout, "SELECT dataset_path FROM study WHERE id = 1", may_write=may_write)
    return str(rows[0][0]) if rows and rows[0][0] else None
