"""Acquisition strategies: which unlabelled cases should the expert label next.

Every strategy is a plain function with one signature::

    fn(k, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None, grad_embeddings=None,
       random_state=0, **options) -> (indices, scores)

over an unlabelled *pool* of N cases: ``probs`` (N, K[, spatial]) mean softmax, ``mc_probs`` (T, N, K[, spatial])
MC-dropout samples, ``embeddings`` (N, F) penultimate features of the pool, ``labeled_embeddings`` (L, F) those of
the labelled set. ``indices`` are k unique positions into the pool (best first) and ``scores`` the strategy's
score of each selected case (higher = picked earlier). Precomputed per-image uncertainties may be passed as
``score_<kind>=array(N)`` (see :func:`image_scores_from_mc`), which is how segmentation pools are scored
without holding every voxel of every pass. Everything is deterministic for a given ``random_state``.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from medwb.errors import ConfigError, DataError
from medwb.models.uncertainty import SCORE_KINDS, reduce_voxel_scores, score_map

if TYPE_CHECKING:
    from medwb.data.case_images import Images

Strategy = Callable[..., tuple[np.ndarray, np.ndarray]]


# --------------------------------------------------------------------------------------------- helpers
def uncertainty_scores(kind: str, *, probs: np.ndarray | None = None, mc_probs: np.ndarray | None = None,
                       how: str = "mean", k_percent: float = 5.0,
                       foreground_mask: np.ndarray | None = None) -> np.ndarray:
    """One uncertainty score per pool case (N,), higher = more uncertain; voxel maps are reduced by ``how``.

    kinds: least_confidence, margin, entropy (need ``probs`` or ``mc_probs``), bald, variance, mean_std
    (need ``mc_probs``). For segmentation with ``how='foreground'`` and no mask, the predicted foreground
    (argmax > 0 of the mean probabilities) is used.
    """
    if probs is None and mc_probs is not None:
        probs = np.asarray(mc_probs).mean(0)
    m = score_map(kind, probs=probs, mc_probs=mc_probs)
    if m.ndim > 1 and how == "foreground" and foreground_mask is None:
        foreground_mask = np.asarray(probs).argmax(1) > 0
    return reduce_voxel_scores(m, how=how, k_percent=k_percent, foreground_mask=foreground_mask)


def image_scores_from_mc(mc_probs: np.ndarray, *, how: str = "mean", k_percent: float = 5.0,
                         kinds: tuple[str, ...] = SCORE_KINDS) -> dict[str, np.ndarray]:
    """Per-image scores ``{"score_<kind>": (N,)}`` from MC samples, ready for ``select(..., **scores)``.

    Lets a caller score a large segmentation pool chunk by chunk (concatenate the arrays) without keeping
    T x N x K x voxels in memory.
    """
    mc = np.asarray(mc_probs)
    probs = mc.mean(0)
    return {f"score_{k}": uncertainty_scores(k, probs=probs, mc_probs=mc, how=how, k_percent=k_percent)
            for k in kinds}


def _pool_size(probs: Any, mc_probs: Any, embeddings: Any, grad_embeddings: Any, opts: dict[str, Any]) -> int:
    if probs is not None:
        return len(probs)
    if mc_probs is not None:
        return int(np.shape(mc_probs)[1])
    for a in (embeddings, grad_embeddings, *(v for key, v in opts.items() if key.startswith("score_"))):
        if a is not None:
            return len(a)
    if opts.get("n_pool") is not None:
        return int(opts["n_pool"])
    raise DataError(None, "cannot tell the pool size: no probabilities, embeddings or scores given",
                    "pass probs=, mc_probs=, embeddings= or n_pool=")


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by score, ties broken by pool position (stable, so deterministic)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[:k]
    return order.astype(np.int64), np.asarray(scores, dtype=np.float64)[order]


def _pool_uncertainty(kind: str, probs: Any, mc_probs: Any, opts: dict[str, Any]) -> np.ndarray:
    pre = opts.get(f"score_{kind}")
    if pre is not None:
        return np.asarray(pre, dtype=np.float64)
    if probs is None and mc_probs is None:
        raise DataError(None, f"strategy '{kind}' needs model outputs",
                        f"pass probs=/mc_probs= or score_{kind}= (medwb.al.acquire.image_scores_from_mc)")
    return uncertainty_scores(kind, probs=probs, mc_probs=mc_probs, how=opts.get("reduce", "mean"),
                              k_percent=opts.get("k_percent", 5.0))


def _need(x: Any, what: str, strategy: str) -> np.ndarray:
    if x is None:
        raise DataError(None, f"strategy '{strategy}' needs {what}",
                        f"pass {what}= (medwb.models.embed(model, X_pool))")
    return np.asarray(x, dtype=np.float64)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (len(a), len(b)), clipped at 0 against round-off."""
    d = (a * a).sum(1)[:, None] - 2.0 * a @ b.T + (b * b).sum(1)[None, :]
    return np.maximum(d, 0.0)


