"""The validation report on a small study built from real PneumoniaMNIST data: sections, files, determinism."""
from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from _report_study import built_report
from medwb.notebook_runner import external_urls

SECTIONS = ["1. Dataset and splits", "2. Labels and provenance", "3. Model and training",
            "4. Performance on the test split", "5. Calibration", "6. Subgroup analysis",
            "7. Active learning against random", "8. Explanations", "9. Reporting checklist",
            "10. Provenance and reproducibility"]
TABLES = ["splits", "label_sources", "labels_per_round", "agreement", "models", "metrics", "roc_pr", "confusion",
          "reliability", "calibration", "subgroups", "learning_curves", "verdicts", "checklist"]


@pytest.fixture(scope="module")
def report(tmp_path_factory, samples):
    return built_report(tmp_path_factory, samples)


@pytest.mark.slow
def test_report_files_and_sections(report):
    for name in ("validation_report.ipynb", "validation_report.html", "validation_report.pdf"):
        assert (report / name).stat().st_size > 10_000, name
    assert (report / "validation_report.pdf").read_bytes()[:5] == b"%PDF-"
    html = (report / "validation_report.html").read_text()
    assert external_urls(html) == []
    for s in SECTIONS:
        assert s in html, s
    for t in TABLES:
        assert (report / "tables" / f"{t}.csv").is_file(), t
    assert "import numpy" not in html  # code hidden
    assert html.count('src="data:image/png;base64,') >= 4  # ROC/PR, confusion, reliability, learning curve


@pytest.mark.slow
def test_report_numbers_come_from_the_study(report, samples):
    import numpy as np

    m = pd.read_csv(report / "tables" / "metrics.csv")
    assert set(m["metric"]) == {"auc", "accuracy", "sensitivity", "specificity", "ppv", "npv", "f1"}
    ok = m.dropna(subset=["estimate"])
    assert ((ok["ci_low"] <= ok["estimate"]) & (ok["estimate"] <= ok["ci_high"])).all()
    y = np.load(samples / "classification_2d" / "pneumoniamnist.npz")["test_labels"]
    assert (m["n"] == len(y)).all()  # the whole official test split
    cm = pd.read_csv(report / "tables" / "confusion.csv").set_index("true")
    assert cm.to_numpy().sum() == len(y) and cm.sum(axis=1).tolist() == np.bincount(y.ravel()).tolist()
    src = pd.read_csv(report / "tables" / "label_sources.csv")
    assert set(src["source"]) == {"human", "auto", "corrected"}
    agree = pd.read_csv(report / "tables" / "agreement.csv")
    kappa = agree[agree["what"].str.contains("kappa")]
    assert kappa["n_cases"].item() == 20 and kappa["estimate"].item() == 1.0  # both readers used the truth
    splits = pd.read_csv(report / "tables" / "splits.csv").set_index("split")
    assert splits.loc["train (pool)", "total"] == 4708 and splits.loc["test", "total"] == 624
    lc = pd.read_csv(report / "tables" / "learning_curves.csv")
    assert sorted(lc["n_labeled"].unique()) == [60, 120]


@pytest.mark.slow
def test_two_runs_give_identical_tables(report, tmp_path):
    from _report_study import _BUILT
    from medwb.report.build import build_report

    build_report(_BUILT["study"], tmp_path / "run2", pdf=False, n_bootstrap=200, seed=0)
    for t in TABLES:
        a = (report / "tables" / f"{t}.csv").read_bytes()
        b = (tmp_path / "run2" / "tables" / f"{t}.csv").read_bytes()
        assert a == b, f"{t}.csv differs between two runs with the same inputs and seed"


def test_cli_report_on_a_folder_without_study_fails_clearly(tmp_path):
    r = subprocess.run([sys.executable, "-m", "medwb.cli", "report", str(tmp_path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert "study.sqlite missing" in r.stderr and "Fix:" in r.stderr


def test_missing_chromium_says_how_to_install(monkeypatch, tmp_path):
    from medwb.report.build import ReportError, find_chromium, html_to_pdf

    monkeypatch.delenv("MEDWB_CHROMIUM", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ReportError, match="apt-get install chromium"):
        find_chromium()
    (tmp_path / "r.html").write_text("<p>x</p>")
    with pytest.raises(ReportError, match="--no-pdf"):
        html_to_pdf(tmp_path / "r.html", tmp_path / "r.pdf")


@pytest.mark.slow
def test_report_files_are_registered_for_purge(report):
    """Issue 16: purge left the reports (HTML with embedded images, PDF, ipynb, tables) behind; they are now
    registered in the study, so purge finds them."""
    from medwb.store import Study

    study = report.parent / "study"
    with Study.open(study) as st:
        registered = dict(zip(st.artifacts()["path"], st.artifacts()["kind"]))
    for name in ("validation_report.ipynb", "validation_report.html", "validation_report.pdf", "tables"):
        assert registered.get(str((report / name).resolve())) == "report", name
