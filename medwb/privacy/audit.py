"""The purge audit log as a keyed hash chain, anchored outside the folder it describes.

Why: a plain sha256 chain inside the purged folder proves nothing to anyone who can write that folder (recompute
the hashes after an edit, drop the last line, empty the file). So each record carries an HMAC-SHA256 over its own
content and the previous record's MAC, with a key that never lives in the study, and after each append the
*anchor* (the record count and the last MAC) is written outside the study too. Verification needs both: the key
catches edits and re-chaining, the chain catches reordered, inserted and removed lines, the anchor catches a
removed tail or an emptied / replaced file.

Where the key and anchors live (:func:`audit_home`): ``$MEDWB_AUDIT_HOME``, else ``$MEDWB_HOME/audit``, else
``$XDG_DATA_HOME/medwb/audit``, else ``~/.local/share/medwb/audit``. ``audit.key`` (32 random bytes, mode 0600)
and ``anchors/<ref>.json``, where ``ref`` is an HMAC of the log's absolute path: the path (which may hold a
patient's name) is never written in clear. Each log also has a random ``log_id`` in its records, so a moved study
still finds its anchor.

Logs written before the keyed format (records with only ``prev_sha256``) still verify, as "legacy, unkeyed" with
a warning; a keyed record appended to such a log binds the legacy lines' hash into the keyed chain.
"""
from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import json
import os
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from medwb.atomic import atomic_write_bytes
from medwb.errors import StoreError

CHAIN = "hmac-sha256-v1"
KEY_NAME = "audit.key"
ANCHORS = "anchors"
LEGACY_PREFIX = "sha256:"  # prev_mac of the first keyed record after legacy (plain sha256) lines


class LegacyAuditWarning(UserWarning):
    """An audit log in the old, unkeyed format: its chain holds, but anyone could have recomputed it."""


def audit_home() -> Path:
    """Folder of the audit key and anchors (see the module docstring for the order of the settings)."""
    if os.environ.get("MEDWB_AUDIT_HOME"):
        return Path(os.environ["MEDWB_AUDIT_HOME"])
    if os.environ.get("MEDWB_HOME"):
        return Path(os.environ["MEDWB_HOME"]) / "audit"
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "medwb" / "audit"


def _key(home: Path, *, create: bool) -> bytes | None:
    path = home / KEY_NAME
    if path.is_file():
        try:
            raw = base64.urlsafe_b64decode(path.read_bytes().strip())
        except ValueError:
            raw = b""
        if len(raw) != 32:
            raise StoreError(f"{path}: not a medwb audit key (32 bytes, base64). Fix: restore the key from backup")
        return raw
    if not create:
        return None
    try:
        atomic_write_bytes(path, base64.urlsafe_b64encode(os.urandom(32)) + b"\n", mode=0o600)
    except OSError as e:
        raise StoreError(f"{home}: cannot create the audit key there ({e.strerror}). Fix: make the folder "
                         "writable or point $MEDWB_AUDIT_HOME at a writable folder outside the study") from None
    return _key(home, create=False)


def pseudonym(value: str, prefix: str = "ref") -> str:
    """A stable pseudonymous id for a path (a study, a purged file outside it) in the audit records: an HMAC with
    the audit key, so the same path gets the same id on this machine and nobody without the key can recover or
    test a guessed path (which may hold a patient's name)."""
    key = _key(audit_home(), create=True)
    assert key is not None
    return f"{prefix}-" + hmac.new(key, b"pseudonym\0" + str(value).encode(), hashlib.sha256).hexdigest()[:24]


def _mac(key: bytes, record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "mac"}
    return hmac.new(key, json.dumps(body, sort_keys=True, separators=(",", ":")).encode(), hashlib.sha256).hexdigest()


def _path_ref(key: bytes, log: Path) -> str:
    return hmac.new(key, b"path\0" + str(log.resolve()).encode(), hashlib.sha256).hexdigest()[:40]


