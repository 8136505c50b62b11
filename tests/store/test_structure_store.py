"""The structure model's naming actions in the store: who named which cluster with which class, surviving a
restart, and the pre-labels they give rebuilt from the store alone."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pandas as pd
import pytest

from medwb.errors import DataError, StoreError
from medwb.store import SCHEMA_VERSION, Study

CLASSES = {0: "basophil", 3: "eosinophil", 5: "lymphocyte"}  # sparse values: a class is its value, not a position


def _study(folder: Path) -> Study:
    s = Study.create(folder, dataset_path="x.npz", task="classification", classes=CLASSES)
    s.add_cases(pd.DataFrame({"case_id": [f"c{i}" for i in range(6)], "split": "train"}))
    return s


def test_namings_survive_a_restart_and_the_latest_name_wins(tmp_path: Path) -> None:
    s = _study(tmp_path / "s")
    a = s.record_structure_action("name", [2], by="dr_a", value=3, case_ids=["c0", "c1", "c2"])
    s.record_structure_action("split", [2], by="dr_a")
    s.record_structure_action("name", [4], by="dr_b", value=5, case_ids=["c2"])  # the split-off half, renamed
    s.close()
    s = Study.open(tmp_path / "s")
    acts = s.structure_actions()
    assert acts["action"].tolist() == ["name", "split", "name"] and acts["id"].tolist()[0] == a
    assert acts["actor"].tolist() == ["dr_a", "dr_a", "dr_b"] and acts["created_at"].notna().all()
    assert acts["class_name"].tolist() == ["eosinophil", None, "lymphocyte"] and acts["clusters"][1] == [2]
    names = s.structure_names().set_index("case_id")
    assert names["value"].to_dict() == {"c0": 3, "c1": 3, "c2": 5}
    assert names.loc["c2", "named_by"] == "dr_b" and names.loc["c2", "cluster"] == 4
    assert names.loc["c0", "class_name"] == "eosinophil"
    s.close()


def test_bad_actions_are_refused_and_write_nothing(tmp_path: Path) -> None:
    s = _study(tmp_path / "s")
    with pytest.raises(StoreError, match="not one of"):
        s.record_structure_action("rename", [0], by="a")
    with pytest.raises(StoreError, match="who acted"):
        s.record_structure_action("name", [0], by=" ", value=0, case_ids=["c0"])
    with pytest.raises(StoreError, match="needs the class"):
        s.record_structure_action("name", [0], by="a", case_ids=["c0"])
    with pytest.raises(DataError, match="not one of the study's classes"):
        s.record_structure_action("name", [0], by="a", value=1, case_ids=["c0"])  # 1 is no class of this study
    with pytest.raises(StoreError, match="unknown case ids"):
        s.record_structure_action("name", [0], by="a", value=0, case_ids=["nope"])
    with pytest.raises(StoreError, match="carries no class"):
        s.record_structure_action("merge", [0, 1], by="a", value=0)
    assert s.structure_actions().empty and s.structure_names().empty
    s.close()


def test_structure_labels_are_the_ones_noted_as_such(tmp_path: Path) -> None:
    s = _study(tmp_path / "s")
    s.add_label("c0", value=3, annotator="dr_a", note="structure model: accepted pre-label 3")
    s.add_label("c1", value=5, annotator="dr_a", source="corrected", note="structure model: pre-label 3 -> 5")
    s.add_label("c2", value=0, annotator="dr_a", note="chosen by the reader, no model proposal")
    got = s.structure_labels()
    assert got["case_id"].tolist() == ["c0", "c1"] and got["source"].tolist() == ["human", "corrected"]
    s.close()


def test_a_v4_study_gets_the_actions_table_on_open(tmp_path: Path) -> None:
    s = _study(tmp_path / "s")
    s.close()
    c = sqlite3.connect(tmp_path / "s" / "study.sqlite")
    c.execute("DROP TABLE structure_actions")
    c.execute("UPDATE study SET schema_version = 4")
    c.execute("PRAGMA user_version=4")
    c.commit()
    c.close()
    s = Study.open(tmp_path / "s")
    assert s.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 5
    s.record_structure_action("merge", [0, 1], by="a")
    assert len(s.structure_actions()) == 1
    s.close()
