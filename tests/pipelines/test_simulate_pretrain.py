"""`medwb simulate` arms (STRATEGY[:PIPELINE]): one pretraining shared by every pretrained arm, the
full-pretrained reference, FixMatch rounds in the default pipeline, the scratch baseline beside it, and the
summary against the stronger all-labels reference; on a small real PneumoniaMNIST subset."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.al.curves import FULL, FULL_PRETRAINED, summarize
from medwb.cli import build_parser, main
from medwb.errors import ConfigError
from medwb.pipelines.simulate import CURVE_COLUMNS, Arm, parse_arm


def test_simulate_pretrain_parser_options() -> None:
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o"])
    assert (a.pipeline, a.finetune, a.pretrain_epochs, a.pretrain_max_seconds) == ("medwb", "full", None, None)
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--pipeline", "pretrained", "--finetune",
                                   "head", "--pretrain-epochs", "3", "--pretrain-max-seconds", "60"])
    assert (a.pipeline, a.finetune, a.pretrain_epochs, a.pretrain_max_seconds) == ("pretrained", "head", 3, 60.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--finetune", "partly"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--pipeline", "magic"])
    a = build_parser().parse_args(["pretrain", "d.npz", "--study", "s", "--epochs", "2", "--max-seconds", "5"])
    assert (a.pretrain_epochs, a.pretrain_max_seconds, a.size, a.max_pool) == (2, 5.0, None, None)


def test_pretrain_flags_change_only_what_they_name(samples: Path) -> None:
    """--pretrain-epochs on a 2D segmentation or 3D set keeps that network's schedule (crops, smaller batches)
    instead of falling back to the 2D classifier's whole-image batches of 128 (an hour on HC18)."""
    from medwb.cli import _pretrain_config
    from medwb.data import open_dataset
    from medwb.models.pretrain import PretrainConfig, pretrain_config_on

    def config(data: Path, *flags: str):  # the flags as the command passes them, resolved as the pipeline does
        over = _pretrain_config(build_parser().parse_args(["simulate", str(data), "--out", "o", *flags]))
        assert over is None or isinstance(over, dict)  # the command itself opens no dataset for them
        return pretrain_config_on(over, open_dataset(data, progress=False))

    assert config(samples / "segmentation_2d" / "hc18") is None
    given = PretrainConfig(steps=7)
    assert pretrain_config_on(given, open_dataset(samples / "segmentation_2d" / "hc18", progress=False)) is given
    seg = config(samples / "segmentation_2d" / "hc18", "--pretrain-epochs", "3")
    assert (seg.epochs, seg.batch_size, seg.crop, seg.max_seconds) == (3, 32, 64, None)
    vol = config(samples / "classification_3d" / "adrenalmnist3d.npz", "--pretrain-max-seconds", "9")
    assert (vol.epochs, vol.batch_size, vol.steps, vol.crop, vol.max_seconds) == (None, 32, 150, None, 9.0)


def test_arms_name_strategy_and_pipeline() -> None:
    assert parse_arm("hybrid") == Arm("hybrid", "medwb") and parse_arm("hybrid").label == "hybrid"
    scratch = parse_arm("random:scratch")
    assert (scratch.label, scratch.pretrain, scratch.semi) == ("random-scratch", False, False)
    assert parse_arm("hybrid").pretrain is None  # the task decides (uses_pretraining: not for 2D segmentation)
    assert parse_arm("entropy", "pretrained").label == "entropy-pretrained"
    assert (parse_arm("random:semi").pretrain, parse_arm("random:semi").semi) == (False, True)
    with pytest.raises(ConfigError, match="not a training pipeline"):
        parse_arm("random:magic")
    with pytest.raises(ConfigError):
        parse_arm("most_interesting:scratch")


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


