"""What scoring a segmentation pool costs in a round: the round's scoring against the way it scored before.

Issue 12 (one round <= 60 s on 2 cores): an HC18 round at 128 x 128 spent 10-12 s building hybrid's inputs
(T = 20 MC-dropout passes over the ~155 unlabelled images, their per-image BALD, the embeddings). Two rows, the
same model, pool and seed, interleaved so machine load hits both alike (median of ``--repeats``):

  previous   what medwb.al.scoring.pool_inputs did until session 31: per chunk of 16 images the trunk once, the
             head (channel dropout + 1x1 conv) on the features copied T times, every one of the six uncertainty
             kinds reduced per image (a full sort for the top 5% voxels), then the embeddings
  round      pool_inputs as the loop calls it now: the head's T samples taken by scaling the conv's weights with
             each pass's channel mask (the features are never copied), only the kind the strategy ranks by
             (BALD for hybrid), the top 5% voxels by a partial sort, the pool's embeddings from the same trunk
             pass (the labelled cases' by embed, as before)

Both must give the same BALD scores (same dropout masks) and the same hybrid batch; the script checks and prints
that. Results: seg_scoring_hc18.md (session 31: 2.6 s against 9.5 s on 2 threads). The model is the round model of ``--labels`` random labels trained ``--epochs`` epochs (the timing does not
depend on its weights; the equality check is more telling on a trained one).

    OMP_NUM_THREADS=2 python benchmarks/uncertainty/bench_seg_scoring.py DATA_ROOT/seg2d/hc18_subset \
        --size 128x128 --out benchmarks/uncertainty/seg_scoring_hc18.md
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch
from round_timing_loop import emit

from medwb.al.acquire import select
from medwb.al.fit import fit_round
from medwb.al.scoring import pool_inputs
from medwb.data import open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models import embed
from medwb.models.networks import build_for_dataset
from medwb.models.train import default_train_config, device_of
from medwb.models.uncertainty import SCORE_KINDS, mc_dropout_mode, score_map


def previous_pool_inputs(model: torch.nn.Module, X_pool: np.ndarray, X_lab: np.ndarray, *, passes: int, seed: int,
                         chunk: int = 16) -> dict[str, np.ndarray]:
    """pool_inputs of a segmentation pool for hybrid as it was: the head on T copies of the features, all six
    kinds, the top-5% mean by a full sort (reduce_voxel_scores before the partial sort)."""
    parts: dict[str, list[np.ndarray]] = {}
    for i in range(0, len(X_pool), chunk):
        xb = torch.from_numpy(np.ascontiguousarray(X_pool[i:i + chunk], dtype=np.float32)).to(device_of(model))
        with torch.random.fork_rng(devices=[]), torch.no_grad(), mc_dropout_mode(model):
            torch.manual_seed(seed + i)
            feats = model.trunk(xb)
            logits = model.head(feats.repeat(passes, *([1] * (feats.ndim - 1))))
            mc = torch.softmax(logits, 1).reshape(passes, len(xb), *logits.shape[1:]).numpy()
        probs = mc.mean(0)
        for kind in SCORE_KINDS:  # every kind's voxel map, each reduced to its top 5% by a full sort
            flat = score_map(kind, probs=probs, mc_probs=mc).reshape(len(xb), -1)
            n_top = max(1, int(round(flat.shape[1] * 5.0 / 100.0)))
            parts.setdefault(f"score_{kind}", []).append(-np.sort(-flat, axis=1)[:, :n_top].mean(1))
    out: dict[str, np.ndarray] = {k: np.concatenate(v) for k, v in parts.items()}
    out["embeddings"], out["labeled_embeddings"] = embed(model, X_pool), embed(model, X_lab)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("--size", default="128x128")
    ap.add_argument("--labels", type=int, default=9)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--passes", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()

    ds = open_dataset(a.data, progress=False)
    inputs = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), tuple(int(v) for v in a.size.split("x")))
    (X, y), val = inputs["train"][:2], inputs["val"][:2]
    lab = np.sort(np.random.default_rng(a.seed).choice(len(X), a.labels, replace=False))
    unl = np.setdiff1d(np.arange(len(X)), lab)
    config = default_train_config(ds.task, seed=a.seed, modality=ds.modality, spatial_dims=ds.ndim, epochs=a.epochs)
    model, _ = fit_round(build_for_dataset(ds, seed=a.seed), X[lab], y[lab], val, task=ds.task, config=config,
                         progress=False)
    X_unl, X_lab = X[unl], X[lab]

    def previous() -> dict[str, np.ndarray]:
        return previous_pool_inputs(model, X_unl, X_lab, passes=a.passes, seed=a.seed)

    def current() -> dict[str, np.ndarray]:
        return pool_inputs(model, X_unl, X_lab, task=ds.task, strategy="hybrid", passes=a.passes, seed=a.seed)

    runs: dict[str, list[float]] = {"previous": [], "round": []}
    outs = {"previous": previous(), "round": current()}  # warm-up, and the results compared below
    for _ in range(a.repeats):
        for name, fn in (("previous", previous), ("round", current)):
            t = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t)
    bald_diff = float(np.abs(outs["previous"]["score_bald"] - outs["round"]["score_bald"]).max())
    batches = {name: np.sort(select("hybrid", a.batch, random_state=a.seed, **kw)[0]) for name, kw in outs.items()}
    ref = statistics.median(runs["previous"])
    lines = [f"# Scoring a segmentation pool for hybrid: {ds.name}, {a.size}", "",
             f"Pool {len(X_unl)} unlabelled images, {a.labels} labelled, T = {a.passes}; torch threads "
             f"{torch.get_num_threads()}, usable cores {len(os.sched_getaffinity(0))}, load average "
             f"{os.getloadavg()[0]:.1f}; median of {a.repeats} interleaved runs after a warm-up.", "",
             "| scoring | median s | min s | x previous |", "|---|---|---|---|"]
    for name, ts in runs.items():
        lines.append(f"| {name} | {statistics.median(ts):.2f} | {min(ts):.2f} | {statistics.median(ts) / ref:.2f} |")
    lines += ["", f"Same results: max |BALD difference| {bald_diff:.2e}; the same hybrid batch of {a.batch}: "
              f"{bool(np.array_equal(batches['previous'], batches['round']))} "
              f"({batches['round'].tolist()})."]
    emit(lines, a.out)


if __name__ == "__main__":
    main()
