"""notebooks/03_explain.ipynb under papermill: trains a small model, explains real PneumoniaMNIST cases, records
only SIMULATED verdicts when asked, then reviews the saved maps again in review-only mode (no model)."""
from __future__ import annotations

import json

import pytest

from medwb.notebook_runner import execute_notebook
from medwb.store import Study


@pytest.mark.slow
def test_explain_notebook_end_to_end_then_review_only(tmp_path):
    out = tmp_path / "run1"
    ipynb, html = execute_notebook("03_explain", {"cases": 3, "methods": "gradcam,ig", "simulate_verdicts": True,
                                                  "train_epochs": 3, "train_cases": 600, "seed": 0}, out)
    assert html.stat().st_size > 10_000
    study_dir = out / "explain_study"
    study = Study.open(study_dir)
    v = study.verdicts()
    assert len(v) == 6 and set(v.method) == {"gradcam", "ig"} and (v.reviewer == "simulated").all()
    study.close()
    text = ipynb.read_text()
    assert "SIMULATED verdicts recorded" in text and "Methods failing a check" in text
    assert (out / "explain_maps" / "checks.csv").is_file()

    # review-only: the model file is gone, nothing is recomputed, nothing is recorded without a reviewer
    (study_dir / "models" / "explain_model.pt").unlink()
    ipynb2, _ = execute_notebook("03_explain", {"review_only": True, "study_dir": str(study_dir),
                                                "maps_dir": str(out / "explain_maps")}, tmp_path / "run2")
    nb = json.loads(ipynb2.read_text())
    outputs = "".join(json.dumps(c.get("outputs", [])) for c in nb["cells"])
    assert "No verdict was recorded automatically" in outputs
    study = Study.open(study_dir)
    assert len(study.verdicts()) == 6
    study.close()
