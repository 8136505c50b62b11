"""Statistics for validation reports: metrics with bootstrap 95% CIs, curves, calibration, agreement, subgroups.

Plain functions on numpy arrays and pandas tables, seeded through an explicit ``random_state`` so that the
same inputs always give the same tables (the report's determinism test compares them byte for byte).

Conventions
- ``y_true``: int class indices (N,); ``proba``: softmax probabilities (N, K). Binary problems are K = 2 with
  class 1 the positive class; the decision is ``argmax`` (probability >= 0.5 for K = 2).
- Bootstrap CIs are percentile intervals; resampling is stratified by the true class so every replicate keeps
  the class balance of the test set (and AUC stays defined).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from medwb.errors import DataError

CLASSIFICATION_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")


# --------------------------------------------------------------------------------------------------- checks
def _check_xy(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    proba = np.asarray(proba, dtype=np.float64)
    if proba.ndim == 1:  # a positive-class probability vector
        proba = np.stack([1.0 - proba, proba], axis=1)
    if proba.ndim != 2 or proba.shape[0] != y_true.shape[0]:
        raise DataError(None, f"probabilities of shape {proba.shape} do not match {y_true.shape[0]} labels",
                        "pass proba as an (N, K) array with one row per label")
    if y_true.size == 0:
        raise DataError(None, "no cases to evaluate", "evaluate on a split that has labelled cases")
    if y_true.min() < 0 or y_true.max() >= proba.shape[1]:
        raise DataError(None, f"labels {sorted(set(y_true.tolist()))} outside 0..{proba.shape[1] - 1}",
                        "give one probability column per class")
    return y_true, proba


# ------------------------------------------------------------------------------------------ point metrics
def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(K, K) counts, rows = truth, columns = prediction."""
    idx = np.asarray(y_true, dtype=np.int64) * n_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(idx, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def rates_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class one-vs-rest sensitivity, specificity, PPV, NPV and F1 from a confusion matrix.

    A rate whose denominator is zero is NaN (undefined), not 0, so it does not bias a macro mean.
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fn = cm.sum(axis=1) - tp
    fp = cm.sum(axis=0) - tp
    tn = cm.sum() - tp - fn - fp

    def div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)

    return {
        "sensitivity": div(tp, tp + fn),
        "specificity": div(tn, tn + fp),
        "ppv": div(tp, tp + fp),
        "npv": div(tn, tn + fn),
        "f1": div(2 * tp, 2 * tp + fp + fn),
    }


def auc_binary(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties count half); NaN when one class is absent."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[tuple[str, str], float]:
    """Point estimates keyed by (metric, class): class "positive" for binary, "macro" + class names' indices else.

    Binary: sensitivity etc. of the positive class (index 1). Multi-class: one-vs-rest per class ("0", "1", ...)
    and their unweighted mean ("macro"); AUC one-vs-rest.
    """
    y_true, proba = _check_xy(y_true, proba)
    k = proba.shape[1]
    y_pred = proba.argmax(axis=1)
    cm = confusion_matrix(y_true, y_pred, k)
    rates = rates_from_confusion(cm)
    out: dict[tuple[str, str], float] = {("accuracy", "all"): float(np.trace(cm) / cm.sum())}
    aucs = np.array([auc_binary(y_true == c, proba[:, c]) for c in range(k)])
    if k == 2:
        out[("auc", "positive")] = float(aucs[1])
        for m in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            out[(m, "positive")] = float(rates[m][1])
        return out
    with np.errstate(all="ignore"):
        out[("auc", "macro")] = float(np.nanmean(aucs)) if np.isfinite(aucs).any() else float("nan")
        for m in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            v = rates[m]
            out[(m, "macro")] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
    for c in range(k):
        out[("auc", str(c))] = float(aucs[c])
        for m in ("sensitivity", "specificity", "ppv", "npv", "f1"):
            out[(m, str(c))] = float(rates[m][c])
    return out


# ---------------------------------------------------------------------------------------------- bootstrap
def stratified_bootstrap_indices(y: np.ndarray, n_bootstrap: int, *, random_state: int = 0) -> np.ndarray:
    """(B, N) resampling indices drawn with replacement within each class (class counts preserved)."""
    y = np.asarray(y).ravel()
    rng = np.random.default_rng(random_state)
    out = np.empty((n_bootstrap, y.size), dtype=np.int64)
    pos = 0
    for c in np.unique(y):  # sorted: the order is fixed, so the draws are reproducible
        members = np.flatnonzero(y == c)
        out[:, pos:pos + members.size] = members[rng.integers(0, members.size, size=(n_bootstrap, members.size))]
        pos += members.size
    return out


