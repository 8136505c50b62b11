"""``medwb structure DATA --out DIR`` for a segmentation dataset: the regions of every case, and what
region-click annotation would cost against a manual outline (issue 13).

Writes ``DIR/regions/<case>.nii.gz``: the region maps of :func:`medwb.al.regions.over_segment` in the case's own
geometry (its affine), int32, the levels (coarse to fine) along the last axis: ``(H, W, 1, L)`` for a 2D image,
``(H, W, D, L)`` for a volume; ``DIR/regions/manifest.csv`` maps files to case ids. The maps are cached in the
study (``cache/regions/``), so the review queue reuses them.

When the dataset carries masks, ``DIR/regions_eval.csv`` holds, per case, the simulated annotator of
:mod:`medwb.al.region_oracle`: clicks to reach Dice ``target`` with the mask, the vertices of a manual outline
(one every ``step`` pixels, slice by slice), their ratio, and the over-segmentation time (wall and CPU: on a
busy machine the CPU time of this one-thread step is what an idle machine's wall time would be; a cached case
reads in milliseconds). With a second observer
(CHASE_DB1) the target is also the second observer's own Dice with the first: clicks to agree with observer 1 as
well as observer 2 does.

With ``prelabel`` (``medwb structure --prelabel ellipse|vessels``, 2D only) it also writes a label-free pre-label
mask of every case, before any click (:func:`medwb.al.prelabels.label_free_mask`: ``ellipse``, a bright elliptical
ring such as a fetal skull in HC18; ``vessels``, the dark thin ridges of a fundus photo), as
``DIR/prelabels/<case>.png`` (0/255, the image's own height and width) with ``DIR/prelabels/manifest.csv`` (case
id, file, whether anything was found, CPU seconds, and Dice with the mask where the case has one; with a second
observer also the pre-label's Dice with that observer and the second observer's with the first). The annotator
starting from the pre-label has what the review's editor offers then: the regions and the pre-label's edge bands.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd

from medwb.al.prelabels import check_prelabel, label_free_mask
from medwb.al.region_oracle import outline_actions, simulate_region_clicks
from medwb.al.regions import RegionConfig, spacing_of, study_regions, with_edge_bands
from medwb.atomic import atomic_write
from medwb.data.dataset import Dataset
from medwb.metrics import dice
from medwb.store.layout import safe_name



def region_image_name(case_id: str) -> str:
    return f"{safe_name(case_id)}.nii.gz"


def write_region_image(regions: np.ndarray, affine: np.ndarray, path: Path) -> None:
    """The levels along the last axis, in the case's geometry (a 2D image gets a singleton third axis)."""
    import nibabel as nib

    vol = np.moveaxis(regions, 0, -1)
    if regions.ndim == 3:
        vol = vol[:, :, None, :]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(vol, np.int32), np.asarray(affine, float)), str(path))


