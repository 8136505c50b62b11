"""Does picking beat random picking for a 2D segmentation round? One acquisition step, paired per seed.

Issue 12 ("selecting cases must never make the model worse than random picking"; on HC18 the loop's hybrid arm
was level with or behind random, hc18_self_training_default/). A whole-loop run mixes the first batch, every
round's training noise and the picks; this isolates the picks. Per seed:

  1. a seeded random ``--start`` label set (as a random first batch) and its round model, trained by the loop's
     own recipe (:func:`medwb.al.fit.fit_round` with the loop's defaults: self-training for segmentation, no
     pretraining in 2D), cached in OUT per seed;
  2. every ``--strategies`` entry picks ``--batch`` more pool cases from that same model's outputs
     (:func:`medwb.al.scoring.selection_inputs` and :func:`medwb.al.acquire.select`, as ``ActiveLearningLoop``
     calls them, with its seed rule ``seed * 1000 + round``);
  3. a fresh model is trained on start + picks by the same recipe and scored on the test split.

So the strategies of one seed share the start set and the model that ranked the pool: their test-Dice
differences are the picks' doing (plus the second training's own noise, which random's spread shows).

    OMP_NUM_THREADS=1 python benchmarks/active_learning/bench_seg_acquire.py HC18_DIR OUT --size 128x128 \
        --start 9 --batch 9 --seeds 0 1 2 3 4 5 --strategies random hybrid coreset bald

``flip`` / ``flip_hybrid`` (this script only) rank by :func:`flip_disagreement` instead of MC dropout.

Rows append to OUT/seg_acquire.csv (resumable, one per strategy and seed; ``results_csv``); the table printed at
the end (OUT/table.txt) gives each strategy's mean test Dice, its paired difference from random (mean, SD,
wins) and the seconds of selection and training.
"""
from __future__ import annotations

import argparse
import json
import time
from functools import partial

import numpy as np
import pandas as pd
import torch
from bench_seg_semi import cached_model, random_label_set, run_inputs
from results_csv import append_result, has_result, read_results

from medwb.al.acquire import select
from medwb.al.fit import fit_round, uses_semi, uses_self_training
from medwb.al.scoring import selection_inputs
from medwb.data import Dataset
from medwb.metrics import dice
from medwb.models import embed
from medwb.models.networks import build_for_dataset
from medwb.models.train import TrainConfig, default_train_config, predict_proba

#: strategies of this script only, on the flip disagreement of :func:`flip_disagreement` (a probe: a strategy that
#: wins here moves to medwb.al.acquire)
FLIP_STRATEGIES = ("flip", "flip_hybrid")


def train_round(model: torch.nn.Module, ds: Dataset, X: np.ndarray, y: np.ndarray, X_unl: np.ndarray,
                val: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], config: TrainConfig
                ) -> tuple[torch.nn.Module, dict[str, float]]:
    """One round's training of ``model`` as the loop does it (2D segmentation: no pretraining, the loop's semi and
    self-training defaults)."""
    return fit_round(model, X, y, val, task=ds.task, config=config, semi=uses_semi(ds.task, ds.ndim, None),
                     X_unlabelled=X_unl, self_train=uses_self_training(ds.task, None, streamed=False), test=test,
                     progress=False)


def flip_disagreement(model: torch.nn.Module, X: np.ndarray) -> np.ndarray:
    """Per image, 1 - Dice between the foreground predicted on the image and on each of its flipped copies
    (flipped back), averaged over the two in-plane flips: where the model's mask moves when the image is
    mirrored, it has not learnt that image's object, whatever its per-voxel confidence says."""
    fg = predict_proba(model, X).argmax(1) > 0
    out = np.zeros(len(X))
    for axis in (-1, -2):
        fl = np.flip(predict_proba(model, np.ascontiguousarray(np.flip(X, axis))).argmax(1) > 0, axis)
        out += 1.0 - np.array([dice(a, b) for a, b in zip(fg, fl)])
    return out / 2


