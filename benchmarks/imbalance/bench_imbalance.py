"""Imbalanced PneumoniaMNIST (normal:pneumonia ~1:8) with skewed labelled sets, as uncertainty sampling leaves them.

Compares model selection (select_on), class-weight capping, validation with exact BatchNorm statistics and the
validation-chosen decision rule (test balanced accuracy of argmax vs the tuned threshold).
Run: PYTHONPATH=. OMP_NUM_THREADS=1 [VARIANTS="a;b"] python benchmarks/imbalance/bench_imbalance.py [n_major n_minor] ...
"""
from __future__ import annotations

import sys
import time

import numpy as np
import torch

from medwb.metrics import balanced_accuracy
from medwb.models import TrainConfig, build_classifier, decide, predict_proba, train

torch.set_num_threads(1)
d = np.load("data_samples/classification_2d/pneumoniamnist.npz")


def split(name: str, n0: int, n1: int, offset: int = 0):
    y = d[f"{name}_labels"].ravel()
    idx = np.sort(np.concatenate([np.flatnonzero(y == 0)[offset:offset + n0], np.flatnonzero(y == 1)[offset:offset + n1]]))
    return d[f"{name}_images"][idx][:, None].astype(np.float32) / 255.0, y[idx].astype(np.int64)


Xv, yv = split("val", 20, 160)
Xt, yt = split("test", 30, 240)
sizes = [(int(a), int(b)) for a, b in zip(sys.argv[1::2], sys.argv[2::2])] or [(56, 4)]
variants = {  # name: TrainConfig overrides ("stale": validation with the running BatchNorm averages, as before)
    "old(metric,nocap)": dict(select_on="metric", max_class_weight_ratio=None, validate_exact_bn=False),
    "metric,cap10": dict(select_on="metric", validate_exact_bn=False),
    "loss,cap10": dict(select_on="loss", validate_exact_bn=False),
    "balanced,nocap": dict(select_on="balanced", max_class_weight_ratio=None, validate_exact_bn=False),
    "balanced,cap10": dict(select_on="balanced", validate_exact_bn=False),
    "balanced,cap10,exactbn": dict(select_on="balanced", validate_exact_bn=True),  # = the defaults now
    "metric,cap10,exactbn": dict(select_on="metric", validate_exact_bn=True),
    "loss,cap10,exactbn": dict(select_on="loss", validate_exact_bn=True),
}
import os  # noqa: E402
if os.environ.get("VARIANTS"):
    variants = {k: v for k, v in variants.items() if k in os.environ["VARIANTS"].split(";")}
print("labelled(maj,min) variant seed best_epoch val_auc test_auc test_bal_argmax test_bal_tuned thr", flush=True)
for n_maj, n_min in sizes:
    X, y = split("train", n_min, n_maj)  # class 0 (normal) is the minority
    for name, kw in variants.items():
        rows = []
        for seed in range(5):
            t0 = time.time()
            res = train(build_classifier(2, 1, 2, seed=seed), X, y, Xv, yv, task="classification", progress=False,
                        config=TrainConfig(seed=seed, **kw))
            p = predict_proba(res.model, Xt)
            from medwb.metrics import auc_binary
            r = (res.best_epoch, res.history[res.best_epoch - 1]["val_auc"], auc_binary(yt == 1, p[:, 1]),
                 balanced_accuracy(yt, p.argmax(1)), balanced_accuracy(yt, decide(p, res.model)),
                 res.threshold)
            rows.append(r)
            print(f"({n_maj},{n_min}) {name} {seed} {r[0]} {r[1]:.3f} {r[2]:.3f} {r[3]:.3f} {r[4]:.3f} {r[5]:.3f}"
                  f"  [{time.time() - t0:.0f}s]", flush=True)
        a = np.array([r[2:5] for r in rows])
        print(f"== ({n_maj},{n_min}) {name}: mean test auc {a[:, 0].mean():.3f} bal(argmax) {a[:, 1].mean():.3f} "
              f"min {a[:, 1].min():.3f} bal(tuned) {a[:, 2].mean():.3f} min {a[:, 2].min():.3f}", flush=True)
