"""Whether a round may train in bfloat16 (``TrainConfig.precision="bf16"``, CPU autocast) with the same model
quality (issue 12, the round <= 60 s target): one random label set per seed, the loop's round from the pretrained
trunk (``medwb.al.fit.fit_round``, the default schedule), once in fp32 and once in bf16.

Why: on a CPU with native bfloat16 (AVX-512 BF16, AMX) a training step of the 2D classifier took ~0.6x and of
the 3D UNet ~0.55x the fp32 time (2 threads, AMD EPYC, session 34), but lower precision can cost accuracy.

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_precision.py bloodmnist.npz OUT --labels 1200 \
        --seeds 0 1 2

Rows (OUT/precision.csv, resumable): recipe fp32 / bf16, labels, seed, training seconds (1 thread), test and
validation metrics, best epoch. The table: mean over seeds.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from fixed_sets import pool_inputs
from results_csv import append_result, has_result, read_results

from medwb.al.fit import fit_round
from medwb.models.networks import build_for_dataset
from medwb.models.train import PRECISIONS, default_train_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--labels", type=int, default=1200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    ap.add_argument("--cache", help="folder whose cache/ holds (or gets) the pretrained trunk (default: OUT)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds, Xp, yp, val, test, pre = pool_inputs(a.data, Path(a.cache or out))
    csv = out / "precision.csv"
    done = read_results(csv)
    for seed in a.seeds:
        lab = np.random.default_rng(seed).permutation(len(Xp))[:a.labels]
        config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
        for precision in a.precisions:
            if has_result(done, precision, a.labels, seed):
                continue
            t0 = time.perf_counter()
            _, m = fit_round(build_for_dataset(ds, seed=seed), Xp[lab], yp[lab], val, task=ds.task,
                             config=replace(config, precision=precision), pretrained=pre, test=test, progress=False)
            seconds = time.perf_counter() - t0
            done = append_result(csv, {"recipe": precision, "labels": a.labels, "seed": seed, "seconds": seconds,
                                       "best_epoch": m.get("best_epoch"), "semi": m.get("semi"),
                                       **{k: m[k] for k in sorted(m) if k.startswith(("test_", "val_"))}})
            print(f"seed {seed} {precision} n={a.labels} acc {m.get('test_accuracy', float('nan')):.4f} "
                  f"auc {m.get('test_auc', float('nan')):.4f} {seconds:6.1f} s", flush=True)
    import pandas as pd

    df = pd.read_csv(csv)
    cols = [c for c in ("test_accuracy", "test_balanced_accuracy", "test_auc", "test_dice", "val_balanced_accuracy",
                        "seconds", "best_epoch") if c in df]
    table = df.groupby(["recipe", "labels"])[cols].mean().round(4)
    table["seeds"] = df.groupby(["recipe", "labels"])["seed"].count()
    print(table.to_string())
    (out / "table.txt").write_text(table.to_string() + "\n")


if __name__ == "__main__":
    main()