def test_compare_arms_gives_the_label_ratio() -> None:
    from medwb.al.curves import compare_arms, format_comparison

    rows = [(FULL, 0, 0, 100, 1.0, "auc", 0.90)]
    rows += [("hybrid", 0, r, n, n / 100, "auc", v) for r, n, v in ((1, 5, 0.89), (2, 10, 0.90))]
    rows += [("random-scratch", 0, r, n, n / 100, "auc", v) for r, n, v in ((1, 5, 0.70), (2, 10, 0.80))]
    s = summarize(pd.DataFrame(rows, columns=CURVE_COLUMNS), 0.1)
    cmp = compare_arms(s, "hybrid", "random-scratch").iloc[0]
    # hybrid reaches 0.882 at its first point (5 labels); the baseline never does: the ratio is a bound
    assert cmp["arm_labels_to_98pct"] == 5 and cmp["ratio_is_bound"] and cmp["label_ratio"] == pytest.approx(0.5)
    text = format_comparison(compare_arms(s, "hybrid", "random-scratch"))
    assert "not reached" in text and "< 0.50x the labels" in text


@pytest.mark.slow
def test_simulate_default_pipeline_beside_scratch(samples: Path, tmp_path: Path) -> None:
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "p.npz", n_train=80, n_val=30, n_test=30)
    out = tmp_path / "sim"
    argv = ["simulate", str(data), "--strategy", "hybrid", "--strategy", "random:scratch", "--budget", "0.2",
            "--rounds", "2", "--seeds", "2", "--epochs", "1", "--max-pool", "60", "--mc-passes", "3",
            "--pretrain-epochs", "1", "--train", "max_seconds=1", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["strategy"]) == {FULL, FULL_PRETRAINED, "hybrid", "random-scratch"}
    ref = curves[curves["strategy"] == FULL_PRETRAINED]
    assert len(ref) == 6 and (ref["n_labeled"] == 60).all() and set(ref["seed"]) == {0, 1}
    # one pretraining for the whole simulation, under OUT; no study pretrained on its own
    assert len(list((out / "cache" / "pretrain").glob("*.pt"))) == 1
    assert not list((out / "studies").glob("*/cache/pretrain/*"))
    summary = pd.read_csv(out / "summary.csv")
    assert set(summary["strategy"]) == {"hybrid", "random-scratch"}
    assert set(summary["full_reference"]) <= {FULL, FULL_PRETRAINED}
    text = (out / "table.txt").read_text()
    assert "pretrained representation" in text and "random-scratch (random, scratch)" in text
    assert f"full = the stronger of {FULL} (scratch) and {FULL_PRETRAINED}" in text
    # a later run on the same --out that pretrains nothing (its units resume) still reads the pretrained references
    assert main([*argv[:2], "--strategy", "random:scratch", *argv[argv.index("--budget"):]]) == 0
    assert f"full = the stronger of {FULL} (scratch) and {FULL_PRETRAINED}" in (out / "table.txt").read_text()

    from medwb.al.fit import keeps_fixmatch
    from medwb.store import Study

    with Study.open(out / "studies" / "hybrid-seed1") as st:
        assert all(p["pretrained"] and p["semi"] for p in st.rounds()["params"])
        metrics = list(st.models()["metrics"])
        assert "val_score_semi" in metrics[0]  # the first round trained FixMatch beside supervised training
        for m in metrics:  # ... and each round kept FixMatch unless supervised training validated clearly better
            if "val_score_semi" in m:
                assert m["semi"] == float(keeps_fixmatch(m["val_score_semi"], m["val_score_supervised"]))
        # pseudo-labels are training signal only: the store holds exactly the oracle's labels
        assert len(st.labels()) == 12 and set(st.labels()["source"]) <= {"human", "corrected"}
    with Study.open(out / "studies" / "random-scratch-seed0") as st:
        assert not any(p["pretrained"] or p["semi"] for p in st.rounds()["params"])
        assert all(m["semi"] == 0.0 for m in st.models()["metrics"])
    with Study.open(out / "studies" / "full-seed0") as st:
        assert len(st.rounds()) == 0  # the scratch reference stays scratch
