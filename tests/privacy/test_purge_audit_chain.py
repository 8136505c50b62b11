"""The keyed purge audit log: each of the 8 tampering variants of issue 16 is caught, naming the first bad line;
old unkeyed logs still read; the key and anchor never sit in the study they record."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medwb.cli import main
from medwb.errors import StoreError
from medwb.privacy.audit import LegacyAuditWarning, append_audit_record, check_audit_log, verify_audit_log
from medwb.privacy.purge import AUDIT_NAME, purge_study


@pytest.fixture(autouse=True)
def home(tmp_path, monkeypatch) -> Path:
    """Key and anchors in this test's own folder, outside the study."""
    folder = tmp_path / "audit-home"
    monkeypatch.setenv("MEDWB_AUDIT_HOME", str(folder))
    return folder


@pytest.fixture()
def study(tmp_path, samples) -> Path:
    """A study purged twice (data, then models): an audit log of 4 keyed records."""
    folder = tmp_path / "Doe_John_study"
    (folder / "cache").mkdir(parents=True)
    (folder / "models").mkdir()
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        np.save(folder / "cache" / "train_X.npy", z["train_images"][:16])
    np.savez(folder / "models" / "r1.npz", w=np.linspace(0, 1, 50))
    purge_study(folder, actor="dpo")
    purge_study(folder, include_models=True, actor="dpo")
    assert verify_audit_log(folder / AUDIT_NAME) == 4
    return folder


def _lines(study: Path) -> list[str]:
    return (study / AUDIT_NAME).read_text().splitlines()


def _write(study: Path, lines: list[str]) -> None:
    (study / AUDIT_NAME).write_text("".join(f"{line}\n" for line in lines))


def _rejected(study: Path, capsys, *needles: str) -> None:
    """`medwb audit verify` exits non-zero, and its message says each needle (the first bad line, the cause)."""
    assert main(["audit", "verify", str(study)]) != 0
    err = capsys.readouterr().err
    for n in needles:
        assert n in err, err


def _edit(line: str) -> str:
    return line.replace('"actor":"dpo"', '"actor":"nobody"')


def test_intact_log_verifies_and_the_home_keeps_no_clear_path(study, home, capsys):
    assert main(["audit", "verify", str(study)]) == 0
    assert "intact, 4 records, keyed" in capsys.readouterr().out
    recs = [json.loads(line) for line in _lines(study)]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4] and len({r["log_id"] for r in recs}) == 1
    stored = b"".join(p.read_bytes() for p in home.rglob("*") if p.is_file())
    assert b"Doe_John" not in stored and str(study).encode() not in stored
    assert (home / "audit.key").stat().st_mode & 0o777 == 0o600


def test_edited_first_line(study, capsys):
    lines = _lines(study)
    _write(study, [_edit(lines[0])] + lines[1:])
    _rejected(study, capsys, "line 1:", "MAC does not match")


def test_edited_last_line(study, capsys):
    lines = _lines(study)
    _write(study, lines[:3] + [lines[3].replace('"n_removed":1', '"n_removed":0')])
    _rejected(study, capsys, "line 4:", "MAC does not match")


def test_edited_middle_line(study, capsys):
    lines = _lines(study)
    _write(study, lines[:1] + [_edit(lines[1])] + lines[2:])
    _rejected(study, capsys, "line 2:", "MAC does not match")


def test_deleted_line(study, capsys):
    lines = _lines(study)
    _write(study, lines[:2] + lines[3:])  # a middle line
    _rejected(study, capsys, "line 3:", "does not chain")
    _write(study, lines[:3])  # the last line: only the anchor outside the study can tell
    _rejected(study, capsys, "line 4:", "holds 3 records", "removed from its end")
    _write(study, lines[1:])  # the first line
    _rejected(study, capsys, "line 1:", "does not chain")


def test_emptied_file(study, capsys):
    (study / AUDIT_NAME).write_bytes(b"")
    _rejected(study, capsys, "line 1:", "emptied")
    (study / AUDIT_NAME).unlink()
    _rejected(study, capsys, "line 1:", "emptied or deleted")


