"""Hippocampus region-click from a model's pre-label (issue 13's hippocampus target, in the active-learning flow).

The label-free region-click annotator needs 69% of a manual outline's actions on the hippocampus (regions/
summary.md): there is no label-free shape to start from, and the finest supervoxels are too coarse for its
edge. What a reader really starts from after the first round is the model's pre-label. This script measures
that: a 3D UNet (medwb's default segmenter and schedule, ``medwb.models.train``) trained on ``--labels`` labelled
volumes (10% of the 260 by default) and ``--val`` validation volumes, its predicted masks (at each image's own
size, :func:`medwb.al.prelabels.predict_mask`) on ``--cases`` other volumes, then the simulated region-click
annotator (:mod:`medwb.al.region_oracle`) from an empty mask and from that pre-label, to Dice 0.90 (both
classes), against a manual outline's vertices (one every 5 px, slice by slice). Regions: the default levels
(30/300/3000) and, with ``--fine``, a fourth level of 12 000 supervoxels. ``--bands``: from the pre-label the
annotator also has the review's edge bands (:func:`medwb.al.regions.with_edge_bands`: thin regions along the
pre-label's edges), and with ``--bands unsure`` those cut where the model's MC-dropout entropy map (20 passes,
what the notebook's review shows) exceeds 0.3 nats.

    OMP_NUM_THREADS=1 python benchmarks/structure/bench_hippocampus_from_model.py DATA_ROOT benchmarks/structure/regions \
        [--labels 26 --val 26 --cases 60 --seed 0 --fine --bands {edges,unsure}]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data_root")
    ap.add_argument("results")
    ap.add_argument("--labels", type=int, default=26)
    ap.add_argument("--val", type=int, default=26)
    ap.add_argument("--cases", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--fine", action="store_true")
    ap.add_argument("--max-clicks", type=int, default=3000)
    ap.add_argument("--bands", choices=["edges", "unsure"], default=None)
    a = ap.parse_args()

    from medwb.al.prelabels import entropy_map, predict_mask
    from medwb.al.region_oracle import outline_actions, simulate_region_clicks
    from medwb.al.regions import RegionConfig, over_segment, spacing_of, with_edge_bands
    from medwb.data import open_dataset
    from medwb.data.dataset import case_targets, default_size
    from medwb.metrics import dice
    from medwb.models import default_train_config, train
    from medwb.models.networks import build_for_dataset

    ds = open_dataset(Path(a.data_root) / "seg3d" / "msd_task04_hippocampus", progress=False)
    labelled = [c for c in ds.case_ids() if ds.load_mask(c) is not None]
    perm = [str(c) for c in np.random.default_rng(a.seed).permutation(labelled)]
    train_ids, val_ids = perm[:a.labels], perm[a.labels:a.labels + a.val]
    eval_ids = perm[a.labels + a.val:a.labels + a.val + a.cases]
    size = default_size(ds)
    t0 = time.perf_counter()
    config = default_train_config("segmentation", seed=a.seed, modality=ds.modality, spatial_dims=3)
    res = train(build_for_dataset(ds, seed=a.seed), ds.inputs(train_ids, size), case_targets(ds, train_ids, size),
                ds.inputs(val_ids, size), case_targets(ds, val_ids, size), task="segmentation", config=config,
                progress=False)
    train_s = time.perf_counter() - t0
    levels = (30, 300, 3000, 12000) if a.fine else (30, 300, 3000)
    config_r = RegionConfig(levels=levels)
    n_classes = len(ds.classes)
    rows = []
    for cid in eval_ids:
        truth = ds.load_mask(cid)[0]
        x = ds.inputs([cid], size)
        pre = predict_mask(res.model, x, tuple(truth.shape))
        regions = over_segment(ds.load_image(cid), spacing_of(ds, cid), config=config_r)
        empty = simulate_region_clicks(regions, truth, target=0.9, max_clicks=a.max_clicks)
        from_pre = regions
        if a.bands:
            unsure = entropy_map(res.model, x, tuple(truth.shape), passes=20, seed=a.seed) if a.bands == "unsure" \
                else None
            from_pre, _ = with_edge_bands(regions, pre, spacing=spacing_of(ds, cid), uncertainty=unsure)
        fixed = simulate_region_clicks(from_pre, truth, target=0.9, max_clicks=a.max_clicks, start=pre)
        outline = outline_actions(truth, step=5)
        rows.append({"case_id": cid, "prelabel_dice": dice(pre, truth, n_classes=n_classes), "outline_actions": outline,
                     "clicks_empty": empty.clicks, "dice_empty": empty.dice, "reached_empty": empty.reached,
                     "clicks_from_prelabel": fixed.clicks, "dice_from_prelabel": fixed.dice,
                     "reached_from_prelabel": fixed.reached})
        print(rows[-1], flush=True)
    t = pd.DataFrame(rows)
    name = f"hippocampus_from_model_{'fine' if a.fine else 'default'}" + (f"_bands_{a.bands}" if a.bands else "")
    results = Path(a.results)
    t.to_csv(results / f"{name}_eval.csv", index=False)
    cmd = (f"OMP_NUM_THREADS=1 python benchmarks/structure/bench_hippocampus_from_model.py DATA_ROOT "
           f"benchmarks/structure/regions --labels {a.labels} --val {a.val} --cases {a.cases} --seed {a.seed}"
           + (" --fine" if a.fine else "") + (f" --bands {a.bands}" if a.bands else ""))
    bands = {None: "", "edges": "; from the pre-label also its edge bands",
             "unsure": "; from the pre-label also its edge bands, and those cut where MC-dropout entropy > 0.3"}[a.bands]
    lines = [f"# Hippocampus: region-click from a model's pre-label (levels {'/'.join(map(str, levels))}{bands})", "",
             f"Command: `{cmd}`", "",
             f"3D UNet trained on {a.labels} labelled volumes (validation {a.val}; {train_s:.0f} s, best epoch "
             f"{res.best_epoch}), evaluated on {len(t)} other volumes. Target: Dice 0.90 on both classes.", "",
             "| start | mean Dice at start | reached 0.90 | mean Dice at the end | clicks (median) | "
             "clicks / outline vertices (sum) |", "|---|---|---|---|---|---|",
             f"| empty mask | 0 | {int(t['reached_empty'].sum())} of {len(t)} | {t['dice_empty'].mean():.3f} | "
             f"{t['clicks_empty'].median():.0f} | {100 * t['clicks_empty'].sum() / t['outline_actions'].sum():.1f}% |",
             f"| model pre-label | {t['prelabel_dice'].mean():.3f} | {int(t['reached_from_prelabel'].sum())} of "
             f"{len(t)} | {t['dice_from_prelabel'].mean():.3f} | {t['clicks_from_prelabel'].median():.0f} | "
             f"{100 * t['clicks_from_prelabel'].sum() / t['outline_actions'].sum():.1f}% |"]
    text = "\n".join(lines) + "\n"
    print(text)
    (results / f"{name}.md").write_text(text)


if __name__ == "__main__":
    main()
