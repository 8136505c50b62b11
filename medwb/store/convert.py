"""Converting a plain study into an encrypted one (``medwb encrypt STUDY``): afterwards it is what
``Study.create(key=...)`` would have made.

Why a conversion and not files encrypted in place: a study made before a key was configured holds labels,
annotators and case ids in a plain SQLite database and case ids in its file names; encrypting the files alone left
both in clear. The conversion gives the study everything an encrypted study has: a SQLCipher database (SQLCipher's
``ATTACH ... KEY`` + ``sqlcipher_export`` into a copy beside it, swapped in atomically, schema version and every row
kept), every file under its data folders AES-GCM encrypted under the pseudonymous name the encrypted store gives it
(the database's path columns rewritten to match, NIfTI manifests and explanation indexes too), the marker, and no
plaintext original left (each is overwritten before unlink, :func:`medwb.privacy.purge.shred_file`).

Crash safety: a journal (``encrypting.json``, its key check) is written first, and while it exists no one opens
the study (:func:`medwb.store.cipher.study_key` names the fix: run the conversion again). The plain database is
the source of truth until the swap and is never written; each file's name mapping is a pure function of its old
name and the database's rows, so a re-run recomputes the same plan. Each file goes plain -> ``.<new name>.sealing``
(complete, atomic) -> original shredded -> renamed into place; a re-run first finishes every ``.sealing`` file, and
a file whose encrypted copy already exists is only shredded, never re-read (a kill mid-overwrite leaves garbage
there). A kill at any instant therefore loses nothing, and the next run completes the job.
"""
from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medwb.atomic import atomic_write_bytes, fsync_dir
from medwb.errors import CryptoError, StoreError
from medwb.privacy import crypto
from medwb.store import cipher
from medwb.store.layout import (CACHE, ENCRYPTION_MARKER, MASK_SUFFIX, NIFTI_MANIFEST, PURGE_AUDIT, REGIONS,
                                SUBFOLDERS, StudyLayout, map_stem, safe_name)
from medwb.store.schema import PATH_COLUMNS, SCHEMA_VERSION

if TYPE_CHECKING:
    from medwb.privacy.crypto import Key

JOURNAL_FORMAT = "medwb-study-encrypting-1"
SEALING = ".sealing"
#: suffixes kept whole when a file name's stem is mapped (``.nii.gz`` is one suffix)
SUFFIXES = (".nii.gz", ".nii", ".npy", ".npz", ".png", ".jpg", ".pt", ".csv", ".json", ".html", ".ipynb", ".txt")
#: tables beside files that name them (relative paths), rewritten with the files' new names
NAMING_TABLES = {NIFTI_MANIFEST: ("file",), "index.csv": ("map_npz", "map_nifti", "overlay_png")}
_ROUND_CASE = re.compile(r"^(?P<case>.+)__r(?P<round>\d+)__(?P<hash>[0-9a-f]{8})$")


@dataclass
class Conversion:
    """What :func:`encrypt_study` did: files encrypted (of them renamed), registered files outside the study and
    foreign files beside its database left as they are, and whether it finished an interrupted run."""

    folder: Path
    encrypted: int = 0
    renamed: int = 0
    outside: list[str] = field(default_factory=list)
    beside: list[str] = field(default_factory=list)
    resumed: bool = False

    def to_text(self) -> str:
        lines = [f"{self.folder}: encrypted (SQLCipher database, {self.encrypted} file(s) AES-GCM, {self.renamed} "
                 f"renamed to pseudonyms){' - an interrupted conversion finished' if self.resumed else ''}"]
        if self.outside:
            lines.append(f"{len(self.outside)} file(s) the study registered outside its folder (reports, exports) "
                         "were left as they are: `medwb purge` still removes them; export them again to have "
                         "them encrypted")
        if self.beside:
            lines.append(f"{len(self.beside)} file(s) beside the database that the store did not write were left "
                         f"as they are ({', '.join(self.beside)}): move them out, or encrypt them with the study's "
                         "key if they hold patient data")
        return "\n".join(lines)