def test_rechained_file(study, capsys):
    """The attacker edits a line and recomputes the hashes after it; without the key they cannot make MACs."""
    recs = [json.loads(line) for line in _lines(study)]
    recs[1]["actor"] = "nobody"
    for i in range(1, 4):
        prev = json.dumps(recs[i - 1], sort_keys=True, separators=(",", ":")).encode()
        recs[i]["prev_mac"] = recs[i - 1]["mac"] if i == 1 else hashlib.sha256(prev).hexdigest()
        body = {k: v for k, v in recs[i].items() if k != "mac"}
        recs[i]["mac"] = hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    _write(study, [json.dumps(r, sort_keys=True, separators=(",", ":")) for r in recs])
    _rejected(study, capsys, "line 2:", "MAC does not match")
    # or rewrites the whole file in the old unkeyed format with a fresh plain sha256 chain
    old, prev = [], ""
    for r in recs:
        r = {k: v for k, v in r.items() if k not in ("mac", "prev_mac", "seq", "log_id", "chain")}
        line = json.dumps({**r, "prev_sha256": prev}, sort_keys=True, separators=(",", ":"))
        old.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
    _write(study, old)
    _rejected(study, capsys, "line 1:", "unkeyed record in a keyed log")


def test_reordered_lines(study, capsys):
    lines = _lines(study)
    _write(study, [lines[0], lines[2], lines[1], lines[3]])
    _rejected(study, capsys, "line 2:", "does not chain")


def test_truncated_line(study, capsys):
    raw = (study / AUDIT_NAME).read_bytes()
    (study / AUDIT_NAME).write_bytes(raw[:-40])  # cut inside the last record, no line end
    _rejected(study, capsys, "line 4:", "truncated")
    lines = _lines(study)
    _write(study, lines[:1] + [lines[1][: len(lines[1]) // 2]] + lines[2:])  # a partial line in the middle
    _rejected(study, capsys, "line 2:", "not a complete JSON record")


def _legacy_log(path: Path, n: int) -> list[str]:
    """A log as medwb wrote it before the keyed format: each line carries the plain sha256 of the line before."""
    lines, prev = [], ""
    for i in range(n):
        line = json.dumps({"event": "purge-started", "actor": f"old{i}", "prev_sha256": prev}, sort_keys=True,
                          separators=(",", ":"))
        lines.append(line)
        prev = hashlib.sha256(line.encode()).hexdigest()
    path.write_text("".join(f"{line}\n" for line in lines))
    return lines


def test_legacy_unkeyed_log_reads_with_a_warning(tmp_path, capsys):
    log = tmp_path / "old_study" / AUDIT_NAME
    log.parent.mkdir()
    lines = _legacy_log(log, 3)
    with pytest.warns(LegacyAuditWarning, match="legacy, unkeyed"):
        assert verify_audit_log(log) == 3
    assert main(["audit", "verify", str(log.parent)]) == 0
    assert "legacy, unkeyed" in capsys.readouterr().out
    # a new purge appends keyed records bound to the legacy lines: editing an old line now fails
    append_audit_record(log, {"event": "purge-started", "actor": "new"})
    check = check_audit_log(log)
    assert (check.records, check.keyed, check.legacy, check.warnings) == (4, 1, 3, [])
    edited = [lines[0], lines[1].replace("old1", "evil")]
    log.write_text("".join(f"{line}\n" for line in edited + log.read_text().splitlines()[2:]))
    with pytest.raises(StoreError, match="line 3: does not chain"):
        check_audit_log(log)


def test_moved_study_finds_its_anchor_and_a_lost_key_is_named(study, tmp_path, home, capsys):
    moved = tmp_path / "elsewhere" / "study"
    shutil.move(study, moved)
    assert main(["audit", "verify", str(moved / AUDIT_NAME)]) == 0
    capsys.readouterr()
    (home / "audit.key").rename(home / "audit.key.bak")
    _rejected(moved, capsys, "no audit key", "MEDWB_AUDIT_HOME")


def test_purge_refuses_an_audit_home_inside_the_study(tmp_path, monkeypatch):
    folder = tmp_path / "study"
    (folder / "cache").mkdir(parents=True)
    (folder / "cache" / "x.npy").write_bytes(b"data")
    monkeypatch.setenv("MEDWB_AUDIT_HOME", str(folder / "keys"))
    with pytest.raises(StoreError, match="inside the study"):
        purge_study(folder, actor="t")
    assert (folder / "cache" / "x.npy").read_bytes() == b"data"
