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
