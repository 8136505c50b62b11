"""The study's encryption: whether a study is encrypted, its key, and THE one function that opens its database.

Why: a study's database holds labels, annotators and case ids (DICOM case ids are PatientID + study date-time),
so encryption at rest must cover the database itself, not only the files beside it. With a key configured
(``Study.create(key=...)``, ``$MEDWB_KEY_FILE`` or ``$MEDWB_KEY``) a new study's database is a SQLCipher 4 file
(every page AES-256 encrypted and HMAC-SHA512 authenticated, the WAL too), opened with a raw 256-bit key derived
from the medwb key (HKDF, purpose ``sqlcipher``), so the same WAL / busy-timeout / ``BEGIN IMMEDIATE`` store runs
unchanged on it.

How a study knows it is encrypted: the plaintext marker ``encryption.json`` (its name: :mod:`medwb.store.layout`)
names the ciphers and holds a *key check* (an HMAC under a key derived for that purpose, never the key), so a
missing or wrong key is refused by name before SQLite sees the file. Studies without the marker are plain SQLite,
opened with the standard library as before.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path
from typing import Any

from medwb.atomic import atomic_write_bytes
from medwb.errors import CryptoError, MedwbError, StoreError
from medwb.privacy import crypto
from medwb.store.layout import ENCRYPTION_MARKER, StudyLayout

try:  # the SQLCipher build of the sqlite3 module (package sqlcipher3-binary; Linux x86-64 wheels)
    from sqlcipher3 import dbapi2 as sqlcipher
except ImportError:  # pragma: no cover - plain studies work without it
    sqlcipher = None

MARKER_FORMAT = "medwb-study-encryption-1"
DB_CIPHER = "SQLCipher 4 (AES-256-CBC pages, HMAC-SHA512), raw key = HKDF(medwb key, 'sqlcipher')"
FILE_CIPHER = "AES-256-GCM, 1 MiB chunks (medwb.privacy.crypto, header MEDWBENC1)"
NAME_CIPHER = "HMAC-SHA256 pseudonyms of case ids and annotators, key = HKDF(medwb key, 'study-file-names')"
#: what a failed database call raises, whichever module opened it (sqlite3 for plain studies, sqlcipher3 otherwise)
DB_ERRORS: tuple[type[Exception], ...] = (sqlite3.Error,) + ((sqlcipher.Error,) if sqlcipher is not None else ())

#: keys of the studies this process opened, by resolved folder: the file helpers (medwb.store.files) find the key
#: of a path inside an encrypted study here, so loaders given only a path (masks, checkpoints) need no key argument
UNLOCKED: dict[str, crypto.Key] = {}

NO_KEY_FIX = ("Fix: export MEDWB_KEY_FILE=<path of the study's key file> (or MEDWB_KEY=<key>, or "
              "MEDWB_KEY_KEYRING=<service> for a key in the OS keyring), or pass "
              "key=medwb.privacy.crypto.load_key(PATH) to Study.open")


def is_encrypted(layout: StudyLayout) -> bool:
    """Whether the study in ``layout.folder`` is encrypted (its marker file exists)."""
    return layout.encryption_marker.is_file()


def key_check(key: crypto.Key) -> str:
    """The value the marker keeps to recognise the study's key (an HMAC of a constant; reveals nothing of the key)."""
    return hmac.new(key.derive("study-key-check"), b"medwb-study", hashlib.sha256).hexdigest()[:32]


def name_key(key: crypto.Key | None) -> bytes | None:
    """The key of the study's file-name pseudonyms (:meth:`StudyLayout.case_name`), None for a plain study."""
    return None if key is None else key.derive("study-file-names")


def keyed_layout(folder: str | Path, key: crypto.Key | None) -> StudyLayout:
    """The layout of a study whose key is ``key`` (None: plain, readable file names)."""
    return StudyLayout(folder, name_key(key))


def write_marker(layout: StudyLayout, key: crypto.Key) -> None:
    """Mark the (new) study as encrypted with ``key``: cipher names and the key check, in plaintext."""
    doc = {"format": MARKER_FORMAT, "database": DB_CIPHER, "files": FILE_CIPHER, "file_names": NAME_CIPHER,
           "key_check": key_check(key)}
    atomic_write_bytes(layout.encryption_marker, (json.dumps(doc, indent=1) + "\n").encode())


def read_marker(layout: StudyLayout) -> dict[str, Any]:
    p = layout.encryption_marker
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or doc.get("format") != MARKER_FORMAT or not doc.get("key_check"):
            raise ValueError("not a medwb encryption marker")
    except (OSError, ValueError) as e:
        raise StoreError(f"{layout.folder}: the encryption marker {p.name} is unreadable ({e}). Fix: restore it "
                         "from a backup of the study folder") from e
    return doc


