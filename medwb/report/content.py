"""What the validation report computes, section by section, from a study folder (the notebook only calls these).

Inputs follow the team contracts: the study store (:class:`medwb.store.Study`: labels with provenance, rounds,
models, verdicts), the data layer (:func:`medwb.data.open_dataset`) and the models
(:func:`medwb.models.load_checkpoint` / :func:`medwb.models.predict_proba`). Every table the report shows is
returned as a DataFrame so the notebook can both display it and write it as CSV (the determinism test compares
those CSVs between two runs).
"""
from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medwb.data.hashing import file_sha256
from medwb.errors import DataError, StoreError
from medwb.metrics import bootstrap_ci, cohen_kappa, dice
from medwb.report import stats

#: cohort columns of the data contract; anything else with few distinct values is a subgroup column
STANDARD_COLUMNS = {
    "case_id", "split", "label", "mask", "mask2", "modality", "ndim", "shape", "channels", "spacing",
    "intensity_min", "intensity_max", "intensity_mean", "intensity_std", "source", "sha256", "phash", "problem",
    "file", "index", "path", "image", "npz_split", "npz_index", "observer", "HC", "pixel_size", "head_circumference_mm", "pixel_size_mm",
}
PACKAGES = ("medwb", "torch", "monai", "numpy", "pandas", "scikit-learn", "scipy", "captum", "matplotlib",
            "papermill", "nbconvert", "pydicom", "nibabel")


# ------------------------------------------------------------------------------------------------ inputs
def resolve_dataset_path(study: Any, dataset: str | Path | None = None) -> Path:
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


def open_inputs(study_dir: str | Path, dataset: str | Path | None = None) -> tuple[Any, Any]:
    """(Study, Dataset) for the report."""
    from medwb.data import open_dataset
    from medwb.store import Study

    study = Study.open(study_dir)
    return study, open_dataset(resolve_dataset_path(study, dataset), progress=False)


# -------------------------------------------------------------------------------------------- dataset
def dataset_overview(ds: Any, dataset_path: str | Path) -> pd.DataFrame:
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
        ("subgroup columns", ", ".join(subgroup_columns(c)) or "none in this dataset"),
    ]
    return pd.DataFrame(rows, columns=["item", "value"]).astype({"value": str})


