"""Acquisition strategies on a real PneumoniaMNIST pool scored by a briefly trained classifier."""
from __future__ import annotations

import numpy as np
import pytest

from medwb.al.acquire import (STRATEGIES, gradient_embeddings, image_scores_from_mc, reduce_voxel_scores, select,
                           uncertainty_scores)
from medwb.data import open_dataset
from medwb.errors import ConfigError, DataError
from medwb.models import TrainConfig, build_classifier, build_segmenter, embed, train
from medwb.models.uncertainty import mc_dropout_proba

K = 25
UNCERTAINTY = ("least_confidence", "margin", "entropy", "bald", "mean_std", "variance", "hybrid")


@pytest.fixture(scope="module")
def pool(samples):
    ds = open_dataset(samples / "classification_2d" / "pneumoniamnist.npz", progress=False)
    X, y, ids = ds.arrays("train", max_cases=600, seed=2)
    Xv, yv, _ = ds.arrays("val", max_cases=100, seed=2)
    lab = np.arange(100)  # the first 100 are "labelled", the other 500 are the pool
    unl = np.arange(100, 600)
    res = train(build_classifier(2, 1, 2), X[lab], y[lab], Xv, yv, task="classification",
                config=TrainConfig(epochs=3), progress=False)
    mc = mc_dropout_proba(res.model, X[unl], passes=10, seed=0)
    return {
        "ids": np.array(ids), "lab": lab, "unl": unl,
        "inputs": {"probs": mc.mean(0), "mc_probs": mc, "embeddings": embed(res.model, X[unl]),
                   "labeled_embeddings": embed(res.model, X[lab])},
    }


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_k_unique_new_cases_deterministically(pool, name):
    inp = pool["inputs"]
    idx, scores = select(name, K, random_state=3, **inp)
    assert idx.dtype.kind == "i" and len(idx) == K == len(np.unique(idx)) == len(scores)
    assert idx.min() >= 0 and idx.max() < len(pool["unl"])
    chosen = set(pool["ids"][pool["unl"][idx]])
    assert not chosen & set(pool["ids"][pool["lab"]])  # never a labelled case
    assert np.isfinite(scores).all()
    idx2, scores2 = select(name, K, random_state=3, **inp)
    assert np.array_equal(idx, idx2) and np.array_equal(scores, scores2)


@pytest.mark.parametrize("name", ["random", "coreset", "badge", "cold_start"])
def test_stochastic_strategies_depend_on_the_seed(pool, name):
    a, _ = select(name, K, random_state=1, **{**pool["inputs"], "labeled_embeddings": None})
    b, _ = select(name, K, random_state=2, **{**pool["inputs"], "labeled_embeddings": None})
    if name == "badge":  # first pick is the largest gradient, the rest is D^2-sampled
        assert a[0] == b[0] and not np.array_equal(a, b)
    else:
        assert not np.array_equal(a, b)


@pytest.mark.parametrize("name", UNCERTAINTY)
def test_uncertainty_strategies_pick_more_uncertain_cases_than_random(pool, name):
    inp = pool["inputs"]
    kind = {"hybrid": "bald"}.get(name, name)
    u = uncertainty_scores(kind, probs=inp["probs"], mc_probs=inp["mc_probs"])
    idx, _ = select(name, K, **inp)
    rand = np.mean([u[select("random", K, random_state=s, **inp)[0]].mean() for s in range(10)])
    assert u[idx].mean() > rand
    if name != "hybrid":  # pure top-k: nothing outside the batch is more uncertain than inside
        assert u[idx].min() >= np.delete(u, idx).max() - 1e-12


def test_hybrid_is_more_diverse_than_top_k(pool):
    inp = pool["inputs"]
    emb = inp["embeddings"]

    def spread(idx):
        d = np.linalg.norm(emb[idx][:, None] - emb[idx][None], axis=-1)
        return d[np.triu_indices(len(idx), 1)].mean()

    top, _ = select("bald", K, **inp)
    hyb, _ = select("hybrid", K, **inp)
    assert spread(hyb) > spread(top)


def _coverage_radius(emb, centers):
    d = np.linalg.norm(emb[:, None] - centers[None], axis=-1)
    return d.min(1).max()


