"""The carved splits persisted in the study (medwb.store.pool): save, load, idempotence, conflict, migration, purge."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.errors import StoreError
from medwb.store import SCHEMA_VERSION, Study, labelled_ids, load_splits, save_splits

CLASSES = {0: "normal", 1: "pneumonia"}


def carved(samples: Path) -> dict[str, list[str]]:
    """A carve like the loop's: the official train split of the bundled PneumoniaMNIST, a seeded 20% as val."""
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        n_train, n_test = len(z["train_labels"]), len(z["test_labels"])
    train = [f"train_{i:05d}" for i in range(min(n_train, 200))]
    val = [train[i] for i in np.random.default_rng(0).permutation(len(train))[:40]]
    return {"train": [c for c in train if c not in set(val)], "val": val,
            "test": [f"test_{i:05d}" for i in range(min(n_test, 30))]}


@pytest.fixture()
def study(tmp_path: Path) -> Study:
    s = Study.create(tmp_path / "study", dataset_path="pneumoniamnist.npz", task="classification", classes=CLASSES)
    yield s
    s.close()


def test_save_load_roundtrip_keeps_order_and_is_idempotent(study: Study, samples: Path) -> None:
    splits = carved(samples)
    assert load_splits(study) is None and study.splits() is None
    save_splits(study, splits)
    assert load_splits(study) == splits  # same lists, in the order saved (the val draw is not sorted)
    study.save_splits({k: list(v) for k, v in splits.items()})  # the same splits again: a no-op
    shuffled = {k: v[::-1] for k, v in splits.items()}
    save_splits(study, shuffled)  # the same assignment in another order: still a no-op, the first order stays
    assert study.splits() == splits
    with Study.open(study.folder) as again:  # persisted: a resumed session sees the same split
        assert again.splits() == splits


def test_different_splits_are_refused_with_the_fix(study: Study, samples: Path) -> None:
    splits = carved(samples)
    save_splits(study, splits)
    moved = {"train": splits["train"][1:], "val": splits["val"] + splits["train"][:1], "test": splits["test"]}
    with pytest.raises(StoreError, match=r"different splits saved \(1 cases differ.*Fix: use the saved splits"):
        save_splits(study, moved)
    with pytest.raises(StoreError, match="Fix"):
        save_splits(study, {"train": splits["train"]})  # fewer cases is different too
    assert study.splits() == splits


def test_bad_splits_are_refused_before_anything_is_written(study: Study) -> None:
    with pytest.raises(StoreError, match="'valid'.*Fix: name the splits"):
        save_splits(study, {"train": ["a"], "valid": ["b"]})
    with pytest.raises(StoreError, match="'a' is in both"):
        save_splits(study, {"train": ["a", "b"], "val": ["a"]})
    assert study.splits() is None
    save_splits(study, {"train": ["a"], "val": ["b"]})  # a split not given comes back empty
    assert study.splits() == {"train": ["a"], "val": ["b"], "test": []}


def test_labelled_ids(study: Study) -> None:
    study.add_cases(pd.DataFrame({"case_id": ["a", "b", "c"], "split": "train"}))
    study.add_label("a", value=1, annotator="x")
    study.add_label("c", value=0, annotator="model:m", source="auto")
    study.add_label("c", value=1, annotator="y")  # supersedes the auto label; c stays labelled
    assert labelled_ids(study, ["a", "b", "c", "zz"]) == study.labelled_ids(["a", "b", "c"]) == {"a", "c"}


def test_a_v2_study_gets_the_splits_table_on_open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import medwb.store.schema as schema

    assert SCHEMA_VERSION >= 3
    with monkeypatch.context() as m:  # a study made by the code before the splits table (schema v2)
        m.setattr(schema, "SCHEMA_VERSION", 2)
        Study.create(tmp_path / "v2", dataset_path="x.npz", task="classification", classes=CLASSES).close()
    con = sqlite3.connect(tmp_path / "v2" / "study.sqlite")
    assert con.execute("PRAGMA user_version").fetchone()[0] == 2
    assert con.execute("SELECT 1 FROM sqlite_master WHERE name = 'splits'").fetchone() is None
    con.close()
    with Study.open(tmp_path / "v2") as s:
        assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert s.conn.execute("SELECT schema_version FROM study").fetchone()[0] == SCHEMA_VERSION
        assert s.splits() is None
        s.save_splits({"train": ["a", "b"], "val": ["c"]})
    with Study.open(tmp_path / "v2") as s:
        assert s.splits() == {"train": ["a", "b"], "val": ["c"], "test": []}


def test_purge_removes_the_saved_splits(study: Study, samples: Path) -> None:
    from medwb.privacy.purge import purge_study

    splits = carved(samples)
    study.save_splits(splits)
    folder = study.folder
    study.close()  # (closing twice, as the fixture will, is harmless)
    purge_study(folder, actor="test")
    ids = [c.encode() for c in splits["val"]]
    left = [p for p in folder.rglob("*") if p.is_file()]
    assert [p.name for p in left] == ["purge_audit.jsonl"]
    assert not any(c in left[0].read_bytes() for c in ids)  # the audit names files, never case ids
    with Study.create(folder, dataset_path="x.npz", task="classification", classes=CLASSES) as fresh:
        assert fresh.splits() is None
