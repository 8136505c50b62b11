"""What the validation report computes, section by section, from a study folder: DataFrames only.

The notebook (``notebooks/04_validation_report.ipynb``) holds parameters, calls and plots; every table it shows
comes from a function here, so it can both be displayed (:mod:`medwb.ui.display`) and written as CSV
(:func:`write_table`; the determinism test compares those CSVs between two runs).

Inputs: the study store (:class:`medwb.store.Study`: labels with provenance, rounds, models, verdicts, split
ids), the data layer (:func:`medwb.data.open_dataset`) and the models (:func:`medwb.models.load_checkpoint`,
whose meta records the input size and split ids). The report never imports the active-learning loop: it reads
what the loop recorded.
"""
from __future__ import annotations

import io
import hashlib
import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from medwb.al.curves import REFERENCES, summarize
from medwb.data.hashing import file_sha256
from medwb.data.splits import SplitArrays, carve_splits
from medwb.errors import DataError, StoreError
from medwb.metrics import (auc_binary, bootstrap_ci, cohen_kappa, confusion_matrix, dice, expected_calibration_error,
                           reliability_table)
from medwb import __version__
from medwb.report import stats
from medwb.resources import source_checkout
from medwb.store.files import read_bytes
from medwb.store.pool import load_splits

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.store import Study

#: a subgroup column needs 2..SUBGROUP_MAX_LEVELS values to be analysed (ids and free text are no groups)
SUBGROUP_MAX_LEVELS = 12
#: at most this many bootstrap resamples for subgroups and for the ECE interval (they repeat per group / bin)
SUBGROUP_BOOTSTRAP, ECE_BOOTSTRAP = 500, 300
PACKAGES = ("medwb", "torch", "monai", "numpy", "pandas", "scikit-learn", "scipy", "captum", "matplotlib",
            "papermill", "nbconvert", "pydicom", "nibabel")


# ------------------------------------------------------------------------------------------------ inputs
def resolve_dataset_path(study: Study, dataset: str | Path | None = None) -> Path:
    """The dataset the study was built on: ``dataset`` if given, else the path recorded in the study.

    A relative recorded path is tried against the working directory and then the study folder's ancestors,
    so a study moved together with its data (or built from a source checkout) still opens.
    """
    p = Path(dataset) if dataset else Path(str(study.dataset_path))
    candidates = [p] if p.is_absolute() else [Path.cwd() / p] + [a / p for a in Path(study.folder).resolve().parents]
    for c in candidates:
        if c.exists():
            return c.resolve()
    raise DataError(p, "the study's dataset was not found",
                    "pass the dataset path explicitly (build_report(..., dataset=PATH) / notebook parameter dataset)")


def open_inputs(study_dir: str | Path, dataset: str | Path | None = None) -> tuple[Study, Dataset]:
    """(Study, Dataset) for the report."""
    from medwb.data import open_dataset
    from medwb.store import Study

    study = Study.open(study_dir)
    return study, open_dataset(resolve_dataset_path(study, dataset), progress=False)


