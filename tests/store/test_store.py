"""The study store on real PneumoniaMNIST / CHASE_DB1 cases: provenance, validation, rounds, import/export."""
from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medwb.errors import DataError, StoreError
from medwb.store import SCHEMA_VERSION, Study, read_mask

CLASSES = {0: "normal", 1: "pneumonia"}


def pneumonia_cohort(samples: Path, n: int = 40) -> tuple[pd.DataFrame, np.ndarray]:
    """A cohort table (data contract columns) for the first n training images of the bundled PneumoniaMNIST."""
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        imgs, labels = z["train_images"][:n], z["train_labels"][:n, 0]
    df = pd.DataFrame({
        "case_id": [f"train_{i:05d}" for i in range(n)],
        "split": "train",
        "label": pd.array(labels, dtype="Int64"),
        "source": "pneumoniamnist.npz",
        "sha256": [hashlib.sha256(im.tobytes()).hexdigest() for im in imgs],
        "shape": "28x28",
        "ndim": 2,
    })
    return df, labels


@pytest.fixture()
def study(tmp_path: Path, samples: Path) -> Study:
    s = Study.create(tmp_path / "study", dataset_path=samples / "classification_2d" / "pneumoniamnist.npz",
                     task="classification", classes=CLASSES)
    s.add_cases(pneumonia_cohort(samples)[0])
    yield s
    s.close()


def test_create_layout_and_pragmas(study: Study) -> None:
    for sub in ("models", "cache", "exports", "maps", "masks"):
        assert (study.folder / sub).is_dir()
    c = sqlite3.connect(study.db_path)
    assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert c.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert study.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert study.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    c.close()
    with pytest.raises(StoreError, match="already exists"):
        Study.create(study.folder, dataset_path="x", task="classification", classes=CLASSES)
    with pytest.raises(StoreError, match="no study"):
        Study.open(study.folder / "nowhere")
    bad = study.folder.parent / "bad"
    bad.mkdir()
    (bad / "study.sqlite").write_bytes(b"not a database, just bytes" * 100)
    with pytest.raises(StoreError, match="not a medwb study database"):
        Study.open(bad)
    (bad / "study.sqlite").unlink()
    sqlite3.connect(bad / "study.sqlite").execute("CREATE TABLE other (x)").connection.close()
    with pytest.raises(StoreError, match="not a medwb study database"):
        Study.open(bad)


def test_cases_roundtrip(study: Study, samples: Path) -> None:
    cohort, labels = pneumonia_cohort(samples)
    got = study.cases()
    assert list(got.columns) == list(cohort.columns)  # the cohort comes back as it went in
    assert list(got["case_id"]) == list(cohort["case_id"]) and list(got["sha256"]) == list(cohort["sha256"])
    assert got["label"].tolist() == labels.tolist()
    assert study.add_cases(cohort) == 0  # identical re-add is a no-op
    changed = cohort.head(1).copy()
    changed["sha256"] = "0" * 64
    with pytest.raises(StoreError, match="different sha256"):
        study.add_cases(changed)
    reopened = Study.open(study.folder)
    assert reopened.classes == CLASSES and reopened.task == "classification"
    reopened.close()


def test_provenance_two_annotators_and_history(study: Study) -> None:
    open_path = study.folder / "models" / "r1.pt"
    open_path.write_bytes(b"checkpoint")
    mv = study.add_model(1, open_path, {"auc": 0.91})
    auto = study.add_label("train_00000", value=1, source="auto", annotator=f"model:{mv}", round=1, model_version=mv)
    alice = study.add_label("train_00000", value=0, source="corrected", annotator="alice", seconds=4.2, round=1, model_version=mv)
    bob = study.add_label("train_00000", value=1, source="human", annotator="bob", seconds=3.0)
    cur = study.labels()
    assert len(cur) == 1 and cur.iloc[0]["label_id"] == bob  # current label of the case = most recent
    per = study.labels(per_annotator=True)
    assert set(per["annotator"]) == {"alice", "bob"}  # both human annotators kept, the auto label superseded
    every = study.labels(latest=False).set_index("label_id")
    assert every.loc[auto, "superseded"] and not every.loc[alice, "superseded"]
    assert every.loc[alice, "seconds"] == pytest.approx(4.2) and every.loc[alice, "model_version"] == mv
    hist = study.label_history()
    assert list(hist["label_id"]) == [auto, alice, bob]
    assert hist.iloc[1][["from_value", "to_value", "from_source", "to_source", "changed_by"]].tolist() == [1, 0, "auto", "corrected", "alice"]
    # alice relabels: her own earlier label is superseded, bob's stays
    again = study.add_label("train_00000", value=1, annotator="alice")
    per = study.labels(per_annotator=True)
    assert sorted(per["label_id"]) == sorted([bob, again])