def evaluate_case(dataset: Dataset, case_id: str, regions: np.ndarray, *, target: float, step: float,
                  max_clicks: int, start: np.ndarray | None = None) -> dict[str, float] | None:
    """The simulated annotator on one case (None when the case has no mask); with ``start`` (a label-free
    pre-label, class 1) also the clicks it needs when it begins from that mask instead of an empty one, with the
    regions the review's editor then offers: ``regions`` and the pre-label's edge bands
    (:func:`medwb.al.regions.with_edge_bands`)."""
    mask = dataset.load_mask(case_id)
    if mask is None:
        return None
    truth = mask[0]
    if start is not None:  # the pre-label as a label map, and the regions the editor offers from it
        start = np.asarray(start).astype(np.int64)
        banded = with_edge_bands(regions, start, spacing=spacing_of(dataset, case_id))[0]
    res = simulate_region_clicks(regions, truth, target=target, max_clicks=max_clicks)
    outline = outline_actions(truth, step=step)
    row: dict[str, float] = {"clicks": res.clicks, "dice": res.dice, "reached": float(res.reached),
                             "outline_actions": outline, "click_ratio": res.clicks / max(outline, 1)}
    if start is not None:
        corrected = simulate_region_clicks(banded, truth, target=target, max_clicks=max_clicks,
                                           start=start)
        row.update(clicks_from_prelabel=corrected.clicks, dice_from_prelabel=corrected.dice,
                   reached_from_prelabel=float(corrected.reached),
                   prelabel_click_ratio=corrected.clicks / max(outline, 1))
    second = dataset.load_mask(case_id, observer=2) if "mask2" in dataset.records else None
    if second is not None:
        agreement = dice(second[0], truth, n_classes=len(dataset.classes))
        to_obs2 = simulate_region_clicks(regions, truth, target=agreement, max_clicks=max_clicks)
        row.update(observer2_dice=agreement, clicks_to_observer2=to_obs2.clicks, dice_at_observer2=to_obs2.dice,
                   reached_observer2=float(to_obs2.dice >= agreement - 1e-9))
        if start is not None:  # from the label-free pre-label to the second observer's agreement
            pre_to_obs2 = simulate_region_clicks(banded, truth, target=agreement, max_clicks=max_clicks,
                                                 start=start)
            row.update(clicks_prelabel_to_observer2=pre_to_obs2.clicks, dice_prelabel_at_observer2=pre_to_obs2.dice,
                       reached_prelabel_observer2=float(pre_to_obs2.dice >= agreement - 1e-9))
    return row


def pick_cases(dataset: Dataset, max_cases: int | None, seed: int) -> list[str]:
    """Every case id, or a seeded subset of ``max_cases`` of them (sorted)."""
    ids = dataset.case_ids()
    if max_cases is not None and len(ids) > max_cases:
        ids = sorted(np.random.default_rng(seed).choice(ids, int(max_cases), replace=False).tolist())
    return ids


def run_prelabels(dataset: Dataset, out: Path, *, kind: str = "ellipse", ids: list[str] | None = None,
                  seed: int = 0, progress: bool = True) -> dict[str, float]:
    """Label-free pre-label masks of ``ids`` (default every case) in ``out/prelabels/``, each scored against the
    case's mask when it has one (masks are read only for that score); returns the summary."""
    from tqdm.auto import tqdm

    check_prelabel(kind, dataset)
    rows = [prelabel_case(dataset, cid, out, kind=kind, seed=seed)[1]
            for cid in tqdm(dataset.case_ids() if ids is None else ids, desc="pre-labels", disable=not progress)]
    return write_prelabel_manifest(rows, out)


def prelabel_case(dataset: Dataset, case_id: str, out: Path, *, kind: str = "ellipse",
                  seed: int = 0) -> tuple[np.ndarray, dict[str, object]]:
    """One case's label-free pre-label, written to ``out/prelabels/`` (PNG 0/255); (mask, manifest row)."""
    from PIL import Image

    folder = out / "prelabels"
    folder.mkdir(parents=True, exist_ok=True)
    image = dataset.load_image(case_id)
    t0, c0 = time.perf_counter(), time.process_time()
    pre = label_free_mask(kind, image, spacing=spacing_of(dataset, case_id), random_state=seed)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    name = f"{safe_name(case_id)}.png"
    png = Image.fromarray(pre.astype(np.uint8) * 255)
    atomic_write(folder / name, lambda f, im=png: im.save(f, format="PNG"))
    row: dict[str, object] = {"case_id": case_id, "file": name, "found": bool(pre.any()), "seconds": seconds,
                              "cpu_seconds": cpu}
    mask = dataset.load_mask(case_id)
    if mask is not None:
        row["dice"] = dice(pre, mask[0] != 0)
        second = dataset.load_mask(case_id, observer=2) if "mask2" in dataset.records else None
        if second is not None:
            row.update(dice_observer2=dice(pre, second[0] != 0), observer2_dice=dice(second[0] != 0, mask[0] != 0))
    return pre, row


