"""The structure model for classification: clusters of similar cases before any expert label (issue 13).

Why: a new dataset's first round otherwise starts from a blank slate, the clinician choosing every class from
scratch. Grouping the pool in the self-supervised embedding (SimCLR on the pool, :mod:`medwb.al.representation`)
lets a person name a whole group at once from its most typical members; the group's members then carry that name
as a pre-label the review queue shows, to be accepted or corrected. Pre-labels are proposals, never labels: only
a person's decision in the review queue writes a label (source ``human`` / ``corrected``, note "structure model").

- :func:`cluster_pool`: k-means (seeded) on the L2-normalised embeddings, by default one cluster per 100 pool
  cases; each case's *typicality* is TypiClust's (inverse mean distance to its 20 nearest neighbours in its
  cluster), so the gallery of a cluster starts with its densest, most representative cases.
- :func:`cluster_summary`: one row per cluster: size, spread (mean cosine distance to the centre), most typical ids.
- :func:`structure_prelabels`: from the names a person gave (cluster -> class), a pre-label per pool case.
- :func:`name_by_typical_members`: the simulated person of the benchmarks: names each cluster after the majority
  class of its ``shown`` most typical members (the gallery they would look at).
- :func:`split_cluster` / :func:`merge_clusters`: the clinician's corrections of the grouping (a gallery showing two
  kinds of cells is split in two; two galleries of one kind are merged), each a new :class:`ClusterModel`;
  :func:`merged_index` / :func:`names_after_merge` say where the clusters and their names went.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from medwb.al.acquire import kmeans, typicality
from medwb.errors import DataError

CASES_PER_CLUSTER = 100  # the default granularity: one naming action per 100 pool cases


@dataclass
class ClusterModel:
    """Clusters of a pool: ``cluster`` (N,) index per case, ``typicality`` (N,), ``centers`` (K, F)."""

    case_ids: list[str]
    cluster: np.ndarray
    typicality: np.ndarray
    centers: np.ndarray

    @property
    def n_clusters(self) -> int:
        return int(len(self.centers))

    def table(self) -> pd.DataFrame:
        """One row per pool case: case_id, cluster, typicality, rank (0 = the cluster's most typical case)."""
        df = pd.DataFrame({"case_id": self.case_ids, "cluster": self.cluster.astype(int),
                           "typicality": self.typicality})
        df["rank"] = df.groupby("cluster")["typicality"].rank(ascending=False, method="first").astype(int) - 1
        return df

    def typical(self, cluster: int, n: int = 8) -> list[str]:
        """The ``n`` most typical case ids of ``cluster`` (its gallery)."""
        return self.members(cluster)[:int(n)]

    def members(self, cluster: int) -> list[str]:
        """Every case id of ``cluster``, most typical first."""
        t = self.table()
        return list(t[t["cluster"] == int(cluster)].sort_values("rank")["case_id"])


def cluster_pool(embeddings: np.ndarray, case_ids: Sequence[str], *, n_clusters: int | None = None,
                 cases_per_cluster: int = CASES_PER_CLUSTER, random_state: int = 0) -> ClusterModel:
    """Cluster the pool's embeddings (N, F); ``n_clusters`` default ``ceil(N / cases_per_cluster)`` (at least 2)."""
    x = np.asarray(embeddings, dtype=np.float64)
    ids = [str(c) for c in case_ids]
    if x.ndim != 2 or len(x) != len(ids):
        raise DataError(None, f"embeddings of shape {x.shape} for {len(ids)} case ids",
                        "pass one embedding row per case (medwb.al.representation.pretrained_embeddings)")
    if not np.isfinite(x).all():
        raise DataError(None, "the embeddings contain NaN or Inf", "check the images (medwb check) and the trunk")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = int(n_clusters) if n_clusters is not None else max(2, math.ceil(len(x) / max(int(cases_per_cluster), 1)))
    if not 1 <= k <= len(x):
        raise DataError(None, f"{k} clusters for {len(x)} cases", "ask for between 1 and the number of cases")
    km = kmeans(x, k, random_state)
    labels = np.asarray(km.labels_, dtype=np.int64)
    typ = np.zeros(len(x))
    for c in range(k):
        members = np.flatnonzero(labels == c)
        if len(members):
            typ[members] = typicality(x[members])
    return ClusterModel(ids, labels, typ, np.asarray(km.cluster_centers_))


def cluster_summary(model: ClusterModel, embeddings: np.ndarray, *, shown: int = 8) -> pd.DataFrame:
    """Per cluster: size, spread (mean cosine distance of its members to the centre), typical (ids, best first)."""
    x = np.asarray(embeddings, dtype=np.float64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    c = model.centers / np.maximum(np.linalg.norm(model.centers, axis=1, keepdims=True), 1e-12)
    rows = []
    for k in range(model.n_clusters):
        m = model.cluster == k
        spread = float((1.0 - x[m] @ c[k]).mean()) if m.any() else float("nan")
        rows.append({"cluster": k, "size": int(m.sum()), "spread": spread, "typical": model.typical(k, shown)})
    return pd.DataFrame(rows)


def structure_prelabels(model: ClusterModel, names: Mapping[int, int]) -> pd.DataFrame:
    """A pre-label per pool case from the clusters a person named (``names``: cluster -> class); cases of
    unnamed clusters get none (NA). Columns: case_id, cluster, typicality, prelabel."""
    t = model.table()
    t["prelabel"] = pd.array([names.get(int(c)) for c in t["cluster"]], dtype="Int64")
    return t[["case_id", "cluster", "typicality", "prelabel"]]


def name_by_typical_members(model: ClusterModel, truth: Callable[[str], int], *, shown: int = 8) -> dict[int, int]:
    """The simulated person: names each cluster after the majority true class of its ``shown`` most typical
    members (ties: the smaller class). One naming action per cluster; no case-level label."""
    out = {}
    for k in range(model.n_clusters):
        seen = [int(truth(c)) for c in model.typical(k, shown)]
        if seen:
            vals, counts = np.unique(seen, return_counts=True)
            out[k] = int(vals[np.argmax(counts)])
    return out


def pixel_embeddings(images: np.ndarray, dims: int = 50, random_state: int = 0) -> np.ndarray:
    """PCA of the raw pixels (N, ...) -> (N, <= dims): the label-free features of a first look at a dataset
    (the explore report) where pretraining SimCLR would take minutes; ``medwb structure`` uses the SimCLR embedding."""
    from sklearn.decomposition import PCA

    x = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    return PCA(max(1, min(int(dims), len(x) - 1, x.shape[1])), random_state=random_state).fit_transform(x)


def unit_rows(embeddings: np.ndarray) -> np.ndarray:
    """The embeddings L2-normalised per row: the space the clusters live in (cosine geometry)."""
    x = np.asarray(embeddings, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def check_cluster(model: ClusterModel, cluster: int) -> int:
    """``cluster`` as an int, refused when the model has no such cluster."""
    if not 0 <= int(cluster) < model.n_clusters:
        raise DataError(None, f"cluster {cluster} of a model with {model.n_clusters} clusters",
                        f"pick a cluster between 0 and {model.n_clusters - 1}")
    return int(cluster)


def split_cluster(model: ClusterModel, embeddings: np.ndarray, cluster: int, random_state: int = 0) -> ClusterModel:
    """``cluster`` cut in two by seeded k-means on its members' embeddings: the larger half keeps the index, the
    other becomes cluster ``n_clusters``; both halves get their own typicality (a fresh gallery each)."""
    k = check_cluster(model, cluster)
    x = unit_rows(embeddings)
    if len(x) != len(model.case_ids):
        raise DataError(None, f"{len(x)} embedding rows for {len(model.case_ids)} clustered cases",
                        "pass the embeddings the model was clustered on")
    members = np.flatnonzero(model.cluster == k)
    if len(members) < 2:
        raise DataError(None, f"cluster {k} has {len(members)} member(s)", "split a cluster of 2 cases or more")
    km = kmeans(x[members], 2, random_state)
    half = np.asarray(km.labels_, dtype=np.int64)
    if half.min() == half.max():
        raise DataError(None, f"cluster {k}'s members are identical in the embedding", "merge or name it instead")
    big = int(np.argmax(np.bincount(half, minlength=2)))
    labels, typ = model.cluster.copy(), model.typicality.copy()
    centers = np.vstack([model.centers, km.cluster_centers_[1 - big][None]])
    centers[k] = km.cluster_centers_[big]
    labels[members[half != big]] = model.n_clusters
    for part in (members[half == big], members[half != big]):
        typ[part] = typicality(x[part])
    return ClusterModel(list(model.case_ids), labels, typ, centers)


def merged_index(n_clusters: int, clusters: Sequence[int]) -> np.ndarray:
    """Old cluster -> new cluster after merging ``clusters`` into the smallest of them (the others renumbered in
    order, so the indices stay 0..K'-1)."""
    merged = sorted({int(c) for c in clusters})
    gone = set(merged[1:])
    new, out = 0, np.empty(int(n_clusters), dtype=np.int64)
    for old in range(int(n_clusters)):
        if old not in gone:
            out[old], new = new, new + 1
    out[merged[1:]] = out[merged[0]]
    return out


def merge_clusters(model: ClusterModel, clusters: Sequence[int], embeddings: np.ndarray | None = None) -> ClusterModel:
    """``clusters`` (two or more) as one cluster, numbered as :func:`merged_index` says. Its centre is the mean
    of the merged members (k-means centres are member means, so the size-weighted centres without
    ``embeddings``); with ``embeddings`` its typicality is recomputed over the merged members, else each keeps
    the typicality it had in its part."""
    picked = sorted({check_cluster(model, c) for c in clusters})
    if len(picked) < 2:
        raise DataError(None, f"merging {picked}", "pick two clusters or more to merge")
    new = merged_index(model.n_clusters, picked)
    labels, typ = new[model.cluster], model.typicality.copy()
    members = np.flatnonzero(labels == new[picked[0]])
    centers = np.zeros((int(new.max()) + 1, model.centers.shape[1]))
    for old in range(model.n_clusters):
        if old not in picked[1:]:
            centers[new[old]] = model.centers[old]
    if embeddings is not None:
        x = unit_rows(embeddings)
        centers[new[picked[0]]] = x[members].mean(0)
        typ[members] = typicality(x[members])
    else:
        sizes = np.array([(model.cluster == c).sum() for c in picked], dtype=np.float64)
        centers[new[picked[0]]] = (model.centers[picked] * sizes[:, None]).sum(0) / max(sizes.sum(), 1.0)
    return ClusterModel(list(model.case_ids), labels, typ, centers)


def names_after_merge(names: Mapping[int, int], n_clusters: int, clusters: Sequence[int]) -> dict[int, int]:
    """The names given before a merge, on the merged model's indices: the merged cluster keeps a name only when
    every named part had that same name (a conflict is left for the person to name again)."""
    new = merged_index(n_clusters, clusters)
    picked = {int(c) for c in clusters}
    out = {int(new[k]): int(v) for k, v in names.items() if int(k) not in picked}
    given = {int(v) for k, v in names.items() if int(k) in picked}
    if len(given) == 1:
        out[int(new[min(picked)])] = given.pop()
    return out


__all__ = ["CASES_PER_CLUSTER", "ClusterModel", "check_cluster", "cluster_pool", "cluster_summary", "merge_clusters",
           "merged_index", "name_by_typical_members", "names_after_merge", "pixel_embeddings", "split_cluster",
           "structure_prelabels",
           "unit_rows"]