def test_retract_label_restores_what_it_superseded(study: Study) -> None:
    """A reader's undo: the label stays in the file (superseded), what it had superseded is current again, and the
    history says who took it back."""
    ck = study.folder / "models" / "r1.pt"
    ck.write_bytes(b"checkpoint")
    mv = study.add_model(1, ck, {"auc": 0.9})
    c0, c1, c2 = "train_00000", "train_00001", "train_00002"
    auto = study.add_label(c0, value=1, source="auto", annotator=f"model:{mv}", model_version=mv)
    a1 = study.add_label(c0, value=0, source="corrected", annotator="alice")
    assert study.retract_label(a1, by="alice", reason="undo") == auto  # the auto label is back
    assert study.labels()["label_id"].tolist() == [auto]
    h = study.label_history().iloc[-1]
    assert [h["label_id"], h["from_value"], h["to_value"], h["to_source"], h["changed_by"], h["reason"]] == \
        [a1, 0, 1, "retracted", "alice", "undo"]
    with pytest.raises(StoreError, match="not current"):
        study.retract_label(a1, by="alice")
    a2 = study.add_label(c0, value=0, annotator="alice")
    bob = study.add_label(c0, value=1, annotator="bob")
    assert study.retract_label(a2, by="alice") is None  # bob's later label would have superseded the auto one
    assert study.labels(per_annotator=True)["label_id"].tolist() == [bob]
    # undo twice in a row on the same case: alice's first label comes back each time
    first = study.add_label(c1, value=0, annotator="alice")
    for v in (1, 0):
        again = study.add_label(c1, value=v, annotator="alice")
        assert study.retract_label(again, by="alice") == first
        assert study.labels(per_annotator=True).set_index("case_id").loc[c1, "label_id"] == first
    only = study.add_label(c2, value=1, annotator="alice")
    assert study.retract_label(only, by="alice") is None
    assert c2 not in set(study.labels()["case_id"]) and study.labelled_ids([c1, c2]) == {c1}
    assert len(study.labels(latest=False)) == 8  # nothing deleted
    with pytest.raises(StoreError, match="does not exist"):
        study.retract_label(999, by="alice")
    with pytest.raises(StoreError, match="by="):
        study.retract_label(first, by=" ")


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"case_id": "nope", "value": 0, "annotator": "a"}, DataError, "unknown case id"),
        ({"case_id": "train_00001", "value": 7, "annotator": "a"}, DataError, "not one of the study's classes"),
        ({"case_id": "train_00001", "value": 0.5, "annotator": "a"}, DataError, "not an integer class"),
        ({"case_id": "train_00001", "value": 0, "annotator": "a", "source": "oracle"}, StoreError, "source"),
        ({"case_id": "train_00001", "value": 0, "annotator": ""}, StoreError, "annotator is empty"),
        ({"case_id": "train_00001", "annotator": "a"}, StoreError, "neither value nor mask_path"),
        ({"case_id": "train_00001", "value": 0, "annotator": "a", "model_version": "v99"}, StoreError, "not registered"),
        ({"case_id": "train_00001", "value": 0, "annotator": "a", "seconds": -1}, StoreError, "non-negative"),
    ],
)
def test_add_label_validation(study: Study, kwargs: dict, err: type, match: str) -> None:
    with pytest.raises(err, match=match):
        study.add_label(**kwargs)
    assert study.labels(latest=False).empty and study.label_history().empty  # nothing half-written


def test_add_labels_batch_is_all_or_nothing(study: Study) -> None:
    recs = [{"case_id": f"train_{i:05d}", "value": i % 2, "annotator": "oracle", "round": 2} for i in range(5)]
    ids = study.add_labels(recs)
    assert len(ids) == 5 and study.labels()["value"].tolist() == [0, 1, 0, 1, 0]
    bad = [{"case_id": "train_00010", "value": 1, "annotator": "oracle"}, {"case_id": "train_00011", "value": 9, "annotator": "oracle"}]
    with pytest.raises(DataError, match="classes"):
        study.add_labels(bad)
    assert len(study.labels(latest=False)) == 5 and len(study.label_history()) == 5