def write_prelabel_manifest(rows: list[dict[str, object]], out: Path) -> dict[str, float]:
    """``out/prelabels/manifest.csv`` and the pre-labels' summary."""
    table = pd.DataFrame(rows)
    (out / "prelabels").mkdir(parents=True, exist_ok=True)
    atomic_write(out / "prelabels" / "manifest.csv", lambda f: f.write(table.to_csv(index=False).encode()))
    summary: dict[str, float] = {"prelabel_cases": float(len(table)),
                                 "prelabel_found": float(table["found"].sum()) if len(table) else 0.0,
                                 "prelabel_cpu_seconds": float(table["cpu_seconds"].mean()) if len(table) else 0.0}
    if "dice" in table and table["dice"].notna().any():
        scored = table["dice"].dropna()
        summary.update(prelabel_evaluated=float(len(scored)), prelabel_mean_dice=float(scored.mean()),
                       prelabel_median_dice=float(scored.median()))
    if "observer2_dice" in table and table["observer2_dice"].notna().any():
        summary.update(prelabel_mean_dice_observer2=float(table["dice_observer2"].mean()),
                       prelabel_observer2_dice=float(table["observer2_dice"].mean()))
    return summary


def run_regions(dataset: Dataset, out: Path, study_dir: Path, *, config: RegionConfig | None = None,
                max_cases: int | None = None, target: float = 0.9, step: float = 5.0, max_clicks: int = 3000,
                seed: int = 0, progress: bool = True, prelabel: str | None = None) -> dict[str, float]:
    """Regions of every case (or ``max_cases`` of them, seeded), written and evaluated; returns the summary.
    ``prelabel``: also write that label-free pre-label of the same cases (:func:`run_prelabels`)."""
    from tqdm.auto import tqdm

    from medwb.store import Study

    if prelabel is not None:
        check_prelabel(prelabel, dataset)  # before the long region pass
    ids = pick_cases(dataset, max_cases, seed)
    folder = out / "regions"
    folder.mkdir(parents=True, exist_ok=True)
    manifest, rows, pre_rows = [], [], []
    with Study.open_or_create(study_dir, dataset_path=str(dataset.path), task=dataset.task,
                              classes=dataset.classes, name=dataset.name) as study:
        for cid in tqdm(ids, desc="regions", disable=not progress):
            pre = None
            if prelabel is not None:
                pre, pre_row = prelabel_case(dataset, cid, out, kind=prelabel, seed=seed)
                pre_rows.append(pre_row)
            t0, c0 = time.perf_counter(), time.process_time()
            regions = study_regions(study, dataset, cid, config=config)
            seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
            name = region_image_name(cid)
            write_region_image(regions, dataset.affine(cid), folder / name)
            manifest.append({"case_id": cid, "file": name, "levels": int(regions.shape[0]),
                             "regions": " ".join(str(int(r.max()) + 1) for r in regions),
                             "spacing": " ".join(f"{s:g}" for s in spacing_of(dataset, cid))})
            row = evaluate_case(dataset, cid, regions, target=target, step=step, max_clicks=max_clicks, start=pre)
            if row is not None:
                rows.append({"case_id": cid, "seconds": seconds, "cpu_seconds": cpu, **row})
    pd.DataFrame(manifest).to_csv(folder / "manifest.csv", index=False)
    summary: dict[str, float] = {"cases": float(len(ids))}
    if rows:
        table = pd.DataFrame(rows)
        table.to_csv(out / "regions_eval.csv", index=False)
        summary.update(evaluated=float(len(table)), target=target, step=step,
                       median_clicks=float(table["clicks"].median()),
                       median_outline=float(table["outline_actions"].median()),
                       click_ratio=float(table["clicks"].sum() / table["outline_actions"].sum()),
                       reached_share=float(table["reached"].mean()), mean_dice=float(table["dice"].mean()))
        if "observer2_dice" in table:
            summary.update(observer2_dice=float(table["observer2_dice"].mean()),
                           reached_observer2_share=float(table["reached_observer2"].mean()),
                           clicks_to_observer2_ratio=float(table["clicks_to_observer2"].sum()
                                                           / table["outline_actions"].sum()))
        if "clicks_from_prelabel" in table:
            summary.update(median_clicks_from_prelabel=float(table["clicks_from_prelabel"].median()),
                           prelabel_click_ratio=float(table["clicks_from_prelabel"].sum()
                                                      / table["outline_actions"].sum()),
                           reached_from_prelabel_share=float(table["reached_from_prelabel"].mean()),
                           no_click_share=float((table["clicks_from_prelabel"] == 0).mean()))
        if "clicks_prelabel_to_observer2" in table:
            summary.update(reached_prelabel_observer2_share=float(table["reached_prelabel_observer2"].mean()),
                           mean_dice_prelabel_at_observer2=float(table["dice_prelabel_at_observer2"].mean()),
                           prelabel_to_observer2_ratio=float(table["clicks_prelabel_to_observer2"].sum()
                                                             / table["outline_actions"].sum()))
    if prelabel is not None:
        summary.update(write_prelabel_manifest(pre_rows, out))
    return summary


