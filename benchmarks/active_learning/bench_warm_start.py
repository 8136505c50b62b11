"""Whether a round after the first may start from the previous round's model with a short schedule (issue 12, the
round <= 60 s target): nested random label sets of a MedMNIST pool, one chain of rounds per seed and recipe.

Why: a BloodMNIST round at 10% of the labels trains the supervised candidate from the pretrained trunk for at
least 80 passes over 1 196 labels (166 s of a 2-core host; ``../uncertainty/round_timing_bloodmnist.md``). MONAI
Label's rounds continue from the last model instead; whether that keeps the quality here (warm starts can
generalise worse, Ash & Adams 2020, "On Warm-Starting Neural Network Training") is measured, not assumed.

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_warm_start.py bloodmnist.npz OUT \
        --sizes 240 480 720 960 1200 --seeds 0 1 2 --passes 20 40

Per seed, the label sets are the first 240, 480, ... cases of one seeded permutation of the pool (each round's
set holds the previous one, as a loop's does). Rows (OUT/warm_start.csv, resumable):
  fresh       the loop's round today: from the pretrained trunk (cached in OUT/cache or --cache), the default
              schedule (>= 80 passes over the labels, cosine, best epoch on validation); every size
  warmP       the first size as ``fresh``, then each later size from the previous *warmP* model (a chain, as
              rounds would run), P passes over the labels (``medwb.al.fit.fit_continued``, the loop's
              ``warm_start``: cosine from the default rate, run to the end, the best epoch on validation kept)
  warmP-spL   as warmP, but each continued model is first shrunk and perturbed (``--shrink-perturb L``: every
              weight w -> L * w + 0.01 * w0, w0 a freshly initialised network's; Ash & Adams's remedy for the
              generalisation gap of warm starts)
The table: test accuracy / AUC, mean +- SD over seeds, and the training seconds per size (1 thread each).
"""
from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from fixed_sets import pool_inputs
from results_csv import append_result, has_result, read_results

from medwb.al.fit import fit_continued, fit_round
from medwb.models.networks import build_for_dataset
from medwb.models.train import default_train_config


def shrink_perturb(model: torch.nn.Module, shrink: float, fresh: torch.nn.Module, noise: float = 0.01) -> torch.nn.Module:
    """A copy of ``model`` with every trainable weight w -> shrink * w + noise * w0 (w0: ``fresh``'s initial
    weights); BatchNorm running statistics are kept (training re-estimates them)."""
    out = copy.deepcopy(model)
    with torch.no_grad():
        for p, p0 in zip(out.parameters(), fresh.parameters()):
            p.mul_(shrink).add_(p0, alpha=noise)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--sizes", type=int, nargs="+", default=[240, 480, 720, 960, 1200])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--passes", type=int, nargs="*", default=[20, 40], help="the warm chains' passes per round")
    ap.add_argument("--fresh-sizes", type=int, nargs="*", default=None,
                    help="sizes that get a fresh row (default: every size; none given: only the chains' first "
                         "model is trained, without a row)")
    ap.add_argument("--cache", help="folder whose cache/ holds (or gets) the pretrained trunk (default: OUT)")
    ap.add_argument("--shrink-perturb", type=float, nargs="*", default=[], metavar="L",
                    help="also chains whose continued model is shrunk by L and perturbed first (warmP-spL)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds, Xp, yp, val, test, pre = pool_inputs(a.data, Path(a.cache or out))
    csv = out / "warm_start.csv"
    done = read_results(csv)

    for seed in a.seeds:
        perm = np.random.default_rng(seed).permutation(len(Xp))
        config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)

        def row(name: str, n: int, m: dict, seconds: float, passes: float) -> None:
            nonlocal done
            done = append_result(csv, {"recipe": name, "labels": n, "seed": seed, "seconds": seconds,
                                       "passes": passes, "best_epoch": m.get("best_epoch"),
                                       "test_auc": m["test_auc"], "test_accuracy": m["test_accuracy"],
                                       "test_balanced_accuracy": m["test_balanced_accuracy"],
                                       "val_auc": m["val_auc"], "val_balanced_accuracy": m["val_balanced_accuracy"]})
            print(f"seed {seed} {name:10s} n={n:5d} acc {m['test_accuracy']:.4f} auc {m['test_auc']:.4f} "
                  f"{seconds:6.1f} s", flush=True)

        fresh_sizes = set(a.sizes if a.fresh_sizes is None else a.fresh_sizes)
        chains = []  # (row name, passes, shrink) of every chain with a row still to write (resumed runs)
        for passes in a.passes:
            for shrink in [None, *a.shrink_perturb]:
                name = f"warm{passes}" + ("" if shrink is None else f"-sp{shrink:g}")
                if not all(has_result(done, name, n, seed) for n in a.sizes[1:]):
                    chains.append((name, passes, shrink))
        first = None  # the first size's fresh model: every unfinished chain starts from it
        for n in a.sizes:
            wanted = n in fresh_sizes and not has_result(done, "fresh", n, seed)
            if not wanted and (n != a.sizes[0] or not chains):
                continue
            lab = perm[:n]
            t0 = time.perf_counter()
            model, m = fit_round(build_for_dataset(ds, seed=seed), Xp[lab], yp[lab], val, task=ds.task,
                                 config=config, pretrained=pre, test=test, progress=False)
            first = model if first is None else first
            if wanted:
                row("fresh", n, m, time.perf_counter() - t0, float("nan"))
        for name, passes, shrink in chains:
            prev = first
            for n in a.sizes[1:]:
                lab = perm[:n]
                t0 = time.perf_counter()
                start = prev if shrink is None else shrink_perturb(prev, shrink, build_for_dataset(ds, seed=seed + n))
                prev, m = fit_continued(start, Xp[lab], yp[lab], val, task=ds.task, config=config, passes=passes,
                                        test=test, progress=False)
                if not has_result(done, name, n, seed):
                    row(name, n, m, time.perf_counter() - t0, passes)

    import pandas as pd

    df = pd.read_csv(csv)
    g = df.groupby(["recipe", "labels"])
    table = g.agg(acc=("test_accuracy", "mean"), acc_sd=("test_accuracy", "std"), auc=("test_auc", "mean"),
                  auc_sd=("test_auc", "std"), seconds=("seconds", "mean"), seeds=("seed", "count")).round(4)
    print(table.to_string())
    (out / "table.txt").write_text(table.to_string() + "\n")


if __name__ == "__main__":
    main()
