"""Purging an encrypted study: with its key the files it registered outside its folder are found and removed;
without the key purge still destroys the folder and says, by name, what it could not read."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from medwb.privacy.crypto import generate_key
from medwb.privacy.purge import purge_study
from medwb.store import Study, cipher


def _study(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    key = generate_key(tmp_path / "keys" / "site.key")
    monkeypatch.setenv("MEDWB_KEY_FILE", key.source)
    folder = tmp_path / "study"
    with Study.create(folder, dataset_path=str(tmp_path / "data"), task="classification", classes=["a", "b"]) as st:
        st.add_cases(pd.DataFrame({"case_id": ["PAT-1_20240101"], "split": "train"}))
        st.add_label("PAT-1_20240101", value=1, annotator="ana")
        export = st.export_labels_csv(tmp_path / "out" / "labels.csv")
    return folder, export


def test_purge_with_the_key_reaches_registered_exports(tmp_path: Path, monkeypatch) -> None:
    folder, export = _study(tmp_path, monkeypatch)
    res = purge_study(folder, actor="t")
    assert not export.exists() and not res.unreached and not any(folder.rglob("*.json"))


def test_purge_without_the_key_says_what_it_could_not_read(tmp_path: Path, monkeypatch) -> None:
    folder, export = _study(tmp_path, monkeypatch)
    monkeypatch.delenv("MEDWB_KEY_FILE")
    cipher.UNLOCKED.clear()  # a new process without the key
    res = purge_study(folder, actor="t")
    assert export.exists()  # not found without the key: reported, not silently left
    assert any("encrypted and no key is configured" in u for u in res.unreached)
    assert "NOT REACHED" in res.to_text()
    assert not (folder / "study.sqlite").exists()
