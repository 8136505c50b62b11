"""Auto-labeling: calibrated pre-labels and an auto-accept threshold with a bounded error rate.

Why: a pre-label the model is sure of can be accepted without a person, but only if "sure" is honest. So
1. **temperature scaling** (Guo et al. 2017) is fitted on the validation split: one scalar T, chosen by
   minimising the negative log-likelihood of softmax(log p / T) with L-BFGS on log T (T > 0 by construction);
   it changes confidences, never the predicted class.
2. **choose_threshold** picks the smallest calibrated-confidence threshold t such that, among validation cases
   with confidence >= t, a one-sided Clopper-Pearson upper confidence bound (default 95%) on the error rate is
   <= the target (default 2%, about the human label error rate). The bound, not the raw error, is compared, so a
   handful of lucky validation cases cannot open the gate: with zero errors at least ~150 accepted validation
   cases are needed for 2%. Scanning many thresholds is a mild multiple-comparison effect that the bound does
   not correct for; docs/store.md says so. If no threshold qualifies, nothing is auto-accepted.
3. **prelabel** gives the proposed label, its calibrated confidence and the auto-accept flag.

Segmentation: the per-image confidence is the mean, over voxels of the predicted foreground (argmax != 0), of
the calibrated max-probability; an image with no predicted foreground uses the mean over all voxels. A pre-label
mask counts as "correct" (for choosing the threshold and measuring error) when its foreground Dice with the truth
is >= ``dice_ok`` (default 0.8; two empty masks count as Dice 1).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from medwb.al.oracle import LabelAnswer, record_label
from medwb.errors import DataError

if TYPE_CHECKING:
    from torch import nn

    from medwb.store import Study

_EPS = 1e-12


def _check_probs(probs: np.ndarray, name: str = "probs") -> np.ndarray:
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim < 2 or p.shape[1] < 2:
        raise DataError(None, f"{name} has shape {p.shape}", "pass softmax probabilities shaped (N, K[, H, W[, D]]) with K >= 2")
    if not np.all(np.isfinite(p)) or p.min() < 0 or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise DataError(None, f"{name} are not probabilities (finite, >= 0, summing to 1 over axis 1)",
                        "pass the output of predict_proba (softmax), not logits")
    return p


def _to_flat(probs: np.ndarray) -> np.ndarray:
    """(N,K,...) -> (M,K): segmentation voxels become rows."""
    if probs.ndim == 2:
        return probs
    k = probs.shape[1]
    return np.moveaxis(probs, 1, -1).reshape(-1, k)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities softmax(log p / T), same shape as ``probs`` (class axis 1)."""
    p = np.asarray(probs, dtype=np.float64)
    z = np.log(np.clip(p, _EPS, 1.0)) / float(temperature)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def nll(probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes (voxel-wise for segmentation)."""
    p = _to_flat(np.asarray(probs, dtype=np.float64))
    yy = np.asarray(y).reshape(-1).astype(int)
    return float(-np.mean(np.log(np.clip(p[np.arange(len(yy)), yy], _EPS, 1.0))))


def fit_temperature(probs_val: np.ndarray, y_val: np.ndarray, *, max_voxels: int = 200_000, seed: int = 0) -> float:
    """Temperature T minimising validation NLL (L-BFGS-B on log T, analytic gradient).

    Segmentation probabilities (N,K,H,W[,D]) use the voxels as samples (a seeded subsample of ``max_voxels``)."""
    p = _to_flat(_check_probs(probs_val, "probs_val"))
    y = np.asarray(y_val).reshape(-1).astype(int)
    if len(y) != len(p):
        raise DataError(None, f"{len(p)} probability rows but {len(y)} labels", "pass the labels of the same validation cases")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise DataError(None, f"labels outside 0..{p.shape[1] - 1}", "pass class indices matching the probability columns")
    if len(y) > max_voxels:
        idx = np.random.default_rng(seed).choice(len(y), max_voxels, replace=False)
        p, y = p[idx], y[idx]
    logp = np.log(np.clip(p, _EPS, 1.0))
    rows = np.arange(len(y))

    def f(log_t: np.ndarray) -> tuple[float, np.ndarray]:
        t = float(np.exp(log_t[0]))
        z = logp / t
        zmax = z.max(axis=1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
        loss = np.mean(lse - z[rows, y])
        q = np.exp(z - lse[:, None])  # calibrated softmax
        # d loss / d log T = mean( z_y - sum_k q_k z_k )
        grad = np.mean(z[rows, y] - (q * z).sum(axis=1))
        return float(loss), np.array([grad])

    res = optimize.minimize(f, x0=np.array([0.0]), jac=True, method="L-BFGS-B", bounds=[(np.log(0.05), np.log(20.0))])
    return float(np.exp(res.x[0]))


def image_confidence(probs: np.ndarray) -> np.ndarray:
    """Per-case confidence: classification max-prob; segmentation mean max-prob over the predicted foreground
    (all voxels when none is predicted)."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 2:
        return p.max(axis=1)
    maxp = p.max(axis=1)
    fg = p.argmax(axis=1) != 0
    n = p.shape[0]
    maxp, fg = maxp.reshape(n, -1), fg.reshape(n, -1)
    nfg = fg.sum(axis=1)
    fg_mean = np.where(nfg > 0, (maxp * fg).sum(axis=1) / np.maximum(nfg, 1), maxp.mean(axis=1))
    return fg_mean


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Foreground (label != 0) Dice of two masks; 1.0 when both are empty (:func:`medwb.metrics.dice`)."""
    from medwb.metrics import dice as _dice

    return _dice(np.asarray(a) != 0, np.asarray(b) != 0)


def is_correct(pred: np.ndarray, truth: np.ndarray, *, dice_ok: float = 0.8) -> np.ndarray:
    """Per-case correctness: equal class, or (masks) Dice >= dice_ok."""
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.ndim == 1:
        return pred.reshape(-1) == truth.reshape(-1)
    t = truth.reshape(pred.shape)
    return np.array([dice(pred[i], t[i]) >= dice_ok for i in range(len(pred))])


def error_upper_bound(errors: int, n: int, confidence_level: float = 0.95) -> float:
    """One-sided Clopper-Pearson upper bound on an error rate from ``errors`` out of ``n``."""
    if n == 0:
        return 1.0
    if errors >= n:
        return 1.0
    return float(stats.beta.ppf(confidence_level, errors + 1, n - errors))


def min_cases_to_certify(target_error: float, confidence_level: float = 0.95) -> int:
    """The fewest validation cases whose :func:`error_upper_bound` can reach ``target_error``: all accepted, none
    wrong (the bound is then 1 - (1 - level)^(1/n)); 59 for 5% at 95%. A smaller split never auto-accepts."""
    return math.ceil(math.log(1 - confidence_level) / math.log(1 - target_error))


@dataclass(frozen=True)
class ThresholdChoice:
    threshold: float  # auto-accept when calibrated confidence >= threshold (inf: never)
    target_error: float
    confidence_level: float
    n_val: int
    n_accepted_val: int
    errors_val: int
    error_val: float  # point estimate among accepted validation cases
    error_upper: float  # the bound that was compared with the target
    coverage_val: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def choose_threshold(
    conf_val: np.ndarray, correct_val: np.ndarray, target_error: float = 0.02, *, confidence_level: float = 0.95
) -> ThresholdChoice:
    """Smallest confidence threshold whose accepted validation cases have an error upper bound <= target."""
    conf = np.asarray(conf_val, dtype=float).reshape(-1)
    ok = np.asarray(correct_val, dtype=bool).reshape(-1)
    if len(conf) != len(ok) or len(conf) == 0:
        raise DataError(None, f"{len(conf)} confidences but {len(ok)} correctness flags", "pass one of each per validation case")
    if not 0 < target_error < 1:
        raise DataError(None, f"target_error={target_error}", "use a rate between 0 and 1, e.g. 0.02")
    if not np.all(np.isfinite(conf)):
        raise DataError(None, "confidences contain NaN or inf", "pass calibrated probabilities of the validation cases")
    n = len(conf)
    # candidate thresholds: each distinct confidence t; accepted set = every case with conf >= t
    cand = np.unique(conf)  # ascending
    desc = np.sort(conf)[::-1]
    n_acc = np.searchsorted(-desc, -cand, side="right")  # cases with conf >= t
    err_desc = np.cumsum((~ok[np.argsort(-conf, kind="stable")]).astype(int))
    n_err = err_desc[n_acc - 1]
    ub = np.where(n_err >= n_acc, 1.0, stats.beta.ppf(confidence_level, n_err + 1, np.maximum(n_acc - n_err, 1)))
    good = np.flatnonzero(ub <= target_error)
    if len(good) == 0:
        return ThresholdChoice(float("inf"), target_error, confidence_level, n, 0, 0, 0.0, 1.0, 0.0)
    i = good[0]  # the lowest qualifying threshold = the largest auto-accepted share
    j, e = int(n_acc[i]), int(n_err[i])
    return ThresholdChoice(float(cand[i]), target_error, confidence_level, n, j, e, e / j, float(ub[i]), j / n)


@dataclass
class Prelabels:
    """Proposed labels for a batch: ``labels`` (N,) classes or (N,1,H,W[,D]) masks, calibrated ``confidence``
    (N,), ``auto_accept`` (N,) bool, with the temperature and threshold that produced them."""

    labels: np.ndarray
    confidence: np.ndarray
    auto_accept: np.ndarray
    temperature: float
    threshold: float
    probs: np.ndarray  # calibrated probabilities

    def to_frame(self, case_ids: list[str] | None = None) -> pd.DataFrame:
        df = pd.DataFrame({"confidence": self.confidence, "auto_accept": self.auto_accept})
        if self.labels.ndim == 1:
            df.insert(0, "label", self.labels)
        if case_ids is not None:
            df.insert(0, "case_id", list(case_ids))
        return df


def prelabel(probs: np.ndarray, temperature: float, threshold: float) -> Prelabels:
    """Pre-label a batch: argmax class (or mask), calibrated confidence, and whether it may be auto-accepted."""
    p = _check_probs(probs)
    q = apply_temperature(p, temperature)
    conf = image_confidence(q)
    lab = q.argmax(axis=1)
    if lab.ndim > 1:
        lab = lab[:, None]  # (N,1,H,W[,D]) like the data contract's masks
    return Prelabels(lab.astype(np.int64), conf, conf >= threshold, float(temperature), float(threshold), q)


def fit_autolabel(
    probs_val: np.ndarray, y_val: np.ndarray, *, target_error: float = 0.02, confidence_level: float = 0.95,
    dice_ok: float = 0.8, seed: int = 0, threshold_cases: np.ndarray | None = None,
) -> tuple[float, ThresholdChoice]:
    """Temperature on the validation split, then the auto-accept threshold on the same calibrated split.

    ``threshold_cases`` (bool mask over the validation cases, e.g. from :func:`cases_like_batch`): choose the
    threshold among these only (the temperature still uses them all); none selected -> never auto-accept.
    """
    t = fit_temperature(probs_val, y_val, seed=seed)
    pre = prelabel(probs_val, t, np.inf)
    correct = is_correct(pre.labels, np.asarray(y_val), dice_ok=dice_ok)
    conf = pre.confidence
    if threshold_cases is not None:
        keep = np.asarray(threshold_cases, dtype=bool).reshape(-1)
        if len(keep) != len(conf):
            raise DataError(None, f"threshold_cases has {len(keep)} flags for {len(conf)} validation cases",
                            "pass one flag per validation case")
        if not keep.any():
            return t, ThresholdChoice(float("inf"), target_error, confidence_level, 0, 0, 0, 0.0, 1.0, 0.0)
        conf, correct = conf[keep], correct[keep]
    return t, choose_threshold(conf, correct, target_error, confidence_level=confidence_level)


def cases_like_batch(uncertainty_val: np.ndarray, uncertainty_batch: np.ndarray,
                     novelty_val: np.ndarray | None = None, novelty_batch: np.ndarray | None = None) -> np.ndarray:
    """Validation cases at least as hard as the easiest case of the batch (bool mask).

    Why: a batch chosen *for* its uncertainty or its novelty is harder than the validation split as a whole, so
    a threshold chosen on the whole split under-states the error of the batch's auto-accepted labels (measured on
    PneumoniaMNIST batches, 2% target: BALD 12%, core-set 5.0%, hybrid 4.6%, random 1.2%). A validation case
    stands in for the batch when it is at least as uncertain as the least uncertain batch case and, when
    ``novelty`` is given (e.g. embedding distance to the nearest labelled case), at least as novel as the least
    novel batch case. A random batch, whose easiest case is near 0 on both, keeps nearly the whole split.
    """
    u_val = np.asarray(uncertainty_val, dtype=float).reshape(-1)
    u_batch = np.asarray(uncertainty_batch, dtype=float).reshape(-1)
    if len(u_batch) == 0:
        return np.ones(len(u_val), dtype=bool)
    keep = u_val >= u_batch.min()
    if novelty_val is not None and novelty_batch is not None:
        n_val = np.asarray(novelty_val, dtype=float).reshape(-1)
        keep &= n_val >= np.asarray(novelty_batch, dtype=float).reshape(-1).min()
    return keep


def autolabel_report(pre: Prelabels, y_true: np.ndarray | None = None, *, dice_ok: float = 0.8) -> dict[str, Any]:
    """Coverage of auto-acceptance and, when ground truth is given, the measured error of auto-accepted labels."""
    n = len(pre.confidence)
    n_auto = int(pre.auto_accept.sum())
    rep: dict[str, Any] = {"n": n, "n_auto": n_auto, "coverage": n_auto / n if n else 0.0,
                           "temperature": pre.temperature, "threshold": pre.threshold}
    if y_true is not None:
        ok = is_correct(pre.labels, np.asarray(y_true), dice_ok=dice_ok)
        rep["accuracy_all"] = float(ok.mean()) if n else float("nan")
        rep["n_auto_errors"] = int((~ok[pre.auto_accept]).sum())
        rep["auto_error"] = rep["n_auto_errors"] / n_auto if n_auto else float("nan")
        rep["error_non_auto"] = float((~ok[~pre.auto_accept]).mean()) if n_auto < n else float("nan")
    return rep


def commit_auto_labels(
    study: Study, case_ids: list[str], pre: Prelabels, *, model_version: str | None, round: int | None = None
) -> list[str]:
    """Write the auto-accepted pre-labels to the study (source ``auto``, annotator ``model:<version>``, no person
    involved) and return the case ids still needing a human decision (for the review queue)."""
    ids = [str(c) for c in case_ids]
    if len(ids) != len(pre.confidence):
        raise DataError(None, f"{len(ids)} case ids for {len(pre.confidence)} pre-labels", "pass the ids of the pre-labelled batch, same order")
    who = f"model:{model_version}" if model_version else "model"
    rest = []
    for i, cid in enumerate(ids):
        if not pre.auto_accept[i]:
            rest.append(cid)
            continue
        note = f"auto-accepted: calibrated confidence {pre.confidence[i]:.4f} >= {pre.threshold:.4f} (T={pre.temperature:.3f})"
        answer = LabelAnswer(value=int(pre.labels[i]), source="auto", annotator=who, note=note) \
            if pre.labels.ndim == 1 else LabelAnswer(mask=pre.labels[i], source="auto", annotator=who, note=note)
        record_label(study, cid, answer, round=round, model_version=model_version)
    return rest


def batch_difficulty(model: nn.Module, X_val: np.ndarray, X_batch: np.ndarray, X_labeled: np.ndarray, *,
                     passes: int = 20, seed: int = 0, mc_batch: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(uncertainty_val, uncertainty_batch, novelty_val, novelty_batch) for :func:`cases_like_batch`.

    Uncertainty: 1 - max of the MC-dropout mean probability (``mc_batch``: the batch's MC samples (T, N, K) when
    the caller has them already, as the loop does for the readers' class evidence). Novelty: Euclidean distance
    in the model's embedding to the nearest labelled case (None when nothing is labelled yet).
    """
    from medwb.al.acquire import min_sq_dist  # the core-set strategy's distance to the labelled set
    from medwb.models.uncertainty import mc_dropout_proba
    from medwb.models import embed

    def uncertainty(X: np.ndarray) -> np.ndarray:
        return 1.0 - mc_dropout_proba(model, X, passes=passes, fast=True, seed=seed).mean(0).max(1)

    u_val = uncertainty(X_val)
    u_batch = uncertainty(X_batch) if mc_batch is None else 1.0 - np.asarray(mc_batch).mean(0).max(1)
    if len(X_labeled) == 0:
        return u_val, u_batch, None, None
    lab = embed(model, X_labeled).astype(np.float64)

    def novelty(X: np.ndarray) -> np.ndarray:
        return np.sqrt(min_sq_dist(embed(model, X).astype(np.float64), lab))

    return u_val, u_batch, novelty(X_val), novelty(X_batch)


