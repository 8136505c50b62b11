"""Purge a study: destroy its patient-derived data, keep a record that it was destroyed.

What "the study's data" means (the study folder layout, named only in :mod:`medwb.store.layout`):

* purged: the database (+ ``-wal`` / ``-shm`` / ``-journal``: labels, case ids, carved splits, verdicts, review history),
  ``cache/`` (image caches), ``exports/`` (label exports), ``maps/`` (explanation / uncertainty maps),
  ``masks/`` (label masks), and any other file under the study folder (reports, copies of images, ``.enc`` files);
* kept unless ``include_models``: ``models/`` (checkpoints trained on the data);
* always kept: the audit log ``purge_audit.jsonl``;
* purged too, outside the folder: every artifact registered in the study (:mod:`medwb.store.artifacts`: reports,
  label exports, a simulation's curves / summaries / sibling studies / shared cache) and the statistics cache
  of the study's dataset (:func:`medwb.data.cache.stats_cache_files`); a registered path that is not there is
  reported as not reached;
* never touched: the source dataset the study was built from (it lives outside the study; its path is reported
  so that whoever owns it can destroy it under their own procedure).

Overwriting: each file is overwritten in place with random bytes, fsync'ed, truncated and unlinked. This defeats
undelete tools on a classic in-place filesystem (ext4 ``data=ordered``, XFS, NTFS). It does NOT guarantee that the
old blocks are gone on SSDs / flash (wear levelling remaps writes), copy-on-write filesystems (btrfs, ZFS, APFS),
``data=journal`` ext4, snapshots, backups or cloud-synced folders. The dependable way there is crypto-erase: keep
the study encrypted at rest (created with a key, or converted: :func:`medwb.store.convert.encrypt_study`)
and destroy the key.

The audit log is append-only JSON lines: a ``purge-started`` record (every file: relative path, sha256, size)
written and fsync'ed *before* anything is deleted, then a ``purge-completed`` record. Records form a keyed hash
chain whose key and anchor live outside the study (:mod:`medwb.privacy.audit`, ``medwb audit verify STUDY``).
No path outside the study is written in clear: the study, the source dataset and each purged file outside the
study appear as keyed pseudonyms (:func:`medwb.privacy.audit.pseudonym`).
"""
from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import medwb
from medwb.data.cache import stats_cache_files
from medwb.data.hashing import file_sha256
from medwb.errors import StoreError
from medwb.privacy.audit import append_audit_record, audit_home, pseudonym
from medwb.store import layout
from medwb.store.artifacts import peek_artifacts
from medwb.store.layout import StudyLayout
from medwb.store.cipher import is_encrypted, key_or_none
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
    path: str  # relative to the study folder (absolute for a file outside it)
    sha256: str
    size: int
    overwritten: bool | None = None  # None in a dry run
    kind: str = "study"  # outside the study: the artifact kind (report, export, simulation, study, derived)


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
    #: files outside the study folder that it produced (registered artifacts, the dataset's statistics cache)
    external: list[PurgedFile] = field(default_factory=list)
    #: registered artifacts that could not be reached (not there, or refused as unsafe to delete)
    unreached: list[str] = field(default_factory=list)

    @property
    def bytes(self) -> int:
        return sum(f.size for f in self.files) + sum(f.size for f in self.external)

    def to_text(self) -> str:
        verb = "would remove" if self.dry_run else "removed"
        every = self.files + self.external
        lines = [f"medwb purge {'(dry run) ' if self.dry_run else ''}{self.study} by {self.actor}",
                 f"  {verb} {len(every)} files ({len(self.external)} outside the study folder), {self.bytes} bytes"
                 + ("" if self.dry_run else f" ({sum(bool(f.overwritten) for f in every)} overwritten first)")]
        for f in every:
            where = "" if f.kind == "study" else f"  [{f.kind}, outside the study]"
            lines.append(f"  - {f.path}  {f.size} B  sha256 {f.sha256[:16]}...{where}")
        for u in self.unreached:
            lines.append(f"  NOT REACHED: {u}")
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


def _unsafe_folder(p: Path, study: Path) -> bool:
    """A registered folder purge must never empty: a filesystem root, the home folder, the working folder, or a
    folder holding the study (a damaged or forged registration)."""
    return p in (Path(p.anchor), Path.home().resolve(), Path.cwd().resolve()) or p in study.parents