def test_rounds_models_curve_verdicts_queue(study: Study) -> None:
    assert study.current_round() == 0
    study.start_round(1, "entropy", {"k": 2, "seed": 0}, ["train_00003", "train_00004"], np.array([0.69, 0.5]))
    assert study.current_round() == 1 and study.last_finished_round() == 0
    study.start_round(1, "entropy", {"k": 1}, ["train_00005"], [0.6])  # restart of an unfinished round replaces it
    for cid in ("train_00005", "train_00006"):
        study.add_label(cid, value=0, annotator="alice", round=1)
    ck = study.folder / "models" / "round1.pt"
    ck.write_bytes(b"weights")
    v = study.add_model(1, ck, {"test": {"auc": 0.88, "accuracy": 0.81}, "epochs": 5, "note": "text is skipped"})
    study.finish_round(1)
    with pytest.raises(StoreError, match="already finished"):
        study.start_round(1, "entropy", {}, [], [])
    with pytest.raises(DataError, match="unknown case ids"):
        study.start_round(2, "random", {}, ["ghost"], [0.0])
    r = study.rounds().iloc[0]
    assert r["selected_ids"] == ["train_00005"] and r["params"] == {"k": 1} and r["status"] == "finished"
    curve = study.metrics_curve()
    assert set(curve["metric"]) == {"test.auc", "test.accuracy", "epochs"}
    assert (curve["n_labeled"] == 2).all() and (curve["model_version"] == v).all()
    assert Path(study.models().iloc[0]["checkpoint_path"]) == ck
    study.record_verdict("train_00005", "gradcam", "partly", "carol", comment="edge of lung", checks={"model_randomisation": 0.12})
    with pytest.raises(StoreError, match="verdict"):
        study.record_verdict("train_00005", "gradcam", "fine", "carol")
    vd = study.verdicts().iloc[0]
    assert vd["verdict"] == "partly" and vd["checks"] == {"model_randomisation": 0.12}
    assert study.flag_for_review(["train_00005", "train_00006"], reason="label issue", source="label_audit") == 2
    assert study.flag_for_review(["train_00005"], reason="again", source="label_audit") == 0
    assert study.resolve_review("train_00005") == 1
    assert list(study.review_queue()["case_id"]) == ["train_00006"]


def test_verdicts_latest_per_case_method_reviewer(study: Study) -> None:
    """A re-judged map is counted once (its latest verdict); the earlier rows stay readable as history."""
    first = study.record_verdict("train_00005", "gradcam", "partly", "carol")
    second = study.record_verdict("train_00005", "gradcam", "plausible", "carol", comment="looked again")
    other = study.record_verdict("train_00005", "gradcam", "implausible", "dave")
    ig = study.record_verdict("train_00005", "ig", "partly", "carol")
    v = study.verdicts()
    assert list(v["id"]) == [second, other, ig]
    assert v.set_index("id").loc[second, "verdict"] == "plausible"
    assert list(study.verdicts(history=True)["id"]) == [first, second, other, ig]


def test_labels_csv_roundtrip_all_or_nothing(study: Study, tmp_path: Path, samples: Path) -> None:
    cohort, labels = pneumonia_cohort(samples)
    csv = tmp_path / "in.csv"
    pd.DataFrame({"case_id": cohort["case_id"][:10], "value": labels[:10]}).to_csv(csv, index=False)
    assert study.import_labels_csv(csv, annotator="radiologist_1") == 10
    out = study.export_labels_csv(study.folder / "exports" / "labels.csv")
    back = pd.read_csv(out)
    assert back["value"].tolist() == labels[:10].tolist() and set(back["annotator"]) == {"radiologist_1"}
    names = tmp_path / "names.csv"
    pd.DataFrame({"case_id": ["train_00011"], "class_name": ["pneumonia"]}).to_csv(names, index=False)
    study.import_labels_csv(names, annotator="r2")
    assert study.labels().set_index("case_id").at["train_00011", "value"] == 1
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"case_id": ["train_00020", "train_00021"], "value": [1, 3]}).to_csv(bad, index=False)
    n_before = len(study.labels(latest=False))
    with pytest.raises(DataError, match="line 3"):
        study.import_labels_csv(bad, annotator="r3")
    assert len(study.labels(latest=False)) == n_before  # the valid first row was not written either


