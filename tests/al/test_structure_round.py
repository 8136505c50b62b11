"""The structure round in the store: namings become an ordinary round (strategy 'structure') whose pre-labels are
rebuilt from the recorded namings, never from a model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.errors import ConfigError, StoreError
from medwb.store import Study


def _setup(tmp_path: Path):
    from medwb.al.structure import cluster_pool

    rng = np.random.default_rng(0)
    x = np.concatenate([c + rng.normal(size=(30, 8)) for c in rng.normal(size=(3, 8)) * 5])
    ids = [f"c{i:03d}" for i in range(len(x))]
    s = Study.create(tmp_path / "s", dataset_path="x.npz", task="classification", classes={0: "a", 1: "b", 2: "c"})
    s.add_cases(pd.DataFrame({"case_id": ids, "split": "train"}))
    return s, cluster_pool(x, ids, n_clusters=3, random_state=0), x


def test_namings_open_one_round_that_grows_and_leaves_labelled_cases_out(tmp_path: Path) -> None:
    from medwb.al.structure_round import name_cluster, open_structure_round, structure_batch

    s, m, _ = _setup(tmp_path)
    with pytest.raises(StoreError, match="no cluster is named"):
        open_structure_round(s)
    a = name_cluster(s, m, 0, 2, by="dr_a")
    assert a == m.typical(0, 8)
    assert open_structure_round(s) == 1
    b = structure_batch(s)
    assert b["case_id"].tolist() == a and set(b["prelabel"]) == {2} and set(b["named_by"]) == {"dr_a"}
    s.add_label(a[0], value=1, annotator="dr_a", source="corrected", round=1, note="structure model: pre-label 2 -> 1")
    every = name_cluster(s, m, 1, 0, by="dr_b", members="all")
    assert len(every) == int((m.cluster == 1).sum())
    assert open_structure_round(s) == 1  # the open structure round takes the new names
    r = s.rounds().iloc[0]
    assert r["selected_ids"] == a + every and r["params"]["naming_actions"] == 2
    assert structure_batch(s)["case_id"].tolist() == a[1:] + every  # the labelled case is done
    assert s.proposals(1)["prelabel"].tolist() == [2] * len(a) + [0] * len(every)
    with pytest.raises(ConfigError, match="members="):
        name_cluster(s, m, 2, 0, by="dr_a", members="some")


def test_a_model_round_in_progress_is_not_mixed_with_structure_names(tmp_path: Path) -> None:
    from medwb.al.structure_round import name_cluster, open_structure_round, structure_batch

    s, m, _ = _setup(tmp_path)
    s.start_round(1, "hybrid", {}, m.case_ids[:4], [])
    name_cluster(s, m, 0, 1, by="dr_a")
    with pytest.raises(StoreError, match="hybrid"):
        open_structure_round(s)
    assert structure_batch(s).empty
    s.finish_round(1)
    assert open_structure_round(s) == 2


def test_split_and_merge_are_recorded_and_names_found_again(tmp_path: Path) -> None:
    from medwb.al.structure_round import merge_recorded, name_cluster, names_from_store, split_recorded

    s, m, x = _setup(tmp_path)
    m2 = split_recorded(s, m, x, 0, by="dr_a")
    m3 = merge_recorded(s, m2, [0, 3], by="dr_a", embeddings=x)
    assert m3.n_clusters == 3 and s.structure_actions()["action"].tolist() == ["split", "merge"]
    name_cluster(s, m3, 2, 1, by="dr_a")
    stored = dict(zip(s.structure_names()["case_id"], s.structure_names()["value"]))
    assert names_from_store(m3, stored) == {2: 1}