def _external(study: Path, source: str | None, include_models: bool, may_write: bool
              ) -> tuple[list[tuple[Path, str]], list[Path], list[str]]:
    """What the study produced outside its folder: (file, kind) to remove, registered folders to remove once
    empty, and what could not be reached."""
    entries = peek_artifacts(study, may_write=may_write)
    if source:  # the statistics cache of the study's dataset (current and legacy names), where it exists
        entries += [(str(p), "derived") for p in stats_cache_files(source) if p.is_file()]
    files: list[tuple[Path, str]] = []
    folders: list[Path] = []
    unreached: list[str] = []
    lay = StudyLayout(study)
    if is_encrypted(lay) and key_or_none(lay) is None:  # its registrations sit in the encrypted database
        unreached.append(f"{study}: the study is encrypted and no key is configured, so the files it registered "
                         "outside its folder (reports, exports, simulations) could not be read. Fix: export "
                         "MEDWB_KEY_FILE=<its key file> and purge again, or destroy the key (crypto-erase)")
    seen: set[Path] = set()
    for path, kind in entries:
        p = Path(path)
        if p in seen or p == study or study in p.parents:
            continue
        seen.add(p)
        if not (p.exists() or p.is_symlink()):
            unreached.append(f"{p} ({kind}): not found (moved, deleted, or on a volume that is not mounted)")
        elif p.is_dir() and not p.is_symlink():
            if _unsafe_folder(p.resolve(), study):
                unreached.append(f"{p} ({kind}): refused, a root, home, working or enclosing folder")
                continue
            doomed = (_plan(p, include_models)[0] if kind == "study" else
                      [q for q in sorted(p.rglob("*")) if not q.is_dir() or q.is_symlink()])
            files += [(q, kind) for q in doomed if q not in seen]
            seen.update(doomed)
            folders.append(p)
        else:
            files.append((p, kind))
    return files, folders, unreached


def _remove_empty_folders(top: Path, *, keep_models: bool) -> None:
    """Remove the empty folders under ``top`` (deepest first) and ``top`` itself when empty; ``models/`` is kept
    when models are kept. Anything left is reported by the caller's check."""
    dirs = sorted((p for p in top.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts))
    for d in [*dirs, top]:
        if keep_models and d != top and d.relative_to(top).parts[0] == layout.MODELS:
            continue
        try:
            d.rmdir()
        except OSError:
            pass


def _no_outside_path(error: str, study: Path) -> str:
    """An error for the audit record: a path outside the study becomes its pseudonym."""
    path, sep, rest = error.partition(": ")
    return f"{pseudonym(path, 'file')}{sep}{rest}" if Path(path).is_absolute() else error


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
    outside, folders, res.unreached = _external(study, res.source_dataset, include_models, not dry_run)
    for p in doomed:
        if p.is_symlink():
            res.files.append(PurgedFile(str(p.relative_to(study)), "symlink", 0))
        else:
            res.files.append(PurgedFile(str(p.relative_to(study)), file_sha256(p), p.stat().st_size))
    for p, kind in outside:
        try:
            digest, size = ("symlink", 0) if p.is_symlink() else (file_sha256(p), p.stat().st_size)
        except OSError as e:
            res.unreached.append(f"{p} ({kind}): cannot be read ({e.strerror})")
            continue
        res.external.append(PurgedFile(str(p), digest, size, kind=kind))
    if dry_run:
        return res

    logs = [study / AUDIT_NAME] + ([Path(audit_copy)] if audit_copy else [])
    # no path outside the study in clear (a folder name can be a patient's name): keyed pseudonyms instead
    base = {"study": pseudonym(str(study), "study"), "actor": who, "host": socket.gethostname(),
            "medwb_version": medwb.__version__, "include_models": include_models,
            "source_dataset_not_purged": pseudonym(res.source_dataset, "dataset") if res.source_dataset else None}
    external = [{"ref": pseudonym(f.path, "file"), "kind": f.kind, "sha256": f.sha256, "size": f.size}
                for f in res.external]
    started = datetime.now(timezone.utc).isoformat()
    for log in logs:  # written and fsync'ed before the first byte is destroyed
        append_audit_record(log, {**base, "event": "purge-started", "time": started,
                                  "n_files": len(res.files) + len(res.external), "bytes": res.bytes,
                                  "files": [f.__dict__ for f in res.files], "external": external,
                                  "n_unreached": len(res.unreached)})
    for f in res.files + res.external:
        try:
            f.overwritten = shred_file(study / f.path)  # an absolute path (outside the study) stays as it is
        except OSError as e:
            res.errors.append(f"{f.path}: {e}")
    _remove_empty_folders(study, keep_models=not include_models)
    for d in folders:
        _remove_empty_folders(d, keep_models=not include_models)
    left = [f.path for f in res.files + res.external if (study / f.path).exists() or (study / f.path).is_symlink()]
    res.errors.extend(f"{p}: still present after purge" for p in left if not any(p in e for e in res.errors))
    for log in logs:
        append_audit_record(log, {**base, "event": "purge-completed", "time": datetime.now(timezone.utc).isoformat(),
                             "started": started, "n_removed": len(res.files) + len(res.external) - len(left),
                             "n_overwritten": sum(bool(f.overwritten) for f in res.files + res.external),
                             "n_unreached": len(res.unreached), "errors": [_no_outside_path(e, study) for e in res.errors]})
    res.audit_paths = logs
    if res.errors:
        raise StoreError(f"{study}: purge incomplete: {'; '.join(res.errors)}. Fix: check permissions and run "
                         "`medwb purge` again (the audit log records both runs)")
    return res
