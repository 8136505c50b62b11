"""notebooks/02_active_learning.ipynb under papermill: simulated annotator through the review widget, real data."""
from __future__ import annotations

from pathlib import Path

import nbformat
import numpy as np
import pytest

from medwb.notebook_runner import execute_notebook, notebook_path

from _fixtures import PNEUMONIA, tiny_pneumonia_npz


def test_notebook_is_stored_without_outputs() -> None:
    nb = nbformat.read(str(notebook_path("02_active_learning")), as_version=4)
    assert [c for c in nb.cells if c.cell_type == "code" and (c.outputs or c.execution_count)] == []
    assert "parameters" in nb.cells[1].metadata.get("tags", [])


@pytest.mark.slow
def test_al_notebook_runs_rounds_with_simulated_reviewer(samples: Path, tmp_path: Path) -> None:
    from medwb.store import Study

    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "pneumonia_small.npz", n_train=120, n_val=40, n_test=40)
    study_dir = tmp_path / "study"
    executed, html = execute_notebook(
        "02_active_learning",
        {"data": str(data), "study_dir": str(study_dir), "strategy": "entropy", "batch_size": 12, "rounds": 3,
         "annotator": "sim-reader", "simulate_oracle": True, "epochs": 3, "audit_folds": 3,
         "pretrain_steps": 5},
        tmp_path / "out",
    )
    assert html.stat().st_size > 10_000
    text = executed.read_text()
    assert "labels flagged for a second look" in text  # the label audit ran on the labelled cases
    with Study.open(study_dir) as st:
        rounds = st.rounds()
        assert list(rounds["status"]) == ["finished"] * 3
        labels = st.labels()
        assert len(labels) == 36 and set(labels["annotator"]) == {"sim-reader"}
        # rounds 2-3 went through the review widget: each decision is an accepted or corrected pre-label,
        # timed; round 1 (cold start, no model) had no pre-label to review
        reviewed = labels[labels["round"] >= 2]
        assert len(reviewed) == 24 and reviewed["note"].str.contains("pre-label").all()
        assert set(reviewed["source"]) <= {"human", "corrected"} and reviewed["seconds"].notna().all()
        assert not labels.loc[labels["round"] == 1, "note"].str.contains("pre-label").any()
        y_train = np.load(data)["train_labels"].ravel()  # case ids are train_<index in the split>
        expected = [int(y_train[int(c.rsplit("_", 1)[1])]) for c in labels["case_id"]]
        assert labels["value"].astype(int).tolist() == expected  # the simulated reviewer gave the truth
        assert len(st.models()) == 3
        assert all(k in st.models().iloc[-1]["metrics"] for k in ("val_auc", "autolabel_coverage"))
