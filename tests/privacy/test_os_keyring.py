"""The key from the OS keyring (issue 16): ``MEDWB_KEY_KEYRING=SERVICE`` reads it through the ``keyring`` package.
Tested with real backends, not mocks: keyrings.alt's file keyring (a file under ``$XDG_DATA_HOME``, here a temporary
folder) and keyring's own "fail" backend (what a machine without any keyring has)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import keyring
import pandas as pd
import pytest

from medwb.cli import main
from medwb.errors import CryptoError
from medwb.privacy import crypto, os_keyring
from medwb.store import Study, StudyLayout, cipher

SERVICE = "medwb-test-site"


def _use_backend(monkeypatch, backend: str, data_home: Path) -> None:
    for var in ("MEDWB_KEY", "MEDWB_KEY_FILE", "MEDWB_KEY_KEYRING"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", backend)
    monkeypatch.setenv("XDG_DATA_HOME", str(data_home))  # the file keyring lives here, never in the user's home
    monkeypatch.setattr(keyring.core, "_keyring_backend", None)  # chosen again from the environment on first use
    cipher.UNLOCKED.clear()


@pytest.fixture()
def file_keyring(tmp_path: Path, monkeypatch) -> Path:
    _use_backend(monkeypatch, "keyrings.alt.file.PlaintextKeyring", tmp_path / "xdg")
    return tmp_path / "xdg"


def test_a_study_created_with_the_keyring_key_is_encrypted_and_reopens(tmp_path: Path, file_keyring: Path,
                                                                       monkeypatch, capsys) -> None:
    key_file = tmp_path / "keys" / "site.key"
    crypto.generate_key(key_file)
    assert main(["key", "store", "--keyring", SERVICE, "--key-file", str(key_file)]) == 0
    assert f"export MEDWB_KEY_KEYRING={SERVICE}" in capsys.readouterr().out
    store = next(file_keyring.rglob("*.cfg"))  # the real backend wrote its file, under the temporary home
    assert "[medwb_2Dtest_2Dsite]" in store.read_text()  # the escaped service name
    assert not crypto.key_configured()
    monkeypatch.setenv("MEDWB_KEY_KEYRING", SERVICE)
    assert crypto.key_configured()
    key = crypto.load_key()
    assert key.raw == crypto.load_key(key_file).raw and key.source == os_keyring.source(SERVICE)
    assert crypto.key_file_of(key) is None  # a keyring key has no file to keep out of a study
    folder = tmp_path / "study"
    with Study.create(folder, dataset_path="x", task="classification", classes=["a", "b"]) as st:
        assert st.encrypted
        st.add_cases(pd.DataFrame({"case_id": ["PAT-9_20240101"], "split": "train"}))
        st.add_label("PAT-9_20240101", value=1, annotator="ana")
    assert not StudyLayout(folder).db.read_bytes().startswith(b"SQLite format 3")
    cipher.UNLOCKED.clear()  # a new process: the key comes from the keyring again
    with Study.open(folder) as st:
        assert st.labels()["annotator"].tolist() == ["ana"]
    # precedence: an explicit key file, then $MEDWB_KEY_FILE, then $MEDWB_KEY, then the keyring
    other = crypto.generate_key(tmp_path / "keys" / "other.key")
    monkeypatch.setenv("MEDWB_KEY", Path(other.source).read_text().strip())
    assert crypto.load_key().source == "$MEDWB_KEY"
    monkeypatch.setenv("MEDWB_KEY_FILE", other.source)
    assert crypto.load_key().source == other.source
    assert crypto.load_key(key_file).source == str(key_file)
    # storing another key under the same service would lose the first: refused unless asked
    assert main(["key", "store", "--keyring", SERVICE, "--key-file", other.source]) == 2
    assert "already holds another medwb key" in capsys.readouterr().err
    assert main(["key", "store", "--keyring", "medwb-new", "--new"]) == 0
    monkeypatch.delenv("MEDWB_KEY")
    monkeypatch.delenv("MEDWB_KEY_FILE")
    monkeypatch.setenv("MEDWB_KEY_KEYRING", "medwb-new")
    assert len(crypto.load_key().raw) == 32


def test_a_missing_or_wrong_keyring_entry_is_a_clear_error(tmp_path: Path, file_keyring: Path,
                                                          monkeypatch) -> None:
    monkeypatch.setenv("MEDWB_KEY_KEYRING", SERVICE)
    with pytest.raises(CryptoError, match=f"keyring:{SERVICE} .*holds no medwb key.*medwb key store --keyring"):
        crypto.load_key()
    keyring.set_password(SERVICE, os_keyring.KEYRING_USER, "not a key")
    with pytest.raises(CryptoError, match=f"keyring:{SERVICE} .*not a valid medwb key"):
        crypto.load_key()
    # an encrypted study opened with another key from the keyring: refused by name
    monkeypatch.delenv("MEDWB_KEY_KEYRING")
    folder = tmp_path / "study"
    Study.create(folder, dataset_path="x", task="classification", classes=["a"],
                 key=crypto.generate_key(tmp_path / "keys" / "site.key")).close()
    assert main(["key", "store", "--keyring", "other", "--key-file",
                 crypto.generate_key(tmp_path / "keys" / "other.key").source]) == 0
    monkeypatch.setenv("MEDWB_KEY_KEYRING", "other")
    cipher.UNLOCKED.clear()
    with pytest.raises(CryptoError, match=r"the key from keyring:other .* is not this study's key"):
        Study.open(folder)


def test_no_keyring_backend_or_package_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    _use_backend(monkeypatch, "keyring.backends.fail.Keyring", tmp_path / "xdg")  # a machine with no keyring
    monkeypatch.setenv("MEDWB_KEY_KEYRING", SERVICE)
    with pytest.raises(CryptoError, match="OS keyring could not be read \\(NoKeyringError.*PYTHON_KEYRING_BACKEND"):
        crypto.load_key()
    assert main(["key", "store", "--keyring", SERVICE, "--new"]) == 2
    # without the keyring package (a process where it cannot be imported): the install command
    code = ("import sys; sys.modules['keyring'] = None\n"
            "from medwb.errors import CryptoError\nfrom medwb.privacy.crypto import load_key\n"
            "try:\n    load_key()\nexcept CryptoError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert "keyring package is not installed" in out.stdout and "pip install 'medwb[keyring]'" in out.stdout