class Names:
    """The name the encrypted store gives each file of the plain study: a pure function of the old relative path
    and the database's rows (case ids, annotators), so an interrupted conversion recomputes the same plan."""

    def __init__(self, folder: Path, key: Key, case_ids: Iterable[str], annotators: Iterable[str]) -> None:
        self.plain, self.keyed = StudyLayout(folder), cipher.keyed_layout(folder, key)
        ids = [str(c) for c in case_ids]
        self.tokens: dict[str, str] = {}
        for c in ids:
            for plain in (safe_name(c), map_stem(c), c):
                self.tokens.setdefault(plain, self.keyed.case_name(c))
        for who in annotators:
            self.tokens.setdefault(safe_name(str(who)), self.keyed.person_name(str(who)))
        # the plain store's hashed names, from the layout that makes them (not its hash rule copied here)
        self.by_round_hash = {_ROUND_CASE.match(self.plain.round_case_name(0, c)[: -len(MASK_SUFFIX)])["hash"]: c
                              for c in ids}
        self.by_region_file = {self.plain.regions("", c).name: c for c in ids}

    def name(self, name: str) -> str:
        """A file or folder name with every case id / annotator token (``__``-separated) made a pseudonym."""
        suffix = next((s for s in SUFFIXES if name.endswith(s) and len(name) > len(s)), "")
        stem = name[: len(name) - len(suffix)]
        m = _ROUND_CASE.match(stem)
        if suffix == MASK_SUFFIX and m and m["hash"] in self.by_round_hash:  # predicted masks, saliency
            return self.keyed.round_case_name(int(m["round"]), self.by_round_hash[m["hash"]])
        if stem in self.tokens:
            return self.tokens[stem] + suffix
        return "__".join(self.tokens.get(t, t) for t in stem.split("__")) + suffix

    def rel(self, rel: str) -> str:
        """A path relative to the study folder under the encrypted store's names."""
        parts = Path(rel).parts
        if len(parts) == 4 and parts[:2] == (CACHE, REGIONS) and parts[3].endswith(MASK_SUFFIX):
            case = self.by_region_file.get(parts[3])  # cache/regions/<key>/<hash of the case id>.npy
            if case is not None:
                return self.keyed.regions(parts[2], case).relative_to(self.keyed.folder).as_posix()
        return Path(*[self.name(p) for p in parts]).as_posix()


def encrypt_study(folder: str | Path, key: Key) -> Conversion:
    """Convert the plain study in ``folder`` into an encrypted one with ``key`` (see the module doc); a re-run
    after a kill finishes it. Refuses an encrypted study, a key file inside the study, and another key than the
    one an interrupted conversion started with."""
    lay = StudyLayout(folder)
    if not lay.db.is_file():
        raise StoreError(f"{lay.db}: no study here. Fix: pass the folder of a study (it holds {lay.db.name})")
    crypto.refuse_key_inside(key, lay.folder, "study folder")
    if cipher.sqlcipher is None:
        raise StoreError(f"{lay.folder}: encrypting a study needs the SQLCipher module. Fix: pip install "
                         "sqlcipher3-binary==0.6.0 (a medwb dependency on Linux x86-64)")
    resumed = _start_journal(lay, key)
    res = Conversion(lay.folder, resumed=resumed)
    if _is_plain_db(lay.db):
        conn = cipher.sqlcipher.connect(str(lay.db), isolation_level=None, timeout=30.0)
        try:
            conn.execute("PRAGMA journal_mode=DELETE")  # the WAL folded in: no plain sidecar outlives the swap
            for half in (lay.encrypting_db, lay.encrypting_db.with_name(lay.encrypting_db.name + "-journal")):
                half.unlink(missing_ok=True)  # a copy an earlier run left half-built, and its journal
            conn.execute(f"ATTACH DATABASE ? AS enc KEY \"x'{key.derive('sqlcipher').hex()}'\"",
                         (str(lay.encrypting_db),))
            conn.execute("BEGIN EXCLUSIVE")  # no one reads or writes the plain study until the copy is whole
            names = _names(conn, lay.folder, key)
            moves = _plan_disk_files(lay, names) | _plan_db_files(conn, names)  # a row's exact rule wins
            res.outside = _outside_paths(conn, lay.folder)
            res.beside = _beside(lay)
            _finish_sealed(lay)
            for src, dst in sorted(moves.items()):
                res.encrypted += _seal(lay.folder / src, lay.folder / dst, key, _transform(dst, names))
                res.renamed += src != dst
            _remove_emptied_folders(lay, moves)
            _export(conn, lay, moves, names)
            conn.execute("COMMIT")
            conn.execute("DETACH DATABASE enc")
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            conn.close()
        _swap(lay, key)
    _finish(lay)
    return res


