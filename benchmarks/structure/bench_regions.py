"""Issue 13 targets (segmentation): region-click reaches Dice >= 0.90 with <= 20% of the actions of a manual
outline (HC18, hippocampus); on CHASE_DB1 region-click masks agree with observer 1 at least as well as observer 2
does; over-segmentation of a 3D hippocampus crop <= 1 s and of a 999x960 fundus photo <= 2 s.

Runs ``medwb structure`` (:mod:`medwb.pipelines.regions`) on each dataset found under DATA_ROOT and a per-organ
run on the TotalSegmentator CT sample (one volume, its model-made label map as truth, each structure of >= 500
voxels on its own), then prints and writes a table. Usage (repository root, venv active):

    OMP_NUM_THREADS=1 python benchmarks/structure/bench_regions.py DATA_ROOT OUT benchmarks/structure/regions

DATA_ROOT holds seg2d/hc18_subset, seg2d/chase_db1, seg3d/msd_task04_hippocampus and
seg3d/totalsegmentator_samples (the shared data folder's layout).
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

DATASETS = {  # name: (relative path, max cases or None for all, region levels, compactness; None: the default)
    "HC18 (fetal head, US)": ("seg2d/hc18_subset", None, None, None),
    "hippocampus (MR, 2 classes)": ("seg3d/msd_task04_hippocampus", 100, None, None),
    # vessels are a few pixels wide: a fine level of compact regions (medwb structure --levels --compactness)
    "CHASE_DB1 (vessels, fundus)": ("seg2d/chase_db1", None, (300, 3000, 40000), 2.0),
}


def totalseg_rows(folder: Path, min_voxels: int = 500) -> pd.DataFrame:
    """Each structure of the TotalSegmentator CT sample as a binary region-click task on one set of regions."""
    import nibabel as nib

    from medwb.al.region_oracle import outline_actions, simulate_region_clicks
    from medwb.al.regions import over_segment

    ct = nib.load(str(folder / "example_ct_sm.nii.gz"))
    seg = np.asarray(nib.load(str(folder / "example_seg.nii.gz")).dataobj).astype(np.int64)
    image = np.asarray(ct.dataobj, np.float32)[None]
    spacing = tuple(float(z) for z in ct.header.get_zooms()[:3])
    t0, c0 = time.perf_counter(), time.process_time()
    regions = over_segment(image, spacing)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    rows = []
    for label, n in zip(*np.unique(seg, return_counts=True)):
        if label == 0 or n < min_voxels:
            continue
        truth = (seg == label).astype(np.int64)
        res = simulate_region_clicks(regions, truth, target=0.9, max_clicks=3000)
        outline = outline_actions(truth, step=5)
        rows.append({"case_id": f"label {label}", "voxels": int(n), "seconds": seconds, "cpu_seconds": cpu,
                     "clicks": res.clicks,
                     "dice": res.dice, "reached": float(res.reached), "outline_actions": outline,
                     "click_ratio": res.clicks / max(outline, 1)})
    return pd.DataFrame(rows)


def summarise(name: str, table: pd.DataFrame) -> dict[str, object]:
    row: dict[str, object] = {
        "dataset": name, "cases": len(table),
        "median clicks": float(table["clicks"].median()), "median outline vertices": float(table["outline_actions"].median()),
        "clicks / outline (sum)": float(table["clicks"].sum() / table["outline_actions"].sum()),
        "Dice 0.90 reached": float(table["reached"].mean()), "mean Dice": float(table["dice"].mean()),
        "over-seg. wall s (median / max)": f"{table['seconds'].median():.2f} / {table['seconds'].max():.2f}",
        "over-seg. CPU s (median / max)": f"{table['cpu_seconds'].median():.2f} / {table['cpu_seconds'].max():.2f}"}
    if "observer2_dice" in table:
        row.update({"obs2 Dice with obs1": float(table["observer2_dice"].mean()),
                    "obs2 agreement reached": float(table["reached_observer2"].mean()),
                    "clicks to obs2 / outline": float(table["clicks_to_observer2"].sum()
                                                      / table["outline_actions"].sum())})
    return row


def markdown_table(df: pd.DataFrame) -> str:
    """The summary as a markdown table (blank where a column does not apply)."""
    def cell(v: object) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return ""
        return f"{v:.3f}" if isinstance(v, float) else str(v)
    cols = list(df.columns)
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
                     + ["| " + " | ".join(cell(v) for v in r) + " |" for r in df.itertuples(index=False)])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("data_root")
    ap.add_argument("out")
    ap.add_argument("results")
    a = ap.parse_args()

    from medwb.al.regions import RegionConfig
    from medwb.pipelines.structure import run_structure

    root, out, results = Path(a.data_root), Path(a.out), Path(a.results)
    results.mkdir(parents=True, exist_ok=True)
    summary = []
    for name, (rel, max_cases, levels, compactness) in DATASETS.items():
        if not (root / rel).exists():
            print(f"skip {name}: {root / rel} not found")
            continue
        t0 = time.perf_counter()
        sub = out / Path(rel).name
        config = RegionConfig(levels=levels or RegionConfig().levels, compactness=compactness)
        run_structure(root / rel, sub, max_cases=max_cases, progress=False, regions=config)
        table = pd.read_csv(sub / "regions_eval.csv")
        table.to_csv(results / f"{Path(rel).name}_eval.csv", index=False)
        summary.append({**summarise(name, table), "levels / compactness":
                        f"{'-'.join(map(str, config.levels))} / {config.compactness or 'default'}"})
        print(f"{name}: {time.perf_counter() - t0:.0f} s", flush=True)
    ts = root / "seg3d/totalsegmentator_samples"
    if ts.exists():
        table = totalseg_rows(ts)
        table.to_csv(results / "totalsegmentator_eval.csv", index=False)
        summary.append(summarise("TotalSegmentator CT sample (per organ)", table))
    df = pd.DataFrame(summary)
    text = markdown_table(df)
    print(text)
    (results / "summary.md").write_text(text + "\n")
    (results / "summary.json").write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
