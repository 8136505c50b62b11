"""`medwb encrypt STUDY` (issue 16): a plain study with labels of two annotators, masks, a predicted mask, a tagged
mask, a region cache, a NIfTI export and a checkpoint becomes what `Study.create(key=...)` makes: the plain
sqlite3 module reads nothing, no file name carries a case id or an annotator, the key gives back exactly the same
labels, masks and model, no key is refused by name, and purge still works. A conversion killed at any of its
steps (mid-overwrite of a plaintext, before and after the database swap) loses nothing and a re-run finishes it."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from medwb.cli import main
from medwb.errors import CryptoError, StoreError
from medwb.privacy.crypto import MAGIC, generate_key, load_key
from medwb.store import Study, StudyLayout, cipher, files, read_mask, safe_name
from medwb.store.convert import encrypt_study

PATIENT, PATIENT2 = "PAT-0042-DOE", "PAT-0077-ROE"
CASE, OTHER = f"{PATIENT}_20240131T101500_MR1", f"{PATIENT2}_20231101T080000_CT2"
ALICE, BOB = "dr.alice.example", "bob.reader"
SECRETS = (CASE, OTHER, PATIENT, PATIENT2, ALICE, BOB, safe_name(CASE), safe_name(OTHER), safe_name(ALICE))
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def no_key_env(monkeypatch) -> None:
    for var in ("MEDWB_KEY", "MEDWB_KEY_FILE", "MEDWB_KEY_KEYRING"):
        monkeypatch.delenv(var, raising=False)
    cipher.UNLOCKED.clear()


def _plain_study(folder: Path) -> None:
    from medwb.models import build_classifier, save_checkpoint

    eye, ring = np.eye(4, dtype=np.int64), np.pad(np.ones((2, 2), dtype=np.int64), 1)
    with Study.create(folder, dataset_path="/data/seg", task="segmentation", classes=["bg", "lesion"],
                      key=False) as st:
        st.add_cases(pd.DataFrame({"case_id": [CASE, OTHER], "split": "train", "shape": "4x4",
                                   "patient_id": [PATIENT, PATIENT2]}))
        st.add_label(CASE, mask=eye, annotator=ALICE)
        st.add_label(CASE, mask=ring, annotator=BOB)
        st.add_label(OTHER, mask=np.zeros((4, 4), dtype=np.int64), annotator=ALICE)
        st.add_label(OTHER, mask=ring, annotator=ALICE, note="second thoughts")  # supersedes: history rows
        torch_model = build_classifier(2, 1, 2, channels=(4, 8, 8, 8))
        version = st.add_model(1, save_checkpoint(torch_model, st.checkpoint_path(1)), {"dice": 0.5})
        st.save_predicted_mask(1, CASE, eye, model_version=version, uncertainty=np.full((4, 4), 0.25))
        st.save_mask(OTHER, eye, tag="gt")
        files.write_bytes(st.layout.regions("cfg", CASE), b"region maps of the case")
        st.export_masks_nifti(st.layout.exports / "nifti")
        st.export_labels_csv(st.layout.exports / "labels.csv")


def _snapshot(folder: Path, key: Any = None) -> dict[str, Any]:
    """Everything the conversion must keep, read through the store (paths left out: they change)."""
    from medwb.models import load_checkpoint

    with Study.open(folder, key=key) as st:
        labels = st.labels(latest=False)
        masks = {int(r["label_id"]): read_mask(r["mask_path"]).tolist() for r in labels.to_dict("records")}
        history = st.label_history().drop(columns=["from_mask", "to_mask"], errors="ignore")
        models = st.models()
        net = load_checkpoint(models["checkpoint_path"][0])[0]
        weights = {k: v.numpy().tolist() for k, v in net.state_dict().items()}
        pred = st.predicted_mask(1, CASE).tolist()
        umap = st.predicted_uncertainty(1, CASE).tolist()
        tagged = read_mask(st.layout.tagged_mask(OTHER, "gt")).tolist()
        regions = files.read_bytes(st.layout.regions("cfg", CASE))
        csv = files.read_bytes(st.layout.exports / "labels.csv")
        return {"labels": _rows(labels.drop(columns=["mask_path"])), "masks": masks, "history": _rows(history),
                "models": _rows(models.drop(columns=["checkpoint_path"])), "weights": weights, "pred": pred, "umap": umap,
                "tagged": tagged, "regions": regions, "csv": csv, "cases": _rows(st.cases()),
                "version": st.conn.execute("PRAGMA user_version").fetchone()[0]}


def _rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    return json.loads(df.to_json(orient="records"))


def _assert_encrypted_like_a_new_study(folder: Path, key_file: Path, before: dict[str, Any]) -> None:
    lay = StudyLayout(folder)
    con = sqlite3.connect(lay.db)  # (a) the plain sqlite3 module reads nothing
    with pytest.raises(sqlite3.DatabaseError):
        con.execute("SELECT * FROM labels").fetchall()
    con.close()
    names = [str(p.relative_to(folder)) for p in folder.rglob("*")]
    leaked = [n for n in names for s in SECRETS if s in n]
    assert not leaked, leaked  # (b) no case id, patient id or annotator in any file or folder name
    assert not any(n.endswith((".sealing", ".tmp", ".plain", ".encrypting")) or "encrypting.json" in n for n in names)
    data = [p for s in ("masks", "models", "cache", "exports", "maps") for p in (folder / s).rglob("*") if p.is_file()]
    assert len(data) >= 11 and all(p.read_bytes().startswith(MAGIC) for p in data)
    raw = b"".join(p.read_bytes() for p in folder.rglob("*") if p.is_file())
    assert not any(s.encode() in raw for s in SECRETS)  # nothing in clear in any byte either
    key = load_key(key_file)
    cipher.UNLOCKED.clear()
    assert _snapshot(folder, key) == before  # (c) exactly the same labels, masks, history, model, caches
    with Study.open(folder, key=key) as st:  # named as a study created with the key names them
        assert st.encrypted and st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        for r in st.labels().to_dict("records"):
            row = st.conn.execute("SELECT source, round FROM labels WHERE id = ?", (r["label_id"],)).fetchone()
            assert Path(r["mask_path"]) == st.layout.label_mask(r["case_id"], r["annotator"], *row, r["label_id"])
        assert Path(st.predicted_masks()["mask_path"][0]) == st.layout.predicted_mask(1, CASE)
        assert st.layout.uncertainty_map(1, CASE).is_file()  # the entropy map under its keyed name too
        assert st.layout.tagged_mask(OTHER, "gt").is_file() and st.layout.regions("cfg", CASE).is_file()
        st.add_label(OTHER, mask=np.eye(4, dtype=np.int64), annotator="carol")  # the store carries on
        got = st.import_masks(st.layout.exports / "nifti", annotator="dave")  # the rewritten, encrypted manifest
        assert set(got["case_id"]) == {CASE, OTHER}
    cipher.UNLOCKED.clear()  # (d) without the key: the clear error of every encrypted study
    with pytest.raises(CryptoError, match="this study is encrypted .* no key is configured"):
        Study.open(folder)


def test_a_plain_study_becomes_an_encrypted_one(tmp_path: Path, no_key_env: None, monkeypatch, capsys) -> None:
    from medwb.privacy.purge import purge_study

    folder = tmp_path / "study"
    _plain_study(folder)
    before = _snapshot(folder)
    assert any(CASE in p.name for p in folder.rglob("*"))  # the plain study: names in clear
    inside = generate_key(folder / "site.key")
    with pytest.raises(CryptoError, match="inside the study folder"):
        encrypt_study(folder, inside)
    Path(inside.source).unlink()
    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    assert main(["encrypt", str(folder), "--key-file", str(key_file)]) == 0
    assert "encrypted (SQLCipher database" in capsys.readouterr().out
    _assert_encrypted_like_a_new_study(folder, key_file, before)
    assert main(["encrypt", str(folder), "--key-file", str(key_file)]) == 2  # never twice
    assert "already encrypted" in capsys.readouterr().err
    monkeypatch.setenv("MEDWB_KEY_FILE", str(key_file))  # (e) purge with the key destroys it like any study
    res = purge_study(folder, actor="t", include_models=True)
    assert not res.unreached and not (folder / "study.sqlite").exists() and not list(folder.rglob("*.npy"))


KILLER = """
import os, signal, sys
from medwb.privacy import purge
from medwb.privacy.crypto import load_key
from medwb.store import cipher
from medwb.store.convert import encrypt_study