# ---------------------------------------------------------------------------------------------- journal
def _start_journal(lay: StudyLayout, key: Key) -> bool:
    """Write the journal (its key check) before anything changes; returns whether one was there (a re-run)."""
    check = cipher.key_check(key)
    if lay.encrypting_journal.is_file():
        try:
            doc = json.loads(lay.encrypting_journal.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StoreError(f"{lay.encrypting_journal}: the conversion journal is unreadable ({e}). Fix: restore "
                             "the study folder from a backup") from e
        if doc.get("key_check") != check:
            raise CryptoError(f"{lay.folder}: an interrupted conversion of this study started with another key "
                              f"than the one from {key.source}. Fix: run `medwb encrypt` again with that key")
        return True
    if cipher.is_encrypted(lay):
        raise StoreError(f"{lay.folder}: the study is already encrypted ({ENCRYPTION_MARKER}). Fix: nothing to "
                         "do; open it with its key (MEDWB_KEY_FILE, MEDWB_KEY or MEDWB_KEY_KEYRING)")
    if not _is_plain_db(lay.db):
        raise StoreError(f"{lay.db}: not a plain SQLite study database (an encrypted study whose "
                         f"{ENCRYPTION_MARKER} was removed looks like this). Fix: restore the marker or the study "
                         "folder from a backup")
    atomic_write_bytes(lay.encrypting_journal, json.dumps({"format": JOURNAL_FORMAT, "key_check": check}).encode())
    return False


def _is_plain_db(db: Path) -> bool:
    with open(db, "rb") as f:
        return f.read(16) == b"SQLite format 3\x00"


# ---------------------------------------------------------------------------------------------- the plan
def _names(conn: Any, folder: Path, key: Key) -> Names:
    ids = [r[0] for r in conn.execute("SELECT case_id FROM main.cases")]
    people = [r[0] for r in conn.execute("SELECT annotator FROM main.labels UNION SELECT changed_by FROM "
                                         "main.label_history")]
    return Names(folder, key, ids, people)


def _inside(folder: Path, stored: str | None) -> str | None:
    """A stored path as a path relative to the study folder, None when it lies outside (or is empty)."""
    if not stored:
        return None
    p = Path(stored)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(folder.resolve()).as_posix()
    except ValueError:
        return None


def _plan_db_files(conn: Any, names: Names) -> dict[str, str]:
    """Old -> new relative path of every file a row names, by the store's own naming rules where they apply."""
    folder, plain, keyed = names.plain.folder, names.plain, names.keyed
    moves: dict[str, str] = {}

    def add(stored: str | None, want: Path | None = None, keyed_want: Path | None = None) -> None:
        rel = _inside(folder, stored)
        if rel is None or rel in moves:
            return
        exact = want is not None and keyed_want is not None and rel == want.relative_to(folder).as_posix()
        moves[rel] = keyed_want.relative_to(folder).as_posix() if exact else names.rel(rel)

    for lid, case, who, source, rnd, path in conn.execute(
            "SELECT id, case_id, annotator, source, round, mask_path FROM main.labels WHERE mask_path IS NOT NULL"):
        add(path, plain.label_mask(case, who, source, rnd, lid), keyed.label_mask(case, who, source, rnd, lid))
    for rnd, case, path in conn.execute("SELECT round, case_id, mask_path FROM main.predicted_masks"):
        add(path, plain.predicted_mask(rnd, case), keyed.predicted_mask(rnd, case))
    for rnd, case, path in conn.execute("SELECT round, case_id, map_path FROM main.class_evidence"):
        add(path, plain.saliency_map(rnd, case), keyed.saliency_map(rnd, case))
    for table, column in (c.split(".") for c in PATH_COLUMNS):
        for (path,) in conn.execute(f"SELECT {column} FROM main.{table}"):
            add(path)
    return {k: v for k, v in moves.items() if (folder / k).parent.resolve() != folder.resolve()}


def _plan_disk_files(lay: StudyLayout, names: Names) -> dict[str, str]:
    """Old -> new relative path of every other file under the data folders (caches, tagged masks, maps, exports);
    leftover temporary files of killed plain writes are shredded (never referenced, named after case ids)."""
    from medwb.privacy.purge import shred_file

    moves = {}
    for sub in SUBFOLDERS:
        for p in sorted((lay.folder / sub).rglob("*")):
            if not p.is_file() or p.is_symlink() or p.name.endswith(SEALING):
                continue
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                shred_file(p)
                continue
            rel = p.relative_to(lay.folder).as_posix()
            moves[rel] = names.rel(rel)
    return moves


def _beside(lay: StudyLayout) -> list[str]:
    """Files in the study folder itself that are not the store's (a key file someone left there, notes)."""
    own = {p.name for p in lay.db_files()} | {ENCRYPTION_MARKER, lay.encrypting_journal.name, PURGE_AUDIT}
    return sorted(p.name for p in lay.folder.iterdir() if p.is_file() and p.name not in own
                  and not p.name.startswith("."))


def _outside_paths(conn: Any, folder: Path) -> list[str]:
    return [str(p) for (p,) in conn.execute("SELECT path FROM main.artifacts") if _inside(folder, p) is None]


def _transform(dst: str, names: Names) -> Callable[[bytes], bytes] | None:
    """A table that names files beside it (NIfTI manifest, explanation index) gets their new names too."""
    columns = NAMING_TABLES.get(Path(dst).name)
    if columns is None:
        return None

    def rewrite(data: bytes) -> bytes:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8"))))
        if not rows:
            return data
        for row in rows:
            for c in columns:
                if row.get(c):
                    row[c] = names.rel(row[c])
        out = io.StringIO()
        w = csv.DictWriter(out, fieldnames=list(rows[0].keys()), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return out.getvalue().encode("utf-8")

    return rewrite


# ---------------------------------------------------------------------------------------------- the files
def _sealing(dst: Path) -> Path:
    return dst.with_name(f".{dst.name}{SEALING}")


def _sealed(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(len(crypto.MAGIC)) == crypto.MAGIC


def _finish_sealed(lay: StudyLayout) -> None:
    """Put every complete encrypted copy an earlier run left (``.<name>.sealing``) in its place; a plaintext
    still at that place is shredded first."""
    from medwb.privacy.purge import shred_file

    for tmp in sorted(lay.folder.rglob(f".*{SEALING}")):
        dst = tmp.with_name(tmp.name[1: -len(SEALING)])
        if dst.is_file() and not _sealed(dst):
            shred_file(dst)
        os.replace(tmp, dst)
        fsync_dir(dst.parent)


def _seal(src: Path, dst: Path, key: Key, transform: Callable[[bytes], bytes] | None) -> int:
    """``src`` encrypted at ``dst`` (atomic), then ``src`` shredded; returns 1 when it encrypted a file. An
    encrypted ``dst`` that exists already is the truth: ``src`` is a leftover and is only shredded."""
    from medwb.privacy.purge import shred_file

    if src != dst and dst.exists():
        if not _sealed(dst):
            raise StoreError(f"{dst}: a plain file already has the encrypted name of {src.name}. Fix: move it out "
                             "of the study folder and run `medwb encrypt` again")
        if src.exists():
            shred_file(src)
        return 0
    if not src.is_file():
        return 0  # converted by an earlier run (or missing before the conversion)
    data = src.read_bytes()
    if data.startswith(crypto.MAGIC):
        if src == dst:
            return 0
        data = crypto.decrypt_bytes(data, key, name=str(src))
    if transform is not None:
        data = transform(data)
    tmp = _sealing(dst)
    crypto.write_encrypted(tmp, data, key)
    shred_file(src)
    os.replace(tmp, dst)
    fsync_dir(dst.parent)
    return 1


def _remove_emptied_folders(lay: StudyLayout, moves: dict[str, str]) -> None:
    """Folders left empty by renamed files (their names may carry case ids); the study's own folders stay."""
    keep = {lay.folder / s for s in SUBFOLDERS} | {lay.folder}
    for src, dst in moves.items():
        if src == dst:
            continue
        p = (lay.folder / src).parent
        while p not in keep and lay.folder in p.parents:
            try:
                p.rmdir()
            except OSError:
                break
            p = p.parent


# ---------------------------------------------------------------------------------------------- the database
def _export(conn: Any, lay: StudyLayout, moves: dict[str, str], names: Names) -> None:
    """Every table, index, view and row into the attached SQLCipher copy, its path columns under the files' new
    names (the plan's, so the rows and the files agree); then every table's row count is compared."""
    version = conn.execute("PRAGMA main.user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(f"{lay.db}: schema version {version} is newer than this medwb ({SCHEMA_VERSION}). "
                         "Fix: upgrade medwb")
    conn.execute("SELECT sqlcipher_export('enc')")
    conn.execute(f"PRAGMA enc.user_version = {int(version)}")
    tables = {r[0] for r in conn.execute("SELECT name FROM main.sqlite_master WHERE type = 'table'")}
    for table, column in (c.split(".") for c in PATH_COLUMNS):
        if table not in tables:
            continue
        for rowid, stored in conn.execute(f"SELECT rowid, {column} FROM enc.{table}").fetchall():
            rel = _inside(lay.folder, stored)
            if rel is None or Path(rel).parent == Path("."):
                continue
            new = moves.get(rel) or names.rel(rel)
            value = new if not Path(stored).is_absolute() else str(lay.folder / new)
            conn.execute(f"UPDATE enc.{table} SET {column} = ? WHERE rowid = ?", (value, rowid))
    for table in sorted(tables):
        if table.startswith("sqlite_"):
            continue
        a = conn.execute(f'SELECT count(*) FROM main."{table}"').fetchone()[0]
        b = conn.execute(f'SELECT count(*) FROM enc."{table}"').fetchone()[0]
        if a != b:
            raise StoreError(f"{lay.db}: the encrypted copy holds {b} rows of {table}, the study {a}. Fix: run "
                             "`medwb encrypt` again (the plain database is untouched)")


def _swap(lay: StudyLayout, key: Key) -> None:
    """The marker, then the encrypted copy in place of the plain database (atomic); the plain one keeps a second
    name until :func:`_finish` overwrites it."""
    for side in lay.db_files()[1:]:
        if side.exists():
            raise StoreError(f"{side}: the plain database still has a sidecar file, which must not meet the "
                             "encrypted one. Fix: make sure no program has the study open, then run `medwb "
                             "encrypt` again")
    conn = cipher.connect(lay.encrypting_db, key)  # the copy opens with the key before it replaces anything
    conn.close()
    fd = os.open(lay.encrypting_db, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    cipher.write_marker(lay, key)
    lay.plain_db_link.unlink(missing_ok=True)
    os.link(lay.db, lay.plain_db_link)
    os.replace(lay.encrypting_db, lay.db)
    fsync_dir(lay.folder)


def _finish(lay: StudyLayout) -> None:
    """After the swap: shred the plain database's second name, remove the journal."""
    from medwb.privacy.purge import shred_file

    _finish_sealed(lay)
    if lay.plain_db_link.exists():
        shred_file(lay.plain_db_link)
    for p in (lay.encrypting_db, lay.encrypting_db.with_name(lay.encrypting_db.name + "-journal")):
        p.unlink(missing_ok=True)
    if not cipher.is_encrypted(lay):
        raise StoreError(f"{lay.folder}: the database is encrypted but {ENCRYPTION_MARKER} is missing. Fix: "
                         "restore the study folder from a backup")
    lay.encrypting_journal.unlink()
    fsync_dir(lay.folder)
