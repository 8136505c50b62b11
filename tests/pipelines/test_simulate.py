"""Simulation harness: curve arithmetic, and an end-to-end `medwb simulate` on a small real subset."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from medwb.al.curves import labels_to_reach, summarize
from medwb.pipelines.simulate import CURVE_COLUMNS, format_table

from _fixtures import PNEUMONIA, tiny_pneumonia_npz


def test_labels_to_reach_interpolates_first_crossing() -> None:
    n = [10, 20, 30, 40]
    v = [0.50, 0.70, 0.90, 0.80]
    assert labels_to_reach(n, v, 0.80) == pytest.approx(25.0)  # halfway between 20 (0.7) and 30 (0.9)
    assert labels_to_reach(n, v, 0.40) == 10.0  # already reached at the first point
    assert math.isnan(labels_to_reach(n, v, 0.95))  # never reached
    assert labels_to_reach(list(reversed(n)), list(reversed(v)), 0.80) == pytest.approx(25.0)  # order-free


def test_summarize_against_full_reference() -> None:
    rows = []
    for seed, bump in ((0, 0.0), (1, 0.02)):
        rows.append(("full", seed, 0, 100, 1.0, "dice", 0.80 + bump))
        for r, (n, val) in enumerate([(5, 0.50), (10, 0.76), (15, 0.79)], start=1):
            rows.append(("entropy", seed, r, n, n / 100, "dice", val + bump))
    curves = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    s = summarize(curves, budget=0.10).set_index("strategy").loc["entropy"]
    full = 0.81
    assert s["full_value"] == pytest.approx(full)
    assert s["n_labeled_at_budget"] == 10  # first round that reaches 10%
    assert s["value_at_budget"] == pytest.approx(0.77)
    assert s["share_of_full"] == pytest.approx(0.77 / full)
    # mean curve 0.51, 0.77, 0.80; 95% of 0.81 = 0.7695 lies between n=5 and n=10
    assert s["labels_to_95pct"] == pytest.approx(5 + (0.7695 - 0.51) / (0.77 - 0.51) * 5)
    assert s["labels_to_98pct"] == pytest.approx(10 + (0.7938 - 0.77) / (0.80 - 0.77) * 5)
    text = format_table(summarize(curves, budget=0.10), 0.10)
    assert "entropy" in text and "labels to 98%" in text


@pytest.mark.slow
def test_simulate_cli_on_real_subset(samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from medwb.cli import main

    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "pneumonia_small.npz", n_train=120, n_val=40, n_test=60)
    out = tmp_path / "sim"
    argv = ["simulate", str(data), "--strategy", "random", "--strategy", "entropy", "--budget", "0.2",
            "--rounds", "2", "--seeds", "1", "--epochs", "2", "--pipeline", "scratch", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["strategy"]) == {"random-scratch", "entropy-scratch", "full"}
    assert set(curves["metric"]) == {"auc", "accuracy", "balanced_accuracy"}
    full = curves[curves["strategy"] == "full"]
    assert len(full) == 3 and (full["fraction_labeled"] == 1.0).all() and (full["n_labeled"] == 120).all()
    for strategy in ("random-scratch", "entropy-scratch"):
        c = curves[(curves["strategy"] == strategy) & (curves["metric"] == "auc")].sort_values("round")
        assert list(c["round"]) == [1, 2]
        assert list(c["n_labeled"]) == [12, 24]  # 20% of 120 in 2 equal batches
        assert c["value"].between(0, 1).all()
    assert (out / "curves.png").stat().st_size > 1000
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["strategy"]) == {"random-scratch", "entropy-scratch"}
    for strategy in ("random-scratch", "entropy-scratch"):
        assert strategy in printed
    assert "labels to 95%" in printed and "labels to 98%" in printed
    assert (out / "table.txt").read_text().strip() in printed
    # auto-label outcome of each model-made pre-label batch (round 2; round 1 is the model-free first batch)
    auto = pd.read_csv(out / "autolabel.csv")
    batch = auto.dropna(subset=["n_batch"])
    assert set(auto["strategy"]) == {"random-scratch", "entropy-scratch"} and list(batch["round"].unique()) == [2]
    assert (batch["n_batch"] == 12).all() and (batch["n_auto_errors"] <= batch["n_auto"]).all()
    # every round's model on the whole remaining pool (120 - labels) and on the test split (60)
    assert sorted(auto["pool_n"].unique()) == [96, 108] and (auto["test_n"] == 60).all()
    assert (auto["pool_errors"] <= auto["pool_auto"]).all() and (auto["test_auto"] <= auto["test_n"]).all()
    assert "auto-labels at a 2% target error" in printed and "pool cover" in printed
    # every curve point is a model recorded in a real study, with its labels
    from medwb.store import Study

    with Study.open(out / "studies" / "entropy-scratch-seed0") as st:
        assert len(st.labels()) == 24 and list(st.models()["round"]) == [1, 2]
        assert list(st.rounds()["strategy"]) == ["cold_start", "entropy"]  # label-free cold start first
    # re-running resumes from the stored studies: same curves, nothing retrained
    before = curves.sort_values(CURVE_COLUMNS[:3]).reset_index(drop=True)
    assert main(argv) == 0
    again = pd.read_csv(out / "curves.csv").sort_values(CURVE_COLUMNS[:3]).reset_index(drop=True)
    pd.testing.assert_frame_equal(before, again)
    assert "1 seed(s)" in (out / "table.txt").read_text()
    # a run of another seed and one arm on the same --out: the table states the seeds and arms its rows hold
    assert main(["simulate", str(data), "--strategy", "random", "--budget", "0.2", "--rounds", "2", "--seeds", "1,",
                 "--epochs", "2", "--pipeline", "scratch", "--out", str(out)]) == 0
    assert set(pd.read_csv(out / "curves.csv")["seed"]) == {0, 1}
    header = (out / "table.txt").read_text().splitlines()[0]
    assert "2 seed(s)" in header and "random-scratch (random, scratch)" in header and "entropy-scratch" in header
