"""Validation/test probabilities of the new defaults per select_on (56:4, 58:2, 140:10; seeds 0-4) -> /tmp/probs.npz,
for threshold_rules.py. Run from the repository root: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/imbalance/dump_probs.py
"""
import numpy as np
import torch

from medwb.models import TrainConfig, build_classifier, predict_proba, train

torch.set_num_threads(1)
d = np.load("data_samples/classification_2d/pneumoniamnist.npz")


def split(name: str, n0: int, n1: int):  # as bench_imbalance.py
    y = d[f"{name}_labels"].ravel()
    idx = np.sort(np.concatenate([np.flatnonzero(y == 0)[:n0], np.flatnonzero(y == 1)[:n1]]))
    return d[f"{name}_images"][idx][:, None].astype(np.float32) / 255.0, y[idx].astype(np.int64)


Xv, yv = split("val", 20, 160)
Xt, yt = split("test", 30, 240)
out = {}
for n_maj, n_min in [(56, 4), (58, 2), (140, 10)]:
    X, y = split("train", n_min, n_maj)
    for name, kw in {"balanced": dict(select_on="balanced"), "metric": dict(select_on="metric"), "loss": dict(select_on="loss")}.items():
        for seed in range(5):
            res = train(build_classifier(2, 1, 2, seed=seed), X, y, Xv, yv, task="classification", progress=False, config=TrainConfig(seed=seed, **kw))
            out[f"{n_maj}_{n_min}_{name}_{seed}_val"] = predict_proba(res.model, Xv)
            out[f"{n_maj}_{n_min}_{name}_{seed}_test"] = predict_proba(res.model, Xt)
            out[f"{n_maj}_{n_min}_{name}_{seed}_epoch"] = np.array(res.best_epoch)
            print(n_maj, n_min, name, seed, res.best_epoch, flush=True)
        np.savez("/tmp/probs.npz", yv=yv, yt=yt, **out)
