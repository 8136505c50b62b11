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


def test_split_finds_the_two_groups_a_cluster_mixed() -> None:
    from medwb.al.structure import cluster_pool, split_cluster

    x, ids, truth = _blobs()
    m = cluster_pool(x, ids, n_clusters=2, random_state=0)  # three true groups in two clusters: one is mixed
    mixed = next(k for k in range(2) if len({truth[c] for c in m.members(k)}) == 2)
    s = split_cluster(m, x, mixed, random_state=0)
    assert s.n_clusters == 3 and m.n_clusters == 2  # a new model; the old one is untouched
    for k in range(3):
        assert len({truth[c] for c in s.members(k)}) == 1  # each half is one true group
    other = 1 - mixed
    assert s.members(other) == m.members(other)  # the cluster not split keeps its members and gallery
    assert sorted(s.members(mixed) + s.members(2)) == sorted(m.members(mixed))
    assert len(s.members(mixed)) >= len(s.members(2))  # the larger half keeps the index
    assert s.table().groupby("cluster")["rank"].min().tolist() == [0, 0, 0]
    assert split_cluster(m, x, mixed, random_state=0).cluster.tolist() == s.cluster.tolist()  # seeded
    with pytest.raises(DataError, match="pick a cluster between"):
        split_cluster(m, x, 2)
    with pytest.raises(DataError, match="embedding rows"):
        split_cluster(m, x[:10], 0)


def test_merge_renumbers_and_keeps_only_agreeing_names() -> None:
    from medwb.al.structure import (cluster_pool, merge_clusters, merged_index, names_after_merge, split_cluster,
                                    unit_rows)

    x, ids, truth = _blobs()
    m = cluster_pool(x, ids, n_clusters=5, random_state=0)
    assert merged_index(5, [3, 1]).tolist() == [0, 1, 2, 1, 3]
    g = merge_clusters(m, [3, 1], x)
    assert g.n_clusters == 4 and len(g.centers) == 4
    assert sorted(g.members(1)) == sorted(m.members(1) + m.members(3))
    assert g.members(3) == m.members(4) and g.members(0) == m.members(0)
    u = unit_rows(x)
    assert np.allclose(g.centers[1], u[[ids.index(c) for c in g.members(1)]].mean(0))
    # without embeddings the centre is the size-weighted mean of the k-means centres (= the member mean)
    assert np.allclose(merge_clusters(m, [1, 3]).centers[1], g.centers[1], atol=1e-6)
    # a split undone by a merge gives the original members back
    s = split_cluster(m, x, 0, random_state=0)
    assert sorted(merge_clusters(s, [0, 5], x).members(0)) == sorted(m.members(0))
    assert names_after_merge({0: 2, 1: 1, 3: 1, 4: 0}, 5, [1, 3]) == {0: 2, 1: 1, 3: 0}
    assert names_after_merge({1: 1, 3: 2, 4: 0}, 5, [1, 3]) == {3: 0}  # conflicting names: named again
    assert names_after_merge({1: 1, 2: 2}, 5, [1, 3]) == {1: 1, 2: 2}  # an unnamed part takes the other's name
    with pytest.raises(DataError, match="two clusters or more"):
        merge_clusters(m, [2, 2])
