#!/usr/bin/env bash
# The exact command that produced the committed results (run from the repository root, venv active).
# Writes benchmarks/explain/{results.md,checks.csv,timing.csv,overlay_*.png}; models/ is a cache (not committed).
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
python benchmarks/explain/bench_explain.py --cases 32 2>&1 | grep -v Warning | tee benchmarks/explain/run.log
