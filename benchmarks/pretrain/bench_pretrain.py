"""SimCLR pretraining on the PneumoniaMNIST pool: its cost, and what it buys at 1%, 5% and 10% labels.

1. Pretrain medwb's default 2D classifier trunk (16-32-64-128) on the 4708 training images (28 px, no labels)
   with ``PretrainConfig()`` defaults; report wall-clock and process CPU seconds (on a shared machine the wall
   time also counts waiting for a core).
2. For each label fraction (class-stratified random draw from the training split, per seed) and each start
   (pretrained trunk vs the same network at random init):
   - linear probe: standardised logistic regression (C=0.1) on ``embed()`` features of the labelled cases;
   - fine-tune: ``train()`` with the active-learning round's schedule (``default_train_config``, lr 2e-3), early
     stopping on the 524 validation images, starting from the pretrained trunk (``init_from_pretrained``) or from
     scratch; plus the pretrained start with a 4x lower learning rate (5e-4), which keeps more of the trunk.
   Scored by AUC on the 624 held-out test images.

Run from the repository root (see README.md):
    OMP_NUM_THREADS=2 python benchmarks/pretrain/bench_pretrain.py
"""
from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medwb.data import open_dataset
from medwb.data.splits import stratified_subset
from medwb.models import build_classifier, default_train_config, embed, evaluate, train
from medwb.models.pretrain import PretrainConfig, init_from_pretrained, pretrain

DATA = "data_samples/classification_2d/pneumoniamnist.npz"


def probe_auc(model, X, y, Xt, yt) -> float:
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, C=0.1))
    clf.fit(embed(model, X), y)
    return float(roc_auc_score(yt, clf.predict_proba(embed(model, Xt))[:, 1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=PretrainConfig.epochs)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    args = ap.parse_args()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    torch.set_num_threads(threads)

    ds = open_dataset(DATA, progress=False)
    X, y, _ = ds.arrays("train")
    Xv, yv, _ = ds.arrays("val")
    Xt, yt, _ = ds.arrays("test")
    build = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2}
    cfg = PretrainConfig(epochs=args.epochs, seed=0)
    print(f"pool: {len(X)} unlabelled PneumoniaMNIST training images {X.shape[1:]}, val {len(Xv)}, test {len(Xt)}; "
          f"torch threads {torch.get_num_threads()}; load average at start {os.getloadavg()[0]:.1f}")
    print(f"config: {cfg}")
    w0, c0 = time.perf_counter(), time.process_time()
    res = pretrain(build_classifier(**build, seed=0).build_args, X, config=cfg, progress=False)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    h = res.history
    print(f"pretraining: {res.epochs_done} epochs, {wall:.1f} s wall ({wall / 60:.2f} min), {cpu:.1f} s process CPU "
          f"({cpu / threads:.1f} s per thread), load average at end {os.getloadavg()[0]:.1f}")
    print("loss by epoch: " + " ".join(f"{r['loss']:.2f}" for r in h)
          + f"  (chance log(2B-1) = {h[0]['loss'] / h[0]['loss_norm']:.2f}); positive-pair accuracy "
          f"{h[0]['pos_acc']:.2f} -> {h[-1]['pos_acc']:.2f}")

    rows = []
    for seed in args.seeds:
        for frac in args.fractions:
            lab = stratified_subset(y, round(frac * len(X)), seed)
            r = {"seed": seed, "fraction": frac, "labels": len(lab)}
            for start in ("scratch", "pretrained"):
                model = build_classifier(**build, seed=seed)
                if start == "pretrained":
                    init_from_pretrained(model, res)
                r[f"probe_{start}"] = probe_auc(model, X[lab], y[lab], Xt, yt)
                t = time.perf_counter()
                out = train(model, X[lab], y[lab], Xv, yv, config=default_train_config("classification", seed=seed),
                            progress=False)
                r[f"ft_{start}"] = evaluate(out.model, Xt, yt)["auc"]
                r[f"ft_{start}_s"] = time.perf_counter() - t
            low = init_from_pretrained(build_classifier(**build, seed=seed), res)
            out = train(low, X[lab], y[lab], Xv, yv, progress=False,
                        config=default_train_config("classification", seed=seed, lr=5e-4))
            r["ft_pretrained_low_lr"] = evaluate(out.model, Xt, yt)["auc"]
            rows.append(r)
            print(f"  seed {seed} {frac:>4.0%} ({len(lab)} labels): probe {r['probe_scratch']:.3f} -> "
                  f"{r['probe_pretrained']:.3f}, fine-tune {r['ft_scratch']:.3f} -> {r['ft_pretrained']:.3f} "
                  f"(lr 5e-4: {r['ft_pretrained_low_lr']:.3f})",
                  flush=True)

    print("\ntest AUC (624 images); probe = logistic regression on embed() features, fine-tune = train() + early "
          "stopping on val")
    print(f"{'labels':>16} | {'probe scratch':>13} | {'probe pretr.':>12} | {'FT scratch':>11} | {'FT pretr.':>11} "
          f"| {'FT pretr. lr/4':>14}")
    print("-" * 97)
    for frac in args.fractions:
        sel = [r for r in rows if r["fraction"] == frac]
        def cell(k: str, sel: list[dict] = sel) -> str:
            v = np.array([r[k] for r in sel])
            return f"{v.mean():.3f}" + (f"±{v.std(ddof=1):.3f}" if len(v) > 1 else "")
        n = sel[0]["labels"]
        print(f"{frac:>5.0%} ({n:>4} lab) | {cell('probe_scratch'):>13} | {cell('probe_pretrained'):>12} | "
              f"{cell('ft_scratch'):>11} | {cell('ft_pretrained'):>11} | {cell('ft_pretrained_low_lr'):>14}")
    print(f"(mean{' ± sd' if len(args.seeds) > 1 else ''} over label-draw / init seeds {args.seeds}; "
          f"one pretraining run, seed 0)")


if __name__ == "__main__":
    main()
