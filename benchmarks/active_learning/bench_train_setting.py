"""A round's training setting against the default on fixed label sets (issue 12): one random label set per seed,
the loop's round from the pretrained trunk (``medwb.al.fit.fit_round``, the default schedule), once per arm. An arm
is a name and TrainConfig fields changed from the default, e.g. ``--arm fp32 --arm bf16:precision=bf16`` (session
34: bf16 training steps, ``precision/``) or ``--arm default --arm ema99:ema=0.99`` (weight averaging, ``ema/``).

Why fixed sets: the loop's own A/B changes which cases later rounds pick, so a setting's effect on one round's
model is mixed with the acquisition's; here every arm trains on the same cases with the same seed.

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_train_setting.py bloodmnist.npz OUT --labels 1200 \
        --seeds 0 1 2 --arm fp32 --arm bf16:precision=bf16

``--pretrain FIELD=VALUE`` trains every arm from a trunk pretrained with that PretrainConfig field changed (session
38: ``steps=600``, ``round_3d_settings/``); ``--semi`` also trains the round's FixMatch candidate on the rest of the
pool and keeps the better on validation, as the loop's 2D rounds do. ``--members K`` trains each arm K times on
the same labels with other training seeds (rows ``NAME#m1``...) and adds the ensembles of the first 2..K (rows
``NAME+ens2``...): members' softmax averaged, the decision threshold chosen again on the averaged validation
probabilities, as ``--arm NAME:members=K`` (``medwb.al.fit.fit_members``) would train it, but every smaller
ensemble read off the same members (their validation and test probabilities are kept in OUT/probs/).

Rows (OUT/precision.csv, resumable; the file name kept from session 34's bf16 runs): recipe (the arm's name),
labels, seed, training seconds, test and validation metrics, best epoch. The table: mean over seeds.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from fixed_sets import pool_inputs
from results_csv import append_result, has_result, read_results

from medwb.al.fit import MEMBER_SEED_STEP, fit_round
from medwb.cli import parse_config_setting, parse_train_setting
from medwb.metrics import class_metrics
from medwb.models.networks import build_for_dataset
from medwb.models.pretrain import PretrainConfig
from medwb.models.train import choose_decision, decide, default_train_config, predict_proba


def parse_arm(text: str) -> tuple[str, dict[str, object]]:
    """``name[:field=value,...]`` -> (name, TrainConfig fields), each ``field=value`` read as ``medwb simulate
    --train`` reads it."""
    name, _, rest = text.partition(":")
    try:
        return name, dict(parse_train_setting(item) for item in filter(None, rest.split(",")))
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"--arm {text}: {e}") from None


def parse_pretrain(items: list[str]) -> dict[str, object]:
    """``FIELD=VALUE`` items -> PretrainConfig fields, each read as ``--arm``'s TrainConfig fields are."""
    try:
        return dict(parse_config_setting(item, PretrainConfig) for item in items)
    except argparse.ArgumentTypeError as e:
        raise SystemExit(f"--pretrain: {e}") from None


def ensemble_metrics(probs: list[np.lib.npyio.NpzFile], val_y: np.ndarray, test_y: np.ndarray) -> dict[str, float]:
    """Test and validation metrics of the members' averaged softmax, the decision rule chosen on validation."""
    pv = np.mean([p["val"] for p in probs], axis=0)
    pt = np.mean([p["test"] for p in probs], axis=0)
    rule = choose_decision(pv, val_y)
    return {**{f"test_{k}": v for k, v in class_metrics(pt, test_y, pred=decide(pt, rule)).items()},
            **{f"val_{k}": v for k, v in class_metrics(pv, val_y, pred=decide(pv, rule)).items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--labels", type=int, default=1200)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--arm", action="append", required=True, help="NAME[:FIELD=VALUE,...] (repeat; see above)")
    ap.add_argument("--cache", help="folder whose cache/ holds (or gets) the pretrained trunk (default: OUT)")
    ap.add_argument("--pretrain", action="append", default=[], metavar="FIELD=VALUE",
                    help="the trunk's PretrainConfig field changed from the default (repeat), e.g. steps=600")
    ap.add_argument("--members", type=int, default=1,
                    help="train each arm this many times (other training seeds) and add their ensembles (see above)")
    ap.add_argument("--semi", action="store_true",
                    help="also train the round's FixMatch candidate on the rest of the pool (the better on validation "
                         "kept, as the loop does; rows hold both candidates' test metrics)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    arms = [parse_arm(t) for t in a.arm]
    ds, Xp, yp, val, test, pre = pool_inputs(a.data, Path(a.cache or out), parse_pretrain(a.pretrain))
    csv = out / "precision.csv"
    done = read_results(csv)
    for seed in a.seeds:
        lab = np.random.default_rng(seed).permutation(len(Xp))[:a.labels]
        config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
        for name, changes in arms:
            for k in range(a.members):
                row_name = name if k == 0 else f"{name}#m{k}"
                probs_file = out / "probs" / f"{row_name}-{a.labels}-{seed}.npz"
                if has_result(done, row_name, a.labels, seed) and (a.members == 1 or probs_file.is_file()):
                    continue
                s = seed + k * MEMBER_SEED_STEP  # fit_members' rule; member 0 is the arm itself
                t0 = time.perf_counter()
                model, m = fit_round(build_for_dataset(ds, seed=s), Xp[lab], yp[lab], val, task=ds.task,
                                     config=replace(config, seed=s, **changes), pretrained=pre, test=test,
                                     progress=False, semi=a.semi,
                                     X_unlabelled=np.delete(Xp, lab, axis=0) if a.semi else None)
                seconds = time.perf_counter() - t0
                if a.members > 1:
                    probs_file.parent.mkdir(exist_ok=True)
                    np.savez(probs_file, val=predict_proba(model, val[0]), test=predict_proba(model, test[0]))
                done = append_result(csv, {"recipe": row_name, "labels": a.labels, "seed": seed,
                                           "seconds": seconds, "best_epoch": m.get("best_epoch"),
                                           "semi": m.get("semi"),
                                           **{key: m[key] for key in sorted(m) if key.startswith(("test_", "val_"))}})
                print(f"seed {seed} {row_name} n={a.labels} acc {m.get('test_accuracy', float('nan')):.4f} "
                      f"auc {m.get('test_auc', float('nan')):.4f} {seconds:6.1f} s", flush=True)
            for size in range(2, a.members + 1):
                if has_result(done, f"{name}+ens{size}", a.labels, seed):
                    continue
                names = [name] + [f"{name}#m{k}" for k in range(1, size)]
                probs = [np.load(out / "probs" / f"{n}-{a.labels}-{seed}.npz") for n in names]
                done = append_result(csv, {"recipe": f"{name}+ens{size}", "labels": a.labels, "seed": seed,
                                           "seconds": float(done[done["recipe"].isin(names) & (done["seed"] == seed)
                                                                 & (done["labels"] == a.labels)]["seconds"].sum()),
                                           **ensemble_metrics(probs, val[1], test[1])})
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
