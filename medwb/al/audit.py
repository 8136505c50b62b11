"""Label audit: find labels that are probably wrong, and measure agreement between annotators.

Why: human labels carry errors (a few percent is typical), and a model trained on them learns the errors. We use
confident learning (Northcutt et al. 2021, ``cleanlab.filter.find_label_issues``): with *out-of-fold* predicted
probabilities - each case scored by a model that never saw its label - a case whose given label has a low
predicted probability, relative to the per-class confidence thresholds, is flagged. Flagged cases go back to the
study's review queue (source ``label_audit``) for a second look; the audit never changes a label itself.

Agreement: when a case has labels from two or more human annotators (store rule: both are kept), Cohen's kappa
(scikit-learn) per annotator pair for classes, and Dice per case (mean over the foreground classes present in
either mask) for masks.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold
from tqdm.auto import tqdm

from medwb.errors import DataError
from medwb.metrics import cohen_kappa
from medwb.store import Study, read_mask

if TYPE_CHECKING:
    from torch import nn

    from medwb.al.loop import ActiveLearningLoop
    from medwb.models import TrainConfig

AUDIT_SOURCE = "label_audit"


def out_of_fold_proba(
    train_fn: Callable[[np.ndarray, np.ndarray], Any],
    X: np.ndarray,
    y: np.ndarray,
    *,
    folds: int = 5,
    seed: int = 0,
    progress: bool = True,
) -> np.ndarray:
    """Out-of-fold class probabilities (N, K): each case predicted by a model trained on the other folds.

    ``train_fn(X_train, y_train)`` trains any model and returns either a callable ``predict(X) -> (n, K) probs``
    or an object with ``predict_proba``; it is called ``folds`` times (stratified, shuffled with ``seed``)."""
    y = np.asarray(y).reshape(-1).astype(int)
    if len(y) != len(X):
        raise DataError(None, f"{len(X)} inputs but {len(y)} labels", "pass one label per case")
    counts = np.bincount(y)
    if (counts[counts > 0] < folds).any():
        raise DataError(None, f"a class has fewer than folds={folds} labelled cases ({counts.tolist()})",
                        "label more cases of the rare class or lower folds")
    k = int(y.max()) + 1
    out = np.full((len(y), k), np.nan)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for tr, te in tqdm(list(skf.split(np.zeros(len(y)), y)), desc="out-of-fold", disable=not progress):
        model = train_fn(X[tr], y[tr])
        predict = model if callable(model) and not hasattr(model, "predict_proba") else model.predict_proba
        p = np.asarray(predict(X[te]), dtype=float)
        if p.shape != (len(te), p.shape[1]) or p.shape[1] < k:
            raise DataError(None, f"train_fn's model returned shape {p.shape} for {len(te)} cases",
                            f"return probabilities shaped (n, {k})")
        out[te, : p.shape[1]] = p[:, :k] if p.shape[1] > k else p
    return out


def network_out_of_fold_proba(
    model_fn: Callable[[int], nn.Module],
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    train_config: TrainConfig,
    seed: int,
    folds: int = 3,
    progress: bool = True,
) -> np.ndarray:
    """:func:`out_of_fold_proba` with fresh networks ``model_fn(seed)`` trained on the loop's schedule
    (``train_config``, early stopping on the val split): the same kind of model that proposed the labels."""
    from medwb.models import predict_proba, train

    def train_fn(Xtr: np.ndarray, ytr: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
        res = train(model_fn(seed), Xtr, ytr, X_val, y_val, task="classification", config=train_config,
                    progress=False)
        return lambda Xte: predict_proba(res.model, Xte)

    return out_of_fold_proba(train_fn, X, y, folds=folds, seed=seed, progress=progress)


def audit_pool_labels(loop: ActiveLearningLoop, *, folds: int = 3,
                      flagged_by: str = AUDIT_SOURCE) -> tuple[pd.DataFrame, str]:
    """Audit the loop's labelled pool (out-of-fold networks, then :func:`audit_study`, which flags the doubtful
    cases for review). Returns (flagged cases, a one-line message); nothing runs for a segmentation study or
    while a class has fewer than ``folds`` labels (the message says why)."""
    none = pd.DataFrame(columns=["case_id", "given", "suggested", "self_confidence", "label_id"])
    if loop.ds.task != "classification":
        return none, "the label audit needs class labels: skipped for a segmentation study"
    counts = loop.labeled()["value"].value_counts()
    if len(counts) != loop.num_classes or counts.min() < folds:
        have = {int(k): int(v) for k, v in counts.items()}
        return none, f"label audit needs >= {folds} labels per class (have {have})"
    ids, X, y = loop.labelled_arrays()
    Xv, yv, _ = loop.arrays("val")
    probs = network_out_of_fold_proba(loop.model_fn, X, y, Xv, yv, train_config=loop.train_config, seed=loop.seed,
                                      folds=folds, progress=loop.progress)
    issues = audit_study(loop.study, ids, probs, flagged_by=flagged_by)
    return issues, f"{len(issues)} of {len(ids)} labels flagged for a second look"


def find_label_issues(labels: np.ndarray, pred_probs: np.ndarray, *, filter_by: str = "prune_by_noise_rate") -> pd.DataFrame:
    """Indices of likely label errors (cleanlab), ranked most suspicious first, with the given label, the model's
    suggestion and the self-confidence (predicted probability of the given label)."""
    from cleanlab.filter import find_label_issues as _cl

    labels = np.asarray(labels).reshape(-1).astype(int)
    p = np.asarray(pred_probs, dtype=float)
    if p.ndim != 2 or len(p) != len(labels) or not np.all(np.isfinite(p)):
        raise DataError(None, f"pred_probs shape {p.shape} for {len(labels)} labels", "pass out-of-fold probabilities (N, K)")
    idx = _cl(labels, p, filter_by=filter_by, return_indices_ranked_by="self_confidence")
    return pd.DataFrame({"index": idx, "given": labels[idx], "suggested": p[idx].argmax(1),
                         "self_confidence": p[idx, labels[idx]]})


def audit_study(
    study: Study, case_ids: Sequence[str], pred_probs: np.ndarray, *, flag: bool = True, flagged_by: str = "label_audit"
) -> pd.DataFrame:
    """Audit the study's current labels of ``case_ids`` with their out-of-fold ``pred_probs`` (same order);
    flagged cases are put in the review queue (source ``label_audit``). Returns the flagged cases."""
    cur = study.labels().set_index("case_id")
    ids = [str(c) for c in case_ids]
    missing = [c for c in ids if c not in cur.index or pd.isna(cur.at[c, "value"])]
    if missing:
        raise DataError(study.db_path, f"cases without a class label: {missing[:5]}", "audit only labelled cases (study.labels())")
    given = np.array([int(cur.at[c, "value"]) for c in ids])
    issues = find_label_issues(given, pred_probs)
    issues.insert(0, "case_id", [ids[i] for i in issues["index"]])
    issues["label_id"] = [int(cur.at[c, "label_id"]) for c in issues["case_id"]]
    if flag and len(issues):
        for rec in issues.to_dict("records"):
            study.flag_for_review(
                [rec["case_id"]], source=AUDIT_SOURCE, flagged_by=flagged_by,
                reason=(f"label {study.classes[rec['given']]!r} doubtful: model out-of-fold p={rec['self_confidence']:.2f},"
                        f" suggests {study.classes.get(int(rec['suggested']), rec['suggested'])!r}"),
            )
    return issues.drop(columns="index")


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two label masks: mean over foreground classes present in either (binary: foreground Dice);
    1.0 when both are empty."""
    from medwb.metrics import dice

    return dice(a, b)