def _read_anchor(home: Path, key: bytes, log: Path, log_id: str | None) -> dict | None:
    """The anchor of ``log``: by its path's ref, else (a moved study) by the log id its records carry."""
    folder = home / ANCHORS
    by_path = folder / f"{_path_ref(key, log)}.json"
    candidates = [by_path] if by_path.is_file() else []
    if not candidates and log_id and folder.is_dir():
        candidates = sorted(folder.glob("*.json"))
    for p in candidates:
        try:
            anchor = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StoreError(f"{p}: the audit anchor cannot be read ({e}). Fix: restore it from backup") from None
        if p == by_path or anchor.get("log_id") == log_id:
            anchor["_file"] = str(p)
            return anchor
    return None


def _write_anchor(home: Path, key: bytes, log: Path, anchor: dict) -> None:
    anchor = {k: v for k, v in anchor.items() if k != "_file"}
    atomic_write_bytes(home / ANCHORS / f"{_path_ref(key, log)}.json",
                       json.dumps(anchor, sort_keys=True).encode(), mode=0o600)


def _last_record(log: Path) -> tuple[dict | None, bytes]:
    """The last non-empty line of the log, parsed (None when absent or unreadable), and its raw bytes."""
    last = b""
    if log.is_file():
        for line in log.read_bytes().splitlines():
            if line.strip():
                last = line
    try:
        return (json.loads(last) if last else None), last
    except ValueError:
        return None, last


def append_audit_record(log: str | Path, record: dict) -> dict:
    """Append one keyed record to ``log`` (O_APPEND, fsync) and move its anchor. Returns the record as written.

    The chain continues from the anchor, not from the file: lines removed before this append stay detectable.
    A pending anchor is written first, so a crash between the append and the anchor update is not read as tampering.
    """
    log = Path(log)
    home = audit_home()
    try:
        return _append(log, home, record)
    except OSError as e:
        raise StoreError(f"{log}: cannot append to the audit log or move its anchor in {home} ({e}). Fix: make both "
                         "writable (or set $MEDWB_AUDIT_HOME to a writable folder outside the study)") from None


