"""Is hybrid's PneumoniaMNIST dip below random a selection failure or the test split's shift? (issue 12)

A `medwb simulate --max-pool N` run uses N of the 4 708 training cases as its pool; the other training cases are
drawn from the same distribution as the pool and validation split and were never seen by any round. This script
re-scores every round checkpoint of the given simulation studies on those held-out training cases ("in-dist") and
on the official test split (a shifted, differently balanced set: what the curves report), with each model's own
validation-chosen decision rule, and prints one row per (arm, round): mean and SD over seeds.

    python eval_held_out.py DATA.npz MAX_POOL OUT.csv STUDIES_DIR [STUDIES_DIR ...]

For studies made before it: since session 22 `medwb simulate --max-pool` writes the same re-scoring itself
(`OUT/held_out.csv`, `medwb.pipelines.simulate.held_out_curves`, capped at 2 000 held-out cases); both score with
`medwb.models.evaluate`. This script stays for studies without that file: it needs only the round checkpoints.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from medwb.data import open_dataset
from medwb.data.splits import PoolInputs, carve_splits
from medwb.models import evaluate, load_checkpoint


def held_out_sets(data: str, max_pool: int) -> tuple[int, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """(pool size, {"val", "in-dist", "test": (X, y)}): every training case outside the simulation's pool (no cap,
    unlike `medwb simulate`'s held_out.csv) and the official validation and test splits, at native size."""
    ds = open_dataset(data, progress=False)
    everything = carve_splits(ds.cohort, name=ds.name)
    pool = set(carve_splits(ds.cohort, max_pool=max_pool, name=ds.name)["train"])
    held_out = [i for i in everything["train"] if i not in pool]
    inputs = PoolInputs(ds, {"train": held_out, "val": everything["val"], "test": everything["test"]}, None)
    return len(pool), {"val": inputs["val"][:2], "in-dist": inputs["train"][:2], "test": inputs["test"][:2]}


def main(data: str, max_pool: int, out_csv: str, folders: list[str]) -> None:
    n_pool, split_sets = held_out_sets(data, max_pool)
    sets = {k: split_sets[k] for k in ("in-dist", "test")}
    print(f"pool {n_pool}, held-out training cases {len(sets['in-dist'][1])} (class 1 share "
          f"{sets['in-dist'][1].mean():.2f}), test {len(sets['test'][1])} (class 1 share {sets['test'][1].mean():.2f})")
    rows = []
    for folder in folders:
        run = Path(folder).parent.name if Path(folder).name == "studies" else Path(folder).name
        for study in sorted(Path(folder).glob("*-seed*")):
            arm, seed = re.fullmatch(r"(.+)-seed(\d+)", study.name).groups()
            for cp in sorted((study / "models").glob("round_*.pt")):
                model, _ = load_checkpoint(cp)
                for name, (X, y) in sets.items():  # each model's own validation-chosen rule, as simulate's
                    rows.append({"run": run, "arm": arm, "seed": int(seed),
                                 "round": int(cp.stem.split("_")[1]), "set": name, **evaluate(model, X, y)})
    df = pd.DataFrame(rows)
    df.to_csv(out_csv, index=False)
    table = df.groupby(["run", "arm", "round", "set"])[["auc", "balanced_accuracy"]].agg(["mean", "std", "count"])
    print(table.round(3).to_string())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:])