# -------------------------------------------------------------------------------------------- dataset
def dataset_overview(ds: Dataset, dataset_path: str | Path) -> pd.DataFrame:
    """Key facts of the dataset as a two-column table."""
    c = ds.cohort
    shapes = c["shape"].astype(str).value_counts()
    rows = [
        ("name", ds.name), ("file", Path(dataset_path).name), ("task", ds.task), ("dimensions", f"{ds.ndim}D"),
        ("modality", ds.modality), ("cases", len(c)),
        ("classes", ", ".join(f"{k}={v}" for k, v in sorted(ds.classes.items()))),
        ("image shapes", ", ".join(f"{s} ({n})" for s, n in shapes.head(3).items()) + (" ..." if len(shapes) > 3 else "")),
        ("channels", ", ".join(str(v) for v in sorted(c["channels"].dropna().unique()))),
        ("spacing", ", ".join(str(v) for v in c["spacing"].dropna().astype(str).unique()[:3]) or "not recorded"),
        ("second-observer masks", int(c["mask2"].notna().sum()) if "mask2" in c else 0),
        ("subgroup columns", ", ".join(ds.subgroup_columns(max_levels=SUBGROUP_MAX_LEVELS)) or "none in this dataset"),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


def split_table(ds: Dataset, splits: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Cases per split (and per class for classification).

    ``splits`` are the active-learning loop's case ids per split (``Evaluation.splits``, see :func:`study_splits`): datasets without an
    official val/test split get them carved by the loop, and the table must show what was actually used.
    Training cases outside the loop's pool are counted as ``train (not in pool)``.
    """
    c = ds.cohort.copy()
    if splits:
        where = {cid: s if s != "train" else "train (pool)" for s, ids in splits.items() for cid in ids}
        c["split"] = [where.get(str(cid), "train (not in pool)" if sp == "train" else sp)
                      for cid, sp in zip(c["case_id"], c["split"])]
    if ds.task == "classification":
        names = {k: v for k, v in ds.classes.items()}
        lab = c["label"].map(lambda v: names.get(int(v), str(v)) if pd.notna(v) else "unlabelled")
        t = pd.crosstab(c["split"], lab)
        t["total"] = t.sum(axis=1)
    else:
        t = c.groupby("split").agg(cases=("case_id", "size"), with_mask=("mask", lambda s: int(s.notna().sum())))
    order = {s: i for i, s in enumerate(["train", "train (pool)", "train (not in pool)", "val", "test", "unlabelled"])}
    t = t.loc[sorted(t.index, key=lambda s: order.get(s, 9))]
    t.index.name = "split"
    return t.reset_index()


def data_sha256(ds: Dataset, dataset_path: str | Path) -> str:
    """sha256 of the dataset file, or (for folders) of the sorted per-case sha256 list of the cohort."""
    p = Path(dataset_path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for s in sorted(ds.cohort["sha256"].astype(str)):
        h.update(s.encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ provenance
def label_sources(study: Study) -> pd.DataFrame:
    """Current labels by source (human / auto-accepted / human-corrected pre-label) and by annotator."""
    lab = study.labels(latest=True)
    if len(lab) == 0:
        return pd.DataFrame(columns=["source", "annotator", "labels", "median_seconds"])
    t = lab.groupby(["source", "annotator"], sort=True).agg(
        labels=("case_id", "size"), median_seconds=("seconds", "median")).reset_index()
    return t


def labels_per_round(study: Study) -> pd.DataFrame:
    """Per round: strategy, cases selected and labels by source."""
    rounds = study.rounds()
    lab = study.labels(latest=True)
    by = pd.crosstab(lab["round"], lab["source"]) if len(lab) else pd.DataFrame()
    rows = []
    for r in rounds.itertuples(index=False):
        row = {"round": int(r.number), "strategy": r.strategy, "selected": len(r.selected_ids), "status": r.status}
        for s in ("human", "auto", "corrected"):
            row[s] = int(by.loc[r.number, s]) if len(by) and r.number in by.index and s in by.columns else 0
        rows.append(row)
    return pd.DataFrame(rows, columns=["round", "strategy", "selected", "status", "human", "auto", "corrected"])


def agreement_table(study: Study, ds: Dataset, *, n_bootstrap: int = 1000, random_state: int = 0,
                    max_mask_cases: int = 40) -> pd.DataFrame:
    """Inter-rater agreement with bootstrap 95% CIs over cases.

    Pairs of annotators on the same case come from :func:`medwb.al.audit.agreement` (the loop engineer's
    audit; human and corrected labels): Cohen's kappa for class labels, Dice for masks. The dataset's own second
    observer (cohort ``mask2``, e.g. CHASE_DB1) gives the inter-observer Dice of the reference standard.
    Columns: what, raters, n_cases, estimate, ci_low, ci_high, note.
    """
    from medwb.al.audit import agreement

    rows: list[dict[str, Any]] = []
    cases = agreement(study).cases
    if len(cases):
        for (ra, rb), g in cases.groupby(["annotator_a", "annotator_b"], sort=True):
            if "value_a" in g and g["value_a"].notna().any():
                g = g.dropna(subset=["value_a", "value_b"])
                a, b = g["value_a"].astype(int).to_numpy(), g["value_b"].astype(int).to_numpy()
                est, lo, hi = bootstrap_ci(cohen_kappa, a, b, n_bootstrap=n_bootstrap,
                                                 random_state=random_state)
                rows.append({"what": "Cohen's kappa (class labels)", "raters": f"{ra} vs {rb}", "n_cases": len(a),
                             "estimate": est, "ci_low": lo, "ci_high": hi,
                             "note": f"raw agreement {np.mean(a == b):.3f}"})
            if "dice" in g and g["dice"].notna().any():
                t = stats.mean_table(g[["dice"]], ["dice"], n_bootstrap=n_bootstrap, random_state=random_state)
                rows.append({"what": "Dice between annotators (masks)", "raters": f"{ra} vs {rb}",
                             "n_cases": int(t["n"].iloc[0]), "estimate": t["estimate"].iloc[0],
                             "ci_low": t["ci_low"].iloc[0], "ci_high": t["ci_high"].iloc[0], "note": "store labels"})
    if not rows:
        rows.append({"what": "agreement between annotators", "raters": "", "n_cases": 0, "estimate": np.nan,
                     "ci_low": np.nan, "ci_high": np.nan,
                     "note": "no case in the store carries labels from two annotators: not computable"})
    if "mask2" in ds.cohort and ds.cohort["mask2"].notna().any():
        ids = ds.cohort.loc[ds.cohort["mask2"].notna(), "case_id"].astype(str).tolist()[:max_mask_cases]
        d = [dice(ds.load_mask(c, observer=1), ds.load_mask(c, observer=2)) for c in ids]
        t = stats.mean_table(pd.DataFrame({"dice": d}), ["dice"], n_bootstrap=n_bootstrap, random_state=random_state)
        rows.append({"what": "Dice between observers (reference masks)", "raters": "dataset observer 1 vs 2",
                     "n_cases": len(ids), "estimate": t["estimate"].iloc[0], "ci_low": t["ci_low"].iloc[0],
                     "ci_high": t["ci_high"].iloc[0], "note": "dataset masks (mask vs mask2)"})
    return pd.DataFrame(rows, columns=["what", "raters", "n_cases", "estimate", "ci_low", "ci_high", "note"])


# -------------------------------------------------------------------------------------------- the model
@dataclass
class Evaluation:
    """The final model's predictions on the test split (what every metric section uses)."""

    model_version: str
    round: int
    checkpoint: Path
    meta: dict[str, Any]
    case_ids: list[str]
    y_true: np.ndarray  # (N,) classes or (N,1,*spatial) masks
    proba: np.ndarray  # (N,K) or (N,K,*spatial)
    size: tuple[int, ...] | None
    class_names: dict[int, str] = field(default_factory=dict)
    splits: dict[str, list[str]] = field(default_factory=dict)  # the loop's train (pool) / val / test case ids

    @property
    def pred(self) -> np.ndarray:
        """Argmax predictions: (N,) classes or (N, 1, *spatial) masks."""
        return self.proba.argmax(axis=1) if self.proba.ndim == 2 else self.proba.argmax(axis=1)[:, None]

    @property
    def names(self) -> list[str]:
        """One display name per output class (the index when the dataset names none)."""
        return [self.class_names.get(k, str(k)) for k in range(self.proba.shape[1])]


def models_table(study: Study) -> pd.DataFrame:
    """One row per registered model: version, round, labels used, best epoch and validation/test metrics."""
    m = study.models()
    if len(m) == 0:
        return pd.DataFrame(columns=["version", "round", "n_labeled"])
    rows = []
    for r in m.itertuples(index=False):
        metrics = r.metrics if isinstance(r.metrics, dict) else json.loads(r.metrics)
        row = {"version": r.version, "round": int(r.round), "n_labeled": int(r.n_labeled)}
        row.update({k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and k != "n_labeled"})
        row["training"] = training_recipe(metrics, short=True)
        rows.append(row)
    return pd.DataFrame(rows)


def _semi_name(metrics: dict[str, Any]) -> str:
    return "mean teacher" if "val_dice" in metrics else "FixMatch"


def training_recipe(metrics: dict[str, Any], *, short: bool = False) -> str:
    """How a round's registered model was trained, from its metrics (:func:`medwb.al.fit.fit_round`'s): supervised,
    the semi-supervised candidate (FixMatch / mean teacher) or a self-trained student, with the validation scores
    that chose it and the pseudo-labels it learnt from. Why: a paper must say how the reported model was trained,
    and a self-training run that found nothing to teach must not read as one that did. ``short``: a table cell."""
    f = lambda key: float(metrics.get(key, float("nan")))  # noqa: E731
    both = "val_score_semi" in metrics and "val_score_supervised" in metrics
    if f("semi_teacher" if "semi_teacher" in metrics else "semi") == 1:  # a student's teacher may be FixMatch
        base = _semi_name(metrics) if short else (
            f"semi-supervised ({_semi_name(metrics)} on the labels + the unlabelled pool), kept over supervised "
            f"training (validation score {f('val_score_semi'):.3f} vs {f('val_score_supervised'):.3f})")
    elif both and not short:
        base = (f"supervised (its {_semi_name(metrics)} candidate validated {f('val_score_semi'):.3f} vs "
                f"{f('val_score_supervised'):.3f}: not kept)")
    elif f("warm_start") == 1:  # the loop's warm_start: the last round's model trained on
        passes = f("warm_passes")
        base = ("supervised, continued" if short else
                f"supervised, continued from the previous round's model ({passes:.0f} passes over the labels)")
    else:
        base = "supervised"
    if "self_trained" not in metrics:
        return base
    n = f("pseudo_labels")
    if f("self_trained") == 1:
        if short:
            return f"self-trained student (+{n:.0f} pseudo-labels)"
        return (f"self-trained student: the expert labels + {n:.0f} pseudo-labels of its teacher "
                f"({f('pseudo_coverage'):.0%} of the unlabelled pool), kept over the teacher (validation score "
                f"{f('val_score_student'):.3f} vs {f('val_score_teacher'):.3f}); the teacher: {base}")
    if "val_score_student" in metrics:
        return base if short else (f"{base}; its self-trained student ({n:.0f} pseudo-labels) validated "
                                   f"{f('val_score_student'):.3f} vs {f('val_score_teacher'):.3f}: not kept")
    return f"{base} (no pseudo-label)" if short else (
        f"{base}; self-training had nothing to teach (no pseudo-label met the auto-label rule's error bound on the "
        "validation split, or no unlabelled case was left)")


MODEL_SUMMARY_COLUMNS = ["version", "round", "n_labeled", "training", "best_epoch", "val_auc", "val_accuracy",
                         "val_dice", "test_auc", "test_accuracy", "test_dice", "autolabel_coverage",
                         "autolabel_auto_error", "train_seconds"]


def models_summary(models: pd.DataFrame) -> pd.DataFrame:
    """The columns of :func:`models_table` that fit a printed page (every column stays in the CSV table)."""
    return models[[c for c in MODEL_SUMMARY_COLUMNS if c in models.columns]]


def final_model_row(study: Study) -> pd.Series:
    """The last round's registered model (latest by round, then creation time)."""
    m = study.models()
    if len(m) == 0:
        raise StoreError(f"{study.folder}: the study has no trained model. Fix: run at least one active-learning "
                         "round (medwb simulate / notebooks/02_active_learning.ipynb) before the report")
    return m.sort_values(["round", "created_at"]).iloc[-1]


def round_max_pool(study: Study) -> int | None:
    """The pool cap (``pool_size``) the study's last round recorded in its params, as the loop was given it."""
    rounds = study.rounds()
    pools = [int(p["pool_size"]) for p in rounds["params"] if isinstance(p, dict) and p.get("pool_size")] \
        if len(rounds) else []
    return pools[-1] if pools else None


def study_splits(study: Study, ds: Dataset, meta: dict[str, Any]) -> dict[str, list[str]]:
    """The loop's pool (``train``) / ``val`` / ``test`` case ids, from what the loop recorded.

    In order: the checkpoint meta's ``splits``; else the store's (``medwb.store.pool.load_splits``, when this
    study recorded them); else carved again from the cohort with the loop's own seeded
    rules and the pool cap of the study's rounds (:func:`medwb.data.splits.carve_splits`), which gives the
    same ids the loop used.
    """
    if meta.get("splits"):
        return {str(k): [str(i) for i in v] for k, v in meta["splits"].items()}
    stored = load_splits(study)
    if stored:
        return {str(k): [str(i) for i in v] for k, v in stored.items()}
    return carve_splits(ds.cohort, max_pool=round_max_pool(study))


def evaluate_final_model(study: Study, ds: Dataset, *, split: str = "test") -> Evaluation:
    """Load the last round's model and predict the test split (ground truth from the dataset).

    The cases and the input size are the loop's own: the split ids from :func:`study_splits`, the size from the
    checkpoint meta (else the data's default size, as the loop trains), the arrays built as the loop builds
    them (:class:`medwb.data.splits.SplitArrays`). For data without an official test split the loop carved one with a fixed
    seed, and the report must score exactly the cases the loop held out, at the size the model was trained at.
    """
    from medwb.data.dataset import default_size
    from medwb.models import load_checkpoint, predict_proba

    row = final_model_row(study)
    model, meta = load_checkpoint(row["checkpoint_path"])
    size = tuple(int(v) for v in meta["size"]) if meta.get("size") else default_size(ds)
    splits = study_splits(study, ds, meta)
    X, y, ids = SplitArrays(ds, splits, size)[split]
    proba = predict_proba(model, X)
    keep = (y >= 0) if y.ndim == 1 else np.ones(len(ids), bool)
    return Evaluation(str(row["version"]), int(row["round"]), Path(row["checkpoint_path"]), dict(meta),
                      [str(i) for i, k in zip(ids, keep) if k], y[keep], proba[keep], size, dict(ds.classes),
                      {k: [str(i) for i in v] for k, v in splits.items()})


def architecture_text(build_args: dict) -> str:
    """A network's builder arguments as one line; an ensemble as its members' lines (the mean of their
    probabilities is what it predicts)."""
    if build_args.get("kind") == "ensemble":
        members = build_args.get("members", [])
        return f"ensemble of {len(members)} (mean probability): " + "; ".join(architecture_text(m) for m in members)
    return ", ".join(f"{k}={v}" for k, v in sorted(build_args.items())) or "not recorded"


def model_details(study: Study, ev: Evaluation) -> pd.DataFrame:
    """Architecture and training facts of the evaluated model."""
    ba = ev.meta.get("build_args", {})
    rounds = study.rounds()
    strat = ", ".join(sorted(set(rounds["strategy"].astype(str)))) if len(rounds) else "none recorded"
    metrics = final_model_row(study)["metrics"]
    metrics = metrics if isinstance(metrics, dict) else json.loads(metrics)
    rows = [("model version", ev.model_version), ("round", ev.round), ("checkpoint", ev.checkpoint.name),
            ("architecture", architecture_text(ba)),
            ("input size", "native" if ev.size is None else "x".join(map(str, ev.size))),
            ("labelled cases used", int(metrics.get("n_labeled", 0))),
            ("training", training_recipe(metrics)),
            ("best epoch (early stopping on val)", metrics.get("best_epoch", "n/a")),
            ("acquisition strategies", strat), ("rounds", len(rounds)),
            ("training seed", ev.meta.get("seed", "n/a"))]
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


# ------------------------------------------------------------------------------------------------ metrics
def metrics_table(ev: Evaluation, *, n_bootstrap: int, random_state: int) -> pd.DataFrame:
    """Test metrics with bootstrap 95% CIs (classification metrics, or Dice/HD95 per class over cases)."""
    if ev.proba.ndim == 2:
        return stats.classification_table(ev.y_true, ev.proba, class_names=ev.class_names,
                                          n_bootstrap=n_bootstrap, random_state=random_state)
    per_case = segmentation_per_case(ev)
    t = stats.mean_table(per_case, ["dice", "hd95"], by="class", n_bootstrap=n_bootstrap, random_state=random_state)
    t["class"] = [ev.class_names.get(int(c), c) for c in t["class"]]
    return t


def roc_pr_table(ev: Evaluation) -> pd.DataFrame:
    """ROC and PR curve points of a classifier's test predictions (binary: the positive class)."""
    return stats.roc_pr_curves(ev.y_true, ev.proba)


def class_aucs(ev: Evaluation) -> dict[int, float]:
    """One-vs-rest ROC AUC per class (the legend of the ROC figure)."""
    return {c: auc_binary(ev.y_true == c, ev.proba[:, c]) for c in range(ev.proba.shape[1])}


def confusion_table(ev: Evaluation) -> tuple[np.ndarray, pd.DataFrame]:
    """(K, K) confusion counts (rows truth) and the same as a table with a ``true`` column."""
    cm = confusion_matrix(ev.y_true, ev.pred, ev.proba.shape[1])
    names = ev.names
    return cm, pd.DataFrame(cm, index=names, columns=names).rename_axis("true").reset_index()


def misclassified_table(ev: Evaluation) -> pd.DataFrame:
    """Misclassified test cases, most confident first (for failure analysis): case_id, true, predicted, confidence."""
    names = ev.names
    wrong = pd.DataFrame({"case_id": ev.case_ids, "true": [names[i] for i in ev.y_true],
                          "predicted": [names[i] for i in ev.pred], "confidence": ev.proba.max(1)})
    return wrong[wrong["true"] != wrong["predicted"]].sort_values("confidence", ascending=False, kind="stable")


@dataclass
class Calibration:
    """Section 5: the reliability diagram's bins, the point ECE and the ECE row with its bootstrap CI."""

    reliability: pd.DataFrame
    ece: float
    table: pd.DataFrame  # metric, estimate, ci_low, ci_high, bins


def calibration(ev: Evaluation, *, n_bootstrap: int, random_state: int, n_bins: int = 10) -> Calibration:
    """Top-label ECE with a stratified bootstrap CI (at most ``ECE_BOOTSTRAP`` resamples) and its bins."""
    rel = reliability_table(ev.y_true, ev.proba, n_bins=n_bins)
    ece = expected_calibration_error(ev.y_true, ev.proba, n_bins=n_bins)
    e, lo, hi = bootstrap_ci(lambda y, p: expected_calibration_error(y, p, n_bins=n_bins), ev.y_true, ev.proba,
                             n_bootstrap=min(n_bootstrap, ECE_BOOTSTRAP), stratify=ev.y_true,
                             random_state=random_state)
    table = pd.DataFrame([{"metric": "ece", "estimate": e, "ci_low": lo, "ci_high": hi, "bins": n_bins}])
    return Calibration(rel, ece, table)


def segmentation_per_case(ev: Evaluation) -> pd.DataFrame:
    """Per-case, per-class Dice and HD95 of a segmentation model's test predictions."""
    return stats.segmentation_case_metrics(ev.pred, ev.y_true, n_classes=ev.proba.shape[1], case_ids=ev.case_ids)


def subgroup_analysis(ev: Evaluation, ds: Dataset, *, n_bootstrap: int, random_state: int) -> pd.DataFrame:
    """Metrics with CIs per subgroup value (classification: AUC, accuracy, sensitivity, specificity; seg: Dice)."""
    cols = ds.subgroup_columns(max_levels=SUBGROUP_MAX_LEVELS)
    if not cols:
        return pd.DataFrame(columns=["column", "group", "metric", "class", "estimate", "ci_low", "ci_high", "n"])
    groups = ds.cohort.set_index("case_id").loc[ev.case_ids, cols].reset_index(drop=True)
    groups = groups[[c for c in cols if groups[c].nunique(dropna=True) >= 2]]  # a split-only column is no subgroup
    if groups.shape[1] == 0:
        return pd.DataFrame(columns=["column", "group", "metric", "class", "estimate", "ci_low", "ci_high", "n"])
    if ev.proba.ndim == 2:
        return stats.subgroup_table(ev.y_true, ev.proba, groups, n_bootstrap=n_bootstrap, random_state=random_state)
    per_case = segmentation_per_case(ev)
    frames = []
    for col in groups.columns:
        g = groups[col].astype("string").fillna("<missing>")
        pc = per_case.merge(pd.DataFrame({"case_id": ev.case_ids, "group": g.to_numpy()}), on="case_id")
        t = stats.mean_table(pc, ["dice"], by="group", n_bootstrap=n_bootstrap, random_state=random_state)
        t = t.rename(columns={"class": "group"})
        t.insert(0, "column", col)
        t["class"] = "foreground"
        frames.append(t)
    return pd.concat(frames, ignore_index=True)


def subgroup_headline(sub: pd.DataFrame, metrics: pd.DataFrame) -> tuple[str, float | None]:
    """The metric the forest plot shows (AUC when present) and its overall test estimate (None if absent)."""
    m0 = "auc" if "auc" in set(sub["metric"]) else str(sub["metric"].iloc[0])
    overall = metrics.loc[metrics["metric"] == m0, "estimate"]
    return m0, float(overall.iloc[0]) if len(overall) else None


# ---------------------------------------------------------------------------------------- learning curves
def learning_curves(study: Study, curves_csv: str | Path | None) -> tuple[pd.DataFrame, str]:
    """Curves table in the simulation's layout, and where it came from.

    Prefers the simulation's ``curves.csv`` (strategies against random over seeds, test split); otherwise the
    study's own rounds (validation metrics of each round's model, one seed, no random baseline).
    """
    if curves_csv and Path(curves_csv).is_file():
        return pd.read_csv(io.BytesIO(read_bytes(curves_csv))), f"simulation {Path(curves_csv).name} (test split)"
    mc = study.metrics_curve()
    if len(mc) == 0:
        return pd.DataFrame(columns=["strategy", "seed", "round", "n_labeled", "metric", "value"]), "none"
    mc = mc[mc["metric"].str.startswith("val_")].copy()
    mc["metric"] = mc["metric"].str.removeprefix("val_")
    mc["strategy"] = "this study"
    mc["seed"] = 0
    return mc[["strategy", "seed", "round", "n_labeled", "metric", "value"]], "this study's rounds (validation split)"


def held_out_curves(curves_csv: str | Path | None) -> pd.DataFrame | None:
    """The simulation's ``held_out.csv`` beside its ``curves.csv`` (``medwb simulate --max-pool``: every round
    model on training cases the pool left out, the pool's own distribution), or None when there is none."""
    if not curves_csv:
        return None
    path = Path(curves_csv).with_name("held_out.csv")
    if not path.is_file():
        return None
    held = pd.read_csv(io.BytesIO(read_bytes(path)))
    return held if len(held) else None


def labels_to_reach(curves: pd.DataFrame) -> tuple[float, pd.DataFrame] | None:
    """(budget, table) of the simulation's own comparison at its label budget, or None without ``full`` rows.

    The table is :func:`medwb.al.curves.summarize` (labels needed to reach 95% / 98% of the
    all-labels metric), so report and console agree.
    """
    if not ((curves["strategy"] == "full").any() and "fraction_labeled" in curves):
        return None

    budget = float(curves.loc[~curves["strategy"].isin(REFERENCES), "fraction_labeled"].max())
    return budget, summarize(curves, budget)


def class_sweep_table(sweep_csv: str | Path | None) -> pd.DataFrame:
    """The class-count sweep (``class_sweep.csv`` of :func:`medwb.pipelines.class_sweep.run_class_sweep`) as the
    report shows it: one row per class count, strategy and metric; empty without a file."""
    if not sweep_csv or not Path(sweep_csv).is_file():
        return pd.DataFrame()
    t = pd.read_csv(io.BytesIO(read_bytes(sweep_csv)))
    cols = ["n_classes", "strategy", "metric", "pool", "full_value", "labels_at_budget", "value_at_budget", "share_of_full",
            "labels_to_98pct", "fraction_to_98pct", "seeds"]
    return t[[c for c in cols if c in t]].sort_values(["metric", "strategy", "n_classes"]).reset_index(drop=True)


# ---------------------------------------------------------------------------------------------------- XAI
def explanation_outputs(explain_dir: str | Path | None) -> tuple[pd.DataFrame, list[Path]]:
    """(sanity-check table, overlay images) from the explanations step's output folder (``medwb explain``);
    encrypted tables (an encrypted study's maps) are decrypted in memory."""
    from medwb.explain.stored import read_table

    if not explain_dir or not Path(explain_dir).is_dir():
        return pd.DataFrame(), []
    d = Path(explain_dir)
    tables = sorted(d.rglob("checks.csv")) or sorted(d.rglob("*check*.csv"))
    checks = pd.concat([read_table(t) for t in tables], ignore_index=True) if tables else pd.DataFrame()
    # medwb explain writes OUT/overlays/<method>.png (all cases, one colour scale) and per-case overlays below it
    overlays = sorted((d / "overlays").glob("*.png")) or sorted(d.rglob("*.png"))
    return checks, overlays


XAI_CHECK_COLUMNS = ("method", "check", "status", "value", "reference", "criterion")


def checks_summary(checks: pd.DataFrame) -> pd.DataFrame:
    """The columns of the sanity-check table that the report shows (every column stays in the CSV)."""
    return checks[[c for c in XAI_CHECK_COLUMNS if c in checks]]


def failed_checks(checks: pd.DataFrame) -> list[str] | None:
    """``method / check`` of every failed sanity check; None when the table has no ``passed`` column."""
    if "passed" not in checks:
        return None
    bad = checks[~checks["passed"].astype(str).str.lower().isin(["true", "1"])]
    return [f"{r.method} / {r.check}" for r in bad.itertuples()]


def verdict_counts(study: Study) -> pd.DataFrame:
    """Clinician verdicts per explanation method (plausible / partly / implausible / cannot tell)."""
    v = study.verdicts()
    if len(v) == 0:
        return pd.DataFrame(columns=["method", "plausible", "partly", "implausible", "cannot_tell", "total"])
    t = pd.crosstab(v["method"], v["verdict"])
    for c in ("plausible", "partly", "implausible", "cannot_tell"):
        if c not in t:
            t[c] = 0
    t = t[["plausible", "partly", "implausible", "cannot_tell"]]
    t["total"] = t.sum(axis=1)
    return t.reset_index()


# ------------------------------------------------------------------------------------------------ checklist
def checklist(*, has_subgroups: bool, has_agreement: bool, has_xai: bool, has_curves: bool,
              task: str) -> pd.DataFrame:
    """TRIPOD+AI (2024) and CLAIM (2024) items that a validation report can answer, and where this one does.

    Items about the clinical question, ethics, funding and registration depend on the study protocol, not on
    this software; they are listed as "author to complete" rather than silently dropped.
    """
    sec = {
        "data": "1. Dataset and splits", "labels": "2. Labels and provenance", "model": "3. Model and training",
        "metrics": "4. Performance with 95% CIs", "curves": "4b. ROC / PR curves",
        "calib": "5. Calibration", "sub": "6. Subgroup analysis", "al": "7. Active-learning curves",
        "xai": "8. Explanations", "prov": "10. Provenance and reproducibility",
    }
    items = [
        ("TRIPOD+AI 5a / CLAIM 7", "Data sources and collection", "data", True),
        ("TRIPOD+AI 6a / CLAIM 9", "Eligibility and number of participants / images", "data", True),
        ("TRIPOD+AI 8a / CLAIM 14-16", "Outcome / reference standard, how it was labelled, by whom", "labels", True),
        ("CLAIM 17", "Annotation tools, annotator qualifications, inter-rater variability", "labels", has_agreement),
        ("TRIPOD+AI 9 / CLAIM 20", "Missing data and data pre-processing", "data", True),
        ("TRIPOD+AI 12a / CLAIM 21-22", "Data partitions (train / validation / test) and their independence", "data", True),
        ("TRIPOD+AI 12c / CLAIM 23-24", "Model type, architecture, software and initialisation", "model", True),
        ("TRIPOD+AI 12d / CLAIM 25-26", "Training details: hyper-parameters, selection of the final model", "model", True),
        ("TRIPOD+AI 12e / CLAIM 28-29", "Performance metrics and their uncertainty (95% CIs)", "metrics", True),
        ("TRIPOD+AI 12e", "Discrimination (ROC AUC) and classification measures", "curves", task == "classification"),
        ("TRIPOD+AI 12e / 23a", "Calibration (ECE, reliability diagram)", "calib", task == "classification"),
        ("TRIPOD+AI 12f / CLAIM 31", "Performance in subgroups / fairness", "sub", has_subgroups),
        ("CLAIM 27", "Methods of explainability and their validation", "xai", has_xai),
        ("CLAIM 36", "Failure analysis / misclassified cases", "metrics", True),
        ("TRIPOD+AI 18e / CLAIM 12", "Label-efficient training: labels used per round", "al", has_curves),
        ("TRIPOD+AI 18f / CLAIM 42", "Code, data and model availability; reproducibility", "prov", True),
        ("TRIPOD+AI 3-4 / CLAIM 3-4", "Clinical question, intended use and ethics approval", None, False),
        ("TRIPOD+AI 20-22 / CLAIM 40-41", "External validation, registration, funding", None, False),
    ]
    rows = []
    for item, text, key, ok in items:
        if key is None:
            where, status = "author to complete", "protocol item"
        else:
            where = sec[key]
            status = "answered" if ok else "not applicable to this data" if key in ("sub", "calib", "curves") \
                else "not available in this study"
        rows.append({"item": item, "topic": text, "report section": where, "status": status})
    return pd.DataFrame(rows)


def report_checklist(ds: Dataset, *, agreement: pd.DataFrame, checks: pd.DataFrame, overlays: list[Path],
                     verdicts: pd.DataFrame, curves: pd.DataFrame) -> pd.DataFrame:
    """:func:`checklist` with the answers taken from the report's own sections."""
    has_sub = len(ds.subgroup_columns(max_levels=SUBGROUP_MAX_LEVELS)) > 0
    has_agree = bool(agreement["estimate"].notna().any()) if len(agreement) else False
    return checklist(has_subgroups=has_sub, has_agreement=has_agree,
                     has_xai=bool(len(checks) or overlays or len(verdicts)), has_curves=bool(len(curves)),
                     task=ds.task)


# ------------------------------------------------------------------------------------------------ provenance
def package_versions() -> pd.DataFrame:
    from importlib.metadata import PackageNotFoundError, version

    rows = [("python", platform.python_version())]
    for p in PACKAGES:
        try:
            rows.append((p, version(p)))
        except PackageNotFoundError:
            rows.append((p, "not installed"))
    return pd.DataFrame(rows, columns=["package", "version"])


def git_commit(path: str | Path | None = None) -> str:
    """The source checkout's commit (``+dirty`` with uncommitted changes), or why it is unknown.

    An installed wheel has no checkout: its version is reported instead (never the commit of whatever git
    repository the environment happens to sit in)."""
    root = Path(path) if path else source_checkout()
    if root is None:
        return f"none (installed medwb {__version__})"
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


def report_parameters(study: str | Path, dataset: str | Path | None, simulation_curves: str | Path | None,
                      explain_dir: str | Path | None, seed: int, n_bootstrap: int,
                      class_sweep: str | Path | None = None) -> dict[str, Any]:
    """The notebook's parameters as JSON-able values (the provenance table lists them)."""
    def opt(v: str | Path | None) -> str | None:
        return None if v is None else str(v)

    return {"study": str(study), "dataset": opt(dataset), "simulation_curves": opt(simulation_curves),
            "explain_dir": opt(explain_dir), "class_sweep": opt(class_sweep), "seed": seed,
            "n_bootstrap": n_bootstrap}


def provenance_table(*, dataset_path: str | Path, data_hash: str, study_dir: str | Path, parameters: dict[str, Any],
                     started: datetime, ev: Evaluation | None) -> pd.DataFrame:
    """Everything needed to rerun the report and get the same numbers."""
    now = datetime.now(timezone.utc)
    rows = [("dataset", str(Path(dataset_path).name)), ("dataset sha256", data_hash),
            ("study", str(Path(study_dir).name)), ("git commit", git_commit()),
            ("model checkpoint", "" if ev is None else ev.checkpoint.name),
            ("model checkpoint sha256", "" if ev is None else file_sha256(ev.checkpoint)),
            ("started (UTC)", started.strftime("%Y-%m-%d %H:%M:%S")),
            ("run time (s)", f"{(now - started).total_seconds():.1f}"),
            ("platform", f"{platform.system()} {platform.machine()}")]
    rows += [(f"parameter {k}", json.dumps(v)) for k, v in sorted(parameters.items())]
    return pd.DataFrame(rows, columns=["item", "value"])


# -------------------------------------------------------------------------------------------------- output
def write_table(df: pd.DataFrame, name: str, folder: str | Path = "tables") -> Path:
    """Write a report table as CSV (fixed float format so reruns compare byte for byte)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    p = folder / f"{name}.csv"
    df.to_csv(p, index=False, float_format="%.6g")
    return p


def fmt(df: pd.DataFrame, ci: bool = True) -> pd.DataFrame:
    """A display copy (what :func:`medwb.ui.display.show_table` shows): ``estimate (low–high)`` in one column, other floats rounded."""
    out = df.copy()
    if ci and {"estimate", "ci_low", "ci_high"} <= set(out.columns):
        out.insert(list(out.columns).index("estimate"), "value (95% CI)",
                   [stats.format_ci(e, lo, hi) for e, lo, hi in zip(out["estimate"], out["ci_low"], out["ci_high"])])
        out = out.drop(columns=["estimate", "ci_low", "ci_high"])
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out
