"""The cluster gallery on real PneumoniaMNIST images: naming (class NAME shown, class VALUE stored), split and merge
recorded in the store, and the named cases' structure pre-labels reviewed in the ordinary review queue with their
provenance; names and pre-labels survive a restart."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.decomposition import PCA

from medwb.al.structure import cluster_pool
from medwb.store import Study
from medwb.ui.widgets.clusters import ClusterGallery, cluster_gallery

# class values that are neither positions nor in name order: a menu that stored its position would store 0 / 1
CLASSES = {7: "pneumonia", 3: "normal"}
VALUE_OF = {0: 3, 1: 7}  # PneumoniaMNIST label -> this study's class value


@pytest.fixture()
def pool(tmp_path: Path, samples: Path) -> dict:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        x, y = z["train_images"][:240], z["train_labels"][:240, 0]
    ids = [f"train_{i:05d}" for i in range(len(x))]
    images = {c: (a[None] / 255.0).astype(np.float32) for c, a in zip(ids, x)}
    emb = PCA(20, random_state=0).fit_transform(x.reshape(len(x), -1) / 255.0)
    study = Study.create(tmp_path / "s", dataset_path="pneumoniamnist.npz", task="classification", classes=CLASSES)
    study.add_cases(pd.DataFrame({"case_id": ids, "split": "train"}))
    truth = {c: VALUE_OF[int(v)] for c, v in zip(ids, y)}
    yield {"study": study, "ids": ids, "emb": emb, "load": images.__getitem__, "truth": truth,
           "folder": tmp_path / "s"}
    study.close()


def _gallery(p: dict, model, **kw) -> ClusterGallery:
    return ClusterGallery(p["study"], model, p["emb"], p["load"], min_view_seconds=0, **kw)


def test_naming_stores_the_class_value_of_the_name_shown(pool: dict) -> None:
    s = pool["study"]
    model = cluster_pool(pool["emb"], pool["ids"], n_clusters=4, random_state=0)
    g = _gallery(pool, model)
    assert len(g.cards) == 4 and g.cards[0]["image"].value[:4] == b"\x89PNG"
    assert "cases, spread" in g.cards[0]["title"].value and "not named" in g.cards[0]["title"].value
    assert [lab for lab, _ in g.class_options] == ["normal", "pneumonia"]  # names shown, in value order
    card = g.cards[2]
    card["menu"].label = "pneumonia"  # what the person reads and picks
    card["name"].click()
    assert "annotator" in g.status.value and s.structure_actions().empty  # nobody named: nothing stored
    g.annotator.value = "dr_a"
    card["name"].click()
    acts = s.structure_actions()
    assert acts["value"].tolist() == [7] and acts["class_name"].tolist() == ["pneumonia"]  # the value, not index 1
    assert acts["actor"].tolist() == ["dr_a"] and acts["clusters"][0] == [2]
    assert acts["case_ids"][0] == model.typical(2, 8)  # default: the gallery's typical members
    assert "named <b>pneumonia</b>" in card["title"].value
    g.members.value = "all"
    g.cards[0]["menu"].label = "normal"
    g.cards[0]["name"].click()
    assert s.structure_actions()["case_ids"][1] == model.members(0)  # every member of cluster 0
    assert s.structure_actions()["value"].tolist() == [7, 3]


def test_split_and_merge_are_recorded_and_keep_the_names(pool: dict) -> None:
    s = pool["study"]
    g = _gallery(pool, cluster_pool(pool["emb"], pool["ids"], n_clusters=3, random_state=0), annotator="dr_a")
    g.name(1, 3)
    g.cards[0]["tick"].value = True
    g.b_split.click()
    assert g.model.n_clusters == 4 and len(g.cards) == 4 and g.names == {1: 3}
    split = g.model
    g.cards[1]["tick"].value = g.cards[3]["tick"].value = True
    g.b_merge.click()
    assert g.model.n_clusters == 3 and g.names == {1: 3}  # the merged cluster 1 keeps its part's name
    assert sorted(g.model.members(1)) == sorted(split.members(1) + split.members(3))
    assert g.model.members(2) == split.members(2) and "not named" in g.cards[2]["title"].value
    g.cards[0]["tick"].value = g.cards[1]["tick"].value = True
    g.b_split.click()  # two ticked: refused, said, nothing recorded
    assert "exactly one" in g.status.value
    assert s.structure_actions()["action"].tolist() == ["name", "split", "merge"]
    assert s.structure_actions()["clusters"].tolist()[1:] == [[0], [1, 3]]


def test_named_cases_are_reviewed_with_structure_provenance_and_survive_a_restart(pool: dict) -> None:
    s, truth = pool["study"], pool["truth"]
    model = cluster_pool(pool["emb"], pool["ids"], n_clusters=4, random_state=0)
    g = _gallery(pool, model, annotator="dr_a")
    for k in range(3):  # the simulated person names three clusters after their gallery's majority class
        seen = [truth[c] for c in model.typical(k, 8)]
        g.name(k, max(set(seen), key=seen.count))
    g.b_review.click()
    q = g.queue
    named = [c for k in range(3) for c in model.typical(k, 8)]
    assert q is not None and q.case_ids == named and q.round == 1 and q.model_version is None
    assert s.rounds()["strategy"].tolist() == ["structure"] and s.proposals(1)["prelabel"].notna().all()
    q.run_oracle(truth.__getitem__, max_cases=10)
    s.close()  # the kernel dies mid-round

    s = Study.open(pool["folder"])
    pool["study"] = s
    g2 = _gallery(pool, model, annotator="dr_a")
    assert set(g2.names) == {0, 1, 2} and g2.cards[0]["menu"].value == g.names[0]  # the names are back
    q2 = g2.review()
    assert q2.case_ids == named[10:]  # only the undecided cases come back, with their pre-labels
    q2.run_oracle(truth.__getitem__)
    lab = s.labels(latest=True).set_index("case_id")
    assert sorted(lab.index) == sorted(named) and all(lab.loc[c, "value"] == truth[c] for c in named)
    pre = dict(zip(s.structure_names()["case_id"], s.structure_names()["value"]))
    want = ["human" if pre[c] == truth[c] else "corrected" for c in named]
    assert lab.loc[named, "source"].tolist() == want
    assert lab["note"].str.startswith("structure model: ").all()  # the provenance: where the pre-label came from
    assert (lab["annotator"] == "dr_a").all() and lab["created_at"].notna().all() and (lab["round"] == 1).all()
    assert len(s.structure_labels()) == len(named)
    assert g2.review() is None  # nothing left to review in the round


def test_without_a_front_end_the_gallery_is_a_figure(pool: dict) -> None:
    model = cluster_pool(pool["emb"], pool["ids"], n_clusters=5, random_state=0)
    fig = cluster_gallery(None, model, pool["emb"], pool["load"], static=True)
    assert len(fig.axes) == 5 and all("spread" in a.get_title(loc="left") for a in fig.axes)


def test_the_structure_round_is_the_loops_first_round(samples: Path, tmp_path: Path) -> None:
    """loop.complete() trains the first model on the reviewed structure round; the loop's round 2 follows."""
    from _fixtures import tiny_pneumonia_loop

    from medwb.al.oracle import ground_truth
    from medwb.al.structure import pixel_embeddings

    study, ds, loop = tiny_pneumonia_loop(samples, tmp_path, n_train=30, batch_size=4)
    try:
        X, y, ids = loop.arrays("train")
        emb = pixel_embeddings(X)
        model = cluster_pool(emb, ids, n_clusters=3, random_state=0)
        g = ClusterGallery(study, model, emb, ds.load_image, annotator="dr_a", shown=4, min_view_seconds=0)
        truth = ground_truth(ds)
        for k in range(3):
            g.name(k, truth(model.typical(k, 4)[0]))
        g.review().run_oracle(truth)
        r = loop.complete()
        assert r.round == 1 and r.strategy == "structure" and r.n_labeled == 12 and r.model_version is not None
        assert len(study.structure_labels()) == 12
        batch = loop.propose()  # round 2: the model proposes, from the cases not labelled in round 1
        assert loop.round == 2 and len(batch) == 4 and not set(batch["case_id"]) & set(study.labels()["case_id"])
    finally:
        study.close()