def percentile_ci(samples: np.ndarray, *, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of bootstrap replicates, ignoring undefined (NaN) replicates."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [100 * alpha / 2, 100 * (1 - alpha / 2)])
    return float(lo), float(hi)


def bootstrap_ci(
    metric: Callable[..., float],
    *arrays: np.ndarray,
    n_bootstrap: int = 1000,
    alpha: float = 0.05,
    stratify: np.ndarray | None = None,
    random_state: int = 0,
) -> tuple[float, float, float]:
    """(estimate, low, high) for ``metric(*arrays)``: percentile bootstrap, stratified by ``stratify`` if given."""
    arrays = tuple(np.asarray(a) for a in arrays)
    n = arrays[0].shape[0]
    point = float(metric(*arrays))
    if stratify is not None:
        idx = stratified_bootstrap_indices(stratify, n_bootstrap, random_state=random_state)
    else:
        idx = np.random.default_rng(random_state).integers(0, n, size=(n_bootstrap, n))
    reps = np.array([metric(*(a[i] for a in arrays)) for i in idx], dtype=np.float64)
    lo, hi = percentile_ci(reps, alpha=alpha)
    return point, lo, hi


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
    y_true, proba = _check_xy(y_true, proba)
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

    y_true, proba = _check_xy(y_true, proba)
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


# ------------------------------------------------------------------------------------------ calibration
def reliability_table(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = 10) -> pd.DataFrame:
    """Top-label reliability diagram data on equal-width confidence bins.

    Columns: bin, lower, upper, count, confidence (mean max-probability), accuracy (share correct), gap.
    """
    y_true, proba = _check_xy(y_true, proba)
    conf = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == y_true).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    # bins are (lower, upper]; the first bin also takes exact zeros
    b = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    rows = []
    for i in range(n_bins):
        m = b == i
        n = int(m.sum())
        rows.append({"bin": i, "lower": edges[i], "upper": edges[i + 1], "count": n,
                     "confidence": float(conf[m].mean()) if n else np.nan,
                     "accuracy": float(correct[m].mean()) if n else np.nan})
    df = pd.DataFrame(rows)
    df["gap"] = (df["accuracy"] - df["confidence"]).abs()
    return df


def expected_calibration_error(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = 10) -> float:
    """ECE: count-weighted mean |accuracy - confidence| over equal-width top-label confidence bins."""
    t = reliability_table(y_true, proba, n_bins=n_bins)
    t = t[t["count"] > 0]
    return float((t["count"] * t["gap"]).sum() / t["count"].sum())


# --------------------------------------------------------------------------------------------- agreement
def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Cohen's kappa between two raters' class labels on the same cases (1 = perfect, 0 = chance)."""
    from sklearn.metrics import cohen_kappa_score

    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.size != b.size or a.size == 0:
        raise DataError(None, f"kappa needs two equally long, non-empty label lists (got {a.size}, {b.size})",
                        "pass the two annotators' labels for the same cases")
    if np.array_equal(a, b):
        return 1.0  # sklearn returns NaN when both raters use a single class; identical raters agree fully
    return float(cohen_kappa_score(a, b))


def _one_hot(mask: np.ndarray, n_classes: int) -> "torch.Tensor":  # noqa: F821
    import torch

    m = torch.as_tensor(np.asarray(mask), dtype=torch.long)
    if m.ndim >= 2 and m.shape[1] == 1:
        m = m[:, 0]
    oh = torch.nn.functional.one_hot(m, n_classes)  # (N, *spatial, K)
    return oh.movedim(-1, 1).float()


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
    (undefined), and Dice is NaN when both are empty. Columns: case_id, class, dice, hd95.
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance

    pred = np.asarray(pred)
    truth = np.asarray(truth)
    if pred.shape != truth.shape:
        raise DataError(None, f"prediction masks {pred.shape} and reference masks {truth.shape} differ in shape",
                        "resample predictions to the reference grid before scoring")
    k = int(n_classes or max(int(pred.max()), int(truth.max()), 1) + 1)
    p, t = _one_hot(pred, k), _one_hot(truth, k)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # monai warns on empty masks; we report them as NaN instead
        dice = compute_dice(p, t, include_background=False, ignore_empty=True).numpy()
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
    y_true, proba = _check_xy(y_true, proba)
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
    """``0.912 (0.887–0.934)`` for tables; ``n/a`` when undefined."""
    if not np.isfinite(estimate):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{estimate:.{digits}f}"
    return f"{estimate:.{digits}f} ({lo:.{digits}f}–{hi:.{digits}f})"
