"""Time one active-learning round on PneumoniaMNIST: train on 500 labels + MC-score the 4208-image pool.

Prints wall-clock and process CPU seconds (the CPU time of a 1-thread process is what the round costs on an
otherwise idle core; wall time on a shared machine also counts waiting for the CPU) and the test metrics.
Run from the repository root: OMP_NUM_THREADS=1 python benchmarks/uncertainty/round_timing.py
"""
from __future__ import annotations

import time

import numpy as np
import torch

from medwb.al.acquire import select
from medwb.data import open_dataset
from medwb.models import TrainConfig, build_classifier, embed, evaluate, train
from medwb.models.uncertainty import mc_dropout_proba


def clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def main(n_labeled: int = 500, passes: int = 20, seed: int = 0) -> None:
    ds = open_dataset("data_samples/classification_2d/pneumoniamnist.npz", progress=False)
    X, y, _ = ds.arrays("train")
    Xv, yv, _ = ds.arrays("val")
    Xt, yt, _ = ds.arrays("test")
    lab = np.random.default_rng(seed).choice(len(X), n_labeled, replace=False)
    unl = np.setdiff1d(np.arange(len(X)), lab)
    w0, c0 = clock()
    res = train(build_classifier(2, 1, 2, seed=seed), X[lab], y[lab], Xv, yv, task="classification",
                config=TrainConfig(seed=seed), progress=False)
    w1, c1 = clock()
    mc = mc_dropout_proba(res.model, X[unl], passes=passes, seed=seed)
    emb, lab_emb = embed(res.model, X[unl]), embed(res.model, X[lab])
    w2, c2 = clock()
    select("hybrid", 50, probs=mc.mean(0), mc_probs=mc, embeddings=emb, labeled_embeddings=lab_emb)
    w3, c3 = clock()
    print(f"torch_threads={torch.get_num_threads()} labelled={n_labeled} pool={len(unl)} passes={passes}")
    print(f"train: {len(res.history)} epochs (best {res.best_epoch}) wall {w1 - w0:.1f}s cpu {c1 - c0:.1f}s")
    print(f"score (MC T={passes} fast + embeddings): wall {w2 - w1:.1f}s cpu {c2 - c1:.1f}s")
    print(f"select (hybrid, k=50): wall {w3 - w2:.1f}s cpu {c3 - c2:.1f}s")
    print(f"round: wall {w3 - w0:.1f}s cpu {c3 - c0:.1f}s")
    print("test:", {k: round(v, 4) for k, v in evaluate(res.model, Xt, yt).items()})


if __name__ == "__main__":
    main()
