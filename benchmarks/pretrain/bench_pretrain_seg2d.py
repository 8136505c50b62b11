"""What SimCLR pretraining of the 2D segmenter costs, whole images against crops (the default since session 28).

A 2D segmentation pool is resized to 128 px (``default_size``'s cap), and the segmenter's trunk is the whole UNet
at full resolution, so a pretraining step of 128 whole images costs seconds on CPU: the 2D classifier's schedule
(600 steps of 128 images) took about an hour on HC18. This script pretrains the pool with one or more configs,
each to completion (or times the first ``--probe-steps`` steps of a config and extrapolates, marked as such),
saves every finished result next to the table (``<name>.pt``, for ``bench_seg_semi.py --pretrained``), and prints
(rows of earlier calls with other configs kept, ``results.csv``)

    config | steps | batch | view px | seconds (measured or extrapolated) | final loss_norm | positive-pair acc.
    (SimCLR) | R^2 of the restored views (objective "restore": commit bde42a3 only, measured and removed)

Run from the repository root (venv active):

    OMP_NUM_THREADS=1 python benchmarks/pretrain/bench_pretrain_seg2d.py DATA_ROOT/seg2d/hc18_subset OUT
    # at commit bde42a3 (the restoration objective, removed after this measurement):
    OMP_NUM_THREADS=1 python benchmarks/pretrain/bench_pretrain_seg2d.py DATA_ROOT/seg2d/hc18_subset OUT --probe \
        --run 'restore={"batch_size": 32, "crop": 64, "objective": "restore"}'

Splits and size as the simulation's (``carve_splits``, ``default_size``): the pool is the training split only.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from medwb.data import open_dataset
from medwb.data.dataset import default_size
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models.networks import build_for_dataset
from medwb.models.pretrain import (PretrainConfig, crop_shape, default_pretrain_config, planned_epochs, pretrain,
                                   save_pretrained)

torch.set_num_threads(1)


def step_seconds(build_args: dict, X: np.ndarray, config: PretrainConfig, steps: int) -> float:
    """Median wall seconds of one optimiser step of ``config``, timed in :func:`pretrain` itself: ``steps + 1``
    epochs of one batch each (the first, warm-up, not counted), from each epoch's cumulative ``seconds``."""
    bs = min(config.batch_size, len(X))
    probe = dataclasses.replace(config, epochs=steps + 1, recalibrate_bn=False)
    seconds = [h["seconds"] for h in pretrain(build_args, X[:bs], config=probe, progress=False).history]
    return float(np.median(np.diff(seconds)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--run", nargs="*", default=["default"],
                    help="configs to pretrain to completion: 'default' (default_pretrain_config) or NAME=JSON "
                         "PretrainConfig fields")
    ap.add_argument("--probe", nargs="*", default=['whole128={"batch_size": 128}'],
                    help="configs only timed for --probe-steps steps and extrapolated to their planned steps")
    ap.add_argument("--probe-steps", type=int, default=5)
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(a.data, progress=False)
    size = default_size(ds)
    X = PoolInputs(ds, carve_splits(ds.cohort, name=ds.name), size)["train"][0]
    build_args = dict(build_for_dataset(ds, seed=0).build_args)
    print(f"{ds.name}: pool {len(X)} images at {size}, {build_args['kind']} {build_args['channels']}", flush=True)

    def config_of(spec: str) -> tuple[str, PretrainConfig]:
        if spec == "default":
            return "default", default_pretrain_config(build_args)
        name, _, js = spec.partition("=")
        return name, PretrainConfig(**json.loads(js or "{}"))

    rows = []
    for spec in a.probe:
        name, config = config_of(spec)
        per_step = step_seconds(build_args, X, config, a.probe_steps)
        bs = min(config.batch_size, len(X))
        steps = planned_epochs(config, len(X)) * max(1, len(X) // bs)
        rows.append({"config": name, "steps": steps, "batch": bs, "view_px": "x".join(map(str, crop_shape(size, config.crop))),
                     "seconds": per_step * steps, "measured": f"extrapolated from {a.probe_steps} steps ({per_step:.2f} s each)",
                     "loss_norm": np.nan, "pos_acc": np.nan, "r2": np.nan})
        print(json.dumps(rows[-1]), flush=True)
    for spec in a.run:
        name, config = config_of(spec)
        t = time.perf_counter()
        res = pretrain(build_args, X, config=config, progress=False)
        seconds = time.perf_counter() - t
        save_pretrained(res, out / f"{name}.pt")
        bs = min(config.batch_size, len(X))
        rows.append({"config": name, "steps": res.epochs_done * max(1, len(X) // bs), "batch": bs,
                     "view_px": "x".join(map(str, crop_shape(size, config.crop))), "seconds": seconds,
                     "measured": "whole run", "loss_norm": res.history[-1]["loss_norm"],
                     "pos_acc": res.history[-1].get("pos_acc", np.nan), "r2": res.history[-1].get("r2", np.nan)})
        (out / f"{name}.json").write_text(json.dumps({"config": dataclasses.asdict(config),
                                                      "history": res.history}, indent=1))
        print(json.dumps(rows[-1]), flush=True)
    csv = out / "results.csv"  # rows of earlier calls (other configs) are kept; a config run again is replaced
    table = pd.DataFrame(rows)
    if csv.exists():
        old = pd.read_csv(csv)
        table = pd.concat([old[~old["config"].isin(table["config"])], table], ignore_index=True)
    table.to_csv(csv, index=False)
    text = table.to_string(index=False, float_format=lambda v: f"{v:.2f}")
    (out / "results.txt").write_text(f"{ds.name}: pool {len(X)} images at {size}, torch threads 1\n{text}\n")
    print(text)


if __name__ == "__main__":
    main()
