"""The metrics of medwb, one convention each: Dice, AUC / accuracy, ECE, Cohen's kappa, bootstrap CIs.

Every module that scores something (training and early stopping, auto-labelling, the label audit, the
explanations, the validation report) calls these, so a number means the same thing wherever it is shown.
Plain functions on numpy arrays, seeded through an explicit ``random_state``.

Conventions
- Classification: ``y_true`` int class indices (N,), ``proba`` softmax probabilities (N, K); binary problems
  are K = 2 with class 1 positive; the decision is ``argmax``. AUC is the ROC AUC with ties counting half; it
  is NaN (undefined) when the truth holds one class only.
- **Dice, empty masks** (MONAI's ``ignore_empty=False``): per foreground class, a class absent from *both*
  masks scores 1.0 (nothing to find, nothing found), a class absent from the truth but predicted scores 0.0.
  A case's Dice is the mean over foreground classes: all of them when ``n_classes`` is given (MONAI), else the
  classes present in either mask; "any foreground" Dice is ``dice(a != 0, b != 0)``.
- Bootstrap CIs are percentile intervals; stratified resampling keeps every replicate's class balance.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import DataError

if TYPE_CHECKING:
    import torch

#: metric names of :func:`classification_metrics`, in the order tables list them
CLASSIFICATION_METRICS = ("auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1")


# --------------------------------------------------------------------------------------------------- checks
def check_xy(y_true: np.ndarray, proba: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(int64 labels, float64 (N, K) probabilities); a 1-D ``proba`` is the positive-class probability.

    Raises DataError when the shapes disagree, nothing is given or a label has no probability column.
    """
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


# ------------------------------------------------------------------------------------- classification
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


def metric_value(v: object) -> float:
    """A stored metric as a float; NaN when undefined. The store writes NaN as JSON null (an AUC on a test split
    with one class), so a value read back may be None, and ``float(None)`` must not end a finished run."""
    if v is None or isinstance(v, bool):
        return float("nan")
    try:
        return float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return float("nan")


def format_metric(v: object, digits: int = 3) -> str:
    """``0.912``, or ``undefined`` for a metric that has no value (NaN / None), e.g. an AUC on one class."""
    f = metric_value(v)
    return f"{f:.{digits}f}" if math.isfinite(f) else "undefined"


