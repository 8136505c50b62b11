#!/usr/bin/env bash
# Reproduce the uncertainty-cost tables (run from the repository root, venv active).
# One thread per process: the timings were taken on a 2-core machine shared with other jobs, where
# two OpenMP threads per process oversubscribe the cores; the ratios are measured in one process.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
out=benchmarks/uncertainty
if [[ "${1:-}" != "--3d-only" ]]; then
medwb bench uncertainty data_samples/classification_2d/pneumoniamnist.npz --passes 20 \
    --out "$out/pneumoniamnist.csv" | tee "$out/pneumoniamnist.txt"
fi
# 3D: a seeded 300-volume subset of the 1188-volume pool (the full pool's T=20 baal/full runs take >30 min
# on the shared machine).
medwb bench uncertainty data_samples/classification_3d/adrenalmnist3d.npz --passes 20 --max-pool 300 \
    --out "$out/adrenalmnist3d.csv" | tee "$out/adrenalmnist3d.txt"
