"""Purge a study: destroy its patient-derived data, keep a record that it was destroyed.

What "the study's data" means (the study folder layout, named only in :mod:`medwb.store.layout`):

* purged: the database (+ ``-wal`` / ``-shm`` / ``-journal``: labels, case ids, carved splits, verdicts, review history),
  ``cache/`` (image caches), ``exports/`` (label exports), ``maps/`` (explanation / uncertainty maps),
  ``masks/`` (label masks), and any other file under the study folder (reports, copies of images, ``.enc`` files);
* kept unless ``include_models``: ``models/`` (checkpoints trained on the data);
* always kept: the audit log ``purge_audit.jsonl``;
* never touched: the source dataset the study was built from (it lives outside the study; its path is reported
  so that whoever owns it can destroy it under their own procedure).

Overwriting: each file is overwritten in place with random bytes, fsync'ed, truncated and unlinked. This defeats
undelete tools on a classic in-place filesystem (ext4 ``data=ordered``, XFS, NTFS). It does NOT guarantee that the
old blocks are gone on SSDs / flash (wear levelling remaps writes), copy-on-write filesystems (btrfs, ZFS, APFS),
``data=journal`` ext4, snapshots, backups or cloud-synced folders. The dependable way there is crypto-erase: keep
the study encrypted at rest (:func:`medwb.privacy.crypto.encrypt_study`) and destroy the key.

The audit log is append-only JSON lines: a ``purge-started`` record (every file: relative path, sha256, size)
written and fsync'ed *before* anything is deleted, then a ``purge-completed`` record. Records form a keyed hash
chain whose key and anchor live outside the study (:mod:`medwb.privacy.audit`, ``medwb audit verify STUDY``).
"""
from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import medwb
from medwb.data.hashing import file_sha256
from medwb.errors import StoreError
from medwb.privacy.audit import append_audit_record, audit_home
from medwb.store import layout
from medwb.store.layout import StudyLayout
from medwb.store.schema import peek_dataset_path

AUDIT_NAME = layout.PURGE_AUDIT
#: any of these in a folder makes it look like a study (purge refuses other folders)
STUDY_MARKERS = (layout.DB_NAME, *layout.SUBFOLDERS, AUDIT_NAME)
_BUF = 1 << 20



def shred_file(path: str | Path) -> bool:
    """Overwrite ``path`` with random bytes (fsync), truncate, unlink. Returns whether the overwrite happened
    (False for a symlink, which is unlinked without touching its target, or when the file cannot be opened for
    writing). See the module docstring for what overwriting can and cannot guarantee."""
    path = Path(path)
    if path.is_symlink():
        path.unlink()
        return False
    overwritten = False
    try:
        size = path.stat().st_size
        with open(path, "r+b", buffering=0) as f:
            left = size
            while left > 0:
                n = min(_BUF, left)
                f.write(os.urandom(n))
                left -= n
            os.fsync(f.fileno())
            f.truncate(0)
            os.fsync(f.fileno())
        overwritten = True
    except PermissionError:
        overwritten = False
    path.unlink()
    return overwritten


@dataclass
class PurgedFile:
    path: str  # relative to the study folder
    sha256: str
    size: int
    overwritten: bool | None = None  # None in a dry run