def test_coreset_covers_far_points(pool):
    inp = pool["inputs"]
    emb, lab = inp["embeddings"], inp["labeled_embeddings"]
    idx, scores = select("coreset", K, **inp)
    r_core = _coverage_radius(emb, np.concatenate([lab, emb[idx]]))
    r_rand = min(_coverage_radius(emb, np.concatenate([lab, emb[select("random", K, random_state=s, **inp)[0]]]))
                 for s in range(5))
    assert r_core < r_rand
    assert np.all(np.diff(scores) <= 1e-9)  # k-center greedy: each pick is nearer than the previous one
    # the first pick is the pool point farthest from the labelled set
    d_lab = np.linalg.norm(emb[:, None] - lab[None], axis=-1).min(1)
    assert idx[0] == int(np.argmax(d_lab))


def test_badge_prefers_large_gradients(pool):
    inp = pool["inputs"]
    g = gradient_embeddings(inp["probs"], inp["embeddings"])
    assert g.shape == (500, 2 * inp["embeddings"].shape[1])
    norms = np.linalg.norm(g, axis=1)
    idx, _ = select("badge", K, **inp)
    assert idx[0] == int(np.argmax(norms))
    assert norms[idx].mean() > norms.mean()
    # precomputed gradient embeddings give the same batch
    assert np.array_equal(idx, select("badge", K, grad_embeddings=g)[0])


def test_cold_start_needs_no_labels_and_spreads_over_clusters(pool):
    from sklearn.cluster import KMeans

    emb = pool["inputs"]["embeddings"]
    idx, typ = select("cold_start", K, embeddings=emb, random_state=0)  # no probs, no labels
    assert len(np.unique(idx)) == K and (typ > 0).all()
    km = KMeans(n_clusters=K, random_state=0, n_init=3).fit(emb.astype(np.float64))  # the strategy's clustering
    sizes = np.bincount(km.labels_, minlength=K)
    big = np.flatnonzero(sizes >= 5)
    assert set(km.labels_[idx[:len(big)]]) == set(big)  # one case per real cluster before any second visit
    assert list(sizes[km.labels_[idx[:len(big)]]]) == sorted(sizes[big], reverse=True)  # largest first
    for i in idx[:len(big)]:  # each pick is its cluster's most typical case (densest neighbourhood)
        members = np.flatnonzero(km.labels_ == km.labels_[i])
        d = np.linalg.norm(emb[members][:, None] - emb[members][None], axis=-1).astype(np.float64)
        np.fill_diagonal(d, np.inf)
        knn = np.sort(d, 1)[:, :min(20, len(members) - 1)].mean(1)
        assert members[np.argmin(knn)] == i


def test_typiclust_then_hybrid_switches_at_the_labels_per_class(pool):
    inp = pool["inputs"]  # 100 labelled cases, 2 classes
    few = select("typiclust_then_hybrid", K, typical_per_class=51, **inp)  # 100 < 2 x 51: still typical cases
    assert np.array_equal(few[0], select("cold_start", K, **inp)[0])
    enough = select("typiclust_then_hybrid", K, typical_per_class=50, **inp)  # 100 >= 2 x 50: uncertainty
    assert np.array_equal(enough[0], select("hybrid", K, **inp)[0])
    assert np.array_equal(enough[1], select("hybrid", K, **inp)[1])
    # no labelled set yet (and no class probabilities: n_classes says how many): the typical cases
    first = select("typiclust_then_hybrid", K, embeddings=inp["embeddings"], n_classes=3)
    assert np.array_equal(first[0], select("cold_start", K, embeddings=inp["embeddings"])[0])


def test_hybrid_random_is_hybrid_for_part_of_the_batch_and_uniform_for_the_rest(pool):
    inp = pool["inputs"]
    idx, scores = select("hybrid_random", K, random_state=4, **inp)
    half = K - round(K * 0.5)
    assert len(idx) == K == len(set(idx.tolist())) and len(scores) == K
    assert sorted(idx[:half]) == sorted(select("hybrid", half, random_state=4, **inp)[0])
    # the random part: from the rest of the pool, seeded, not the next most uncertain cases
    assert np.array_equal(idx, select("hybrid_random", K, random_state=4, **inp)[0])
    assert not np.array_equal(idx[half:], select("hybrid", K, random_state=4, **inp)[0][half:])
    all_random = select("hybrid_random", K, random_share=1.0, **inp)[0]
    assert len(set(all_random.tolist())) == K
    assert np.array_equal(select("hybrid_random", K, random_share=0.0, random_state=4, **inp)[0],
                          select("hybrid", K, random_state=4, **inp)[0])
    with pytest.raises(ConfigError, match="random_share"):
        select("hybrid_random", K, random_share=1.5, **inp)