def test_encrypted_label_export(study: Study, tmp_path: Path) -> None:
    from medwb.errors import CryptoError
    from medwb.privacy.crypto import generate_key

    key, other = generate_key(tmp_path / "k1.key"), generate_key(tmp_path / "k2.key")
    for i in range(5):
        study.add_label(f"train_{i:05d}", value=i % 2, annotator="alice")
    enc = study.export_labels_csv(study.folder / "exports" / "labels.csv.enc", encrypt_with=key)
    assert b"train_00000" not in enc.read_bytes() and b"alice" not in enc.read_bytes()
    s2 = Study.create(tmp_path / "s2", dataset_path="x", task="classification", classes=CLASSES)
    s2.add_cases(study.cases())
    with pytest.raises(CryptoError):
        s2.import_labels_csv(enc, annotator="alice", decrypt_with=other)
    assert s2.labels().empty
    assert s2.import_labels_csv(enc, annotator="alice", decrypt_with=key) == 5
    assert s2.labels()["value"].tolist() == study.labels()["value"].tolist()
    s2.close()


def test_masks_export_import_chase(tmp_path: Path, samples: Path) -> None:
    """Segmentation: the real CHASE_DB1 observer-1 mask goes out as NIfTI, comes back edited (observer 2)."""
    root = samples / "segmentation_2d" / "chase_db1"
    m1 = (np.asarray(Image.open(root / "manual_1stHO" / "Image_01L_1stHO.png").convert("L")) > 127).astype(np.int64)
    m2 = (np.asarray(Image.open(root / "manual_2ndHO" / "Image_01L_2ndHO.png").convert("L")) > 127).astype(np.int64)
    h, w = m1.shape
    s = Study.create(tmp_path / "seg", dataset_path=root, task="segmentation", classes={0: "background", 1: "vessel"})
    s.add_cases(pd.DataFrame({"case_id": ["Image_01L", "Image_01R"], "split": "train", "shape": f"{h}x{w}", "ndim": 2}))
    p = s.save_mask("Image_01L", m1[None], tag="prelabel")
    ck = s.folder / "models" / "seg.pt"
    ck.write_bytes(b"w")
    mv = s.add_model(1, ck, {"dice": 0.7})
    s.add_label("Image_01L", mask_path=p, source="auto", annotator=f"model:{mv}", model_version=mv)
    man = s.export_masks_nifti(s.folder / "exports" / "nifti", affine_lookup=lambda c: np.diag([0.5, 0.5, 1, 1]))
    f = s.folder / "exports" / "nifti" / man.iloc[0]["file"]
    img = nib.load(f)
    assert img.shape == (h, w, 1) and np.array_equal(np.asarray(img.dataobj)[..., 0], m1)
    assert np.allclose(img.affine, np.diag([0.5, 0.5, 1, 1]))
    # the "edited" mask: observer 2's real annotation saved over the export, as 3D Slicer would
    nib.save(nib.Nifti1Image(m2[..., None].astype(np.int16), img.affine), f)
    res = s.import_masks(s.folder / "exports" / "nifti", annotator="observer2")
    assert res.iloc[0]["source"] == "corrected" and bool(res.iloc[0]["changed"])
    cur = s.labels().set_index("case_id")
    assert cur.at["Image_01L", "annotator"] == "observer2"
    assert np.array_equal(read_mask(cur.at["Image_01L", "mask_path"]), m2)
    # validation: wrong shape and values outside the classes are refused before anything is written
    bad = tmp_path / "bad"
    bad.mkdir()
    nib.save(nib.Nifti1Image(m2[:-1, :, None].astype(np.int16), np.eye(4)), bad / "Image_01R.nii.gz")
    with pytest.raises(DataError, match="differs from the image shape"):
        s.import_masks(bad, annotator="x")
    nib.save(nib.Nifti1Image((m2 * 3)[..., None].astype(np.int16), np.eye(4)), bad / "Image_01R.nii.gz")
    with pytest.raises(DataError, match="not classes"):
        s.import_masks(bad, annotator="x")
    (bad / "Image_01R.nii.gz").unlink()
    nib.save(nib.Nifti1Image(m2[..., None].astype(np.int16), np.eye(4)), bad / "Unknown_case.nii.gz")
    with pytest.raises(DataError, match="matches no case"):
        s.import_masks(bad, annotator="x")
    assert len(s.labels(latest=False)) == 2
    s.close()


