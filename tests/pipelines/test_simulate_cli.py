"""`medwb simulate` options that `run_simulation` supports: --max-pool, --size, --seeds as a list, --mc-passes,
--cold-start, --quiet; on a small real PneumoniaMNIST subset."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz

from medwb.cli import build_parser, main
from medwb.pipelines.simulate import CURVE_COLUMNS


def _subset(samples: Path, dst: Path, n_train: int = 200, n_val: int = 40, n_test: int = 60) -> Path:
    return tiny_pneumonia_npz(samples / PNEUMONIA, dst, n_train=n_train, n_val=n_val, n_test=n_test)


def test_simulate_parser_options() -> None:
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--max-pool", "50", "--size", "16",
                                   "--seeds", "0,2", "--mc-passes", "5", "--cold-start", "random", "--quiet"])
    assert (a.max_pool, a.size, a.seeds, a.mc_passes, a.cold_start, a.quiet) == (50, (16,), [0, 2], 5, "random", True)
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--size", "32x32x32", "--seeds", "3"])
    assert a.size == (32, 32, 32) and a.seeds == 3 and a.max_pool is None and a.mc_passes == 20
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--size", "big"])
    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--train", "batch_size=8",
                                   "--train", "lr=5e-4", "--train", "augment=false", "--train", "select_on=loss"])
    assert dict(a.train) == {"batch_size": 8, "lr": 5e-4, "augment": False, "select_on": "loss"}
    for bad in ("batchsize=8", "batch_size", "patience=soon"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--train", bad])
    from medwb.cli import parse_config_setting
    from medwb.models.pretrain import PretrainConfig

    # the same reading for another config's fields (a benchmark's --pretrain steps=600)
    assert parse_config_setting("steps=600", PretrainConfig) == ("steps", 600)
    assert parse_config_setting("flip=false", PretrainConfig) == ("flip", False)
    with pytest.raises(argparse.ArgumentTypeError, match="steps"):
        parse_config_setting("step=600", PretrainConfig)
    from medwb.cli import _simulation_kwargs

    a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--self-train"])
    assert a.self_train and _simulation_kwargs(a)["self_train"] is True  # reaches run_simulation
    # without the flag the task decides (segmentation: on, uses_self_training); --no-self-train turns it off
    assert _simulation_kwargs(build_parser().parse_args(["simulate", "d.npz", "--out", "o"]))["self_train"] is None
    off = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--no-self-train"])
    assert _simulation_kwargs(off)["self_train"] is False
    warm = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--warm-start", "40"])
    assert _simulation_kwargs(warm)["warm_start"] == 40 and _simulation_kwargs(off)["warm_start"] == "auto"
    for text, value in (("auto", "auto"), ("off", None)):
        a = build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--warm-start", text])
        assert _simulation_kwargs(a)["warm_start"] == value
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--warm-start", "soon"])


@pytest.mark.slow
def test_simulate_cli_max_pool_and_size(samples: Path, tmp_path: Path) -> None:
    data = _subset(samples, tmp_path / "pneumonia_small.npz")
    out = tmp_path / "sim"
    argv = ["simulate", str(data), "--strategy", "entropy", "--budget", "0.4", "--rounds", "1", "--seeds", "0,",
            "--epochs", "1", "--max-pool", "50", "--size", "16", "--mc-passes", "3", "--quiet", "--out", str(out),
            "--pipeline", "scratch"]
    assert main(argv) == 0
    curves = pd.read_csv(out / "curves.csv")
    assert list(curves.columns) == CURVE_COLUMNS
    assert set(curves["strategy"]) == {"entropy-scratch", "full"} and set(curves["seed"]) == {0}
    assert set(curves["metric"]) == {"auc", "accuracy", "balanced_accuracy"}
    full = curves[curves["strategy"] == "full"]
    assert (full["n_labeled"] == 50).all()  # the 200-case pool was cut to --max-pool 50
    ent = curves[curves["strategy"] == "entropy-scratch"]
    assert list(ent["round"].unique()) == [1]
    assert (ent["n_labeled"] == 20).all() and np.allclose(ent["fraction_labeled"], 0.4)  # 40% of 50, not of 200
    assert curves["value"].between(0, 1).all()
    assert "pool 50 cases" in (out / "table.txt").read_text()

    from medwb.store import Study

    with Study.open(out / "studies" / "entropy-scratch-seed0") as st:
        assert int(st.rounds().iloc[0]["params"]["pool_size"]) == 50
        assert len(st.labels()) == 20
        checkpoint = st.models().iloc[0]["checkpoint_path"]

    # the 150 training cases the pool left out: the round model re-scored on them (held_out.csv, the table's
    # in-distribution section); the same re-scoring on the test split gives the curve's own test numbers
    held = pd.read_csv(out / "held_out.csv")
    assert list(held.columns) == CURVE_COLUMNS
    assert set(held["strategy"]) == {"entropy-scratch", "full"} and held["value"].between(0, 1).all()
    assert set(held["metric"]) == {"auc", "accuracy", "balanced_accuracy"}
    assert (held.loc[held["strategy"] == "full", "n_labeled"] == 50).all()  # the reference too, on all 50 labels
    held = held[held["strategy"] == "entropy-scratch"]
    assert list(held["round"].unique()) == [1] and (held["n_labeled"] == 20).all()
    assert "on 150 training cases outside the pool" in (out / "table.txt").read_text()
    from medwb.data import open_dataset
    from medwb.data.splits import PoolInputs, carve_splits
    from medwb.models import evaluate, load_checkpoint

    ds = open_dataset(data, progress=False)
    splits = carve_splits(ds.cohort)
    pool = set(carve_splits(ds.cohort, max_pool=50)["train"])
    rest = [i for i in splits["train"] if i not in pool]
    inputs = PoolInputs(ds, {"train": rest, "val": splits["val"], "test": splits["test"]}, (16, 16))
    model, _ = load_checkpoint(checkpoint)
    on_test, on_rest = evaluate(model, *inputs["test"][:2]), evaluate(model, *inputs["train"][:2])
    for metric in ("auc", "balanced_accuracy"):
        assert ent.loc[ent["metric"] == metric, "value"].item() == pytest.approx(on_test[metric])
        assert held.loc[held["metric"] == metric, "value"].item() == pytest.approx(on_rest[metric])


def test_simulate_cli_rejects_bad_size(samples: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _subset(samples, tmp_path / "p.npz", 20, 10, 10)
    rc = main(["simulate", str(data), "--size", "16,16,16", "--seeds", "1", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 2
    assert "does not fit 2D images" in capsys.readouterr().err


@pytest.mark.slow
def test_simulate_scores_the_pool_on_a_local_dask_cluster(samples: Path, tmp_path: Path) -> None:
    """--scoring local: one LocalCluster (worker processes on loopback) for the whole simulation, started and
    stopped by it; each model round scores the pool there, at the simulation's --size, and records it."""
    data = _subset(samples, tmp_path / "pneumonia_small.npz")
    out = tmp_path / "sim"
    argv = ["simulate", str(data), "--strategy", "hybrid", "--budget", "0.4", "--rounds", "2", "--seeds", "0,",
            "--epochs", "1", "--max-pool", "50", "--size", "16", "--mc-passes", "3", "--quiet", "--out", str(out),
            "--pipeline", "scratch", "--scoring", "local"]
    assert main(argv) == 0
    from medwb.store import Study

    with Study.open(out / "studies" / "hybrid-scratch-seed0") as st:
        rounds = st.rounds()
        assert [r["scoring"] for r in rounds["params"]] == ["local", "local"]
        assert rounds.iloc[1]["strategy"] == "hybrid" and len(st.labels()) == 20