@dataclass
class Agreement:
    """``pairs``: one row per annotator pair (n_cases, kappa / percent_agreement or mean_dice);
    ``cases``: one row per (case, pair) with both labels (or the Dice)."""

    pairs: pd.DataFrame
    cases: pd.DataFrame


def agreement(study: Study) -> Agreement:
    """Inter-annotator agreement from cases labelled by two or more people (sources human/corrected)."""
    lab = study.labels(per_annotator=True)
    lab = lab[lab["source"].isin(["human", "corrected"])]
    rows = []
    for cid, g in lab.groupby("case_id", sort=False):
        g = g.sort_values("annotator")
        for (_, a), (_, b) in combinations(g.iterrows(), 2):
            r = {"case_id": cid, "annotator_a": a["annotator"], "annotator_b": b["annotator"]}
            if study.task == "segmentation" and a["mask_path"] and b["mask_path"]:
                r["dice"] = mask_dice(read_mask(a["mask_path"]), read_mask(b["mask_path"]))
            else:
                r["value_a"], r["value_b"] = a["value"], b["value"]
            rows.append(r)
    cases = pd.DataFrame(rows)
    pair_rows = []
    if len(cases):
        for (ra, rb), g in cases.groupby(["annotator_a", "annotator_b"]):
            pr: dict[str, Any] = {"annotator_a": ra, "annotator_b": rb, "n_cases": len(g)}
            if "dice" in g and g["dice"].notna().any():
                pr["mean_dice"] = float(g["dice"].mean())
            if "value_a" in g and g["value_a"].notna().any():
                va, vb = g["value_a"].astype(int).to_numpy(), g["value_b"].astype(int).to_numpy()
                pr["percent_agreement"] = float(np.mean(va == vb))
                pr["kappa"] = cohen_kappa(va, vb)  # medwb.metrics' convention (identical raters: 1.0)
            pair_rows.append(pr)
    return Agreement(pd.DataFrame(pair_rows), cases)