def key_for_new_study(key: crypto.Key | str | Path | bool | None) -> crypto.Key | None:
    """The key a new study is encrypted with: ``key`` (a Key, or a key file's path), else the configured one
    (``$MEDWB_KEY_FILE`` / ``$MEDWB_KEY`` / ``$MEDWB_KEY_KEYRING``); ``False`` or no key configured: a plain
    study."""
    if key is False:
        return None
    if isinstance(key, crypto.Key):
        return key
    if key is not None and key is not True:
        return crypto.load_key(key)
    if key is True or crypto.key_configured():
        return crypto.load_key()
    return None


def study_key(layout: StudyLayout, key: crypto.Key | None = None) -> crypto.Key | None:
    """The key of the study in ``layout.folder``: None for a plain study; else ``key``, or the one this process
    opened it with, or the configured one, checked against the marker. A missing or wrong key is a
    :class:`CryptoError` naming the study and the fix (never SQLite's 'file is not a database')."""
    if layout.encrypting_journal.is_file():
        raise StoreError(f"{layout.folder}: the conversion of this study into an encrypted one was interrupted "
                         f"({layout.encrypting_journal.name}); nothing is lost, but the study is half converted. "
                         "Fix: run `medwb encrypt STUDY` again with the same key: it finishes the conversion")
    if not is_encrypted(layout):
        return None
    want = read_marker(layout)["key_check"]
    if key is None:
        key = UNLOCKED.get(str(layout.folder.resolve()))
    if key is None:
        if not crypto.key_configured():
            raise CryptoError(f"{layout.folder}: this study is encrypted ({ENCRYPTION_MARKER}) and no key is "
                              f"configured. {NO_KEY_FIX}")
        key = crypto.load_key()
    if not hmac.compare_digest(key_check(key), str(want)):
        raise CryptoError(f"{layout.folder}: the key from {key.source} is not this study's key (the study is "
                          f"encrypted; its {ENCRYPTION_MARKER} names another key). {NO_KEY_FIX}")
    return key


def remember(layout: StudyLayout, key: crypto.Key | None) -> None:
    """Keep an opened study's key for this process (see :data:`UNLOCKED`)."""
    if key is not None:
        UNLOCKED[str(layout.folder.resolve())] = key


def owning_study(path: str | Path) -> StudyLayout | None:
    """The encrypted study whose folder holds ``path`` (the nearest enclosing folder with a marker), else None."""
    p = Path(path).resolve()
    for folder in p.parents:
        lay = StudyLayout(folder)
        if lay.encryption_marker.is_file():
            return lay
    return None


#: SQLite's texts for SQLITE_BUSY ("locked" / "busy"), the same from sqlite3 and sqlcipher3
BUSY_MESSAGES = ("database is locked", "database is busy")


def busy(e: BaseException) -> bool:
    """Whether ``e`` is SQLite's "database is locked" / "busy": another connection of the same study holds a lock
    for a moment."""
    return isinstance(e, DB_ERRORS) and any(m in str(e) for m in BUSY_MESSAGES)


def connect(db: Path, key: crypto.Key | None, *, uri: str | None = None, timeout: float = 30.0,
            check_same_thread: bool = True) -> Any:
    """THE function that opens a study database (the store's connection, creation, probes and read-only peeks all
    come here): plain ``sqlite3`` without a key, SQLCipher keyed with ``HKDF(key, 'sqlcipher')`` with one.
    ``uri``: SQLite URI parameters (``mode=ro``, ``immutable=1``). Autocommit is off (``isolation_level=None``):
    callers issue ``BEGIN IMMEDIATE`` / ``COMMIT`` themselves."""
    target = f"file:{db}?{uri}" if uri else str(db)
    if key is None:
        return sqlite3.connect(target, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread,
                               uri=uri is not None)
    if sqlcipher is None:
        raise StoreError(f"{db.parent}: the study is encrypted, and this Python has no SQLCipher module. Fix: "
                         "pip install sqlcipher3-binary==0.6.0 (a medwb dependency on Linux x86-64)")
    conn = sqlcipher.connect(target, timeout=timeout, isolation_level=None, check_same_thread=check_same_thread,
                             uri=uri is not None)
    try:
        conn.execute(f"PRAGMA key = \"x'{key.derive('sqlcipher').hex()}'\"")  # must be the first statement
        conn.execute("PRAGMA temp_store = MEMORY")  # sorts and temporary tables never spill plaintext to disk
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlcipher.DatabaseError as e:
        conn.close()
        if busy(e):
            raise  # another connection's moment of locking (schema.retry_busy waits it out), not a wrong key
        raise CryptoError(f"{db.parent}: the study database cannot be decrypted with the key from {key.source} "
                          f"({e}): a wrong key, or a damaged database. {NO_KEY_FIX}; or restore the study from a "
                          "backup") from None
    return conn


def key_or_none(layout: StudyLayout) -> crypto.Key | None:
    """The study's key when it can be had (see :func:`study_key`), else None: for readers that must not fail
    (purge reading what a study registered)."""
    try:
        return study_key(layout)
    except MedwbError:
        return None
