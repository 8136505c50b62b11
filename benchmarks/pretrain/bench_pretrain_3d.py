"""The 3D counterpart of bench_pretrain.py, smaller: SimCLR on the 1188 AdrenalMNIST3D training volumes (28^3,
medwb's default 3D classifier trunk 8-16-32-64, 5 epochs), then a linear probe (standardised logistic
regression on embed() features) from 60 / 120 labels (class-stratified, seeds 0-2, the seed also sets the
network init), test AUC on the 298 test volumes, pretrained vs random init.

Run from the repository root:  OMP_NUM_THREADS=1 python benchmarks/pretrain/bench_pretrain_3d.py
"""
from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medwb.models import build_classifier, embed
from medwb.models.pretrain import PretrainConfig, init_from_pretrained, pretrain

torch.set_num_threads(1)
d = np.load("data_samples/classification_3d/adrenalmnist3d.npz")
X, y = d["train_images"][:, None].astype(np.float32) / 255.0, d["train_labels"][:, 0]
Xt, yt = d["test_images"][:, None].astype(np.float32) / 255.0, d["test_labels"][:, 0]
ba = build_classifier(3, 1, 2, seed=0).build_args
t, c = time.perf_counter(), time.process_time()
res = pretrain(ba, X, config=PretrainConfig(epochs=5, seed=0), progress=False)
print(f"3D pretrain {len(X)} vols 28^3, 5 epochs: {time.perf_counter() - t:.1f} s wall "
      f"{time.process_time() - c:.1f} s CPU, loss", [round(h["loss"], 2) for h in res.history])


def probe(m, n: int, s: int) -> float:
    rng = np.random.default_rng(s)
    idx = np.concatenate([rng.choice(np.flatnonzero(y == k), max(2, round(n * np.mean(y == k))), replace=False)
                          for k in (0, 1)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1)).fit(embed(m, X[idx]), y[idx])
    return float(roc_auc_score(yt, clf.predict_proba(embed(m, Xt))[:, 1]))


for n in (60, 120):
    a = [probe(init_from_pretrained(build_classifier(3, 1, 2, seed=s), res), n, s) for s in range(3)]
    b = [probe(build_classifier(3, 1, 2, seed=s), n, s) for s in range(3)]
    print(f"{n} labels: probe test AUC random {np.mean(b):.3f} {np.round(b, 3)}  "
          f"pretrained {np.mean(a):.3f} {np.round(a, 3)}")
