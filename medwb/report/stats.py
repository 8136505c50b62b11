"""Report tables built from :mod:`medwb.metrics`: metrics with bootstrap 95% CIs per class, per case, per
subgroup; ROC/PR curve points; learning-curve summaries; CI formatting.

The metrics themselves (AUC, Dice, ECE, kappa, bootstrap) live in :mod:`medwb.metrics`, one convention each;
this module only arranges them into the DataFrames the report shows and writes. Seeded through an explicit
``random_state`` so the same inputs always give the same tables (the determinism test compares them byte for
byte).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from medwb.errors import DataError
from medwb.metrics import (CLASSIFICATION_METRICS, bootstrap_ci, check_xy, classification_metrics, dice_per_class,
                           one_hot, percentile_ci, stratified_bootstrap_indices)


def classification_table(
    y_true: np.ndarray,
    proba: np.ndarray,
    *,
    class_names: dict[int, str] | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
) -> pd.DataFrame:
    """Every classification metric with its stratified percentile-bootstrap CI, one row per (metric, class).

    Columns: metric, class, estimate, ci_low, ci_high, n. Rows sorted in a fixed order for stable CSVs.
    """
    y_true, proba = check_xy(y_true, proba)
    point = classification_metrics(y_true, proba)
    idx = stratified_bootstrap_indices(y_true, n_bootstrap, random_state=random_state)
    reps: dict[tuple[str, str], list[float]] = {key: [] for key in point}
    for i in idx:
        r = classification_metrics(y_true[i], proba[i])
        for key in point:
            reps[key].append(r[key])
    names = class_names or {}
    rows = []
    for (m, c), est in point.items():
        lo, hi = percentile_ci(np.array(reps[(m, c)]), alpha=alpha)
        label = names.get(int(c), c) if c.isdigit() else c
        if c == "positive" and 1 in names:
            label = f"positive ({names[1]})"
        rows.append({"metric": m, "class": str(label), "estimate": est, "ci_low": lo, "ci_high": hi,
                     "n": int(y_true.size)})
    df = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(CLASSIFICATION_METRICS)}
    df["_o"] = df["metric"].map(order)
    df["_c"] = [0 if c in ("all", "macro") or c.startswith("positive") else 1 for c in df["class"]]
    return df.sort_values(["_c", "_o", "class"], kind="stable").drop(columns=["_o", "_c"]).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------- curves
def roc_pr_curves(y_true: np.ndarray, proba: np.ndarray) -> pd.DataFrame:
    """One-vs-rest ROC and PR curve points per class (binary: the positive class only).

    Columns: curve ("roc"/"pr"), class, x, y, threshold — x/y are FPR/TPR for ROC and recall/precision for PR.
    """
    from sklearn.metrics import precision_recall_curve, roc_curve

    y_true, proba = check_xy(y_true, proba)
    k = proba.shape[1]
    frames = []
    for c in ([1] if k == 2 else range(k)):
        y = (y_true == c).astype(int)
        if y.min() == y.max():
            continue
        fpr, tpr, thr = roc_curve(y, proba[:, c])
        frames.append(pd.DataFrame({"curve": "roc", "class": c, "x": fpr, "y": tpr, "threshold": thr}))
        prec, rec, thr = precision_recall_curve(y, proba[:, c])
        frames.append(pd.DataFrame({"curve": "pr", "class": c, "x": rec, "y": prec,
                                    "threshold": np.append(thr, np.nan)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["curve", "class", "x", "y", "threshold"])


def segmentation_case_metrics(
    pred: np.ndarray,
    truth: np.ndarray,
    *,
    n_classes: int | None = None,
    spacing: Sequence[float] | Sequence[Sequence[float]] | None = None,
    case_ids: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Per-case, per-foreground-class Dice and HD95 (monai.metrics) for integer masks of shape (N, 1, *spatial).

    HD95 is in the units of ``spacing`` (pixels when None); it is NaN when either mask of the class is empty
    (undefined). Dice follows :mod:`medwb.metrics`' empty-mask convention (1.0 when the class is absent from
    both masks, 0.0 when only the prediction has it). Columns: case_id, class, dice, hd95.
    """
    from monai.metrics import compute_hausdorff_distance

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise DataError(None, f"prediction masks {pred.shape} and reference masks {truth.shape} differ in shape",
                        "resample predictions to the reference grid before scoring")
    k = int(n_classes or max(int(pred.max()), int(truth.max()), 1) + 1)
    p, t = one_hot(pred, k), one_hot(truth, k)
    import warnings

    dice = dice_per_class(pred, truth, k)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # monai warns on empty masks; HD95 of an empty mask is reported as NaN
        hd = compute_hausdorff_distance(p, t, include_background=False, percentile=95,
                                        spacing=spacing).numpy()
    empty = (p[:, 1:].flatten(2).sum(-1) == 0).numpy() | (t[:, 1:].flatten(2).sum(-1) == 0).numpy()
    hd = np.where(empty | ~np.isfinite(hd), np.nan, hd)
    ids = list(case_ids) if case_ids is not None else [str(i) for i in range(pred.shape[0])]
    rows = [{"case_id": ids[i], "class": c + 1, "dice": float(dice[i, c]), "hd95": float(hd[i, c])}
            for i in range(pred.shape[0]) for c in range(k - 1)]
    return pd.DataFrame(rows)