def format_regions(summary: dict[str, float]) -> str:
    """The summary for the terminal."""
    lines = [f"regions: {int(summary['cases'])} cases"]
    if "click_ratio" in summary:
        lines.append(f"region-click to Dice {summary['target']:.2f}: median {summary['median_clicks']:.0f} clicks vs "
                     f"{summary['median_outline']:.0f} outline vertices (one per {summary['step']:g} px); "
                     f"{100 * summary['click_ratio']:.1f}% of the actions; target reached on "
                     f"{100 * summary['reached_share']:.0f}% of {int(summary['evaluated'])} cases "
                     f"(mean Dice {summary['mean_dice']:.3f})")
    if "observer2_dice" in summary:
        lines.append(f"second observer's Dice with the first: {summary['observer2_dice']:.3f}; region-click matches "
                     f"it on {100 * summary['reached_observer2_share']:.0f}% of cases with "
                     f"{100 * summary['clicks_to_observer2_ratio']:.1f}% of the outline's actions")
    if "prelabel_cases" in summary:
        line = (f"label-free pre-labels: {int(summary['prelabel_found'])} of {int(summary['prelabel_cases'])} cases "
                f"gave a non-empty mask ({summary['prelabel_cpu_seconds']:.2f} s CPU per case)")
        if "prelabel_mean_dice" in summary:
            line += (f"; Dice with the masks before any click: mean {summary['prelabel_mean_dice']:.3f}, median "
                     f"{summary['prelabel_median_dice']:.3f} ({int(summary['prelabel_evaluated'])} cases)")
        if "prelabel_observer2_dice" in summary:
            line += (f"; with the second observer's masks {summary['prelabel_mean_dice_observer2']:.3f} (the second "
                     f"observer's own Dice with the first: {summary['prelabel_observer2_dice']:.3f})")
        lines.append(line)
    if "prelabel_click_ratio" in summary:
        lines.append(f"region-click from the pre-label: median {summary['median_clicks_from_prelabel']:.0f} clicks "
                     f"({100 * summary['prelabel_click_ratio']:.1f}% of the outline's actions; no click needed on "
                     f"{100 * summary['no_click_share']:.0f}% of cases; target reached on "
                     f"{100 * summary['reached_from_prelabel_share']:.0f}%)")
    if "reached_prelabel_observer2_share" in summary:
        lines.append(f"region-click from the pre-label to the second observer's agreement: reached on "
                     f"{100 * summary['reached_prelabel_observer2_share']:.0f}% of cases (mean Dice "
                     f"{summary['mean_dice_prelabel_at_observer2']:.3f}) with "
                     f"{100 * summary['prelabel_to_observer2_ratio']:.1f}% of the outline's actions")
    return "\n".join(lines)


__all__ = ["format_regions", "pick_cases", "run_prelabels", "run_regions", "write_region_image"]
