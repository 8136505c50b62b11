"""medwb.al.curves: the round tables notebook 02 shows (validation curve, auto-labels per round)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from medwb.al.curves import autolabel_by_round, validation_curve
from medwb.report.figures import validation_curve_figure
from medwb.store import Study


def _study_with_two_models(tmp_path: Path) -> Study:
    st = Study.create(tmp_path / "s", dataset_path="d.npz", task="classification", classes=["normal", "pneumonia"])
    ck = tmp_path / "m.pt"
    ck.write_bytes(b"x")
    st.start_round(1, "cold_start", {"k": 2}, [], [])
    st.add_model(1, ck, {"n_labeled": 20, "val_auc": 0.81, "val_accuracy": 0.7, "test_auc": 0.8, "train_seconds": 3.0})
    st.finish_round(1)
    st.start_round(2, "hybrid", {"k": 2}, [], [])
    st.add_model(2, ck, {"n_labeled": 40, "val_auc": 0.9, "val_accuracy": 0.8, "autolabel_coverage": 0.25,
                         "autolabel_threshold": 0.97})
    st.finish_round(2)
    return st


def test_validation_curve_keeps_the_val_metrics_per_round(tmp_path: Path) -> None:
    st = _study_with_two_models(tmp_path)
    val = validation_curve(st)
    assert set(val["metric"]) == {"val_auc", "val_accuracy"}  # test_* and timings stay out
    auc = val[val["metric"] == "val_auc"].sort_values("round")
    assert auc["value"].tolist() == [0.81, 0.9]
    ax = validation_curve_figure(val).axes[0]
    assert len(ax.lines) == 2 and np.allclose(ax.lines[0].get_ydata(), [0.7, 0.8])
    st.close()


def test_autolabel_by_round_has_a_row_per_model(tmp_path: Path) -> None:
    st = _study_with_two_models(tmp_path)
    auto = autolabel_by_round(st)
    assert auto["round"].tolist() == [1, 2]
    assert np.isnan(auto.loc[0, "autolabel_coverage"]) and auto.loc[1, "autolabel_coverage"] == 0.25
    st.close()