def mean_table(
    values: pd.DataFrame,
    columns: Sequence[str],
    *,
    by: str | None = None,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    random_state: int = 0,
) -> pd.DataFrame:
    """Mean of per-case values with a case-bootstrap CI: one row per (group in ``by``, column).

    Used for Dice / HD95 over cases and for inter-observer Dice. Columns: metric, class, estimate, ci_low,
    ci_high, n.
    """
    rows = []
    groups = [("all", values)] if by is None else list(values.groupby(by, sort=True))
    for g, df in groups:
        for col in columns:
            v = df[col].to_numpy(dtype=np.float64)
            v = v[np.isfinite(v)]
            if v.size == 0:
                rows.append({"metric": col, "class": str(g), "estimate": np.nan, "ci_low": np.nan,
                             "ci_high": np.nan, "n": 0})
                continue
            est, lo, hi = bootstrap_ci(np.mean, v, n_bootstrap=n_bootstrap, alpha=alpha, random_state=random_state)
            rows.append({"metric": col, "class": str(g), "estimate": est, "ci_low": lo, "ci_high": hi,
                         "n": int(v.size)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------- subgroups
def subgroup_table(
    y_true: np.ndarray,
    proba: np.ndarray,
    groups: pd.DataFrame,
    *,
    metrics: Sequence[str] = ("auc", "accuracy", "sensitivity", "specificity"),
    min_cases: int = 10,
    n_bootstrap: int = 500,
    random_state: int = 0,
) -> pd.DataFrame:
    """Metrics with bootstrap CIs within every value of every subgroup column in ``groups``.

    ``groups`` has one row per case (aligned with ``y_true``); subgroups with fewer than ``min_cases`` are
    listed with NaN estimates rather than dropped, so the report shows they were too small.
    Columns: column, group, metric, class, estimate, ci_low, ci_high, n.
    """
    y_true, proba = check_xy(y_true, proba)
    frames = []
    for col in groups.columns:
        values = groups[col].astype("string").fillna("<missing>").to_numpy()
        for g in sorted(set(values.tolist())):
            m = values == g
            if m.sum() < min_cases:
                frames.append(pd.DataFrame([{"column": col, "group": g, "metric": mt, "class": "",
                                             "estimate": np.nan, "ci_low": np.nan, "ci_high": np.nan,
                                             "n": int(m.sum())} for mt in metrics]))
                continue
            t = classification_table(y_true[m], proba[m], n_bootstrap=n_bootstrap, random_state=random_state)
            t = t[t["metric"].isin(metrics) & ~t["class"].str.fullmatch(r"\d+")]
            t.insert(0, "group", g)
            t.insert(0, "column", col)
            frames.append(t)
    if not frames:
        return pd.DataFrame(columns=["column", "group", "metric", "class", "estimate", "ci_low", "ci_high", "n"])
    return pd.concat(frames, ignore_index=True)


# ------------------------------------------------------------------------------------------ learning curves
def learning_curve_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Mean, std, min and max over seeds of a simulation's ``curves.csv`` per strategy, metric and round.

    Expects columns strategy, seed, round, n_labeled, fraction_labeled, metric, value (the loop engineer's
    contract); ``full`` rows are the all-labels reference.
    """
    need = {"strategy", "seed", "n_labeled", "metric", "value"}
    missing = need - set(curves.columns)
    if missing:
        raise DataError(None, f"learning-curve table lacks columns {sorted(missing)}",
                        "pass the curves.csv written by `medwb simulate`")
    keys = ["strategy", "metric", "n_labeled"] + (["fraction_labeled"] if "fraction_labeled" in curves else [])
    g = curves.groupby(keys, sort=True)["value"]
    out = g.agg(["mean", "std", "min", "max", "count"]).reset_index().rename(columns={"count": "n_seeds"})
    return out


def format_ci(estimate: float, lo: float, hi: float, *, digits: int = 3) -> str:
    """``0.912 (0.887–0.934)`` for tables; ``undefined`` when the metric has no value (e.g. AUC on one class)."""
    if estimate is None or not np.isfinite(estimate):
        return "undefined"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"
