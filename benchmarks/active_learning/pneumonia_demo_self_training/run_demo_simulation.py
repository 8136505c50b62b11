"""The demo's simulation (DemoConfig full, medwb.pipelines.demo.simulate_demo) with self_train on: its time and
headline against the demo's. Usage: python run_demo_simulation.py OUT"""
import sys
import time
from dataclasses import replace
from pathlib import Path

from medwb.pipelines.demo import DemoConfig, simulate_demo
from medwb.resources import default_demo_data

if __name__ == "__main__":  # the simulation's worker processes import this file
    t = time.perf_counter()
    config = replace(DemoConfig.for_mode(False), self_train=True)
    headline = simulate_demo(default_demo_data(), Path(sys.argv[1]), config)
    print(f"simulation {time.perf_counter() - t:.0f} s")
    print(headline.read_text())
