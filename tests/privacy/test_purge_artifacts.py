"""Purge leaves nothing (issue 16): files a study produced outside its folder are registered in its store and
removed with it; the statistics cache holds no path and is removed; the audit log names no path in clear."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from medwb.privacy.audit import verify_audit_log
from medwb.privacy.purge import AUDIT_NAME, purge_study

NPZ = "classification_2d/pneumoniamnist.npz"


def test_registered_artifacts_and_stats_cache_are_purged(tmp_path, samples, monkeypatch):
    from medwb.data import open_dataset
    from medwb.store import Study

    monkeypatch.setenv("MEDWB_CACHE", str(tmp_path / "usercache"))
    # a dataset folder named after a patient, as the issue found them
    data = tmp_path / "Doe_John_19700101" / "pneumonia.npz"
    data.parent.mkdir()
    shutil.copy(samples / NPZ, data)
    ds = open_dataset(data, progress=False)
    cohort = ds.cohort.head(12)
    cache_files = list((tmp_path / "usercache" / "stats").glob("*.json"))
    assert cache_files == [ds.stats_cache_file]
    text = ds.stats_cache_file.read_text()
    assert "Doe_John" not in ds.stats_cache_file.name and "Doe_John" not in text and str(tmp_path) not in text
    assert "train_00000" not in text  # case ids (DICOM ones hold PatientIDs) are hashed too

    out = tmp_path / "Doe_John_sim"
    study_dir, sibling = out / "studies" / "hybrid-seed0", out / "studies" / "random-seed0"
    with Study.create(sibling, dataset_path=data, task=ds.task, classes=ds.classes) as sib:
        sib.add_cases(cohort)
    np.save(sibling / "models" / "round_001.npy", np.zeros(3))
    with Study.create(study_dir, dataset_path=data, task=ds.task, classes=ds.classes) as st:
        st.add_cases(cohort)
        st.add_label(str(cohort.case_id.iloc[0]), value=0, source="human", annotator="a")
        (out / "curves.csv").write_text("strategy,value\nhybrid,0.9\n")
        (out / "report" / "tables").mkdir(parents=True)
        (out / "report" / "tables" / "labels.csv").write_text("case,label\nx,1\n")
        (out / "report" / "validation_report.html").write_text("<img src='data:image/png;base64,AAAA'>")
        export = st.export_labels_csv(tmp_path / "exports_elsewhere" / "labels.csv")
        st.register_artifacts([out / "curves.csv", out / "autolabel.csv"], "simulation")  # autolabel.csv: never written
        st.register_artifacts([out / "report" / "validation_report.html", out / "report" / "tables"], "report")
        st.register_artifact(sibling, "study")
        assert set(st.artifacts()["kind"]) == {"simulation", "report", "study", "export"}
        assert str(export) in set(st.artifacts()["path"])  # an export outside the study registers itself

    res = purge_study(study_dir, include_models=True, actor="dpo")
    outside = {Path(f.path) for f in res.external}
    assert {out / "curves.csv", out / "report" / "validation_report.html", out / "report" / "tables" / "labels.csv",
            export, sibling / "study.sqlite", sibling / "models" / "round_001.npy", ds.stats_cache_file} <= outside
    for p in outside | {out / "report" / "tables", sibling}:
        assert not p.exists(), p
    assert [u for u in res.unreached if "autolabel.csv" in u and "not found" in u]
    assert "NOT REACHED" in res.to_text()
    assert sorted(p.name for p in study_dir.rglob("*")) == [AUDIT_NAME]
    assert not (tmp_path / "usercache" / "stats").exists() or not any((tmp_path / "usercache" / "stats").iterdir())

    log = (study_dir / AUDIT_NAME).read_text()
    assert str(tmp_path) not in log and "Doe_John" not in log  # study, dataset and outside files: pseudonyms only
    first = json.loads(log.splitlines()[0])
    assert first["study"].startswith("study-") and first["source_dataset_not_purged"].startswith("dataset-")
    assert {e["kind"] for e in first["external"]} >= {"simulation", "report", "study", "export", "derived"}
    assert verify_audit_log(study_dir / AUDIT_NAME) == 2


def test_a_forged_registration_never_empties_a_parent_or_home(tmp_path):
    from medwb.store import Study

    study_dir = tmp_path / "study"
    (tmp_path / "precious.txt").write_text("keep")
    with Study.create(study_dir, dataset_path="/nowhere", task="classification", classes=["a", "b"]) as st:
        st.conn.execute("INSERT INTO artifacts (path, kind, created_at) VALUES (?, 'report', 'now')", (str(tmp_path),))
        st.conn.execute("INSERT INTO artifacts (path, kind, created_at) VALUES (?, 'report', 'now')",
                        (str(Path.home()),))
    res = purge_study(study_dir, actor="t")
    assert (tmp_path / "precious.txt").read_text() == "keep"
    assert sum("refused" in u for u in res.unreached) == 2
