"""Is the average of a round's two candidates better than either? A probe on fixed label sets.

Issue 12 (session 21; seed spread and the demo's balanced accuracy). Each round of medwb's default pipeline trains
a supervised and a FixMatch candidate from the same SimCLR-pretrained trunk and keeps one by validation
(``medwb.al.fit.fit_round``). Both start from the same weights, so their weights can be averaged (a "model soup",
Wortsman et al. 2022) at no training cost, or their probabilities averaged (a two-model ensemble, twice the
inference). This script holds the label set fixed (a seeded random subset of a seeded pool) and reports, per seed,
the test metrics of: supervised, FixMatch, the loop's choice, the weight average (BatchNorm statistics recomputed
on the labelled and unlabelled images; decision threshold chosen on validation) and the probability average.

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_soup.py PNEUMONIAMNIST.npz OUT \
        --pool 1000 --labels 100 --seeds 0 1 2 3 4

OUT/soup.csv: one row per (labels, seed, model); OUT/table.txt: mean and SD over seeds. The pretrained trunk is
cached in OUT/cache (resumable).
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from results_csv import append_result, has_result, read_results

from medwb.al.fit import check_semi_schedule, fit_fixmatch, keeps_fixmatch, validation_score
from medwb.al.representation import pretrain_build_args, pretrained_representation, with_pretrained
from medwb.data import open_dataset
from medwb.data.case_images import Stacked
from medwb.metrics import class_metrics
from medwb.models.networks import build_ensemble, build_for_dataset
from medwb.models.train import (choose_decision, decide, default_train_config, fit_and_evaluate, predict_proba,
                                recalibrate_batchnorm)


def weight_average(a: torch.nn.Module, b: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``a`` whose floating-point parameters and buffers are the mean of ``a``'s and ``b``'s."""
    soup = copy.deepcopy(a)
    sb = b.state_dict()
    soup.load_state_dict({k: (v + sb[k]) / 2 if v.is_floating_point() else v for k, v in a.state_dict().items()})
    return soup


def metrics_of(p_val: np.ndarray, y_val: np.ndarray, p_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    rule = choose_decision(p_val, y_val)
    m = class_metrics(p_test, y_test, pred=decide(p_test, rule))
    mv = class_metrics(p_val, y_val, pred=decide(p_val, rule))
    return {**{f"test_{k}": float(v) for k, v in m.items()}, **{f"val_{k}": float(v) for k, v in mv.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--pool", type=int, default=1000, help="cases drawn (seed 0) from the train split as the pool")
    ap.add_argument("--labels", type=int, nargs="+", default=[100])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--semi-schedule", default=None,
                    help="JSON of FixMatch overrides (the loop's semi_schedule, e.g. SemiConfig fields)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(a.data, progress=False)
    schedule = check_semi_schedule(default_train_config(ds.task, modality=ds.modality, spatial_dims=ds.ndim),
                                   json.loads(a.semi_schedule or "{}"))
    Xp, yp, _ = ds.arrays("train")
    if a.pool < len(Xp):
        keep = np.sort(np.random.default_rng(0).choice(len(Xp), a.pool, replace=False))
        Xp, yp = Xp[keep], yp[keep]
    Xv, yv, _ = ds.arrays("val")
    Xt, yt, _ = ds.arrays("test")
    yv1, yt1 = np.asarray(yv).reshape(-1), np.asarray(yt).reshape(-1)
    args = pretrain_build_args(lambda s: build_for_dataset(ds, seed=s), None)
    pre = pretrained_representation(out, Xp, build_args=args, config=None, progress=False)
    csv = out / "soup.csv"
    done = read_results(csv)
    for n in a.labels:
        for seed in a.seeds:
            if has_result(done, "loop_choice", n, seed):
                continue
            lab = np.sort(np.random.default_rng(seed).choice(len(Xp), n, replace=False))
            rest = np.setdiff1d(np.arange(len(Xp)), lab)
            config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
            start = build_for_dataset(ds, seed=seed)
            sup, msup = fit_and_evaluate(with_pretrained(copy.deepcopy(start), pre), Xp[lab], yp[lab], Xv, yv,
                                         task=ds.task, config=config, progress=False)
            semi, msemi = fit_fixmatch(copy.deepcopy(start), Xp[lab], yp[lab], Xp[rest], (Xv, yv), config=config,
                                       pretrained=pre, progress=False, semi_schedule=schedule)
            soup = weight_average(sup, semi)
            recalibrate_batchnorm(soup, Stacked(Xp[lab], Xp[rest]), batch_size=256)
            soup.eval()
            probs = {name: (predict_proba(m, Xv), predict_proba(m, Xt))
                     for name, m in (("supervised", sup), ("fixmatch", semi), ("soup", soup))}
            ensemble = build_ensemble([sup, semi]).eval()  # the mean of the two candidates' probabilities
            probs["ensemble"] = (predict_proba(ensemble, Xv), predict_proba(ensemble, Xt))
            chosen = "fixmatch" if keeps_fixmatch(validation_score(msemi), validation_score(msup)) else "supervised"
            probs["loop_choice"] = probs[chosen]
            for name, (pv, pt) in probs.items():
                row = {"recipe": name, "labels": n, "seed": seed, **metrics_of(pv, yv1, pt, yt1)}
                print(json.dumps(row), flush=True)
                done = append_result(csv, row)
    cols = ["test_auc", "test_accuracy", "test_balanced_accuracy", "val_auc", "val_balanced_accuracy"]
    table = done.groupby(["labels", "recipe"], sort=False)[cols].agg(["mean", "std"])
    table.columns = [f"{c}_{s}" for c, s in table.columns]
    text = table.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}")
    (out / "table.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main()
