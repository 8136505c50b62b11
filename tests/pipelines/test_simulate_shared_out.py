"""Two `medwb simulate` runs on one --out with different strategies, at the same time (issue 16: curves.csv kept
only one of them): both finish and curves.csv / autolabel.csv / summary.csv hold both. Real processes."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from _fixtures import PNEUMONIA, tiny_pneumonia_npz


@pytest.mark.slow
def test_two_simulations_on_one_out_keep_both_curves(samples: Path, tmp_path: Path) -> None:
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "pneumonia_small.npz", n_train=120, n_val=30, n_test=40)
    out = tmp_path / "sim"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDWB_OFFLINE": "1"}

    def start(strategy: str) -> subprocess.Popen:
        argv = [sys.executable, "-m", "medwb.cli", "simulate", str(data), "--strategy", strategy, "--budget", "0.4",
                "--rounds", "1", "--seeds", "0,", "--epochs", "1", "--max-pool", "40", "--size", "16",
                "--mc-passes", "2", "--quiet", "--out", str(out), "--pipeline", "scratch"]
        return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    procs = [start("entropy"), start("random")]
    logs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(log[-3000:] for log in logs)
    curves = pd.read_csv(out / "curves.csv")
    assert {"entropy-scratch", "random-scratch", "full"} <= set(curves["strategy"])
    assert not curves.duplicated(["strategy", "seed", "round", "metric"]).any()
    assert {"entropy-scratch", "random-scratch"} <= set(pd.read_csv(out / "autolabel.csv")["strategy"])
    assert {"entropy-scratch", "random-scratch"} <= set(pd.read_csv(out / "summary.csv")["strategy"])
    held = pd.read_csv(out / "held_out.csv")  # --max-pool 40 leaves 80 training cases out: both arms re-scored there
    assert {"entropy-scratch", "random-scratch", "full"} <= set(held["strategy"])
    assert not held.duplicated(["strategy", "seed", "round", "metric"]).any()
    # every study of the simulation knows every output and sibling, so purging one removes the whole simulation
    from medwb.store import Study

    with Study.open(out / "studies" / "entropy-scratch-seed0") as st:
        registered = set(st.artifacts()["path"])
    assert {str(out / "curves.csv"), str(out / "held_out.csv"), str(out / "studies" / "full-seed0")} <= registered
