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


def _all_bytes_and_names(folder: Path) -> bytes:
    out = b""
    for p in sorted(folder.rglob("*")):
        out += str(p.relative_to(folder)).encode() + b"\n"
        if p.is_file():
            out += p.read_bytes()
    return out


def test_files_are_encrypted_when_written(tmp_path: Path, no_key_env: None) -> None:
    """Item 2: masks, checkpoints, caches and exports of an encrypted study are AES-GCM from their first write;
    item 3: no file name carries a case id or an annotator; readers decrypt through the store."""
    import torch

    from medwb.models import build_classifier, load_checkpoint, save_checkpoint
    from medwb.store import files, read_mask

    key = generate_key(tmp_path / "keys" / "site.key")
    folder = tmp_path / "study"
    _study_with_labels(folder, Path(key.source))
    with Study.open(folder, key=key) as st:
        tagged = st.save_mask(CASE, np.eye(4, dtype=np.int64), tag="gt")
        ckpt = save_checkpoint(build_classifier(2, 1, 2, channels=(4, 8, 8, 8)), st.checkpoint_path(1))
        cache = files.write_bytes(st.layout.regions("cfg", CASE), b"region maps")
        csv_in = st.export_labels_csv(st.layout.exports / "labels.csv")
        csv_out = st.export_labels_csv(tmp_path / "out" / "labels.csv")  # outside the study: still encrypted
        nii = st.export_masks_nifti(tmp_path / "nifti")
        masks = list(st.labels()["mask_path"])
    written = [tagged, ckpt, cache, csv_in, csv_out, *[folder / m for m in masks]]
    assert all(p.read_bytes().startswith(b"MEDWBENC1") for p in written), written
    raw = _all_bytes_and_names(folder) + _all_bytes_and_names(tmp_path / "out") + _all_bytes_and_names(tmp_path / "nifti")
    for secret in (CASE, PATIENT, ANNOTATOR):
        assert secret.encode() not in raw, secret
    assert (read_mask(folder / masks[0]) == np.eye(4)).all() and (read_mask(tagged) == np.eye(4)).all()
    model, _ = load_checkpoint(ckpt)
    assert isinstance(model, torch.nn.Module)
    # the NIfTI export: pseudonymous names, encrypted manifest and images; it imports back by its manifest
    assert list(nii["file"]) == [Study.open(folder, key=key).layout.export_mask_name(c) for c in nii["case_id"]]
    assert all(f.startswith("c-") for f in nii["file"])
    assert (tmp_path / "nifti" / "manifest.csv").read_bytes().startswith(b"MEDWBENC1")
    with Study.open(folder, key=key) as st:
        got = st.import_masks(tmp_path / "nifti", annotator="bob")
        assert set(got["case_id"]) == {CASE, "other"} and not got["changed"].any()
        assert CASE.encode() in files.read_bytes(csv_out, key=st.key)  # the export reads back with the key
        plain_csv = st.export_labels_csv(tmp_path / "out" / "plain.csv", plaintext=True)  # the user's choice
        assert plain_csv.read_bytes().startswith(b"label_id,case_id")
        plain = st.export_masks_nifti(tmp_path / "for-slicer", plaintext=True)  # the user's choice to let them out
    import nibabel as nib

    assert nib.load(str(tmp_path / "for-slicer" / plain["file"][0])).shape[:2] == (4, 4)
    assert (tmp_path / "for-slicer" / "manifest.csv").read_bytes().startswith(b"MEDWBENC1")  # never in clear
    # a reader without the key gets a named error, never garbage
    cipher.UNLOCKED.clear()
    with pytest.raises(CryptoError, match="study is encrypted .* no key is configured") as e:
        read_mask(tagged)
    assert str(folder) in str(e.value)
    with pytest.raises(CryptoError, match="encrypted .* no key is configured"):
        load_checkpoint(ckpt)


def test_plain_study_keeps_readable_names_and_plain_files(tmp_path: Path, no_key_env: None) -> None:
    with Study.create(tmp_path / "s", dataset_path="x", task="segmentation", classes=["bg", "fg"]) as st:
        st.add_cases(pd.DataFrame({"case_id": [CASE], "split": "train", "shape": "4x4"}))
        st.add_label(CASE, mask=np.eye(4, dtype=np.int64), annotator=ANNOTATOR)
        p = st.path(st.labels()["mask_path"][0])
    assert p.name.startswith(f"{CASE}__{ANNOTATOR}__human") and p.read_bytes().startswith(b"\x93NUMPY")
