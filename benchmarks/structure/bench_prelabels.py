"""Issue 13 target: label-free pre-labels reach Dice >= 0.6 on HC18 fetal heads before any click.

Runs the pre-label step of ``medwb structure --prelabel ellipse`` (:func:`medwb.pipelines.regions.run_prelabels`,
:mod:`medwb.al.shape_prior`) on every case of HC18 (the masks are read only to score Dice), once per seed (the
RANSAC draw), and writes the per-case table and a markdown summary. Usage (repository root, venv active):

    OMP_NUM_THREADS=1 python benchmarks/structure/bench_prelabels.py DATA_ROOT OUT benchmarks/structure/regions

DATA_ROOT holds seg2d/hc18_subset (the shared data folder's layout). The same masks come from
``medwb structure DATA_ROOT/seg2d/hc18_subset --out OUT --prelabel ellipse`` (which also computes the regions).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd


def summarise(table: pd.DataFrame, seed: int, wall: float) -> dict[str, object]:
    d = table["dice"]
    return {"seed": seed, "cases": len(table), "ring found": int(table["found"].sum()),
            "mean Dice": float(d.mean()), "median Dice": float(d.median()),
            "Dice 10th pct.": float(d.quantile(0.1)), "Dice >= 0.6": float((d >= 0.6).mean()),
            "Dice >= 0.8": float((d >= 0.8).mean()), "Dice >= 0.9": float((d >= 0.9).mean()),
            "CPU s (mean / max)": f"{table['cpu_seconds'].mean():.2f} / {table['cpu_seconds'].max():.2f}",
            "wall s (median / max)": f"{table['seconds'].median():.2f} / {table['seconds'].max():.2f}",
            "run wall s": round(wall)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("out")
    ap.add_argument("results")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    a = ap.parse_args()

    from bench_regions import markdown_table  # beside this script

    from medwb.data import open_dataset
    from medwb.pipelines.regions import run_prelabels

    data = Path(a.data_root) / "seg2d" / "hc18_subset"
    results = Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(data, progress=False)
    rows, tables = [], {}
    for seed in a.seeds:
        t0 = time.perf_counter()
        run_prelabels(ds, Path(a.out) / f"seed{seed}", kind="ellipse", seed=seed, progress=False)
        table = pd.read_csv(Path(a.out) / f"seed{seed}" / "prelabels" / "manifest.csv")
        tables[seed] = table
        rows.append(summarise(table, seed, time.perf_counter() - t0))
        print(rows[-1], flush=True)
    first = a.seeds[0]
    tables[first].drop(columns=["file"]).to_csv(results / "hc18_prelabel_eval.csv", index=False)
    text = markdown_table(pd.DataFrame(rows))
    worst = tables[first].nsmallest(10, "dice")[["case_id", "dice"]]
    agree = ""
    if len(a.seeds) > 1:
        diffs = [np.abs(tables[s]["dice"].to_numpy() - tables[first]["dice"].to_numpy()) for s in a.seeds[1:]]
        agree = (f"\nSeeds change a case's Dice by {np.mean([x.mean() for x in diffs]):.3f} on average "
                 f"(max {max(x.max() for x in diffs):.3f}).\n")
    doc = (
        "# HC18: label-free ellipse pre-labels before any click (issue 13)\n\n"
        "`medwb structure DATA --out DIR --prelabel ellipse` (`medwb.al.shape_prior.ellipse_prelabel`), every case of "
        "the shared data folder's seg2d/hc18_subset; masks are read only to score Dice. Target: mean Dice >= 0.6.\n"
        "One CPU thread (`OMP_NUM_THREADS=1`) on a shared 2-core machine: CPU seconds are what an idle machine's "
        "wall time would be.\n\n"
        + text + "\n" + agree
        + "\nLowest Dice (seed " + str(first) + "): "
        + ", ".join(f"{r.case_id} {r.dice:.2f}" for r in worst.itertuples()) + ".\n\n"
        "Reproduce (repository root, venv active):\n\n"
        "    OMP_NUM_THREADS=1 python benchmarks/structure/bench_prelabels.py DATA_ROOT OUT benchmarks/structure/regions\n"
    )
    print(doc)
    (results / "hc18_prelabel.md").write_text(doc)
    (results / "hc18_prelabel.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
