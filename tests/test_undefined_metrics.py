"""Issue 16 probe: a test split with one class has no AUC. Before, a finished simulation died on
``float(None)`` (the store keeps NaN as JSON null) and the report on ``idxmax`` of all-NaN; now the metric is
NaN in the tables and "undefined" in the text, and both commands finish."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.al.curves import summarize
from medwb.cli import main
from medwb.metrics import class_metrics, format_metric, metric_value
from medwb.report.stats import format_ci


def test_undefined_metric_values_read_and_print():
    probs = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    m = class_metrics(probs, np.array([0, 0, 0]))
    assert math.isnan(m["auc"]) and m["accuracy"] == pytest.approx(2 / 3)
    assert math.isnan(metric_value(None)) and math.isnan(metric_value("x")) and metric_value(0.5) == 0.5
    assert format_metric(None) == format_metric(float("nan")) == "undefined" and format_metric(0.91234) == "0.912"
    assert format_ci(float("nan"), float("nan"), float("nan")) == "undefined"


def test_summary_of_curves_with_an_undefined_reference():
    rows = [("entropy", 0, 1, 10, 0.2, "auc", np.nan), ("full", 0, 0, 50, 1.0, "auc", np.nan),
            ("entropy", 0, 1, 10, 0.2, "accuracy", 0.7), ("full", 0, 0, 50, 1.0, "accuracy", 0.8)]
    curves = pd.DataFrame(rows, columns=["strategy", "seed", "round", "n_labeled", "fraction_labeled", "metric",
                                         "value"])
    s = summarize(curves, budget=0.2).set_index("metric")
    assert math.isnan(s.loc["auc", "value_at_budget"]) and math.isnan(s.loc["auc", "full_value"])
    assert s.loc["accuracy", "full_value"] == pytest.approx(0.8)


@pytest.mark.slow
def test_simulate_and_report_on_a_one_class_test_split(samples: Path, tmp_path: Path, capsys):
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        keep = np.flatnonzero(z["test_labels"][:, 0] == 0)[:40]  # test split: "normal" only
        data = tmp_path / "one_class_test.npz"
        np.savez(data, train_images=z["train_images"][:200], train_labels=z["train_labels"][:200],
                 val_images=z["val_images"][:60], val_labels=z["val_labels"][:60],
                 test_images=z["test_images"][keep], test_labels=z["test_labels"][keep])
    out = tmp_path / "sim"
    assert main(["simulate", str(data), "--strategy", "entropy", "--budget", "0.4", "--rounds", "1", "--seeds",
                 "0,", "--epochs", "1", "--max-pool", "50", "--size", "16", "--mc-passes", "3", "--quiet",
                 "--out", str(out), "--pipeline", "scratch"]) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert curves.loc[curves["metric"] == "auc", "value"].isna().all()
    assert curves.loc[curves["metric"] == "accuracy", "value"].notna().all()
    table = (out / "table.txt").read_text()
    assert "undefined" in table and "nan" not in table.split("auto-labels")[0]
    capsys.readouterr()
    rep = tmp_path / "report"
    assert main(["report", str(out / "studies" / "entropy-scratch-seed0"), "--out", str(rep), "--no-pdf",
                 "--n-bootstrap", "50"]) == 0
    metrics = pd.read_csv(rep / "tables" / "metrics.csv")
    assert metrics.loc[metrics["metric"] == "auc", "estimate"].isna().all()
    assert "undefined" in (rep / "validation_report.html").read_text(encoding="utf-8")
