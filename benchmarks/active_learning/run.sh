#!/usr/bin/env bash
# The exact commands that produced the committed results (run from the repository root, venv active).
# Each writes DIR/{curves.csv,summary.csv,curves.png,table.txt}; the console log goes to DIR.log.
# Studies go to DIR/studies/ (not committed); re-running resumes them instead of retraining.
set -euo pipefail
cd "$(dirname "$0")/../.."
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
B=benchmarks/active_learning

case "${1:-all}" in
pneumonia|all)
  # The three seeds run as parallel processes on one out dir (python API, seeds=[k]); the CLI command then
  # reads the finished studies back (nothing is retrained) and writes curves/summary/table for all seeds.
  for k in 0 1 2; do
    python -c "from medwb.simulate import run_simulation as r; r('data_samples/classification_2d/pneumoniamnist.npz', \
      strategies=['random', 'entropy', 'hybrid'], budget=0.1, rounds=5, seeds=[$k], epochs=6, \
      out_dir='$B/pneumoniamnist')" > /dev/null 2>&1 &
  done
  wait
  medwb simulate data_samples/classification_2d/pneumoniamnist.npz \
    --strategy random --strategy entropy --strategy hybrid \
    --budget 0.1 --rounds 5 --seeds 3 --epochs 6 --out $B/pneumoniamnist 2>&1 | tee $B/pneumoniamnist.log ;;&
adrenal|all)
  # CPU budget (2 shared cores): pool capped at a fixed seeded 150-case subset, 3 epochs per round.
  # Python API because the CLI has no --max-pool / --size options.
  python -c "from medwb.simulate import run_simulation as r; r('data_samples/classification_3d/adrenalmnist3d.npz', \
    strategies=['random', 'entropy', 'hybrid'], budget=0.3, rounds=3, seeds=3, epochs=3, max_pool=150, \
    out_dir='$B/adrenalmnist3d')" 2>&1 | tee $B/adrenalmnist3d.log ;;&
hippocampus|all)
  # 60 labelled MSD volumes: pool 39 / val 9 / test 12 (carved, fixed seed); volumes resized to 24x32x24.
  python -c "from medwb.simulate import run_simulation as r; r('data_samples/segmentation_3d/hippocampus', \
    strategies=['random', 'entropy', 'hybrid'], budget=0.5, rounds=3, seeds=3, epochs=5, size=(24, 32, 24), \
    out_dir='$B/hippocampus')" 2>&1 | tee $B/hippocampus.log ;;

esac