def auc_binary(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC by the Mann-Whitney rank statistic (ties count half); NaN when one class is absent.

    The rank form is what the bootstrap uses (fast on thousands of replicates); it equals
    ``sklearn.metrics.roc_auc_score`` up to float rounding.
    """
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (``sklearn.metrics.balanced_accuracy_score``).

    A predictor that answers one class for every case scores 1 / (number of classes present): chance.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.size == 0 or y_true.size != y_pred.size:
        raise DataError(None, f"{y_true.size} labels and {y_pred.size} predictions",
                        "pass one prediction per labelled case")
    return float(np.mean([(y_pred[y_true == c] == c).mean() for c in np.unique(y_true)]))


def class_metrics(probs: np.ndarray, y: np.ndarray, *, pred: np.ndarray | None = None) -> dict[str, float]:
    """``{"auc", "accuracy", "balanced_accuracy"}``: the training / early-stopping / learning-curve metrics.

    Accuracy and balanced accuracy are those of ``pred`` (the predicted classes of a decision rule chosen on
    validation, see ``medwb.models.predict_labels``), by default of the argmax. AUC through
    ``sklearn.metrics.roc_auc_score`` (binary: the class-1 column; multi-class: macro one-vs-rest, defined only
    when every class occurs, else NaN); NaN when ``y`` holds one class. Kept on
    sklearn's arithmetic so that training curves and model selection stay bit-identical to earlier runs.
    """
    from sklearn.metrics import roc_auc_score

    pred = probs.argmax(1) if pred is None else np.asarray(pred).ravel()
    acc = float((pred == y).mean())
    present = np.unique(y)
    auc = float("nan")
    if len(present) > 1:
        if probs.shape[1] == 2:
            auc = float(roc_auc_score(y, probs[:, 1]))
        elif len(present) == probs.shape[1]:
            auc = float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    return {"auc": auc, "accuracy": acc, "balanced_accuracy": balanced_accuracy(y, pred)}


def classification_metrics(y_true: np.ndarray, proba: np.ndarray) -> dict[tuple[str, str], float]:
    """Point estimates keyed by (metric, class): class "positive" for binary, "macro" + class names' indices else.

    Binary: sensitivity etc. of the positive class (index 1). Multi-class: one-vs-rest per class ("0", "1", ...)
    and their unweighted mean over the defined ones ("macro"); AUC one-vs-rest.
    """
    y_true, proba = check_xy(y_true, proba)
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


# ------------------------------------------------------------------------------------------ calibration
def reliability_table(y_true: np.ndarray, proba: np.ndarray, *, n_bins: int = 10) -> pd.DataFrame:
    """Top-label reliability diagram data on equal-width confidence bins (what ECE is computed from).

    Columns: bin, lower, upper, count, confidence (mean max-probability), accuracy (share correct), gap.
    """
    y_true, proba = check_xy(y_true, proba)
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


ece = expected_calibration_error


# --------------------------------------------------------------------------------------------- agreement
def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Cohen's kappa between two raters' class labels on the same cases (1 = perfect, 0 = chance).

    Two identical raters score 1.0 (sklearn says NaN when both use a single class).
    """
    from sklearn.metrics import cohen_kappa_score

    a = np.asarray(a).ravel()
    b = np.asarray(b).ravel()
    if a.size != b.size or a.size == 0:
        raise DataError(None, f"kappa needs two equally long, non-empty label lists (got {a.size}, {b.size})",
                        "pass the two annotators' labels for the same cases")
    if np.array_equal(a, b):
        return 1.0
    return float(cohen_kappa_score(a, b))


# -------------------------------------------------------------------------------------------------- Dice
def one_hot(mask: np.ndarray, n_classes: int) -> torch.Tensor:
    """(N, K, *spatial) float one-hot of integer masks shaped (N, 1, *spatial) or (N, *spatial)."""
    import torch

    m = torch.as_tensor(np.asarray(mask), dtype=torch.long)
    if m.ndim >= 2 and m.shape[1] == 1:
        m = m[:, 0]
    oh = torch.nn.functional.one_hot(m, n_classes)  # (N, *spatial, K)
    return oh.movedim(-1, 1).float()


def dice(a: np.ndarray, b: np.ndarray, *, n_classes: int | None = None) -> float:
    """Dice of two label masks of one case under the module's empty-mask convention.

    Mean over the foreground classes (all ``1..n_classes-1`` when given, else those present in either mask);
    1.0 when both masks are empty. ``dice(a != 0, b != 0)`` is the any-foreground Dice.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise DataError(None, f"masks of shapes {a.shape} and {b.shape}", "compare masks on the same image grid")
    if a.dtype == bool or b.dtype == bool:
        a, b = a.astype(np.int64), b.astype(np.int64)
    if n_classes is None:
        classes = sorted((set(np.unique(a).tolist()) | set(np.unique(b).tolist())) - {0})
    else:
        classes = list(range(1, int(n_classes)))
    if not classes:
        return 1.0
    scores = []
    for c in classes:
        ac, bc = a == c, b == c
        s = ac.sum() + bc.sum()
        scores.append(1.0 if s == 0 else 2 * np.logical_and(ac, bc).sum() / s)
    return float(np.mean(scores))


def dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> np.ndarray:
    """(N, K-1) Dice per case and foreground class of integer masks (N, 1, *spatial), by ``monai.metrics``.

    ``compute_dice(include_background=False, ignore_empty=False)``: the module's empty-mask convention.
    """
    from monai.metrics import compute_dice

    p, t = one_hot(pred, n_classes), one_hot(truth, n_classes)
    return compute_dice(p, t, include_background=False, ignore_empty=False).numpy()


def dice_score(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean foreground Dice over cases and classes of argmax predictions (``monai.metrics.DiceMetric``).

    ``probs`` (N, K, *spatial), ``y`` integer masks (N, 1, *spatial); the training / early-stopping metric.
    """
    import torch
    from monai.metrics import DiceMetric
    from monai.networks.utils import one_hot as monai_one_hot

    k = probs.shape[1]
    pred = torch.from_numpy(probs.argmax(1)[:, None].astype(np.int64))
    metric = DiceMetric(include_background=False, reduction="mean", ignore_empty=False)
    metric(monai_one_hot(pred, k), monai_one_hot(torch.from_numpy(np.asarray(y, dtype=np.int64)), k))
    return float(metric.aggregate().item())


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