def autolabel_outcome(model: nn.Module, X_val: np.ndarray, y_val: np.ndarray,
                      sets: dict[str, tuple[np.ndarray, np.ndarray]], *, target_error: float = 0.02,
                      seed: int = 0) -> dict[str, float]:
    """What auto-labelling with ``model`` would give on whole sets of cases (issue 12: "report coverage and
    measured error on the remaining pool and on the shifted test split"): temperature and threshold fitted on the
    whole validation split (the bounded-error rule, no batch matching: the sets are not chosen for difficulty),
    then for each ``name -> (X, y)`` the share auto-accepted (``autolabel_<name>_coverage``), how many
    (``_n_auto``) and the measured error of those (``_error``; NaN when none) with its 95% upper bound
    (``_error_upper95``) against the ground truth ``y``."""
    from medwb.models import predict_proba

    temperature, choice = fit_autolabel(predict_proba(model, X_val), y_val, target_error=target_error, seed=seed)
    out: dict[str, float] = {"autolabel_set_threshold": float(choice.threshold)}
    for name, (X, y) in sets.items():
        if len(X) == 0:
            continue
        rep = autolabel_report(prelabel(predict_proba(model, X), temperature, choice.threshold), np.asarray(y))
        out.update({f"autolabel_{name}_n": float(rep["n"]), f"autolabel_{name}_coverage": float(rep["coverage"]),
                    f"autolabel_{name}_n_auto": float(rep["n_auto"]),
                    f"autolabel_{name}_n_errors": float(rep["n_auto_errors"]),
                    f"autolabel_{name}_error": float(rep["auto_error"]),
                    f"autolabel_{name}_error_upper95": error_upper_bound(int(rep["n_auto_errors"]), int(rep["n_auto"]))})
    return out


