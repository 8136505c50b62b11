"""The demo's simulation (``DemoConfig.for_mode(False)`` through ``medwb.pipelines.demo.simulate_demo``, stage 2 of
``medwb demo``) with one of the loop's opt-in training options turned on: its time and headline against the demo's.
Why: an option becomes a default only after it is measured on the main job's data, with the demo's exact sizes.

    OMP_NUM_THREADS=1 python benchmarks/active_learning/demo_variant.py OUT [--self-train] [--warm-start PASSES]
"""
import argparse
import time
from dataclasses import replace
from pathlib import Path

from medwb.pipelines.demo import DemoConfig, simulate_demo
from medwb.resources import default_demo_data

if __name__ == "__main__":  # the simulation's worker processes import this file
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--self-train", action="store_true", help="the medwb arm's rounds also train a student")
    ap.add_argument("--warm-start", type=int, default=None, metavar="PASSES",
                    help="the medwb arm's later rounds continue the last model for PASSES passes")
    a = ap.parse_args()
    t = time.perf_counter()
    config = replace(DemoConfig.for_mode(False), self_train=a.self_train, warm_start=a.warm_start)
    headline = simulate_demo(default_demo_data(), a.out, config)
    print(f"simulation {time.perf_counter() - t:.0f} s")
    print(headline.read_text())
