"""`medwb simulate --pretrain`: one pretraining shared by every run, the full-pretrained reference, and the
summary against the stronger all-labels reference; on a small real PneumoniaMNIST subset."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.al.curves import FULL, FULL_PRETRAINED, summarize
from medwb.cli import build_parser, main
from medwb.pipelines.simulate import CURVE_COLUMNS


def test_simulate_pretrain_parser_options() -> None:
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o"])
    assert (a.pretrain, a.finetune, a.pretrain_epochs, a.pretrain_max_seconds) == (False, "head", None, None)
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--pretrain", "--finetune", "full",
                                   "--pretrain-epochs", "3", "--pretrain-max-seconds", "60"])
    assert (a.pretrain, a.finetune, a.pretrain_epochs, a.pretrain_max_seconds) == (True, "full", 3, 60.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--finetune", "partly"])
    a = build_parser().parse_args(["pretrain", "d.npz", "--study", "s", "--epochs", "2", "--max-seconds", "5"])
    assert (a.pretrain_epochs, a.pretrain_max_seconds, a.size, a.max_pool) == (2, 5.0, None, None)


def test_summarize_uses_the_stronger_reference_and_reads_old_curves() -> None:
    rows = [(FULL, 0, 0, 100, 1.0, "auc", 0.80), (FULL, 0, 0, 100, 1.0, "accuracy", 0.75),
            (FULL_PRETRAINED, 0, 0, 100, 1.0, "auc", 0.90), (FULL_PRETRAINED, 0, 0, 100, 1.0, "accuracy", 0.70)]
    rows += [("random", 0, r, n, n / 100, m, v) for r, n in ((1, 5), (2, 10)) for m, v in (("auc", 0.85), ("accuracy", 0.7))]
    curves = pd.DataFrame(rows, columns=CURVE_COLUMNS)
    s = summarize(curves, 0.1).set_index("metric")
    assert list(summarize(curves, 0.1)["strategy"].unique()) == ["random"]  # references are no strategy
    assert s.loc["auc", "full_value"] == 0.90 and s.loc["auc", "full_reference"] == FULL_PRETRAINED
    assert s.loc["accuracy", "full_value"] == 0.75 and s.loc["accuracy", "full_reference"] == FULL
    assert s.loc["auc", "share_of_full"] == pytest.approx(0.85 / 0.90)
    old = summarize(curves[curves["strategy"] != FULL_PRETRAINED], 0.1).set_index("metric")  # a pre-pretraining file
    assert old.loc["auc", "full_value"] == 0.80 and old.loc["auc", "full_reference"] == FULL
    assert old.loc["auc", "fraction_at_budget"] == 0.1


@pytest.mark.slow
def test_simulate_pretrain_writes_full_pretrained_rows(samples: Path, tmp_path: Path) -> None:
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=80, n_val=30, n_test=30)
    out = tmp_path / "sim"
    argv = ["simulate", str(data), "--strategy", "random", "--strategy", "hybrid", "--budget", "0.2", "--rounds",
            "2", "--seeds", "2", "--epochs", "1", "--max-pool", "60", "--mc-passes", "3", "--pretrain",
            "--pretrain-epochs", "1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["strategy"]) == {FULL, FULL_PRETRAINED, "random", "hybrid"}
    ref = curves[curves["strategy"] == FULL_PRETRAINED]
    assert len(ref) == 4 and (ref["n_labeled"] == 60).all() and set(ref["seed"]) == {0, 1}
    # one pretraining for the whole simulation, under OUT; no study pretrained on its own
    assert len(list((out / "cache" / "pretrain").glob("*.pt"))) == 1
    assert not list((out / "studies").glob("*/cache/pretrain/*"))
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["strategy"]) == {"random", "hybrid"}
    assert set(summary["full_reference"]) <= {FULL, FULL_PRETRAINED}
    text = (out / "table.txt").read_text()
    assert "pretrained representation" in text and "fine-tuning: head" in text

    from medwb.store import Study

    with Study.open(out / "studies" / "hybrid-seed1") as st:
        assert all(p["pretrained"] for p in st.rounds()["params"])
    with Study.open(out / "studies" / "full-seed0") as st:
        assert len(st.rounds()) == 0  # the scratch reference stays scratch
