"""Uncertainty (entropy) vs random picking on an imbalanced PneumoniaMNIST pool (normal:pneumonia 1:8), old vs new
training defaults: test balanced accuracy per round. A loop in miniature (fresh network every round, 20 random
cases to start, +20 per round), so the skew of uncertainty-picked batches reaches training as in medwb's loop.
Run: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/imbalance/al_rounds.py
"""
from __future__ import annotations

import numpy as np
import torch

from medwb.metrics import balanced_accuracy
from medwb.models import TrainConfig, build_classifier, predict_labels, predict_proba, train

torch.set_num_threads(1)
d = np.load("data_samples/classification_2d/pneumoniamnist.npz")


def split(name: str, n0: int, n1: int):
    y = d[f"{name}_labels"].ravel()
    idx = np.sort(np.concatenate([np.flatnonzero(y == 0)[:n0], np.flatnonzero(y == 1)[:n1]]))
    return d[f"{name}_images"][idx][:, None].astype(np.float32) / 255.0, y[idx].astype(np.int64)


Xp, yp = split("train", 100, 800)
Xv, yv = split("val", 20, 160)
Xt, yt = split("test", 30, 240)
configs = {"old": dict(select_on="metric", max_class_weight_ratio=None, validate_exact_bn=False, tune_decision=False),
           "new": {}}
print("config strategy seed round n_labeled n_normal test_bal_acc", flush=True)
for cname, kw in configs.items():
    for strategy in ("random", "entropy"):
        for seed in range(3):
            rng = np.random.default_rng(seed)
            lab = list(rng.choice(len(yp), 20, replace=False))
            for rnd in range(5):
                res = train(build_classifier(2, 1, 2, seed=seed), Xp[lab], yp[lab], Xv, yv, task="classification",
                            progress=False, config=TrainConfig(seed=seed, **kw))
                bal = balanced_accuracy(yt, predict_labels(res.model, Xt))
                print(cname, strategy, seed, rnd, len(lab), int((yp[lab] == 0).sum()), f"{bal:.3f}", flush=True)
                rest = np.setdiff1d(np.arange(len(yp)), lab)
                if strategy == "random":
                    new = rng.choice(rest, 20, replace=False)
                else:
                    p = predict_proba(res.model, Xp[rest])
                    ent = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
                    new = rest[np.argsort(-ent)[:20]]
                lab += list(new)
