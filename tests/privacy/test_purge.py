"""Purge of a real study (store + data from data_samples): nothing left, audit survives, dry run is harmless."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medwb.cli import main
from medwb.errors import StoreError
from medwb.privacy.audit import verify_audit_log
from medwb.privacy.purge import AUDIT_NAME, purge_study

NPZ = "classification_2d/pneumoniamnist.npz"


@pytest.fixture(scope="module")
def cohort(samples):
    from medwb.data import open_dataset

    ds = open_dataset(samples / NPZ)
    X, y, ids = ds.arrays("train", max_cases=24, seed=0)
    return ds, ds.cohort[ds.cohort.case_id.isin(ids)], X, y, ids


@pytest.fixture()
def study(tmp_path, samples, cohort) -> Path:
    from medwb.store import Study

    ds, rows, X, y, ids = cohort
    folder = tmp_path / "study"
    st = Study.create(folder, dataset_path=samples / NPZ, task=ds.task, classes=ds.classes)
    try:
        st.add_cases(rows)
        for cid, label in zip(ids[:10], y[:10]):
            st.add_label(str(cid), value=int(label), source="human", annotator="rad1", seconds=3.0)
        st.export_labels_csv(folder / "exports" / "labels.csv")
        np.save(folder / "cache" / "train_X.npy", X)  # an image cache
        nib.save(nib.Nifti1Image(X[0, 0].astype(np.float32), np.eye(4)), folder / "maps" / "gradcam_0.nii.gz")
        ckpt = folder / "models" / "r1.npz"
        np.savez(ckpt, w=np.linspace(0, 1, 50))
        st.add_model(1, ckpt, {"auc": 0.5})
    finally:
        st.close()
    return folder


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in folder.rglob("*") if p.is_file()}


def test_dry_run_lists_and_changes_nothing(study):
    before = _snapshot(study)
    res = purge_study(study, dry_run=True, actor="tester")
    assert _snapshot(study) == before
    assert not (study / AUDIT_NAME).exists()
    listed = {f.path for f in res.files}
    assert {"study.sqlite", "exports/labels.csv", "cache/train_X.npy", "maps/gradcam_0.nii.gz"} <= listed
    assert not any(p.startswith("models") for p in listed)
    assert all(before[f.path] == f.sha256 for f in res.files)
    assert "would remove" in res.to_text()


def test_purge_leaves_no_data_file_and_audit_survives(study, samples, tmp_path):
    before = _snapshot(study)
    copy = tmp_path / "dpo" / "purges.jsonl"
    res = purge_study(study, actor="dpo@site", audit_copy=copy)
    left = sorted(str(p.relative_to(study)) for p in study.rglob("*") if p.is_file())
    assert left == ["models/r1.npz", AUDIT_NAME]  # models kept unless asked
    assert not (study / "cache").exists() and not (study / "exports").exists()
    assert res.source_dataset == str(samples / NPZ)
    for log in (study / AUDIT_NAME, copy):
        recs = [json.loads(line) for line in log.read_text().splitlines()]
        assert [r["event"] for r in recs] == ["purge-started", "purge-completed"]
        assert recs[0]["actor"] == "dpo@site" and recs[0]["time"]
        assert {f["path"]: f["sha256"] for f in recs[0]["files"]} == {k: v for k, v in before.items()
                                                                    if not k.startswith("models")}
        assert recs[1]["n_removed"] == len(res.files) + len(res.external) and recs[1]["errors"] == []
        assert verify_audit_log(log) == 2
    # a second purge (now with the models) appends to the same log; the chain stays valid
    purge_study(study, include_models=True, actor="dpo@site")
    assert sorted(p.name for p in study.rglob("*")) == [AUDIT_NAME]
    assert verify_audit_log(study / AUDIT_NAME) == 4


def test_files_are_overwritten_before_unlink(study, tmp_path):
    victim = study / "cache" / "train_X.npy"
    witness = tmp_path / "hardlink.npy"
    os.link(victim, witness)  # same inode: shows what happened to the file's content
    res = purge_study(study, actor="t")
    assert witness.exists() and witness.stat().st_size == 0  # overwritten and truncated in place, then unlinked
    assert all(f.overwritten for f in res.files)


def test_tampered_audit_log_is_detected(study):
    purge_study(study, actor="t")
    purge_study(study, include_models=True, actor="t")
    log = study / AUDIT_NAME
    lines = log.read_text().splitlines()
    lines[1] = lines[1].replace('"actor":"t"', '"actor":"someone-else"')
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(StoreError, match="line 2: its MAC"):  # the edited line itself is named
        verify_audit_log(log)


def test_refuses_folders_that_are_not_studies(tmp_path):
    folder = tmp_path / "home_like"
    folder.mkdir()
    (folder / "thesis.docx").write_bytes(b"important")
    with pytest.raises(StoreError, match="does not look like a medwb study"):
        purge_study(folder)
    assert (folder / "thesis.docx").read_bytes() == b"important"
    with pytest.raises(StoreError, match="no such study"):
        purge_study(tmp_path / "missing")


def test_cli_purge(study, capsys):
    assert main(["purge", str(study), "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out
    assert main(["purge", str(study), "--models", "--by", "cli-user"]) == 0
    out = capsys.readouterr().out
    assert "removed" in out and "cli-user" in out
    assert sorted(p.name for p in study.rglob("*")) == [AUDIT_NAME]
    assert main(["purge", str(study / "nothing-here")]) == 2
