"""FixMatch (medwb.models.semi.train_semi) vs supervised train() on PneumoniaMNIST at 1%, 5% and 10% labels.

For each label fraction (class-stratified random draw from the 4708 training images, per seed) and each start
(random init, or the trunk pretrained once with SimCLR on the whole training pool, ``PretrainConfig(epochs=10)``):
- supervised: ``train()`` with the active-learning round's schedule (``default_train_config``), labels only;
- FixMatch: ``train_semi()`` with ``SemiConfig()`` defaults, the labels plus every other training image as the
  unlabelled pool.
Both stop early on the 524 validation images; scored on the 624 test images by AUC and balanced accuracy
(argmax decision). Default network: ``build_classifier(2, 1, 2)`` (16-32-64-128).

Run from the repository root (see README.md):
    OMP_NUM_THREADS=2 python benchmarks/semi/bench_semi.py
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from medwb.data import open_dataset
from medwb.data.splits import stratified_subset
from medwb.models import build_classifier, default_train_config, predict_proba, train
from medwb.models.pretrain import PretrainConfig, init_from_pretrained, load_pretrained, pretrain, save_pretrained
from medwb.metrics import balanced_accuracy
from medwb.models.semi import SemiConfig, train_semi
from medwb.metrics import class_metrics

DATA = "data_samples/classification_2d/pneumoniamnist.npz"
METHODS = ("sup_scratch", "fix_scratch", "sup_pretr", "fix_pretr")


def scores(model, X, y) -> tuple[float, float]:
    p = predict_proba(model, X)
    return class_metrics(p, y)["auc"], balanced_accuracy(np.asarray(y).reshape(-1), p.argmax(1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pretrain-epochs", type=int, default=10)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.05, 0.10])
    ap.add_argument("--channels", type=int, nargs="+", default=None, help="trunk widths (default: the classifier's)")
    ap.add_argument("--pretrained", default=None, help="cache file: loaded if it exists, else written after pretraining")
    args = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    ds = open_dataset(DATA, progress=False)
    X, y, _ = ds.arrays("train")
    Xv, yv, _ = ds.arrays("val")
    Xt, yt, _ = ds.arrays("test")
    build = {"spatial_dims": 2, "in_channels": 1, "num_classes": 2,
             "channels": tuple(args.channels) if args.channels else None}
    print(f"PneumoniaMNIST: train pool {len(X)} (class 1 share {y.mean():.2f}), val {len(Xv)}, test {len(Xt)}; "
          f"torch threads {torch.get_num_threads()}; load average at start {os.getloadavg()[0]:.1f}; network "
          f"build_classifier(2, 1, 2, channels={build_classifier(**build).build_args['channels']})")
    print(f"supervised: {default_train_config('classification')}")
    print(f"FixMatch:   {SemiConfig()}")
    t = time.perf_counter()
    if args.pretrained and Path(args.pretrained).is_file():
        pre = load_pretrained(args.pretrained)
        print(f"pretrained trunk loaded from {args.pretrained} (computed by an earlier run of this script)")
    else:
        pre = pretrain(build_classifier(**build, seed=0).build_args, X,
                       config=PretrainConfig(epochs=args.pretrain_epochs, seed=0), progress=False)
        if args.pretrained:
            save_pretrained(pre, args.pretrained)
    print(f"pretraining (SimCLR, {pre.epochs_done} epochs, seed 0, all {len(X)} training images): "
          f"{pre.seconds:.0f} s, final loss {pre.history[-1]['loss']:.2f}", flush=True)

    rows = []
    for seed in args.seeds:
        for frac in args.fractions:
            lab = stratified_subset(y, round(frac * len(X)), seed)
            pool = np.setdiff1d(np.arange(len(X)), lab)
            r: dict = {"seed": seed, "fraction": frac, "labels": len(lab)}
            for m in METHODS:
                model = build_classifier(**build, seed=seed)
                if m.endswith("pretr"):
                    init_from_pretrained(model, pre)
                t = time.perf_counter()
                if m.startswith("sup"):
                    out = train(model, X[lab], y[lab], Xv, yv, progress=False,
                                config=default_train_config("classification", seed=seed))
                else:
                    out = train_semi(model, X[lab], y[lab], X[pool], Xv, yv, progress=False,
                                     config=SemiConfig(seed=seed))
                r[m] = scores(out.model, Xt, yt)
                r[m + "_s"] = time.perf_counter() - t
                r[m + "_ep"] = out.best_epoch
            rows.append(r)
            print(f"  seed {seed} {frac:>4.0%} ({len(lab)} labels): "
                  + "; ".join(f"{m} AUC {r[m][0]:.3f} bal.acc {r[m][1]:.3f} ({r[m + '_s']:.0f} s, best ep "
                              f"{r[m + '_ep']})" for m in METHODS), flush=True)

    print("\ntest AUC / balanced accuracy (624 images); sup = train() on the labels, FixMatch = train_semi() on the "
          "labels + the rest of the training pool; scratch = random init, pretr. = SimCLR trunk")
    head = " | ".join(f"{n:>13}" for n in ("sup scratch", "FixM scratch", "sup pretr.", "FixM pretr."))
    for i, name in ((0, "AUC"), (1, "balanced accuracy")):
        print(f"\n{name}\n{'labels':>16} | {head}\n" + "-" * 80)
        for frac in args.fractions:
            sel = [r for r in rows if r["fraction"] == frac]

            def cell(m: str, sel: list = sel, i: int = i) -> str:
                v = np.array([r[m][i] for r in sel])
                return f"{v.mean():.3f}" + (f"±{v.std(ddof=1):.3f}" if len(v) > 1 else "")
            print(f"{frac:>5.0%} ({sel[0]['labels']:>4} lab) | " + " | ".join(f"{cell(m):>13}" for m in METHODS))
    secs = {m: np.mean([r[m + "_s"] for r in rows]) for m in METHODS}
    print("\nmean training seconds per run: " + ", ".join(f"{m} {s:.0f}" for m, s in secs.items()))
    print(f"(mean{' ± sd' if len(args.seeds) > 1 else ''} over label-draw / init seeds {args.seeds}; "
          f"one pretraining run, seed 0; load average at end {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