def min_sq_dist(points: np.ndarray, centers: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Squared distance of each point to its nearest centre (the core-set distance to the labelled set), over
    chunks of ``chunk`` centres so a large labelled set never builds the whole distance matrix (100k points x 256
    centres: 200 MB at a time)."""
    out = np.full(len(points), np.inf)
    for i in range(0, len(centers), chunk):
        out = np.minimum(out, _sq_dists(points, centers[i:i + chunk]).min(1))
    return out


class NearestDistances:
    """Squared distance of every point to the nearest of the centres added so far, updated one centre at a time
    with one matrix-vector product (the points' squared norms are computed once): k-center greedy and BADGE's
    D^2 sampling on a 100k pool cost O(N*F) per pick, not O(N*F) plus a new (N, F) temporary."""

    def __init__(self, points: np.ndarray, start: np.ndarray | None = None) -> None:
        self.points = points
        self.norms = np.einsum("ij,ij->i", points, points)
        self.d = np.full(len(points), np.inf) if start is None else np.asarray(start, dtype=np.float64).copy()

    def add(self, i: int) -> np.ndarray:
        c = self.points[i]
        np.minimum(self.d, np.maximum(self.norms - 2.0 * (self.points @ c) + float(c @ c), 0.0), out=self.d)
        return self.d


# --------------------------------------------------------------------------------------------- strategies
def random(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,  # noqa: A001
           grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random batch (the baseline every other strategy must beat). Scores are the random priorities."""
    n = _pool_size(probs, mc_probs, embeddings, grad_embeddings, opts)
    u = np.random.default_rng(random_state).random(n)
    return _top(u, k)


def _uncertainty_strategy(kind: str) -> Strategy:
    def strategy(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
                 grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
        return _top(_pool_uncertainty(kind, probs, mc_probs, opts), k)

    strategy.__name__ = kind
    strategy.__doc__ = (f"Top-k by {kind.replace('_', ' ')} (see medwb.models.uncertainty.score_map); voxel maps are "
                        "reduced per image with reduce='mean'|'topk'|'foreground'.")
    return strategy


least_confidence = _uncertainty_strategy("least_confidence")
margin = _uncertainty_strategy("margin")
entropy = _uncertainty_strategy("entropy")
bald = _uncertainty_strategy("bald")
variance = _uncertainty_strategy("variance")
mean_std = _uncertainty_strategy("mean_std")


def coreset(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
            grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Core-set by k-center greedy (Sener & Savarese 2018): repeatedly take the pool point farthest from
    everything labelled or already picked. Seeded by the labelled set; without one, the first point is drawn
    with ``random_state``. Scores: the distance to the nearest centre at the time of picking."""
    emb = _need(embeddings, "embeddings", "coreset")
    n = len(emb)
    k = min(k, n)
    if labeled_embeddings is not None and len(labeled_embeddings):
        near = NearestDistances(emb, min_sq_dist(emb, np.asarray(labeled_embeddings, dtype=np.float64)))
        picked: list[int] = []
        scores: list[float] = []
    else:
        first = int(np.random.default_rng(random_state).integers(n))
        near = NearestDistances(emb)
        near.add(first)
        picked, scores = [first], [float("inf")]
    d = near.d
    d[picked] = -1.0
    while len(picked) < k:
        i = int(np.argmax(d))
        picked.append(i)
        scores.append(float(np.sqrt(d[i])))
        near.add(i)
        d[i] = -1.0  # never re-pick (a duplicate point has distance 0, not below; minimum keeps -1)
    s = np.array(scores)
    if np.isinf(s).any():  # the random first pick: give it the largest finite score
        s[np.isinf(s)] = s[np.isfinite(s)].max() if np.isfinite(s).any() else 0.0
    return np.asarray(picked, dtype=np.int64), s


def gradient_embeddings(probs: np.ndarray, embeddings: np.ndarray) -> np.ndarray:
    """BADGE's hallucinated last-layer gradients: (p - onehot(argmax p)) (x) h, shape (N, K*F)."""
    p = np.asarray(probs, dtype=np.float64)
    h = np.asarray(embeddings, dtype=np.float64)
    if p.ndim != 2 or h.ndim != 2 or len(p) != len(h):
        raise DataError(None, f"BADGE needs probs (N,K) and embeddings (N,F); got {p.shape} and {h.shape}",
                        "pass image-level probabilities and medwb.models.embed(...) features of the same pool")
    g = p.copy()
    g[np.arange(len(p)), p.argmax(1)] -= 1.0
    return (g[:, :, None] * h[:, None, :]).reshape(len(p), -1)


def badge(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
          grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """BADGE (Ash et al. 2020): k-means++ seeding on gradient embeddings, so the batch is both uncertain
    (large gradients) and diverse (spread out). First pick: the largest gradient norm; then D^2 sampling
    with ``random_state``. Scores: the squared distance to the nearest already-picked point (norm for the
    first)."""
    if grad_embeddings is None:
        if probs is None and mc_probs is not None:
            probs = np.asarray(mc_probs).mean(0)
        if probs is None or embeddings is None:
            raise DataError(None, "strategy 'badge' needs grad_embeddings= or probs= and embeddings=",
                            "pass probs and medwb.models.embed(model, X_pool)")
        g = gradient_embeddings(probs, embeddings)
    else:
        g = np.asarray(grad_embeddings, dtype=np.float64)
    n = len(g)
    k = min(k, n)
    rng = np.random.default_rng(random_state)
    near = NearestDistances(g)
    first = int(np.argmax(near.norms))
    picked, scores = [first], [float(near.norms[first])]
    d = near.add(first)
    d[first] = 0.0
    while len(picked) < k:
        total = d.sum()
        if total <= 0:  # everything left coincides with a picked point: fall back to random order
            rest = np.setdiff1d(np.arange(n), picked)
            i = int(rng.choice(rest))
        else:
            i = int(rng.choice(n, p=d / total))
        picked.append(i)
        scores.append(float(d[i]))
        d = near.add(i)
        d[i] = 0.0  # picked points stay at 0 (minimum keeps them)
    return np.asarray(picked, dtype=np.int64), np.asarray(scores)


def kmeans(x: np.ndarray, n_clusters: int, random_state: int, sample_weight: np.ndarray | None = None):
    """k-means with a fixed seed (mini-batch above 20k points): the clustering of the cold start, k-means++
    acquisition and the structure model."""
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(x) > 20000:
        km = MiniBatchKMeans(n_clusters=n_clusters, random_state=random_state, n_init=3, batch_size=2048)
    else:
        km = KMeans(n_clusters=n_clusters, random_state=random_state, n_init=3)
    return km.fit(x, sample_weight=sample_weight)


def typicality(x: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """TypiClust typicality: inverse mean distance to the nearest neighbours (within a cluster)."""
    if len(x) == 1:
        return np.ones(1)
    nn_ = min(n_neighbors, len(x) - 1)
    out = np.empty(len(x))
    for i in range(0, len(x), 1024):  # chunked: a 5k-point cluster never needs a 5k x 5k matrix at once
        d = np.sqrt(_sq_dists(x[i:i + 1024], x))
        d[np.arange(len(d)), np.arange(i, i + len(d))] = np.inf
        out[i:i + len(d)] = np.partition(d, nn_ - 1, axis=1)[:, :nn_].mean(1)
    return 1.0 / (out + 1e-12)


def cold_start(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
               grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust-like selection that needs no labels and no trained model (Hacohen et al. 2022).

    k-means on the embeddings with (labelled + k) clusters; repeatedly take the largest cluster holding the
    fewest labelled/picked points and pick its most *typical* point (densest neighbourhood); clusters under
    ``min_cluster_size`` (5) points are outliers and used last. Works with
    self-supervised or even pixel features for round 0. Scores: the picked point's typicality.
    ``contrast_confidence`` (N,) (:func:`medwb.models.pretrain.contrast_confidence`): pick each cluster's *hardest
    to contrast* point instead of its most typical (Chen et al. 2022); scores are then 1 - that confidence.
    """
    emb = _need(embeddings, "embeddings", "cold_start")
    n = len(emb)
    k = min(k, n)
    n_lab = 0 if labeled_embeddings is None else len(labeled_embeddings)
    n_clusters = int(min(n, n_lab + k, opts.get("max_clusters", 500)))
    km = kmeans(emb, n_clusters, random_state)
    labels = km.labels_
    sizes = np.bincount(labels, minlength=n_clusters)
    covered = np.zeros(n_clusters, dtype=np.int64)
    if n_lab:
        covered += np.bincount(km.predict(np.asarray(labeled_embeddings, dtype=np.float64)), minlength=n_clusters)
    taken = np.zeros(n, dtype=bool)
    free = sizes.copy()
    min_size = int(opts.get("min_cluster_size", 5))
    hard = opts.get("contrast_confidence")
    if hard is not None:
        hard = 1.0 - np.asarray(hard, dtype=np.float64)
        if hard.shape != (n,):
            raise ValueError(f"contrast_confidence has shape {hard.shape}; cold_start needs one value per pool case "
                             f"({n},)")
    # per cluster: its members and the score a pick maximises (typicality, or hardness to contrast)
    pick_score: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    picked, scores = [], []
    while len(picked) < k:
        ok = free > 0
        # TypiClust order: clusters of >= min_cluster_size points first (tiny ones are outliers), then the
        # fewest labels, then the largest cluster, then the lowest cluster id (determinism)
        tiny = sizes < min_size
        order = np.lexsort((np.arange(n_clusters), -sizes, covered, tiny))
        c = int(next(c for c in order if ok[c]))
        if c not in pick_score:
            members = np.flatnonzero(labels == c)
            pick_score[c] = (members, typicality(emb[members]) if hard is None else hard[members])
        members, score = pick_score[c]
        avail = ~taken[members]
        j = int(np.argmax(np.where(avail, score, -np.inf)))
        i = int(members[j])
        picked.append(i)
        scores.append(float(score[j]))
        taken[i] = True
        free[c] -= 1
        covered[c] += 1
    return np.asarray(picked, dtype=np.int64), np.asarray(scores)


def hybrid_base(mc_probs: np.ndarray | None, opts: dict[str, Any]) -> str:
    """The uncertainty :func:`hybrid` ranks by: ``opts["base"]``, else BALD when MC samples (or precomputed BALD
    scores) are given, else entropy."""
    return opts.get("base") or ("bald" if mc_probs is not None or "score_bald" in opts else "entropy")


def hybrid(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
           grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Uncertainty, then diversity: keep the top ``candidates_factor`` x k most uncertain cases (BALD when
    MC samples are given, else entropy; ``base=`` overrides), cluster their embeddings into k groups
    (k-means weighted by uncertainty) and take the most uncertain case of each group. Avoids the
    near-duplicate batches that pure top-k uncertainty picks. Scores: the base uncertainty."""
    base = hybrid_base(mc_probs, opts)
    u = _pool_uncertainty(base, probs, mc_probs, opts)
    n = len(u)
    k = min(k, n)
    m = int(min(n, max(k, round(opts.get("candidates_factor", 10) * k))))
    cand, _ = _top(u, m)
    if embeddings is None or m == k:
        return _top(u, k)
    emb = np.asarray(embeddings, dtype=np.float64)[cand]
    w = u[cand] - u[cand].min() + 1e-6
    km = kmeans(emb, k, random_state, sample_weight=w)
    picked: list[int] = []
    for c in range(k):
        members = cand[km.labels_ == c]
        if len(members):
            picked.append(int(members[np.argmax(u[members])]))
    if len(picked) < k:  # empty clusters (duplicated points): fill with the next most uncertain
        rest = [int(i) for i in cand if int(i) not in set(picked)]
        picked += rest[:k - len(picked)]
    idx = np.asarray(picked, dtype=np.int64)
    order = np.argsort(-u[idx], kind="stable")
    return idx[order], u[idx][order]


#: labelled cases per class below which :func:`typiclust_then_hybrid` still picks typical cases (see its docstring)
TYPICAL_PER_CLASS = 50


def typiclust_then_hybrid(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
                          grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """TypiClust (:func:`cold_start`) while labels are few, :func:`hybrid` uncertainty once there are enough.

    Why: with few labels, uncertainty picks hard, class-skewed cases that train worse models than random ones,
    while typical and diverse cases train better ones; with many labels it is the other way round (Hacohen et
    al. 2022, "Active learning on a budget"; the TypiClust-then-Margin switch of Doucet et al. 2024). The switch
    comes when the labelled set holds ``typical_per_class`` (default :data:`TYPICAL_PER_CLASS`) cases per class:
    classes counted from ``probs``, else ``n_classes`` (default 2, the segmentation case: object and background).
    Scores: the chosen strategy's. Opt-in, not the default: on PneumoniaMNIST (1000-case pool, 5 seeds) it gives
    test AUC 0.949 +- 0.004 at 100 labels against hybrid's 0.940 +- 0.015, but on BloodMNIST (8 classes) TypiClust
    batches after the first are behind hybrid's (benchmarks/active_learning/pneumonia_typiclust, bloodmnist_typiclust).
    """
    n_lab = 0 if labeled_embeddings is None else len(labeled_embeddings)
    n_classes = int(np.shape(probs)[1]) if probs is not None else int(opts.get("n_classes", 2))
    per_class = float(opts.get("typical_per_class", TYPICAL_PER_CLASS))
    fn = cold_start if n_lab < per_class * n_classes else hybrid
    return fn(k, probs=probs, mc_probs=mc_probs, embeddings=embeddings, labeled_embeddings=labeled_embeddings,
              grad_embeddings=grad_embeddings, random_state=random_state, **opts)


#: share of a :func:`hybrid_random` batch drawn uniformly at random
RANDOM_SHARE = 0.5


def hybrid_random(k: int, *, probs=None, mc_probs=None, embeddings=None, labeled_embeddings=None,
                  grad_embeddings=None, random_state: int = 0, **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """A share ``random_share`` (default :data:`RANDOM_SHARE`) of the batch uniformly at random, the rest by
    :func:`hybrid`. Why: selection must never make the model worse than random picking, and on PneumoniaMNIST
    hybrid alone fell below random mid-run; a batch that is half random keeps half of random's coverage of the
    pool whatever the uncertainty says. Scores: hybrid's base uncertainty for every picked case. Opt-in: on
    PneumoniaMNIST (1000-case pool, 5 seeds) it halves hybrid's seed spread at 100 labels (test AUC 0.942 +- 0.007
    against 0.940 +- 0.015) but stays below random at 50 labels (0.937 against 0.950;
    benchmarks/active_learning/pneumonia_mixed)."""
    n = _pool_size(probs, mc_probs, embeddings, grad_embeddings, opts)
    k = min(k, n)
    share = float(opts.get("random_share", RANDOM_SHARE))
    if not 0.0 <= share <= 1.0:
        raise ConfigError(f"random_share={share} is not a share. Fix: use a number from 0 to 1")
    k_random = int(round(k * share))
    base = hybrid_base(mc_probs, opts)
    u = _pool_uncertainty(base, probs, mc_probs, opts)  # once: hybrid reads it back as its precomputed scores
    picked, _ = hybrid(k - k_random, probs=probs, mc_probs=mc_probs, embeddings=embeddings,
                       labeled_embeddings=labeled_embeddings, grad_embeddings=grad_embeddings,
                       random_state=random_state, **{**opts, "base": base, f"score_{base}": u}
                       ) if k > k_random else (np.empty(0, np.int64), None)
    rest = np.setdiff1d(np.arange(n), picked)
    extra = np.random.default_rng(random_state).choice(rest, k_random, replace=False)
    idx = np.concatenate([np.asarray(picked, dtype=np.int64), extra.astype(np.int64)])
    return idx, u[idx]


STRATEGIES: dict[str, Strategy] = {
    "random": random,
    "least_confidence": least_confidence,
    "margin": margin,
    "entropy": entropy,
    "bald": bald,
    "mean_std": mean_std,
    "variance": variance,
    "coreset": coreset,
    "badge": badge,
    "cold_start": cold_start,
    "hybrid": hybrid,
    "typiclust_then_hybrid": typiclust_then_hybrid,
    "hybrid_random": hybrid_random,
}


def check_strategy(name: str) -> str:
    """``name`` if it is a known strategy, else ConfigError naming the accepted ones (the loop checks its
    settings with this too, so both raise the same error)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown acquisition strategy {name!r}. Fix: use one of {', '.join(sorted(STRATEGIES))}")
    return name


#: a streamed pool's pixel PCA is fitted on at most this many cases (a seeded sample), then applied chunk by chunk
PCA_FIT_CASES = 5000


def pixel_features(X: Images, *, random_state: int, dim: int = 32) -> np.ndarray:
    """Label-free features for the cold start (no model exists yet): PCA of the pixels. A streamed pool
    (:class:`~medwb.data.case_images.CaseImages`) is never held whole: the PCA is fitted on a seeded sample of
    :data:`PCA_FIT_CASES` cases (all of them in a smaller pool) and projects the pool a chunk at a time."""
    from sklearn.decomposition import PCA

    from medwb.data.case_images import is_streamed

    if not is_streamed(X):
        flat = X.reshape(len(X), -1).astype(np.float32)
        n = max(1, min(dim, len(flat) - 1, flat.shape[1]))
        return PCA(n_components=n, random_state=random_state).fit_transform(flat).astype(np.float32)
    n_fit = min(len(X), PCA_FIT_CASES)
    fit_idx = np.sort(np.random.default_rng(random_state).choice(len(X), n_fit, replace=False))
    sample = X[fit_idx].reshape(n_fit, -1)
    pca = PCA(n_components=max(1, min(dim, n_fit - 1, sample.shape[1])), random_state=random_state).fit(sample)
    return np.concatenate([pca.transform(part.reshape(len(part), -1)) for part in X.chunks()]).astype(np.float32)


def select(name: str, k: int, *, probs: np.ndarray | None = None, mc_probs: np.ndarray | None = None,
           embeddings: np.ndarray | None = None, labeled_embeddings: np.ndarray | None = None,
           grad_embeddings: np.ndarray | None = None, random_state: int = 0,
           **opts: Any) -> tuple[np.ndarray, np.ndarray]:
    """Run strategy ``name`` to pick ``k`` pool cases; returns (indices into the pool, their scores).

    ``k`` larger than the pool returns the whole pool. Options (``reduce``, ``k_percent``, ``base``,
    ``candidates_factor``, ``score_<kind>`` arrays, ``n_pool``) go to the strategy.
    """
    fn = STRATEGIES[check_strategy(name)]
    if int(k) < 1:
        raise DataError(None, f"batch size k={k}", "ask for at least one case (k >= 1)")
    n = _pool_size(probs, mc_probs, embeddings, grad_embeddings, opts)
    idx, scores = fn(min(int(k), n), probs=probs, mc_probs=mc_probs, embeddings=embeddings,
                     labeled_embeddings=labeled_embeddings, grad_embeddings=grad_embeddings,
                     random_state=random_state, **opts)
    idx = np.asarray(idx, dtype=np.int64)
    if len(np.unique(idx)) != len(idx):  # a strategy bug must never reach the label store
        raise RuntimeError(f"strategy {name} returned duplicate indices")
    return idx, np.asarray(scores, dtype=np.float64)
