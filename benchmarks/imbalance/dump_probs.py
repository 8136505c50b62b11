"""Validation/test probabilities of the new defaults per select_on (56:4, 58:2, 140:10; seeds 0-4) -> /tmp/probs.npz,
for threshold_rules.py. Run from the repository root: PYTHONPATH=. OMP_NUM_THREADS=1 python benchmarks/imbalance/dump_probs.py
"""
import sys, numpy as np, torch
torch.set_num_threads(1)
sys.argv = ["x"]
exec(open("benchmarks/imbalance/bench_imbalance.py").read().split("sizes = ")[0])
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
