"""Paired loop arms that differ only from a given round on: the first rounds run once per seed, then each arm
resumes a copy of that study with its own ``warm_start`` (issue 12: a loop default changed only where measured).

    OMP_NUM_THREADS=1 python benchmarks/active_learning/fork_rounds.py DATA OUT --budget 0.1 --rounds 5 \
        --shared-rounds 2 --seeds 0 1 2 --arms fresh=off auto=auto --workers 2

Why: a change of which rounds continue the last model moves only the rounds from the first one it touches, so the
rounds before it are run once (``OUT/shared``, ``warm_start`` off: every round before 512 labels trains from the
trunk under any rule) and copied, and the arms' differences are the change's alone (same SimCLR trunk, same first
picks). Each unit is :func:`medwb.pipelines.simulate.simulate_unit` (hybrid, the medwb pipeline, the loop's
defaults; its study resumes where the copy stopped), one process of one thread per seed's chain. The shared rounds
use ``--budget`` x shared / rounds, so each round's batch is the full run's. Writes ``OUT/curves.csv`` (the
simulation's columns plus ``arm``) and ``OUT/table.txt`` (test accuracy per round and seed, mean +- SD at the
budget). The SimCLR trunk is pretrained once into ``OUT/base/cache`` (1 thread).
"""
from __future__ import annotations

import argparse
import shutil
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import pandas as pd

from medwb.cli import parse_warm_start
from medwb.data import open_dataset
from medwb.models.pretrain import pretrain_config_on
from medwb.pipelines.simulate import Arm, UnitSpec, shared_representation, simulate_unit, study_folder


def unit(data: str, base: Path, out: Path, seed: int, budget: float, rounds: int, warm_start: int | str | None
         ) -> pd.DataFrame:
    """One hybrid unit of ``rounds`` rounds in ``out`` (resuming its study), the trunk read from ``base``."""
    import torch

    torch.set_num_threads(1)
    ds = open_dataset(data, progress=False)
    shared = shared_representation(ds, base, max_pool=None, size=None, config=pretrain_config_on(None, ds),
                                   progress=False)
    spec = UnitSpec(data=data, out=out, folders=(study_folder(out, "hybrid", seed),), budget=budget, rounds=rounds,
                    epochs=None, train={}, cold_start="auto", mc_passes=20, max_pool=None, size=None, finetune="full",
                    shared=shared, stream=False, semi_schedule={}, warm_start=warm_start)
    return simulate_unit(spec, Arm("hybrid"), seed, reference=False, ds=ds).curves


def chain(a: argparse.Namespace, seed: int) -> pd.DataFrame:
    """One seed: the shared rounds, then every arm from a copy of them."""
    base, shared = a.out / "base", a.out / "shared"
    unit(a.data, base, shared, seed, a.budget * a.shared_rounds / a.rounds, a.shared_rounds, None)
    parts = []
    for name, warm in a.arms:
        dst = study_folder(a.out / name, "hybrid", seed)
        if not dst.exists():
            shutil.copytree(study_folder(shared, "hybrid", seed), dst)
        parts.append(unit(a.data, base, a.out / name, seed, a.budget, a.rounds, warm).assign(arm=name))
    return pd.concat(parts)


def table(curves: pd.DataFrame) -> str:
    acc = curves[curves.metric == "accuracy"]
    lines = [acc.pivot_table(index=["arm", "seed"], columns="n_labeled", values="value").round(4).to_string(), ""]
    last = curves[curves.n_labeled == curves.n_labeled.max()]
    for metric in ("accuracy", "balanced_accuracy", "auc"):
        g = last[last.metric == metric].groupby("arm").value
        lines += [f"{metric} at {int(curves.n_labeled.max())} labels: "
                  + ", ".join(f"{arm} {m:.4f} +- {s:.4f} ({n} seeds)" for arm, m, s, n in
                              zip(g.mean().index, g.mean(), g.std(ddof=0), g.count()))]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data")
    ap.add_argument("out", type=Path)
    ap.add_argument("--budget", type=float, default=0.1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shared-rounds", type=int, required=True, help="rounds run once per seed before the arms part")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--arms", nargs="+", default=["fresh=off", "auto=auto"], metavar="NAME=WARM_START",
                    help="each arm's warm_start: off, auto or a number of passes")
    ap.add_argument("--workers", type=int, default=2, help="seed chains side by side (one thread each)")
    a = ap.parse_args()
    a.arms = [(n, parse_warm_start(w)) for n, w in (s.split("=", 1) for s in a.arms)]
    if not 0 < a.shared_rounds < a.rounds:
        ap.error("--shared-rounds must be between 0 and --rounds")
    ds = open_dataset(a.data, progress=False)  # the trunk once, before the chains read it
    shared_representation(ds, a.out / "base", max_pool=None, size=None, config=pretrain_config_on(None, ds),
                          progress=True)
    with ProcessPoolExecutor(a.workers, mp_context=get_context("spawn")) as pool:
        curves = pd.concat(pool.map(chain, [a] * len(a.seeds), a.seeds))
    curves.to_csv(a.out / "curves.csv", index=False)
    (a.out / "table.txt").write_text(table(curves))
    print(table(curves))


if __name__ == "__main__":
    main()