def test_select_errors_and_limits(pool):
    inp = pool["inputs"]
    with pytest.raises(ConfigError, match=r"unknown acquisition strategy 'magic'\. Fix: use one of .*hybrid"):
        select("magic", 3, **inp)
    with pytest.raises(DataError, match="k=0"):
        select("entropy", 0, **inp)
    with pytest.raises(DataError, match="embeddings"):
        select("coreset", 3, probs=inp["probs"])
    with pytest.raises(DataError, match="MC-dropout"):
        select("bald", 3, probs=inp["probs"])
    idx, _ = select("entropy", 10_000, probs=inp["probs"])
    assert sorted(idx) == list(range(500))


def test_segmentation_voxel_reduction_on_hippocampus(samples):
    ds = open_dataset(samples / "segmentation_3d" / "hippocampus", progress=False)
    X, y, _ = ds.arrays("train", size=(32, 32, 32), max_cases=4, seed=1)
    mc = mc_dropout_proba(build_segmenter(3, 1, 3, dropout=0.3), X, passes=4, seed=0)
    ent = uncertainty_scores("entropy", mc_probs=mc, how="mean")
    top = uncertainty_scores("entropy", mc_probs=mc, how="topk", k_percent=5)
    assert ent.shape == top.shape == (4,) and (top >= ent - 1e-12).all()
    from medwb.models.uncertainty import score_map

    vmap = score_map("entropy", mc_probs=mc)
    fg = y[:, 0] > 0  # the real hippocampus mask as foreground
    red = reduce_voxel_scores(vmap, how="foreground", foreground_mask=fg)
    np.testing.assert_allclose(red, [vmap[i][fg[i]].mean() for i in range(4)])
    empty = np.zeros_like(fg)
    np.testing.assert_allclose(reduce_voxel_scores(vmap, how="foreground", foreground_mask=empty),
                               reduce_voxel_scores(vmap, how="topk"))
    # chunked scoring == whole-pool scoring, and feeds select directly
    scores = image_scores_from_mc(mc, how="topk")
    halves = [image_scores_from_mc(mc[:, :2], how="topk"), image_scores_from_mc(mc[:, 2:], how="topk")]
    for key, val in scores.items():
        np.testing.assert_allclose(val, np.concatenate([h[key] for h in halves]))
    idx, s = select("bald", 2, **scores)
    assert set(idx) == set(np.argsort(-scores["score_bald"])[:2])
    assert np.array_equal(select("entropy", 2, mc_probs=mc, reduce="topk")[0], select("entropy", 2, **scores)[0])


def test_cold_start_can_pick_each_clusters_hardest_to_contrast_case():
    """``contrast_confidence`` swaps the within-cluster pick (most typical) for the least confident case."""
    rng = np.random.default_rng(0)
    emb = np.concatenate([rng.normal(c, 0.05, size=(40, 2)) for c in (0.0, 5.0, 10.0)])
    conf = rng.uniform(0.2, 0.9, size=len(emb))
    idx, scores = select("cold_start", 3, embeddings=emb, random_state=0, contrast_confidence=conf)
    assert sorted(i // 40 for i in idx) == [0, 1, 2]  # one per cluster
    for i in idx:
        block = np.arange(i // 40 * 40, i // 40 * 40 + 40)
        assert i == block[np.argmin(conf[block])]
    np.testing.assert_allclose(scores, 1 - conf[idx])
    typical, _ = select("cold_start", 3, embeddings=emb, random_state=0)
    assert set(typical) != set(idx)
    with pytest.raises(ValueError, match="one value per pool case"):
        select("cold_start", 3, embeddings=emb, contrast_confidence=conf[:-1])
