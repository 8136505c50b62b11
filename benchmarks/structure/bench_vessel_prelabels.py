"""Issue 13 on CHASE_DB1: label-free vessel pre-labels, and region-click from them to the second observer's agreement.

For each of the 28 photos (the shared data folder's seg2d/chase_db1, both observers):

- the label-free pre-label of ``medwb structure --prelabel vessels`` (:func:`medwb.al.vessel_prior.vessel_prelabel`;
  the masks are read only to score it): its Dice with observer 1 and with observer 2, beside observer 2's own
  Dice with observer 1 (what a second person reaches);
- the simulated region-click annotator of :mod:`medwb.al.region_oracle` starting from that pre-label, on the
  regions the region benchmark uses for vessels (levels 300/3000/40000, compactness 2), clicking until its mask
  agrees with observer 1 as well as observer 2 does (at most 3000 clicks), against the vertices of a manual
  outline (one every 5 px). From the pre-label it also has the pre-label's edge bands
  (:func:`medwb.al.regions.with_edge_bands`), as the review's editor offers (``--no-bands``: regions only, session
  11's table). The same annotator from an empty mask is in ``regions/chase_db1_eval.csv``.

Usage (repository root, venv active; about 1 s of pre-label and 2 s of regions per photo on one core, plus the
clicks):

    OMP_NUM_THREADS=1 python benchmarks/structure/bench_vessel_prelabels.py DATA_ROOT benchmarks/structure/regions
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
    ap.add_argument("--max-clicks", type=int, default=3000)
    ap.add_argument("--no-bands", action="store_true",
                    help="regions only, without the pre-label's edge bands (session 11's table)")
    a = ap.parse_args()

    from medwb.al.region_oracle import outline_actions, simulate_region_clicks
    from medwb.al.regions import RegionConfig, over_segment, spacing_of, with_edge_bands
    from medwb.al.vessel_prior import vessel_prelabel
    from medwb.data import open_dataset
    from medwb.metrics import dice

    ds = open_dataset(Path(a.data_root) / "seg2d" / "chase_db1", progress=False)
    config = RegionConfig(levels=(300, 3000, 40000), compactness=2.0)
    rows = []
    for cid in ds.case_ids():
        image, spacing = ds.load_image(cid), spacing_of(ds, cid)
        first, second = ds.load_mask(cid)[0] != 0, ds.load_mask(cid, observer=2)[0] != 0
        c0 = time.process_time()
        pre = vessel_prelabel(image, spacing=spacing)
        cpu = time.process_time() - c0
        agreement = dice(second, first)
        regions = over_segment(image, spacing, config=config)
        if not a.no_bands:  # what the review's editor offers from a pre-label
            regions = with_edge_bands(regions, pre.astype(np.int64), spacing=spacing)[0]
        res = simulate_region_clicks(regions, first.astype(np.int64), target=agreement, max_clicks=a.max_clicks,
                                     start=pre.astype(np.int64))
        outline = outline_actions(first.astype(np.int64), step=5)
        rows.append({"case_id": cid, "prelabel_cpu_seconds": cpu, "prelabel_dice_observer1": dice(pre, first),
                     "prelabel_dice_observer2": dice(pre, second), "observer2_dice_observer1": agreement,
                     "clicks_to_observer2": res.clicks, "dice_after_clicks": res.dice,
                     "reached_observer2": bool(res.dice >= agreement - 1e-9), "outline_actions": outline})
        print(rows[-1], flush=True)
    t = pd.DataFrame(rows)
    results = Path(a.results)
    t.to_csv(results / "chase_vessel_prelabel_eval.csv", index=False)
    empty = results / "chase_db1_eval.csv"
    before = pd.read_csv(empty) if empty.is_file() else None
    lines = [
        "# CHASE_DB1: label-free vessel pre-labels (issue 13)", "",
        "`medwb structure DATA --out DIR --prelabel vessels` (`medwb.al.vessel_prior.vessel_prelabel`), all 28 "
        "photos; masks read only to score. Settings chosen on these photos (CLAHE clip, ridge scales, field margin).",
        "Command: `OMP_NUM_THREADS=1 python benchmarks/structure/bench_vessel_prelabels.py DATA_ROOT "
        "benchmarks/structure/regions" + (" --no-bands" if a.no_bands else "") + "`", "",
        "| | mean | median | min | max |", "|---|---|---|---|---|"]
    for col, name in [("prelabel_dice_observer1", "pre-label Dice with observer 1"),
                      ("prelabel_dice_observer2", "pre-label Dice with observer 2"),
                      ("observer2_dice_observer1", "observer 2's Dice with observer 1"),
                      ("prelabel_cpu_seconds", "pre-label CPU s per photo")]:
        v = t[col]
        lines.append(f"| {name} | {v.mean():.3f} | {v.median():.3f} | {v.min():.3f} | {v.max():.3f} |")
    lines += ["", "Region-click (levels 300/3000/40000, compactness 2" + ("" if a.no_bands else "; from the pre-label "
              "also its edge bands, as the review's editor offers") + ") until the mask agrees with observer 1 as well "
              "as observer 2 does:", "",
              "| start | photos reaching observer 2's agreement | mean Dice with observer 1 at the end | clicks "
              "(median) | clicks / outline vertices (sum) |", "|---|---|---|---|---|"]
    if before is not None and "clicks_to_observer2" in before:
        lines.append(f"| empty mask (regions/chase_db1_eval.csv) | {int(before['reached_observer2'].sum())} of "
                     f"{len(before)} | {before['dice_at_observer2'].mean():.3f} | "
                     f"{before['clicks_to_observer2'].median():.0f} | "
                     f"{100 * before['clicks_to_observer2'].sum() / before['outline_actions'].sum():.1f}% |")
    lines.append(f"| vessel pre-label | {int(t['reached_observer2'].sum())} of {len(t)} | "
                 f"{t['dice_after_clicks'].mean():.3f} | {t['clicks_to_observer2'].median():.0f} | "
                 f"{100 * t['clicks_to_observer2'].sum() / t['outline_actions'].sum():.1f}% |")
    text = "\n".join(lines) + "\n"
    print(text)
    (results / "chase_vessel_prelabel.md").write_text(text)


if __name__ == "__main__":
    main()
