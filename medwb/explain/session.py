"""The steps behind ``notebooks/03_explain.ipynb``: where the data, study and maps are, a model to explain when
none is given, and the small tables the notebook shows. The notebook holds parameters, calls and display only.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from medwb.errors import StoreError

if TYPE_CHECKING:
    from medwb.data.dataset import Dataset
    from medwb.models.train import TrainResult
    from medwb.store import Study

@dataclass
class ExplainSession:
    """What the notebook works on: the data (None in review-only mode), the study for verdicts, the maps."""

    data: Path
    study_dir: Path
    maps_dir: Path
    dataset: Dataset | None
    study: Study


def open_session(*, model: str | Path | None, data: str | Path | None, study_dir: str | Path | None,
                 maps_dir: str | Path, review_only: bool) -> ExplainSession:
    """Open (or create) the study that stores the verdicts and open the dataset unless reviewing only.

    The study is ``study_dir``; else ``model`` when it is a study folder; else ``./explain_study``. A missing
    study is created for the dataset (its cases added); in review-only mode, with no dataset, it must exist.
    """
    from medwb.data import open_dataset
    from medwb.resources import default_demo_data
    from medwb.store import Study

    data = Path(data) if data else default_demo_data()
    model_is_study = model is not None and Study.exists(model)
    sdir = Path(study_dir) if study_dir else (Path(model) if model_is_study else Path("explain_study"))
    ds = open_dataset(data) if not review_only else None
    if Study.exists(sdir):
        study = Study.open(sdir)
    elif ds is not None:
        study = Study.create(sdir, dataset_path=str(data), task=ds.task, classes=ds.classes)
        study.add_cases(ds.cohort)
    else:
        raise StoreError(f"{sdir}: no study to record verdicts in. Fix: pass study_dir (a study folder), "
                         "or run without review_only so one is created")
    return ExplainSession(data, sdir, Path(maps_dir), ds, study)


def train_explain_model(ds: Dataset, out: str | Path, *, epochs: int = 4, cases: int = 1500, seed: int = 0,
                        max_seconds: float = 120) -> tuple[Path, TrainResult]:
    """Train a small model to explain when none is given: ``cases`` seeded training images at the data's
    default size, early stopping on (at most 300) validation images; the checkpoint records its input size."""
    from medwb.data.dataset import default_size
    from medwb.models import TrainConfig, build_classifier, build_segmenter, save_checkpoint, train

    size = default_size(ds)
    X, y, _ = ds.arrays("train", size=size, max_cases=cases, seed=seed)
    val = "val" if "val" in set(ds.cohort.split) else None
    Xv, yv, _ = ds.arrays(val, size=size, max_cases=300, seed=seed) if val else (None, None, None)
    build = build_classifier if ds.task == "classification" else build_segmenter
    net = build(ds.ndim, X.shape[1], len(ds.classes), seed=seed)
    res = train(net, X, y, Xv, yv, task=ds.task, config=TrainConfig(epochs=epochs, seed=seed, max_seconds=max_seconds),
                progress=False)
    path = save_checkpoint(res.model, Path(out), {"trained_by": "03_explain", "size": list(size) if size else None})
    return Path(path), res


CHECK_COLUMNS = ["method", "check", "status", "value", "reference", "criterion"]


def failing_methods(checks: pd.DataFrame) -> list[str]:
    """Methods with at least one FAIL in the check table (sorted)."""
    return sorted(set(checks.loc[checks.status == "FAIL", "method"])) if len(checks) else []


def case_table(index: pd.DataFrame) -> pd.DataFrame:
    """One row per explained case: selection reason, label, prediction and probability."""
    return index.drop_duplicates("case_id")[[c for c in ("case_id", "selection", "label", "prediction_name",
                                                         "probability") if c in index]]


def load_map(maps_dir: str | Path, row: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(image, map, mask or None) of one ``index.csv`` row, as saved by ``medwb explain``."""
    from medwb.explain.stored import load_npz

    z = load_npz(Path(maps_dir) / row.map_npz)  # decrypted in memory when the maps are in an encrypted study
    return z["image"], z["map"], (z["mask"] if z["mask"].size else None)


def verdict_summary(verdicts: pd.DataFrame) -> pd.DataFrame:
    """Verdicts per method and reviewer: how many, and the share judged plausible."""
    v = verdicts.assign(plausible=verdicts.verdict.eq("plausible"))
    return v.groupby(["method", "reviewer"]).agg(n=("verdict", "size"), plausible_share=("plausible", "mean"))