def test_migration_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medwb.store.schema as store

    s = Study.create(tmp_path / "m", dataset_path="d", task="classification", classes=CLASSES)
    s.close()
    monkeypatch.setattr(store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="no migration"):
        Study.open(tmp_path / "m")
    monkeypatch.setitem(store.MIGRATIONS, SCHEMA_VERSION,
                        lambda c: c.execute("ALTER TABLE labels ADD COLUMN confidence REAL"))
    s = Study.open(tmp_path / "m")
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    assert "confidence" in [r[1] for r in s.conn.execute("PRAGMA table_info(labels)")]
    s.close()


@pytest.mark.slow  # ~5 s of hypothesis examples
def test_import_labels_csv_fuzz(tmp_path: Path) -> None:
    """Random and mutated CSV bytes: the import succeeds or raises the project's own error, never half-writes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from medwb.errors import MedwbError

    s = Study.create(tmp_path / "fz", dataset_path="x", task="classification", classes=CLASSES)
    s.add_cases(pd.DataFrame({"case_id": ["a", "b", "c"], "split": "train"}))
    valid = b"case_id,value,seconds\na,0,1.5\nb,1,\nc,0,2\n"
    f = tmp_path / "fuzz.csv"

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.one_of(st.binary(max_size=200),
                     st.tuples(st.integers(0, len(valid) - 1), st.binary(min_size=1, max_size=6)).map(
                         lambda m: valid[: m[0]] + m[1] + valid[m[0] + len(m[1]):])))
    def run(data: bytes) -> None:
        f.write_bytes(data)
        before = len(s.labels(latest=False))
        try:
            n = s.import_labels_csv(f, annotator="fuzz")
        except MedwbError:
            assert len(s.labels(latest=False)) == before  # a refused file writes nothing
        else:
            assert len(s.labels(latest=False)) == before + n

    run()
    s.close()


def test_v1_study_is_migrated_on_open(tmp_path: Path, samples: Path) -> None:
    """A study written by the first schema (no cohort column order, no current_labels view) opens and upgrades."""
    import medwb.store.schema as store

    folder = tmp_path / "old"
    folder.mkdir()
    c = sqlite3.connect(folder / "study.sqlite")
    c.executescript(store.SCHEMA_V1)
    c.execute("INSERT INTO study VALUES (1, 'old', 'x.npz', 'classification', '{\"0\": \"normal\", \"1\": \"pneumonia\"}', "
              "'2026-01-01T00:00:00+00:00', '0.1.0', 1)")
    c.execute("INSERT INTO cases VALUES ('train_00000', 'train', NULL, NULL, '{\"label\": 1}', '2026-01-01T00:00:00+00:00')")
    c.execute("INSERT INTO labels (case_id, value, source, annotator, created_at) VALUES ('train_00000', 1, 'human', 'a', 'now')")
    c.execute("PRAGMA user_version=1")
    c.commit()
    c.close()
    s = Study.open(folder)
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 10
    assert s.cases()["label"].tolist() == [1]
    assert s.conn.execute("SELECT case_id, value FROM current_labels").fetchall() == [("train_00000", 1)]
    s.add_cases(pneumonia_cohort(samples, n=3)[0])
    assert list(s.cases().columns)[:3] == ["case_id", "split", "label"]
    s.close()


@pytest.mark.slow  # open_dataset of the MSD folder imports MONAI (~4 s)
def test_3d_masks_roundtrip_hippocampus(tmp_path: Path, samples: Path) -> None:
    """3-D: real MSD hippocampus labels go out as NIfTI in the image's space and come back checked against the
    cohort's shape; a second Study handle on the same folder sees the writes (one file, two processes/notebooks)."""
    from medwb.data import open_dataset

    ds = open_dataset(samples / "segmentation_3d" / "hippocampus")
    ids = [c for c in ds.cohort["case_id"] if ds.load_mask(c) is not None][:2]
    s = Study.create(tmp_path / "h", dataset_path=samples / "segmentation_3d" / "hippocampus", task="segmentation",
                     classes=ds.classes)
    s.add_cases(ds.cohort)
    for c in ids:
        s.add_label(c, mask_path=s.save_mask(c, ds.load_mask(c), tag="msd"), annotator="msd_reference")
    out = s.folder / "exports" / "nifti3d"
    man = s.export_masks_nifti(out, ds.affine)
    for rec in man.to_dict("records"):
        img = nib.load(out / rec["file"])
        assert np.allclose(img.affine, ds.affine(rec["case_id"]))
        assert np.array_equal(np.asarray(img.dataobj), ds.load_mask(rec["case_id"])[0])
    edited = np.asarray(nib.load(out / man.iloc[0]["file"]).dataobj).copy()
    edited[edited == 2] = 1
    nib.save(nib.Nifti1Image(edited.astype(np.int16), ds.affine(ids[0])), out / man.iloc[0]["file"])
    other = Study.open(s.folder)  # a second handle, as a second notebook would have
    res = other.import_masks(out, annotator="reader_b")
    assert res.set_index("case_id")["changed"].to_dict() == {ids[0]: True, ids[1]: False}
    assert set(res["source"]) == {"human"}  # the replaced masks were human ones, not model pre-labels
    per = s.labels(per_annotator=True)
    assert len(per) == 4 and set(per["annotator"]) == {"msd_reference", "reader_b"}  # both observers kept
    other.close()
    s.close()


