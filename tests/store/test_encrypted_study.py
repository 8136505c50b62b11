"""An encrypted study (issue 16, item 1): with a key configured the database is SQLCipher, so the plain sqlite3
shell reads nothing and no case id, annotator or patient id is in the file's bytes; a missing or wrong key is
refused by name, with the fix."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.errors import CryptoError, StoreError
from medwb.privacy.crypto import generate_key, load_key
from medwb.store import Study, StudyLayout
from medwb.store import cipher

PATIENT = "PAT-0042-DOE"
CASE = f"{PATIENT}_20240131T101500_MR1"
ANNOTATOR = "dr.alice.example"


@pytest.fixture()
def no_key_env(monkeypatch) -> None:
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.delenv("MEDWB_KEY_FILE", raising=False)


def _study_with_labels(folder: Path, key_file: Path) -> None:
    with Study.create(folder, dataset_path="/data/seg", task="segmentation", classes=["bg", "lesion"],
                      key=load_key(key_file)) as st:
        st.add_cases(pd.DataFrame({"case_id": [CASE, "other"], "split": "train", "shape": "4x4",
                                   "patient_id": [PATIENT, "P2"]}))
        st.add_label(CASE, mask=np.eye(4, dtype=np.int64), annotator=ANNOTATOR)
        st.add_label("other", mask=np.zeros((4, 4), dtype=np.int64), annotator=ANNOTATOR)


def test_database_unreadable_without_the_key(tmp_path: Path, no_key_env: None) -> None:
    key_file = generate_key(tmp_path / "keys" / "site.key").source
    folder = tmp_path / "study"
    _study_with_labels(folder, Path(key_file))
    db = StudyLayout(folder).db
    con = sqlite3.connect(db)  # the plain sqlite3 shell
    for sql in ("SELECT * FROM labels", "SELECT * FROM cases", "SELECT name FROM sqlite_master"):
        with pytest.raises(sqlite3.DatabaseError):
            con.execute(sql).fetchall()
    con.close()
    raw = b"".join(p.read_bytes() for p in StudyLayout(folder).db_files() if p.is_file())
    for secret in (CASE, PATIENT, ANNOTATOR, "lesion", "/data/seg"):
        assert secret.encode() not in raw
    marker = json.loads(StudyLayout(folder).encryption_marker.read_text())
    assert marker["format"] == cipher.MARKER_FORMAT and "SQLCipher" in marker["database"]
    assert Path(key_file).read_text().strip() not in json.dumps(marker)  # names the cipher, never the key
    with Study.open(folder, key=load_key(key_file)) as st:  # with the key: everything is there
        assert st.encrypted and set(st.cases()["case_id"]) == {CASE, "other"}
        assert st.labels().set_index("case_id").at[CASE, "annotator"] == ANNOTATOR
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_missing_or_wrong_key_is_refused_by_name(tmp_path: Path, no_key_env: None, monkeypatch) -> None:
    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    folder = tmp_path / "study"
    _study_with_labels(folder, key_file)
    cipher.UNLOCKED.clear()  # as in a new process
    with pytest.raises(CryptoError, match="this study is encrypted .* no key is configured.*MEDWB_KEY_FILE") as e:
        Study.open(folder)
    assert str(folder) in str(e.value)
    other = generate_key(tmp_path / "keys" / "other.key")
    with pytest.raises(CryptoError, match="is not this study's key") as e:
        Study.open(folder, key=other)
    assert str(folder) in str(e.value) and "file is not a database" not in str(e.value)
    monkeypatch.setenv("MEDWB_KEY_FILE", str(other.source))
    with pytest.raises(CryptoError, match="is not this study's key"):
        Study.open(folder)
    # a marker whose key check was forged to match: SQLCipher itself refuses the wrong key, still by name
    lay = StudyLayout(folder)
    doc = json.loads(lay.encryption_marker.read_text())
    lay.encryption_marker.write_text(json.dumps(dict(doc, key_check=cipher.key_check(other))))
    with pytest.raises(CryptoError, match="cannot be decrypted with the key from"):
        Study.open(folder)
    lay.encryption_marker.write_text(json.dumps(doc))
    monkeypatch.setenv("MEDWB_KEY_FILE", str(key_file))  # the configured key opens it
    with Study.open(folder) as st:
        assert len(st.labels()) == 2
    lay.encryption_marker.unlink()  # without its marker the study is refused with the fix, not a traceback
    cipher.UNLOCKED.clear()
    with pytest.raises(StoreError, match="encryption.json was removed"):
        Study.open(folder)


def test_a_configured_key_encrypts_new_studies(tmp_path: Path, no_key_env: None, monkeypatch) -> None:
    key = generate_key(tmp_path / "keys" / "site.key")
    monkeypatch.setenv("MEDWB_KEY", Path(key.source).read_text().strip())
    with Study.create(tmp_path / "enc", dataset_path="x", task="classification", classes=["a", "b"]) as st:
        assert st.encrypted and "encrypted" in repr(st) and "MEDWB" not in repr(st)
    with Study.create(tmp_path / "plain", dataset_path="x", task="classification", classes=["a", "b"],
                      key=False) as st:
        assert not st.encrypted
    assert StudyLayout(tmp_path / "enc").encryption_marker.is_file()
    assert not StudyLayout(tmp_path / "plain").encryption_marker.exists()
    assert StudyLayout(tmp_path / "plain").db.read_bytes().startswith(b"SQLite format 3")
    assert not StudyLayout(tmp_path / "enc").db.read_bytes().startswith(b"SQLite format 3")
    with pytest.raises(CryptoError, match="inside the study folder"):  # a key kept in the study protects nothing
        Study.create(tmp_path / "s3", dataset_path="x", task="classification", classes=["a"],
                     key=generate_key(tmp_path / "s3" / "k.key"))