def split_table(ds: Any, splits: dict[str, list[str]] | None = None) -> pd.DataFrame:
    """Cases per split (and per class for classification).

    ``splits`` are the active-learning loop's case ids per split (``Evaluation.splits``): datasets without an
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


def subgroup_columns(cohort: pd.DataFrame, *, max_levels: int = 12) -> list[str]:
    """Cohort columns that describe patient subgroups (sex, age group, site, ...): non-standard, 2..12 levels."""
    out = []
    for col in cohort.columns:
        if col in STANDARD_COLUMNS or col.startswith("intensity_"):
            continue
        n = cohort[col].nunique(dropna=True)
        if 2 <= n <= max_levels:
            out.append(col)
    return out


def data_sha256(ds: Any, dataset_path: str | Path) -> str:
    """sha256 of the dataset file, or (for folders) of the sorted per-case sha256 list of the cohort."""
    p = Path(dataset_path)
    if p.is_file():
        return file_sha256(p)
    h = hashlib.sha256()
    for s in sorted(ds.cohort["sha256"].astype(str)):
        h.update(s.encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------ provenance
def label_sources(study: Any) -> pd.DataFrame:
    """Current labels by source (human / auto-accepted / human-corrected pre-label) and by annotator."""
    lab = study.labels(latest=True)
    if len(lab) == 0:
        return pd.DataFrame(columns=["source", "annotator", "labels", "median_seconds"])
    t = lab.groupby(["source", "annotator"], sort=True).agg(
        labels=("case_id", "size"), median_seconds=("seconds", "median")).reset_index()
    return t


def labels_per_round(study: Any) -> pd.DataFrame:
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


def agreement_table(study: Any, ds: Any, *, n_bootstrap: int = 1000, random_state: int = 0,
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
        return self.proba.argmax(axis=1) if self.proba.ndim == 2 else self.proba.argmax(axis=1)[:, None]


def models_table(study: Any) -> pd.DataFrame:
    """One row per registered model: version, round, labels used, best epoch and validation/test metrics."""
    m = study.models()
    if len(m) == 0:
        return pd.DataFrame(columns=["version", "round", "n_labeled"])
    rows = []
    for r in m.itertuples(index=False):
        metrics = r.metrics if isinstance(r.metrics, dict) else json.loads(r.metrics)
        row = {"version": r.version, "round": int(r.round), "n_labeled": int(r.n_labeled)}
        row.update({k: v for k, v in sorted(metrics.items()) if isinstance(v, (int, float)) and k != "n_labeled"})
        rows.append(row)
    return pd.DataFrame(rows)


MODEL_SUMMARY_COLUMNS = ["version", "round", "n_labeled", "best_epoch", "val_auc", "val_accuracy", "val_dice",
                         "test_auc", "test_accuracy", "test_dice", "autolabel_coverage", "autolabel_auto_error",
                         "train_seconds"]


def models_summary(models: pd.DataFrame) -> pd.DataFrame:
    """The columns of :func:`models_table` that fit a printed page (every column stays in the CSV table)."""
    return models[[c for c in MODEL_SUMMARY_COLUMNS if c in models.columns]]


def final_model_row(study: Any) -> pd.Series:
    m = study.models()
    if len(m) == 0:
        raise StoreError(f"{study.folder}: the study has no trained model. Fix: run at least one active-learning "
                         "round (medwb simulate / notebooks/02_active_learning.ipynb) before the report")
    return m.sort_values(["round", "created_at"]).iloc[-1]


def evaluate_final_model(study: Any, ds: Any, *, split: str = "test") -> Evaluation:
    """Load the last round's model and predict the test split (ground truth from the dataset).

    The cases and input size are the active-learning loop's own (:meth:`ActiveLearningLoop.arrays`): for data
    without an official test split the loop carves one with a fixed seed, and the report must score exactly
    the cases the loop held out, at the size the model was trained at.
    """
    from medwb.al.loop import ActiveLearningLoop
    from medwb.models import load_checkpoint, predict_proba

    row = final_model_row(study)
    model, meta = load_checkpoint(row["checkpoint_path"])
    size = tuple(int(v) for v in meta["size"]) if meta.get("size") else None
    rounds = study.rounds()
    pools = [int(p["pool_size"]) for p in rounds["params"] if isinstance(p, dict) and p.get("pool_size")] \
        if len(rounds) else []
    # the loop's pool subset is a fixed seeded draw of this size, so the same cases come back
    loop = ActiveLearningLoop(study, ds, size=size, progress=False, max_pool=pools[-1] if pools else None)
    X, y, ids = loop.arrays(split)
    proba = predict_proba(model, X)
    keep = (y >= 0) if y.ndim == 1 else np.ones(len(ids), bool)
    return Evaluation(str(row["version"]), int(row["round"]), Path(row["checkpoint_path"]), dict(meta),
                      [str(i) for i, k in zip(ids, keep) if k], y[keep], proba[keep], loop.size, dict(ds.classes),
                      {k: [str(i) for i in v] for k, v in loop.split_ids().items()})


def model_details(study: Any, ev: Evaluation) -> pd.DataFrame:
    """Architecture and training facts of the evaluated model."""
    ba = ev.meta.get("build_args", {})
    rounds = study.rounds()
    strat = ", ".join(sorted(set(rounds["strategy"].astype(str)))) if len(rounds) else "none recorded"
    metrics = final_model_row(study)["metrics"]
    metrics = metrics if isinstance(metrics, dict) else json.loads(metrics)
    rows = [("model version", ev.model_version), ("round", ev.round), ("checkpoint", ev.checkpoint.name),
            ("architecture", ", ".join(f"{k}={v}" for k, v in sorted(ba.items())) or "not recorded"),
            ("input size", "native" if ev.size is None else "x".join(map(str, ev.size))),
            ("labelled cases used", int(metrics.get("n_labeled", 0))),
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


def segmentation_per_case(ev: Evaluation) -> pd.DataFrame:
    return stats.segmentation_case_metrics(ev.pred, ev.y_true, n_classes=ev.proba.shape[1], case_ids=ev.case_ids)


def subgroup_analysis(ev: Evaluation, ds: Any, *, n_bootstrap: int, random_state: int) -> pd.DataFrame:
    """Metrics with CIs per subgroup value (classification: AUC, accuracy, sensitivity, specificity; seg: Dice)."""
    cols = subgroup_columns(ds.cohort)
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


# ---------------------------------------------------------------------------------------- learning curves
def learning_curves(study: Any, curves_csv: str | Path | None) -> tuple[pd.DataFrame, str]:
    """Curves table in the simulation's layout, and where it came from.

    Prefers the simulation's ``curves.csv`` (strategies against random over seeds, test split); otherwise the
    study's own rounds (validation metrics of each round's model, one seed, no random baseline).
    """
    if curves_csv and Path(curves_csv).is_file():
        return pd.read_csv(curves_csv), f"simulation {Path(curves_csv).name} (test split)"
    mc = study.metrics_curve()
    if len(mc) == 0:
        return pd.DataFrame(columns=["strategy", "seed", "round", "n_labeled", "metric", "value"]), "none"
    mc = mc[mc["metric"].str.startswith("val_")].copy()
    mc["metric"] = mc["metric"].str.removeprefix("val_")
    mc["strategy"] = "this study"
    mc["seed"] = 0
    return mc[["strategy", "seed", "round", "n_labeled", "metric", "value"]], "this study's rounds (validation split)"


# ---------------------------------------------------------------------------------------------------- XAI
def explanation_outputs(explain_dir: str | Path | None) -> tuple[pd.DataFrame, list[Path]]:
    """(sanity-check table, overlay images) from the explanations step's output folder (``medwb explain``)."""
    if not explain_dir or not Path(explain_dir).is_dir():
        return pd.DataFrame(), []
    d = Path(explain_dir)
    tables = sorted(d.rglob("checks.csv")) or sorted(d.rglob("*check*.csv"))
    checks = pd.concat([pd.read_csv(t) for t in tables], ignore_index=True) if tables else pd.DataFrame()
    # medwb explain writes OUT/overlays/<method>.png (all cases, one colour scale) and per-case overlays below it
    overlays = sorted((d / "overlays").glob("*.png")) or sorted(d.rglob("*.png"))
    return checks, overlays


