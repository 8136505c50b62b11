"""Encryption at rest: round trips on real data, clean errors, originals never corrupted."""
from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from medwb.errors import CryptoError
from medwb.privacy import crypto


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture()
def key(tmp_path) -> crypto.Key:
    return crypto.generate_key(tmp_path / "keys" / "site.key")


def test_file_round_trip_on_real_data(samples, tmp_path, key):
    src = tmp_path / "pneumoniamnist.npz"
    shutil.copy(samples / "classification_2d" / "pneumoniamnist.npz", src)  # ~4 MB: several 1 MiB chunks
    before = _sha(src)
    enc = crypto.encrypt_file(src, key=key)
    assert enc.name == "pneumoniamnist.npz.enc" and enc.stat().st_size > src.stat().st_size
    assert src.read_bytes()[:64] not in enc.read_bytes()
    dec = crypto.decrypt_file(enc, tmp_path / "back.npz", key=key)
    assert _sha(dec) == before
    assert (enc.stat().st_mode & 0o777) == 0o600


@pytest.mark.parametrize("n", [0, 1, crypto.CHUNK - 1, crypto.CHUNK, crypto.CHUNK + 1, 3 * crypto.CHUNK + 7])
def test_bytes_round_trip_at_chunk_boundaries(key, n):
    data = os.urandom(n)
    blob = crypto.encrypt_bytes(data, key)
    assert crypto.decrypt_bytes(blob, key) == data
    assert crypto.encrypt_bytes(data, key) != blob  # fresh nonce every time


def test_wrong_key_is_a_clean_error_and_writes_nothing(samples, tmp_path, key):
    src = samples / "dicom" / "pydicom" / "CT_small.dcm"
    enc = crypto.encrypt_file(src, tmp_path / "ct.enc", key=key)
    other = crypto.generate_key(tmp_path / "other.key")
    with pytest.raises(CryptoError, match="wrong key"):
        crypto.decrypt_file(enc, tmp_path / "ct.dcm", key=other)
    assert not (tmp_path / "ct.dcm").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_failed_decrypt_keeps_the_existing_target_intact(samples, tmp_path, key):
    target = tmp_path / "labels.csv"
    target.write_text("case_id,label\na,1\n")
    before = _sha(target)
    enc = crypto.encrypt_file(samples / "segmentation_2d" / "hc18" / "pixel_size_and_HC.csv", tmp_path / "x.enc",
                              key=key)
    blob = bytearray(enc.read_bytes())
    blob[len(blob) // 2] ^= 0x01  # one flipped bit anywhere -> authentication fails
    enc.write_bytes(bytes(blob))
    with pytest.raises(CryptoError):
        crypto.decrypt_file(enc, target, key=key)
    assert _sha(target) == before


@pytest.mark.parametrize("cut", [1, 17, 100])
def test_truncated_or_foreign_files_are_refused(tmp_path, key, cut):
    blob = crypto.encrypt_bytes(os.urandom(crypto.CHUNK + 500), key)
    with pytest.raises(CryptoError):
        crypto.decrypt_bytes(blob[:-cut], key)
    with pytest.raises(CryptoError, match="not a medwb-encrypted"):
        crypto.decrypt_bytes(b"PK\x03\x04 zip file", key)


def test_key_loading(tmp_path, monkeypatch):
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    with pytest.raises(CryptoError, match="MEDWB_KEY"):
        crypto.load_key()
    with pytest.raises(CryptoError, match="not found"):
        crypto.load_key(tmp_path / "missing.key")
    bad = tmp_path / "bad.key"
    bad.write_text("hunter2")
    with pytest.raises(CryptoError, match="not a valid medwb key"):
        crypto.load_key(bad)
    k = crypto.generate_key(tmp_path / "k.key")
    with pytest.raises(CryptoError, match="already exists"):
        crypto.generate_key(tmp_path / "k.key")
    monkeypatch.setenv("MEDWB_KEY", (tmp_path / "k.key").read_text().strip())
    env = crypto.load_key()
    assert env.raw == k.raw and env.source == "$MEDWB_KEY"
    assert "raw" not in repr(env) and (tmp_path / "k.key").read_text().strip() not in repr(env)
    assert k.derive("a") != k.derive("b") and len(k.derive("a")) == 32