def pick(strategy: str, model: torch.nn.Module, X_unl: np.ndarray, X_lab: np.ndarray, k: int, *, task: str,
         rs: int, passes: int, voxel_reduce: str, opts: dict) -> np.ndarray:
    """Indices into ``X_unl`` of the ``k`` cases ``strategy`` picks, as the loop would (``select`` on
    ``selection_inputs``), or by this script's flip disagreement (top-k, or hybrid's diversity on it)."""
    if strategy in FLIP_STRATEGIES:
        score = flip_disagreement(model, X_unl)
        if strategy == "flip":
            return np.argsort(-score, kind="stable")[:k]
        idx, _ = select("hybrid", k, embeddings=embed(model, X_unl), labeled_embeddings=embed(model, X_lab),
                        random_state=rs, base="flip", score_flip=score, **opts)
        return np.asarray(idx, dtype=int)
    name, kw = selection_inputs(model, X_unl, X_lab, strategy=strategy, cold_start="random", task=task,
                                passes=passes, seed=rs, voxel_reduce=voxel_reduce)
    idx, _ = select(name, k, random_state=rs, **kw, **opts)
    return np.asarray(idx, dtype=int)


def paired_table(done: pd.DataFrame) -> pd.DataFrame:
    """Per strategy: mean test Dice, and the paired difference from random on the same seeds (mean, SD, wins)."""
    rows = []
    rand = done[done["recipe"] == "random"].set_index("seed")["test_dice"]
    for name, g in done.groupby("recipe", sort=False):
        d = g.set_index("seed")["test_dice"]
        diff = (d - rand).dropna()
        rows.append({"strategy": name, "seeds": len(g), "start_dice": g["start_test_dice"].mean(),
                     "test_dice": d.mean(), "test_dice_sd": d.std(), "minus_random": diff.mean(),
                     "minus_random_sd": diff.std(), "wins": int((diff > 0).sum()), "paired": len(diff),
                     "select_s": g["select_seconds"].mean(), "train_s": g["train_seconds"].mean()})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--size", default="128x128", help="training grid, e.g. 128x128")
    ap.add_argument("--start", type=int, default=9, help="random labels the ranking model is trained on")
    ap.add_argument("--batch", type=int, default=9, help="cases each strategy picks")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4, 5])
    ap.add_argument("--strategies", nargs="+", default=["random", "hybrid", "coreset", "bald"])
    ap.add_argument("--mc-passes", type=int, default=20, help="MC-dropout passes (the loop's default)")
    ap.add_argument("--voxel-reduce", default="topk", help="per-image reduction of voxel scores (the loop's)")
    ap.add_argument("--options", default=None, help="select() options as JSON, e.g. {\"candidates_factor\": 3}; "
                                                   "name the rows with --tag")
    ap.add_argument("--tag", default="", help="appended to the strategy names of the rows")
    a = ap.parse_args()
    out, ds, (Xp, yp), val, test = run_inputs(a.out, a.data, a.size)
    opts = json.loads(a.options or "{}")
    csv = out / "seg_acquire.csv"
    done = read_results(csv)
    for seed in a.seeds:
        lab = random_label_set(seed, a.start, len(Xp))
        rest = np.setdiff1d(np.arange(len(Xp)), lab)
        config = default_train_config(ds.task, seed=seed, modality=ds.modality, spatial_dims=ds.ndim)
        todo = [s for s in a.strategies if not has_result(done, s + a.tag, a.start + a.batch, seed)]
        if not todo:
            continue
        model, m0 = cached_model(out / f"start_{a.start}_{seed}.pt", ds, seed, partial(
            train_round, ds=ds, X=Xp[lab], y=yp[lab], X_unl=Xp[rest], val=val, test=test, config=config))
        for strategy in todo:
            t0 = time.perf_counter()
            rs = seed * 1000 + 2  # the loop's random_state of its second round
            picked = rest[pick(strategy, model, Xp[rest], Xp[lab], a.batch, task=ds.task, rs=rs,
                               passes=a.mc_passes, voxel_reduce=a.voxel_reduce, opts=opts)]
            t_sel = time.perf_counter() - t0
            new = np.sort(np.concatenate([lab, picked]))
            unl = np.setdiff1d(np.arange(len(Xp)), new)
            _, m = train_round(build_for_dataset(ds, seed=seed), ds, Xp[new], yp[new], Xp[unl], val, test, config)
            fg = [float((yp[i] > 0).mean()) for i in picked]
            row = {"recipe": strategy + a.tag, "labels": len(new), "seed": seed, "select_seconds": t_sel,
                   "train_seconds": m["train_seconds"], "test_dice": m["test_dice"], "val_dice": m["val_dice"],
                   "start_test_dice": m0["test_dice"], "self_trained": m.get("self_trained"),
                   "picked_foreground_mean": float(np.mean(fg)), "picked": " ".join(str(int(i)) for i in picked)}
            print(json.dumps(row), flush=True)
            done = append_result(csv, row)
    table = paired_table(done)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.4f}")
    (out / "table.txt").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
