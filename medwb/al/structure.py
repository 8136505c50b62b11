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
        t = self.table()
        return list(t[t["cluster"] == int(cluster)].sort_values("rank")["case_id"].head(int(n)))


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


__all__ = ["CASES_PER_CLUSTER", "ClusterModel", "cluster_pool", "cluster_summary", "name_by_typical_members",
           "structure_prelabels"]
