"""``medwb explain``: pick cases, compute maps, run the checks, write maps / overlays / a check table.

Output folder layout (also what the review-only verdict panel reads, see ``medwb.ui.widgets.verdict``)::

    OUT/index.csv                   one row per (case, method): prediction, probability, selection reason,
                                    paths below (relative to OUT), failed checks of the method
    OUT/checks.csv                  one row per (method, check): pass/FAIL, value, reference, criterion
    OUT/maps/<method>/<case>.npz    map, image, mask (model input grid), target, probabilities
    OUT/maps/<method>/<case>.nii.gz the map resampled to the image's own grid, with its affine (3D Slicer)
    OUT/overlays/<method>/<case>.png  one overlay per case; OUT/overlays/<method>.png all cases, one scale

When OUT is inside an encrypted study (``STUDY/maps``, ``STUDY/exports/explain``) every file is encrypted as it is
written and ``<case>`` is the study's case pseudonym (:mod:`medwb.explain.stored`); read them back with
:func:`medwb.explain.stored.load_npz` / ``read_table`` / ``load_nifti``.

Case selection (``select=``): ``uncertain`` (highest predictive entropy), ``misclassified`` (wrong class, or
lowest Dice for segmentation; topped up with the most uncertain), ``random`` (seeded), or
``subgroup:COLUMN=VALUE`` (cohort column, e.g. ``subgroup:sex=F``; random within the subgroup).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from torch import nn

from medwb.atomic import ensure_output_dir
from medwb.compute.source import model_input_size, resolve_model
from medwb.errors import DataError
from medwb.explain.attributions import LABELS, METHOD_NAMES, attribute, canonical_method
from medwb.explain.checks import CheckResult, results_table, run_checks
from medwb.explain.export import heat_scale, overlay_figure, save_nifti, save_png
from medwb.explain.stored import case_stem, protect_outside, source_study, write_json, write_npz, write_table

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.store import Study
    from medwb.store.layout import StudyLayout

SELECTIONS = ("uncertain", "misclassified", "random", "subgroup:COLUMN=VALUE")


@dataclass
class ExplainResult:
    out_dir: Path
    index: pd.DataFrame
    checks: pd.DataFrame
    seconds: dict[str, float] = field(default_factory=dict)


def _entropy(p: np.ndarray) -> np.ndarray:
    e = -(p * np.log(np.clip(p, 1e-12, 1))).sum(1)
    return e.reshape(len(p), -1).mean(1)


def _dice_fg(pred: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-case any-foreground Dice (:func:`medwb.metrics.dice`: 1.0 when both masks are empty)."""
    from medwb.metrics import dice

    return np.array([dice(p > 0, t > 0) for p, t in zip(pred, y)], dtype=np.float64)


def select_cases(probs: np.ndarray, y: np.ndarray | None, n: int, *, how: str = "uncertain",
                 cohort: pd.DataFrame | None = None, case_ids: list[str] | None = None,
                 random_state: int = 0) -> tuple[np.ndarray, list[str]]:
    """Indices of ``n`` cases to explain and the reason for each (see module docstring)."""
    N = len(probs)
    n = min(int(n), N)
    rng = np.random.default_rng(random_state)
    ent = _entropy(probs)
    if how == "uncertain":
        idx = np.argsort(-ent, kind="stable")[:n]
        return idx, [f"uncertain (entropy {ent[i]:.2f})" for i in idx]
    if how == "random":
        idx = np.sort(rng.choice(N, size=n, replace=False))
        return idx, ["random"] * n
    if how == "misclassified":
        if y is None:
            raise DataError(None, "misclassified cases need ground-truth labels", "use --select uncertain or random")
        pred = probs.argmax(1)
        if probs.ndim == 2:
            wrong = np.where(pred != np.asarray(y).ravel())[0]
            wrong = wrong[np.argsort(-ent[wrong], kind="stable")]
            reasons = {int(i): f"misclassified (true {int(np.asarray(y).ravel()[i])}, predicted {int(pred[i])})"
                       for i in wrong}
        else:
            dice = _dice_fg(pred, np.asarray(y)[:, 0])
            wrong = np.argsort(dice, kind="stable")
            reasons = {int(i): f"low Dice ({dice[i]:.2f})" for i in wrong}
        idx = list(wrong[:n])
        for i in np.argsort(-ent, kind="stable"):
            if len(idx) >= n:
                break
            if i not in idx:
                idx.append(i)
                reasons[int(i)] = f"uncertain (entropy {ent[i]:.2f}; not enough misclassified)"
        return np.asarray(idx, int), [reasons[int(i)] for i in idx]
    if how.startswith("subgroup:") and "=" in how:
        col, val = how.split(":", 1)[1].split("=", 1)
        if cohort is None or case_ids is None or col not in cohort.columns:
            raise DataError(None, f"no cohort column {col!r} for subgroup selection",
                            f"use one of the cohort columns: {list(cohort.columns) if cohort is not None else []}")
        vals = cohort.set_index("case_id").loc[case_ids, col].astype(str).to_numpy()
        pool = np.where(vals == val)[0]
        if len(pool) == 0:
            raise DataError(None, f"no case with {col} == {val!r}", f"values present: {sorted(set(vals))[:20]}")
        idx = np.sort(rng.choice(pool, size=min(n, len(pool)), replace=False))
        return idx, [f"subgroup {col}={val}"] * len(idx)
    raise DataError(None, f"unknown case selection {how!r}", f"use one of {', '.join(SELECTIONS)}")