def _append(log: Path, home: Path, record: dict) -> dict:
    key = _key(home, create=True)
    assert key is not None
    log.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # two purges of one study append one after the other
        last, last_raw = _last_record(log)
        anchor = _read_anchor(home, key, log, (last or {}).get("log_id"))
        if anchor is not None:
            base = anchor
            pending = anchor.get("pending")
            if pending and last is not None and last.get("mac") == pending["mac"]:
                base = {**anchor, **pending}
            log_id, seq, prev = anchor["log_id"], int(base["count"]), base["mac"]
        elif last is not None and "mac" in last:  # keyed log whose anchor is lost: continue the file's chain
            log_id, seq, prev = last["log_id"], int(last["seq"]), last["mac"]
        else:  # new log, or legacy lines only: bind them into the keyed chain by the last line's sha256
            log_id = uuid.uuid4().hex
            seq = sum(1 for ln in log.read_bytes().splitlines() if ln.strip()) if log.is_file() else 0
            prev = LEGACY_PREFIX + hashlib.sha256(last_raw).hexdigest() if last_raw else ""
            anchor = {"log_id": log_id, "count": seq, "mac": prev}
        rec = {**record, "chain": CHAIN, "log_id": log_id, "seq": seq + 1, "prev_mac": prev}
        rec["mac"] = _mac(key, rec)
        anchor = {**anchor, "format": 1, "log_id": log_id, "pending": {"count": seq + 1, "mac": rec["mac"]}}
        _write_anchor(home, key, log, anchor)
        os.write(fd, json.dumps(rec, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        os.fsync(fd)
        _write_anchor(home, key, log, {**anchor, "count": seq + 1, "mac": rec["mac"], "pending": None})
    finally:
        os.close(fd)
    return rec


@dataclass
class AuditCheck:
    """The outcome of :func:`check_audit_log` for an intact log."""

    path: Path
    records: int
    keyed: int  # records under the keyed chain
    legacy: int  # records in the old, unkeyed format
    warnings: list[str] = field(default_factory=list)

    def to_text(self) -> str:
        kind = "keyed (HMAC-SHA256), anchored" if not self.legacy else (
            "legacy, unkeyed" if not self.keyed else f"keyed, after {self.legacy} legacy unkeyed records")
        return "\n".join([f"{self.path}: intact, {self.records} records, {kind}"]
                         + [f"  warning: {w}" for w in self.warnings])


def _broken(log: Path, line: int, problem: str) -> StoreError:
    return StoreError(f"{log}: audit log line {line}: {problem}. Fix: treat this log as tampered with; compare it "
                      "with the audit copy kept elsewhere (purge_study(audit_copy=...))")


def check_audit_log(path: str | Path) -> AuditCheck:
    """Verify a purge audit log: every line's MAC, the chain between lines, and the anchor kept outside the study.

    Raises :class:`StoreError` naming the first bad line. A log in the old format (no key) passes with a warning.
    """
    log = Path(path)
    home = audit_home()
    key = _key(home, create=False)
    raw = log.read_bytes() if log.is_file() else None
    lines = (raw or b"").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif raw:
        raise _broken(log, len(lines), "the last line is incomplete (no line end): the file was truncated")
    recs: list[dict] = []
    for i, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except ValueError:
            rec = None
        if not isinstance(rec, dict):
            raise _broken(log, i, "not a complete JSON record (truncated, edited or an inserted line)")
        recs.append(rec)
    keyed = [r for r in recs if "mac" in r]
    log_id = keyed[-1].get("log_id") if keyed else None
    anchor = _read_anchor(home, key, log, log_id) if key is not None else None
    if keyed and key is None:
        raise StoreError(f"{log}: a keyed audit log, but no audit key in {home}. Fix: verify as the user and on the "
                         "machine that purged, or set $MEDWB_AUDIT_HOME to the folder holding audit.key")
    if raw is None and anchor is None:
        raise StoreError(f"{log}: no audit log there, and no anchor for it in {home}. Fix: pass the study folder "
                         "that was purged (or its purge_audit.jsonl)")
    prev_sha, prev_mac, seq = "", "", 0
    for i, rec in enumerate(recs, 1):
        if "mac" not in rec:
            if prev_mac or (anchor is not None and not keyed):
                raise _broken(log, i, "an unkeyed record in a keyed log (edited or re-chained without the key)")
            if rec.get("prev_sha256", "") != prev_sha:
                raise _broken(log, i, "does not chain to the line before (edited, removed or reordered)")
            prev_sha, seq = hashlib.sha256(lines[i - 1]).hexdigest(), seq + 1
            continue
        expected = prev_mac or (LEGACY_PREFIX + prev_sha if prev_sha else "")
        if rec.get("prev_mac") != expected or rec.get("seq") != seq + 1 or rec.get("log_id") != log_id:
            raise _broken(log, i, "does not chain to the line before (a line was removed, inserted or reordered)")
        if not hmac.compare_digest(str(rec.get("mac")), _mac(key, rec)):  # type: ignore[arg-type]
            raise _broken(log, i, "its MAC does not match its content (edited, or re-chained without the key)")
        prev_mac, seq = rec["mac"], seq + 1
    if anchor is not None:
        ends = [(int(anchor["count"]), anchor["mac"])]
        if anchor.get("pending"):
            ends.append((int(anchor["pending"]["count"]), anchor["pending"]["mac"]))
        if (seq, prev_mac) not in ends:
            want = int(anchor["count"])
            what = ("the file was emptied or deleted" if not recs else "lines were removed from its end"
                    if seq < want else "the file was replaced or rewritten")
            raise _broken(log, min(seq, want) + 1 if seq != want else seq,
                          f"the log holds {seq} records but its anchor outside the study ({anchor['_file']}) "
                          f"records {want} ending in another MAC: {what}")
    check = AuditCheck(path=log, records=seq, keyed=len(keyed), legacy=seq - len(keyed))
    if check.legacy and not check.keyed:
        check.warnings.append("legacy, unkeyed log (plain sha256 chain, written before medwb kept a key): its "
                              "chain holds, but whoever could write the file could have recomputed it")
    elif keyed and anchor is None:
        check.warnings.append(f"no anchor for this log in {home}: lines removed from its end would go unnoticed")
    return check


def verify_audit_log(path: str | Path) -> int:
    """Check an audit log (:func:`check_audit_log`); returns its number of records, warns when legacy/unanchored."""
    check = check_audit_log(path)
    for w in check.warnings:
        warnings.warn(f"{check.path}: {w}", LegacyAuditWarning, stacklevel=2)
    return check.records
