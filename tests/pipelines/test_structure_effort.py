"""Round 1's human actions with and without the structure model, counted through the real gallery, review queue
and store on real PneumoniaMNIST images (a small pool; the BloodMNIST numbers are in benchmarks/structure)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.decomposition import PCA

from medwb.al.structure import cluster_pool
from medwb.pipelines.structure_effort import effort_markdown, round_one_effort


def test_both_arms_are_counted_from_the_stored_labels(tmp_path: Path, samples: Path) -> None:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        x, y = z["train_images"][:300], z["train_labels"][:300, 0]
    ids = [f"train_{i:05d}" for i in range(len(x))]
    images = {c: (a[None] / 255.0).astype(np.float32) for c, a in zip(ids, x)}
    truth = dict(zip(ids, y.astype(int).tolist()))
    emb = PCA(20, random_state=0).fit_transform(x.reshape(len(x), -1) / 255.0)
    model = cluster_pool(emb, ids, n_clusters=6, random_state=0)
    t = round_one_effort(tmp_path, model, emb, images.__getitem__, {0: "normal", 1: "pneumonia"},
                         truth.__getitem__, shown=5).set_index("arm")
    wo, w = t.loc["without (choose each class)"], t.loc["with the structure model"]
    assert wo["class_choices"] == wo["total_actions"] == wo["correct_labels"] == 30  # 6 galleries of 5 cases
    assert wo["naming_actions"] == wo["accepts"] == wo["corrections"] == 0
    assert w["naming_actions"] == 6 and w["class_choices"] == 0
    assert w["accepts"] + w["corrections"] == 30 and w["total_actions"] == 36 and w["correct_labels"] == 30
    # accepts are exactly the round's cases whose majority-of-gallery name was right
    right = 0
    for k in range(6):
        seen = [truth[c] for c in model.typical(k, 5)]
        right += max(seen.count(0), seen.count(1))
    assert w["accepts"] == right and w["corrections"] == 30 - right
    assert 150 <= w["pool_correct_prelabels"] <= 300 and w["pool"] == 300
    md = effort_markdown(t.reset_index())
    assert md.count("\n") == 3 and "| with the structure model | 6 | 0 |" in md