folder, key_file, point, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
calls = [0]
real_shred, real_marker = purge.shred_file, cipher.write_marker

def shred(p):
    calls[0] += 1
    if (point == "shred" and calls[0] == n) or (point == "plain-db" and str(p).endswith(".plain")):
        with open(p, "r+b") as f:  # killed in the middle of overwriting the plaintext
            f.write(os.urandom(16))
        os.kill(os.getpid(), signal.SIGKILL)
    return real_shred(p)

def marker(*a):
    os.kill(os.getpid(), signal.SIGKILL)

purge.shred_file = shred
if point == "swap":
    cipher.write_marker = marker
encrypt_study(folder, load_key(key_file))
"""


@pytest.mark.parametrize("point,n", [("shred", 1), ("shred", 5), ("swap", 0), ("plain-db", 0)],
                         ids=["first-file", "fifth-file", "before-db-swap", "after-db-swap"])
def test_a_killed_conversion_loses_nothing_and_a_rerun_finishes(tmp_path: Path, no_key_env: None, point: str,
                                                                n: int) -> None:
    folder = tmp_path / "study"
    _plain_study(folder)
    before = _snapshot(folder)
    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", KILLER, str(folder), str(key_file), point, str(n)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert StudyLayout(folder).encrypting_journal.is_file()
    with pytest.raises(StoreError, match="conversion of this study into an encrypted one was interrupted.*medwb "
                                         "encrypt"):
        Study.open(folder, key=load_key(key_file))  # half converted: refused by name, never half read
    with pytest.raises(CryptoError, match="started with another key"):
        encrypt_study(folder, generate_key(tmp_path / "keys" / "other.key"))
    res = encrypt_study(folder, load_key(key_file))
    assert res.resumed
    _assert_encrypted_like_a_new_study(folder, key_file, before)
