"""Issue 16: `medwb explore --study` registers its outputs in that study for purge; for an encrypted study they are
written encrypted, or in clear with one warning line when the user asks (``--plaintext-outputs``). Without
``--study`` but with a key configured they are encrypted too (no study holds them to register them)."""
from __future__ import annotations

from pathlib import Path

import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.cli import main
from medwb.privacy.crypto import MAGIC, generate_key
from medwb.store import Study


@pytest.mark.slow
def test_explore_outputs_are_registered_and_encrypted_for_an_encrypted_study(samples: Path, tmp_path: Path,
                                                                           monkeypatch, capsys) -> None:
    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.setenv("MEDWB_KEY_FILE", str(key_file))
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=20, n_val=6, n_test=6)
    folder = tmp_path / "study"
    Study.create(folder, dataset_path=str(data), task="classification", classes=["normal", "pneumonia"]).close()

    argv = ["explore", str(data), "--max-cases", "20", "--study", str(folder)]
    assert main([*argv, "--out", str(tmp_path / "enc")]) == 0
    written = [p for p in (tmp_path / "enc").rglob("*") if p.is_file()]
    assert {p.suffix for p in written} == {".ipynb", ".html"}
    assert all(p.read_bytes().startswith(MAGIC) for p in written)
    assert "WARNING" not in capsys.readouterr().err

    assert main([*argv, "--out", str(tmp_path / "plain"), "--plaintext-outputs"]) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "left the protected zone" in err
    html = next((tmp_path / "plain").glob("*.html"))
    assert html.read_text().lstrip().lower().startswith("<!doctype html")

    with Study.open(folder) as st:
        registered = dict(zip(st.artifacts()["path"], st.artifacts()["kind"]))
    for p in [*written, html]:
        assert registered.get(str(p.resolve())) == "report", p


@pytest.mark.slow
def test_explore_without_a_study_is_encrypted_when_a_key_is_configured(samples: Path, tmp_path: Path, monkeypatch,
                                                                       capsys) -> None:
    from medwb.store import cipher

    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.delenv("MEDWB_KEY_KEYRING", raising=False)
    monkeypatch.setenv("MEDWB_KEY_FILE", str(key_file))
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=20, n_val=6, n_test=6)
    argv = ["explore", str(data), "--max-cases", "20"]
    assert main([*argv, "--out", str(tmp_path / "enc")]) == 0
    written = [p for p in (tmp_path / "enc").rglob("*") if p.is_file() and p.suffix in (".ipynb", ".html")]
    assert {p.suffix for p in written} == {".ipynb", ".html"}
    assert all(p.read_bytes().startswith(MAGIC) for p in written)  # no image or table of a patient in clear
    assert (tmp_path / "enc" / "encryption.json").is_file() and "WARNING" not in capsys.readouterr().err
    html = next(p for p in written if p.suffix == ".html")
    cipher.UNLOCKED.clear()  # a new process: medwb decrypt finds the key through the configured one
    assert main(["decrypt", str(html), "--out", str(tmp_path / "clear.html")]) == 0
    assert (tmp_path / "clear.html").read_text().lstrip().lower().startswith("<!doctype html")

    assert main([*argv, "--out", str(tmp_path / "plain"), "--plaintext-outputs"]) == 0
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "no study registers them" in err and "--study" in err
    assert next((tmp_path / "plain").glob("*.html")).read_text().lstrip().lower().startswith("<!doctype html")
    assert not (tmp_path / "plain" / "encryption.json").exists()
