"""medwb.explain.session: what notebook 03 calls (study, model, tables), on real PneumoniaMNIST cases."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.errors import StoreError
from medwb.explain import session as S
from medwb.models import load_checkpoint, predict_proba


def test_open_session_creates_then_reopens_the_study(samples: Path, tmp_path: Path) -> None:
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=20, n_val=6, n_test=6)
    with pytest.raises(StoreError, match="no study"):
        S.open_session(model=None, data=data, study_dir=tmp_path / "none", maps_dir="m", review_only=True)
    ses = S.open_session(model=None, data=data, study_dir=tmp_path / "s", maps_dir=tmp_path / "m", review_only=False)
    assert ses.dataset is not None and len(ses.study.cases()) == 32 and ses.maps_dir == tmp_path / "m"
    ses.study.close()
    again = S.open_session(model=tmp_path / "s", data=data, study_dir=None, maps_dir="m", review_only=True)
    assert again.study_dir == tmp_path / "s" and again.dataset is None  # a study given as `model` stores verdicts
    again.study.close()


def test_train_explain_model_records_its_size(samples: Path, tmp_path: Path) -> None:
    from medwb.data import open_dataset

    ds = open_dataset(tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=40, n_val=10, n_test=4),
                      progress=False)
    path, res = S.train_explain_model(ds, tmp_path / "models" / "m.pt", epochs=1, cases=40, seed=0)
    model, meta = load_checkpoint(path)
    assert meta["trained_by"] == "03_explain" and meta["size"] is None and res.best_epoch >= 1
    X, _, _ = ds.arrays("test")
    p = predict_proba(model, X)
    assert p.shape == (4, 2) and np.allclose(p.sum(1), 1, atol=1e-5)


def test_tables_the_notebook_shows(tmp_path: Path) -> None:
    checks = pd.DataFrame({"method": ["ig", "gradcam", "ig"], "status": ["FAIL", "pass", "FAIL"]})
    assert S.failing_methods(checks) == ["ig"] and S.failing_methods(pd.DataFrame()) == []
    index = pd.DataFrame({"case_id": ["a", "a", "b"], "method": ["ig", "gradcam", "ig"], "selection": "x",
                          "probability": [0.9, 0.9, 0.6], "map_npz": ["a.npz", "a.npz", "b.npz"]})
    assert S.case_table(index).columns.tolist() == ["case_id", "selection", "probability"]
    assert S.case_table(index)["case_id"].tolist() == ["a", "b"]
    np.savez(tmp_path / "a.npz", image=np.ones((1, 4, 4)), map=np.zeros((1, 4, 4)), mask=np.zeros(0))
    img, mp, mk = S.load_map(tmp_path, index.iloc[0])
    assert img.shape == (1, 4, 4) and mk is None
    v = pd.DataFrame({"method": ["ig", "ig", "gradcam"], "reviewer": "r", "verdict": ["plausible", "partly",
                                                                                      "plausible"]})
    s = S.verdict_summary(v)
    assert s.loc[("ig", "r"), "n"] == 2 and s.loc[("ig", "r"), "plausible_share"] == 0.5