@dataclass
class PurgeResult:
    """What a purge removed (or, in a dry run, would remove), what it kept, and where the audit record is."""

    study: Path
    dry_run: bool
    include_models: bool
    actor: str
    files: list[PurgedFile] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    source_dataset: str | None = None
    audit_paths: list[Path] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_text(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        lines = [f"medwb purge {'(dry run) ' if self.dry_run else ''}{self.study} by {self.actor}",
                 f"  {verb} {len(self.files)} files, {self.bytes} bytes"
                 + ("" if self.dry_run else f" ({sum(bool(f.overwritten) for f in self.files)} overwritten first)")]
        for f in self.files:
            lines.append(f"  - {f.path}  {f.size} B  sha256 {f.sha256[:16]}...")
        for k in self.kept:
            lines.append(f"  kept: {k}")
        if self.source_dataset:
            lines.append(f"  source dataset NOT purged (outside the study): {self.source_dataset}")
        for p in self.audit_paths:
            lines.append(f"  audit record: {p}")
        for e in self.errors:
            lines.append(f"  ERROR: {e}")
        return "\n".join(lines)


def _plan(study: Path, include_models: bool) -> tuple[list[Path], list[str]]:
    doomed, kept = [], []
    for p in sorted(study.rglob("*")):
        if p.is_dir() and not p.is_symlink():
            continue
        rel = p.relative_to(study)
        if rel.parts == (AUDIT_NAME,):
            kept.append(str(rel))
            continue
        if rel.parts[0] == layout.MODELS and not include_models:
            continue
        doomed.append(p)
    if StudyLayout(study).models.is_dir() and not include_models:
        kept.append(f"{layout.MODELS}/ (pass --models to purge the models trained on this data)")
    return doomed, kept


def purge_study(
    study: str | Path,
    *,
    include_models: bool = False,
    dry_run: bool = False,
    actor: str | None = None,
    audit_copy: str | Path | None = None,
) -> PurgeResult:
    """Destroy a study's data (see the module docstring for exactly what), recording it in an append-only audit log.

    ``audit_copy``: a second audit log (e.g. on another volume, or the data-protection officer's share) that gets
    the same records. ``dry_run`` lists what would go and changes nothing (no audit record either).
    """
    study = Path(study)
    if not study.is_dir():
        raise StoreError(f"{study}: no such study folder. Fix: pass the folder created by Study.create")
    if not any((study / m).exists() for m in STUDY_MARKERS):
        raise StoreError(f"{study}: does not look like a medwb study (no {layout.DB_NAME}, {layout.MODELS}/, "
                         f"{layout.CACHE}/, ...); refusing to delete anything. Fix: pass the study folder itself")
    study = study.resolve()
    if study == Path(study.anchor) or study == Path.home().resolve():
        raise StoreError(f"{study}: refusing to purge a filesystem root or home folder. Fix: pass the study folder")
    home = audit_home().resolve()
    if home == study or study in home.parents:
        raise StoreError(f"{home}: the audit key and anchors would be inside the study they record, and purged with "
                         "it. Fix: point $MEDWB_AUDIT_HOME at a folder outside the study")
    who = actor or os.environ.get("MEDWB_ACTOR") or getpass.getuser()
    res = PurgeResult(study=study, dry_run=dry_run, include_models=include_models, actor=who)
    res.source_dataset = peek_dataset_path(StudyLayout(study), may_write=not dry_run)
    doomed, res.kept = _plan(study, include_models)
    for p in doomed:
        if p.is_symlink():
            res.files.append(PurgedFile(str(p.relative_to(study)), "symlink", 0))
        else:
            res.files.append(PurgedFile(str(p.relative_to(study)), file_sha256(p), p.stat().st_size))
    if dry_run:
        return res

    logs = [study / AUDIT_NAME] + ([Path(audit_copy)] if audit_copy else [])
    base = {"study": str(study), "actor": who, "host": socket.gethostname(), "medwb_version": medwb.__version__,
            "include_models": include_models, "source_dataset_not_purged": res.source_dataset}
    started = datetime.now(timezone.utc).isoformat()
    for log in logs:  # written and fsync'ed before the first byte is destroyed
        append_audit_record(log, {**base, "event": "purge-started", "time": started, "n_files": len(res.files),
                             "bytes": res.bytes, "files": [f.__dict__ for f in res.files]})
    for f in res.files:
        try:
            f.overwritten = shred_file(study / f.path)
        except OSError as e:
            res.errors.append(f"{f.path}: {e}")
    for d in sorted((p for p in study.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        if d.relative_to(study).parts[0] == layout.MODELS and not include_models:
            continue
        try:
            d.rmdir()  # only empty folders; anything left is reported by the check below
        except OSError:
            pass
    left = [f.path for f in res.files if (study / f.path).exists() or (study / f.path).is_symlink()]
    res.errors.extend(f"{p}: still present after purge" for p in left if not any(p in e for e in res.errors))
    for log in logs:
        append_audit_record(log, {**base, "event": "purge-completed", "time": datetime.now(timezone.utc).isoformat(),
                             "started": started, "n_removed": len(res.files) - len(left),
                             "n_overwritten": sum(bool(f.overwritten) for f in res.files), "errors": res.errors})
    res.audit_paths = logs
    if res.errors:
        raise StoreError(f"{study}: purge incomplete: {'; '.join(res.errors)}. Fix: check permissions and run "
                         "`medwb purge` again (the audit log records both runs)")
    return res
