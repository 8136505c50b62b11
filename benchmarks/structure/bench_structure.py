"""Issue 13 target (classification): with one naming action per cluster, at most one cluster per 100 pool cases,
and no case-level label, >= 60% of the pool gets a correct pre-label (BloodMNIST, 8 classes).

Prints a table: medwb's structure model (clusters in the SimCLR embedding of the pool, `medwb structure`) against
the same clustering on raw pixels (PCA to 50 dimensions), each cluster named by the simulated person from its 8
most typical members. Then, with ``--round1 DIR``, the human actions round 1 needs with and without the structure
model (:mod:`medwb.pipelines.structure_effort`: the real cluster gallery, review queue and store, a simulated
reader who knows the truth), written to DIR/round1_effort.md and .json. Usage (repository root, venv active):

    OMP_NUM_THREADS=1 python benchmarks/structure/bench_structure.py DATA OUT [--round1 DIR]

The SimCLR pretraining is cached in OUT/study (a second run reuses it).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--clusters-per", type=int, default=100)
    ap.add_argument("--round1", default=None, help="folder for the round-1 effort table (both arms' studies go to "
                    "OUT/round1)")
    a = ap.parse_args()

    from sklearn.decomposition import PCA

    from medwb.al.loop import study_splits
    from medwb.al.structure import cluster_pool, name_by_typical_members, structure_prelabels
    from medwb.data import open_dataset
    from medwb.data.dataset import default_size
    from medwb.data.splits import SplitArrays
    from medwb.pipelines.structure import run_structure
    from medwb.store import Study

    t0 = time.perf_counter()
    ssl = run_structure(a.data, a.out, progress=False)
    ssl_s = time.perf_counter() - t0
    ds = open_dataset(a.data, progress=False)
    with Study.open(Path(a.out) / "study") as study:
        X, y, ids = SplitArrays(ds, study_splits(study, ds), default_size(ds))["train"]
    y = np.asarray(y).reshape(-1)
    t0 = time.perf_counter()
    pix = PCA(50, random_state=0).fit_transform(X.reshape(len(X), -1))
    m = cluster_pool(pix, ids, n_clusters=int(ssl["clusters"]), random_state=0)
    truth = dict(zip(ids, y.tolist()))
    pre = structure_prelabels(m, name_by_typical_members(m, truth.__getitem__))
    pix_share = float(np.mean([int(p) == truth[c] for c, p in zip(pre["case_id"], pre["prelabel"])]))
    pix_s = time.perf_counter() - t0
    rows = [("SimCLR embedding (medwb structure)", ssl["correct_share"], ssl_s),
            ("raw pixels, PCA-50", pix_share, pix_s)]
    print(f"{a.data}: pool {int(ssl['pool'])}, {int(ssl['clusters'])} clusters (one naming action each), "
          f"no case-level label")
    print(f"{'features':38s} {'pool pre-labelled correctly':>28s} {'seconds':>8s}")
    for name, share, sec in rows:
        print(f"{name:38s} {100 * share:27.1f}% {sec:8.1f}")
    (Path(a.out) / "bench.json").write_text(json.dumps({"ssl": ssl, "pixels_pca50_correct_share": pix_share}, indent=2))
    if a.round1:
        round_one(a, ds, X, y, ids, int(ssl["clusters"]))


def round_one(a: argparse.Namespace, ds, X: np.ndarray, y: np.ndarray, ids: list[str], k: int) -> None:
    """The round-1 effort table on the same clusters `medwb structure` wrote (checked against clusters.csv)."""
    import shutil
    from functools import partial

    import pandas as pd

    from medwb.al.representation import pretrain_build_args, pretrained_embeddings, pretrained_representation
    from medwb.al.structure import cluster_pool
    from medwb.models.networks import build_for_dataset
    from medwb.pipelines.structure_effort import effort_markdown, round_one_effort
    from medwb.store import Study

    t0 = time.perf_counter()
    model_fn = partial(build_for_dataset, ds)
    with Study.open(Path(a.out) / "study") as study:  # the cached SimCLR trunk of `medwb structure`
        res = pretrained_representation(study, X, build_args=pretrain_build_args(model_fn, None), progress=False)
    emb = pretrained_embeddings(model_fn, 0, res, X)
    model = cluster_pool(emb, ids, n_clusters=k, random_state=0)
    written = pd.read_csv(Path(a.out) / "clusters.csv", dtype={"case_id": str})
    assert written["cluster"].tolist() == model.cluster.tolist(), "not the clusters medwb structure wrote"
    work = Path(a.out) / "round1"
    shutil.rmtree(work, ignore_errors=True)
    truth = dict(zip(ids, y.astype(int).tolist()))
    table = round_one_effort(work, model, emb, dict(zip(ids, X)).__getitem__, ds.classes, truth.__getitem__,
                             dataset_path=str(a.data))
    seconds = time.perf_counter() - t0
    md = effort_markdown(table)
    print(md)
    out = Path(a.round1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "round1_effort.md").write_text(md + "\n")
    (out / "round1_effort.json").write_text(json.dumps({"rows": table.to_dict("records"), "clusters": k,
                                                        "shown_per_cluster": 8, "seconds": round(seconds, 1)},
                                                       indent=2))


if __name__ == "__main__":
    main()