def prelabel_batch(model: nn.Module | None, batch: pd.DataFrame, X_batch: np.ndarray, y_batch: np.ndarray,
                   X_val: np.ndarray, y_val: np.ndarray, X_labeled: np.ndarray, *, task: str, target_error: float,
                   seed: int, passes: int, mc_batch: np.ndarray | None = None
                   ) -> tuple[pd.DataFrame, dict[str, float]]:
    """The loop's pre-labels of a batch (rows of ``X_batch``): temperature fitted on the validation split and an
    auto-accept threshold whose estimated error stays <= ``target_error``, chosen (classification) on the
    validation cases at least as uncertain and novel as the easiest batch case (:func:`batch_difficulty`).

    Returns the batch with columns prelabel (class, classification only), confidence and auto, and the
    ``autolabel_*`` stats for the round's metrics (coverage, threshold and, where ``y_batch`` holds ground
    truth, the measured error of the would-be auto-accepted labels). Without a model: empty columns, no stats.
    ``mc_batch``: the batch's MC-dropout samples (classification), when the caller computed them already.
    """
    batch = batch.assign(prelabel=pd.array([pd.NA] * len(batch), dtype="Int64"), confidence=np.nan, auto=False)
    if model is None or len(batch) == 0:
        return batch, {}
    from medwb.models import predict_proba

    threshold_cases = None
    probs_val = predict_proba(model, X_val)
    if task == "classification":
        threshold_cases = cases_like_batch(*batch_difficulty(model, X_val, X_batch, X_labeled, passes=passes,
                                                             seed=seed, mc_batch=mc_batch))
    temperature, choice = fit_autolabel(probs_val, y_val, target_error=target_error, seed=seed,
                                        threshold_cases=threshold_cases)
    pre = prelabel(predict_proba(model, X_batch), temperature, choice.threshold)
    if task == "classification":
        batch["prelabel"] = pd.array(pre.labels.astype(int), dtype="Int64")
    batch["confidence"] = pre.confidence
    batch["auto"] = pre.auto_accept
    truth = y_batch
    has_truth = bool(np.all(truth >= 0)) if task == "classification" else bool(np.all(truth.max(
        axis=tuple(range(1, truth.ndim))) >= 0))
    rep = autolabel_report(pre, truth if has_truth else None)
    stats = {f"autolabel_{k}": float(v) for k, v in rep.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)}
    stats["autolabel_threshold"] = float(choice.threshold)
    return batch, stats
