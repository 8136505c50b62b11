"""The structure model for classification: clusters before any label, pre-labels from named clusters."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from medwb.errors import DataError


def _blobs(n_per: int = 60, seed: int = 0) -> tuple[np.ndarray, list[str], dict[str, int]]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(3, 16)) * 4
    x = np.concatenate([c + rng.normal(size=(n_per, 16)) for c in centers])
    ids = [f"c{i:03d}" for i in range(len(x))]
    return x, ids, {c: i // n_per for i, c in enumerate(ids)}


def test_clusters_name_and_prelabel_a_pool() -> None:
    from medwb.al.structure import cluster_pool, cluster_summary, name_by_typical_members, structure_prelabels

    x, ids, truth = _blobs()
    m = cluster_pool(x, ids, random_state=0)
    assert m.n_clusters == 2  # ceil(180 / 100): one naming action per 100 cases by default
    m = cluster_pool(x, ids, n_clusters=3, random_state=0)
    t = m.table()
    assert len(t) == 180 and set(t["rank"]) >= {0} and (t.groupby("cluster")["rank"].min() == 0).all()
    names = name_by_typical_members(m, truth.__getitem__)
    pre = structure_prelabels(m, names)
    assert (pre["prelabel"].astype(int).to_numpy() == np.array([truth[c] for c in pre["case_id"]])).all()
    assert structure_prelabels(m, {0: 1})["prelabel"].isna().sum() == 180 - int((m.cluster == 0).sum())
    s = cluster_summary(m, x)
    assert s["size"].sum() == 180 and (s["spread"] >= 0).all() and len(s["typical"][0]) == 8
    assert cluster_pool(x, ids, n_clusters=3, random_state=0).cluster.tolist() == m.cluster.tolist()  # seeded


def test_bad_inputs_are_refused() -> None:
    from medwb.al.structure import cluster_pool

    x, ids, _ = _blobs(10)
    with pytest.raises(DataError, match="one embedding row per case"):
        cluster_pool(x[:5], ids)
    with pytest.raises(DataError, match="NaN"):
        cluster_pool(np.where(x > 3, np.nan, x), ids)
    with pytest.raises(DataError, match="clusters for"):
        cluster_pool(x, ids, n_clusters=0)


def test_structure_command_on_real_images(samples: Path, tmp_path: Path, capsys) -> None:
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.cli import main

    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=120, n_val=20, n_test=10)
    assert main(["structure", str(data), "--out", str(tmp_path / "s"), "--clusters", "4", "--pretrain-epochs",
                 "2", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "4 clusters" in out and "pre-labelled correctly" in out
    import pandas as pd

    t = pd.read_csv(tmp_path / "s" / "clusters.csv")
    assert len(t) == 120 and set(t["cluster"]) == {0, 1, 2, 3}
    ev = json.loads((tmp_path / "s" / "structure_eval.json").read_text())
    assert ev["naming_actions"] == 4 and 0.5 <= ev["correct_share"] <= 1.0
    seg = samples / "segmentation_3d" / "hippocampus"
    assert main(["structure", str(seg), "--out", str(tmp_path / "h"), "--quiet"]) == 2  # not built yet: says so