def verdict_counts(study: Any) -> pd.DataFrame:
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
    """The source checkout's commit (``+dirty`` with uncommitted changes), or why it is unknown."""
    root = Path(path) if path else Path(__file__).resolve().parents[2]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"


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


def show_figure(fig: Any, name: str, folder: str | Path = "figures") -> Path:
    """Save a figure as PNG (for the index page) and display it inline as an embedded image."""
    from IPython.display import Image, display

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = buf.getvalue()
    p = folder / f"{name}.png"
    p.write_bytes(data)
    display(Image(data=data))
    return p


def show_table(df: pd.DataFrame, *, ci: bool = True, max_rows: int = 60) -> None:
    """Display a table without the pandas index (CI columns merged, floats rounded)."""
    from IPython.display import HTML, display

    t = fmt(df, ci=ci)
    more = len(t) - max_rows
    html = t.head(max_rows).to_html(index=False, na_rep="n/a", escape=True)
    display(HTML(html + (f"<p><i>... {more} more rows in the CSV table.</i></p>" if more > 0 else "")))


def fmt(df: pd.DataFrame, ci: bool = True) -> pd.DataFrame:
    """A display copy: ``estimate (low–high)`` in one column, other floats rounded."""
    out = df.copy()
    if ci and {"estimate", "ci_low", "ci_high"} <= set(out.columns):
        out.insert(list(out.columns).index("estimate"), "value (95% CI)",
                   [stats.format_ci(e, lo, hi) for e, lo, hi in zip(out["estimate"], out["ci_low"], out["ci_high"])])
        out = out.drop(columns=["estimate", "ci_low", "ci_high"])
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].round(4)
    return out