@pytest.mark.slow
def test_simulate_workers_match_one_process_and_reference_seeds(samples: Path, tmp_path: Path) -> None:
    """--workers 2 runs the (arm, seed) units in two processes and gives the curves one process gives (up to
    float noise from the thread count); --reference-seeds 1 trains the all-labels reference for seed 0 only."""
    data = _subset(samples, tmp_path / "pneumonia_small.npz")
    common = ["simulate", str(data), "--strategy", "entropy", "--strategy", "random", "--budget", "0.4",
              "--rounds", "2", "--seeds", "2", "--epochs", "1", "--max-pool", "50", "--size", "16",
              "--mc-passes", "3", "--quiet", "--pipeline", "scratch", "--reference-seeds", "1"]
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    assert main([*common, "--workers", "2", "--out", str(tmp_path / "two")]) == 0
    key = ["strategy", "seed", "round", "metric"]
    one = pd.read_csv(tmp_path / "one" / "curves.csv").sort_values(key).reset_index(drop=True)
    two = pd.read_csv(tmp_path / "two" / "curves.csv").sort_values(key).reset_index(drop=True)
    assert set(one.loc[one["strategy"] == "full", "seed"]) == {0}  # one reference seed
    assert set(one.loc[one["strategy"] == "entropy-scratch", "seed"]) == {0, 1}
    pd.testing.assert_frame_equal(one[key + ["n_labeled"]], two[key + ["n_labeled"]])
    assert np.allclose(one["value"], two["value"], atol=0.02)
    # the same cases were picked: the label stores agree
    from medwb.store import Study

    for name in ("entropy-scratch-seed1", "random-scratch-seed0"):
        with Study.open(tmp_path / "one" / "studies" / name) as a, Study.open(tmp_path / "two" / "studies" / name) as b:
            assert sorted(a.labels()["case_id"]) == sorted(b.labels()["case_id"])
    with pytest.raises(SystemExit):
        build_parser().parse_args(["simulate", "d.npz", "--out", "o", "--workers", "two"])


def test_held_out_cap_keeps_large_volumes_small(samples: Path) -> None:
    """held_out.csv re-scores at most 2000 cases, and at most 64 M voxels of them (64^3 volumes: 244 cases)."""
    from medwb.data import open_dataset
    from medwb.pipelines.simulate import HELD_OUT_CAP, held_out_cap

    ds = open_dataset(samples / PNEUMONIA, progress=False)
    assert held_out_cap(ds, None) == held_out_cap(ds, (28, 28)) == HELD_OUT_CAP  # native 28x28
    assert held_out_cap(ds, (64, 64, 64)) == 244 and held_out_cap(ds, (4096, 4096, 4096)) == 1