def to_image_grid(map_: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Resample a (1, *model_grid) map to the image's own (1, *shape) grid (linear) for NIfTI export."""
    if tuple(map_.shape[1:]) == tuple(shape):
        return map_
    from medwb.data.dataset import resize

    return resize(map_.astype(np.float32), shape, "image")


def _methods(method: str) -> list[str]:
    if method in ("all", "*"):
        return list(METHOD_NAMES)
    return [canonical_method(m.strip()) for m in str(method).split(",") if m.strip()]


def _write_view(out: Path, name: str, maps: np.ndarray, Xs: np.ndarray, masks: np.ndarray | None,
                sel_ids: list[str], reasons: list[str], rows: list[dict[str, Any]], ds: Dataset,
                title: str) -> list[dict[str, Any]]:
    """Save a non-attribution view (uncertainty) like a method: NPZ, NIfTI, per-case PNG, index rows."""
    scale = heat_scale(maps, signed=False)
    base = {r["case_id"]: r for r in rows}
    new = []
    for j, cid in enumerate(sel_ids):
        stem = case_stem(out, cid)
        npz = write_npz(out / "maps" / name / f"{stem}.npz", map=maps[j], image=Xs[j], mask=masks[j] if masks is not None else np.zeros(0),
                            method=name, case_id=cid)
        nii = save_nifti(to_image_grid(maps[j], ds.spatial_shape(cid)), ds.affine(cid),
                         out / "maps" / name / f"{stem}.nii.gz")
        fig = overlay_figure([Xs[j]], [maps[j]], [None if masks is None else masks[j]], titles=[cid], scale=scale,
                             ncols=1, suptitle=title, cell_size=3.2)
        png = save_png(fig, out / "overlays" / name / f"{stem}.png")
        new.append({**base.get(cid, {"case_id": cid, "selection": reasons[j]}), "method": name,
                    "map_npz": str(npz.relative_to(out)), "map_nifti": str(nii.relative_to(out)),
                    "overlay_png": str(png.relative_to(out)), "failed_checks": ""})
    return new


def run_explain(model: str | Path | nn.Module, data: str | Path, *, method: str = "gradcam", cases: int = 16,
                out_dir: str | Path, select: str = "uncertain", split: str | None = None, checks: bool = True,
                max_pool: int = 1000, random_state: int = 0, progress: bool = True,
                verbose: bool = False, plaintext: bool = False) -> ExplainResult:
    """Explain ``cases`` cases of ``data`` with ``method`` (a name, a comma list or ``all``); see module doc.

    The model of an encrypted study explained into an ``out_dir`` outside it: the folder is encrypted with the
    study's key (:func:`medwb.explain.stored.protect_outside`), or written in clear with ``plaintext`` and a
    warning; either way it is registered in the study, so ``medwb purge`` removes it."""
    from medwb.data import open_dataset
    from medwb.models import predict_proba

    t0 = time.perf_counter()
    out = ensure_output_dir(out_dir)
    net, meta, study = resolve_model(model)
    source = source_study(model)
    outside = source is not None and protect_outside(source, out, plaintext=plaintext)
    if outside:  # registered before anything is written: a crash mid-way leaves nothing purge does not know
        _register_outside(study, source, out)
    ds = open_dataset(data)
    splits = set(ds.cohort["split"].astype(str))
    split = split or next((s for s in ("test", "val", "train", "unlabelled") if s in splits), None)
    if split not in splits:
        raise DataError(data, f"split {split!r} not in the dataset (has {sorted(splits)})", "pass split=one of those")
    size = model_input_size(ds, meta)
    X, y, ids = ds.arrays(split, size=size, max_cases=max_pool, seed=random_state)
    if len(X) == 0:
        raise DataError(data, f"split {split!r} has no case", "choose another split")
    seg = ds.task == "segmentation"
    has_y = seg and y is not None and len(y) == len(X) and np.asarray(y).ndim > 2
    if not seg:
        has_y = y is not None and len(y) == len(X) and bool((np.asarray(y) >= 0).all())
    probs = predict_proba(net, X)
    timings = {"load+predict": time.perf_counter() - t0}
    idx, reasons = select_cases(probs, y if has_y else None, cases, how=select, cohort=ds.cohort,
                                case_ids=list(ids), random_state=random_state)
    Xs = X[idx]
    sel_ids = [str(ids[i]) for i in idx]
    masks = np.asarray(y)[idx] if seg and has_y else None
    if seg:  # the largest predicted foreground class of each case (background only -> class 1)
        pred = probs[idx].argmax(1).reshape(len(idx), -1)
        counts = np.stack([(pred == c).sum(1) for c in range(probs.shape[1])], 1)
        counts[:, 0] = -1
        target = np.maximum(counts.argmax(1), 1)
    else:
        target = probs[idx].argmax(1)
    rows, all_checks = [], []
    for m in _methods(method):
        t = time.perf_counter()
        maps = attribute(net, Xs, target, method=m, progress=progress)
        timings[f"maps:{m}"] = time.perf_counter() - t
        res: list[CheckResult] = []
        if checks:
            t = time.perf_counter()
            # mask energy against the reference region of the explained class (not all foreground)
            ref = None if masks is None else (masks == target.reshape(-1, *([1] * (masks.ndim - 1))))
            res = run_checks(net, Xs, maps, method=m, target=target, masks=ref, max_steps=4,
                             seed=random_state, progress=progress)
            timings[f"checks:{m}"] = time.perf_counter() - t
        all_checks += res
        failed = ", ".join(r.check for r in res if not r.passed)
        scale = heat_scale(maps)
        mdir, odir = out / "maps" / m, out / "overlays" / m
        mdir.mkdir(parents=True, exist_ok=True)
        for j, cid in enumerate(sel_ids):
            p = probs[idx[j]]
            tgt = int(target[j])
            stem = case_stem(out, cid)
            npz = write_npz(mdir / f"{stem}.npz", map=maps[j], image=Xs[j], mask=masks[j] if masks is not None else np.zeros(0),
                                target=tgt, probs=p if not seg else p.reshape(p.shape[0], -1).mean(1),
                                method=m, case_id=cid)
            nii = save_nifti(to_image_grid(maps[j], ds.spatial_shape(cid)), ds.affine(cid),
                             mdir / f"{stem}.nii.gz")
            title = f"{cid}: {ds.classes.get(tgt, tgt)}" + (f" p={p[tgt]:.2f}" if not seg else "")
            fig = overlay_figure([Xs[j]], [maps[j]], [None if masks is None else masks[j]], titles=[title],
                                 scale=scale, ncols=1, failed=failed or None, suptitle=LABELS[m], cell_size=3.2)
            png = save_png(fig, odir / f"{stem}.png")
            rows.append({"case_id": cid, "method": m, "selection": reasons[j],
                         "label": (int(y[idx[j]]) if not seg and has_y else None),
                         "prediction": tgt, "prediction_name": ds.classes.get(tgt, str(tgt)),
                         # segmentation: mean probability of the class over the voxels predicted as it
                         "probability": float(p[tgt]) if not seg else
                         float(p[tgt][p.argmax(0) == tgt].mean()) if (p.argmax(0) == tgt).any() else 0.0,
                         "map_npz": str(npz.relative_to(out)), "map_nifti": str(nii.relative_to(out)),
                         "overlay_png": str(png.relative_to(out)), "failed_checks": failed,
                         "model_version": meta.get("model_version", ""), "dataset": ds.name})
        grid = overlay_figure(list(Xs), list(maps), None if masks is None else list(masks), titles=sel_ids,
                              scale=scale, failed=failed or None, suptitle=f"{LABELS[m]} ({ds.name}, {select})")
        save_png(grid, out / "overlays" / f"{m}.png")
    if seg:  # second view: the model's own per-voxel uncertainty (MC-dropout entropy), not an attribution
        t = time.perf_counter()
        from medwb.explain.attributions import uncertainty_map

        unc = uncertainty_map(net, Xs, passes=10, seed=random_state)
        timings["uncertainty"] = time.perf_counter() - t
        rows += _write_view(out, "uncertainty", unc, Xs, masks, sel_ids, reasons, rows, ds,
                            "MC-dropout entropy (model uncertainty; no attribution checks)")
    index = pd.DataFrame(rows)
    write_table(index, out / "index.csv")  # encrypted, like the maps, inside an encrypted study (case ids)
    table = results_table(all_checks) if all_checks else pd.DataFrame(
        columns=["check", "method", "passed", "status", "value", "reference", "criterion"])
    write_table(table, out / "checks.csv")
    timings["total"] = time.perf_counter() - t0
    write_json(out / "run.json", {"data": str(data), "split": split, "select": select, "cases": sel_ids,
                                  "methods": _methods(method), "seconds": timings,
                                  "model_version": meta.get("model_version", "")})
    if verbose:
        from medwb.explain.checks import format_table

        print(f"{len(sel_ids)} cases ({select}) from {ds.name}/{split}; maps, overlays and checks in {out}")
        if len(table):
            print(format_table(table))
    if outside and plaintext:
        from medwb.privacy.outputs import warn_plaintext

        warn_plaintext("explanation", sorted(p for p in out.rglob("*") if p.is_file()), source.folder)
    if study is not None:
        study.close()
    return ExplainResult(out, index, table, timings)


def _register_outside(study: Study | None, source: StudyLayout, out: Path) -> None:
    """Record ``out`` in the source study as an export (``medwb purge`` removes it)."""
    from medwb.store import Study as StudyClass

    owner = study if study is not None else StudyClass.open(source.folder)
    owner.register_artifacts([out], "export")
    if owner is not study:
        owner.close()