# ---------------------------------------------------------------------- atomic creation / half-created leftovers
_KILL_IN_CREATE = r"""
import sys, time
import medwb.store.schema as schema
from medwb.store import Study

real = schema.migrate
def slow_migrate(conn, version, db):  # the schema and study row are written: stop inside the transaction
    real(conn, version, db)
    print("inside", flush=True)
    time.sleep(60)
schema.migrate = slow_migrate
Study.create(sys.argv[1], dataset_path="pneumoniamnist.npz", task="classification", classes=["normal", "pneumonia"])
"""


def test_create_killed_midway_leaves_no_study_and_create_again_works(tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    folder = tmp_path / "study"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_IN_CREATE, str(folder)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None and proc.stdout.readline().strip() == "inside"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (folder / "study.sqlite").exists()  # the half-built database only ever lived in a temp file
    assert list(folder.glob(".study.sqlite.creating-*"))
    with pytest.raises(StoreError, match="no study here"):
        Study.open(folder)
    with Study.create(folder, dataset_path="x.npz", task="classification", classes=CLASSES) as st:
        assert st.classes == CLASSES
    assert not list(folder.glob(".study.sqlite.creating-*"))  # the dead process's temp file was removed
    with Study.open(folder) as st:
        assert st.task == "classification"
        assert st.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_empty_half_created_database_is_recovered(tmp_path: Path) -> None:
    # a 0-byte file (an older medwb killed right after opening it)
    folder = tmp_path / "zero"
    folder.mkdir()
    (folder / "study.sqlite").write_bytes(b"")
    with pytest.raises(StoreError, match="half-created"):
        Study.open(folder)
    Study.create(folder, dataset_path="x.npz", task="classification", classes=CLASSES).close()
    with Study.open(folder) as st:
        assert st.classes == CLASSES
    # a SQLite file whose creating transaction never committed: valid, but without a single table
    folder = tmp_path / "uncommitted"
    folder.mkdir()
    conn = sqlite3.connect(str(folder / "study.sqlite"), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE study (id INTEGER PRIMARY KEY)")
    conn.execute("ROLLBACK")
    conn.close()
    with pytest.raises(StoreError, match="half-created"):
        Study.open(folder)
    Study.create(folder, dataset_path="x.npz", task="segmentation", classes={0: "bg", 1: "vessel"}).close()
    with Study.open(folder) as st:
        assert st.task == "segmentation"


def test_create_never_discards_a_study_or_an_unreadable_file(samples: Path, tmp_path: Path) -> None:
    cohort, _ = pneumonia_cohort(samples, 5)
    folder = tmp_path / "real"
    with Study.create(folder, dataset_path="x.npz", task="classification", classes=CLASSES) as st:
        st.add_cases(cohort)
    with pytest.raises(StoreError, match="already exists"):
        Study.create(folder, dataset_path="y.npz", task="classification", classes=CLASSES)
    with Study.open(folder) as st:
        assert len(st.cases()) == 5 and st.dataset_path == "x.npz"
    # a damaged file is not provably empty: it is kept as it is for the user to restore
    folder = tmp_path / "damaged"
    folder.mkdir()
    junk = b"not a database " * 300
    (folder / "study.sqlite").write_bytes(junk)
    with pytest.raises(StoreError, match="already exists"):
        Study.create(folder, dataset_path="x.npz", task="classification", classes=CLASSES)
    with pytest.raises(StoreError, match="not a medwb study database"):
        Study.open(folder)
    assert (folder / "study.sqlite").read_bytes() == junk
