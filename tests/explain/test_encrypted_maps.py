"""Issue 16: explanation maps written into an encrypted study (``STUDY/exports/explain``) are encrypted as they are
written, carry pseudonymous names, and read back equal (report, notebook 03, verdict panel) with the key only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.errors import CryptoError
from medwb.explain import session as S
from medwb.explain.run import run_explain
from medwb.explain.stored import load_nifti, load_npz, read_table
from medwb.models import build_classifier, save_checkpoint
from medwb.privacy.crypto import MAGIC, generate_key, load_key
from medwb.report.sections import explanation_outputs
from medwb.store import Study, cipher
from medwb.ui.widgets.verdict import load_index

#: what a plaintext map file starts with: NPY / ZIP (npz), gzip (nii.gz), PNG, NIfTI-1
PLAIN_HEADERS = (b"\x93NUMPY", b"PK\x03\x04", b"\x1f\x8b", b"\x89PNG", b"n+1")


@pytest.fixture()
def no_key_env(monkeypatch) -> None:
    monkeypatch.delenv("MEDWB_KEY", raising=False)
    monkeypatch.delenv("MEDWB_KEY_FILE", raising=False)


def test_maps_in_an_encrypted_study_are_encrypted_and_read_back(samples: Path, tmp_path: Path,
                                                                no_key_env: None) -> None:
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=10, n_val=4, n_test=6)
    key = load_key(generate_key(tmp_path / "keys" / "site.key").source)
    folder = tmp_path / "study"
    Study.create(folder, dataset_path=str(data), task="classification", classes=["normal", "pneumonia"],
                 key=key).close()
    ckpt = save_checkpoint(build_classifier(2, 1, 2, seed=0), tmp_path / "m.pt", {})
    enc_out, plain_out = folder / "exports" / "explain", tmp_path / "plain"
    for out in (enc_out, plain_out):
        run_explain(ckpt, data, method="gradcam", cases=2, out_dir=out, checks=False, progress=False)

    written = [p for p in enc_out.rglob("*") if p.is_file()]
    assert {p.suffix for p in written} >= {".npz", ".gz", ".png", ".csv", ".json"}
    for p in written:
        raw = p.read_bytes()
        assert raw.startswith(MAGIC), p
        assert not any(raw.startswith(h) for h in PLAIN_HEADERS), p
        assert not any(h in raw for h in (b"\x93NUMPY", b"\x89PNG", b"n+1\x00", b"IHDR")), p
    index, _ = load_index(enc_out)  # the verdict panel's reader
    plain_index, _ = load_index(plain_out)
    assert sorted(index.case_id) == sorted(plain_index.case_id)
    for cid in index.case_id:
        assert cid not in "".join(str(p) for p in written)  # names are the study's pseudonyms
        row = index.set_index("case_id").loc[cid]
        prow = plain_index.set_index("case_id").loc[cid]
        enc, plain = load_npz(enc_out / row.map_npz), load_npz(plain_out / prow.map_npz)
        for k in ("map", "image", "probs"):
            np.testing.assert_array_equal(enc[k], plain[k])
        img, mp, _ = S.load_map(enc_out, row)  # notebook 03's reader
        np.testing.assert_array_equal(mp, plain["map"])
        np.testing.assert_array_equal(np.asarray(load_nifti(enc_out / row.map_nifti).dataobj),
                                      np.asarray(load_nifti(plain_out / prow.map_nifti).dataobj))
    checks, overlays = explanation_outputs(enc_out)  # the report's reader
    assert overlays and all(p.read_bytes().startswith(MAGIC) for p in overlays)

    cipher.UNLOCKED.pop(str(folder.resolve()), None)  # a new process, without the key
    with pytest.raises(CryptoError, match="no key is configured"):
        read_table(enc_out / "index.csv")
    with pytest.raises(CryptoError, match="MEDWB_KEY_FILE"):
        load_npz(enc_out / index.iloc[0].map_npz)


def test_explaining_an_encrypted_studys_model_outside_it_stays_encrypted_unless_asked(
        samples: Path, tmp_path: Path, no_key_env: None, capsys: pytest.CaptureFixture[str]) -> None:
    """`medwb explain STUDY_MODEL DATA --out ELSEWHERE`: the maps hold the study's images and the tables its case
    ids, so the folder is encrypted with the study's key (pseudonymous names) and registered in the study for
    purge; with --plaintext-outputs it is in clear, registered, and one warning says it left the protected zone."""
    from medwb.cli import main

    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=10, n_val=4, n_test=6)
    key_file = Path(generate_key(tmp_path / "keys" / "site.key").source)
    folder = tmp_path / "study"
    Study.create(folder, dataset_path=str(data), task="classification", classes=["normal", "pneumonia"],
                 key=load_key(key_file)).close()
    ckpt = save_checkpoint(build_classifier(2, 1, 2, seed=0), folder / "models" / "m.pt", {})
    assert ckpt.read_bytes().startswith(MAGIC)  # inside the study: encrypted like every checkpoint
    outside, clear = tmp_path / "elsewhere", tmp_path / "clear"
    argv = ["explain", str(ckpt), str(data), "--cases", "2", "--no-checks"]
    import os

    os.environ["MEDWB_KEY_FILE"] = str(key_file)
    try:
        assert main([*argv, "--out", str(outside)]) == 0
        assert main([*argv, "--out", str(clear), "--plaintext-outputs"]) == 0
    finally:
        del os.environ["MEDWB_KEY_FILE"]
    written = [p for p in outside.rglob("*") if p.is_file() and p.name != "encryption.json"]
    assert {p.suffix for p in written} >= {".npz", ".gz", ".png", ".csv", ".json"}
    assert all(p.read_bytes().startswith(MAGIC) for p in written)
    index, _ = load_index(outside)  # read back with the key
    assert len(index) == 2 and not any(cid in "".join(map(str, written)) for cid in index.case_id)
    err = capsys.readouterr().err
    assert err.count("WARNING") == 1 and "left the protected zone" in err
    assert (clear / "overlays" / "gradcam.png").read_bytes().startswith(b"\x89PNG")
    with Study.open(folder, key=load_key(key_file)) as st:
        registered = set(st.artifacts()["path"])
    assert {str(outside.resolve()), str(clear.resolve())} <= registered
