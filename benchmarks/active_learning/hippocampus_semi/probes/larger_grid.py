"""Session-22 probe (README.md here): the loop's supervised segmentation round (default wide UNet) on a larger grid,
closer to the volumes' native size (mean 35x50x36, 90th percentile 38x54x41) than the benchmarks' 32x48x32.

    python larger_grid.py HIPPOCAMPUS_DIR SEED LABELS SIZE   # e.g. 0 17 40x56x40; 0 169 40x56x40 for the reference
"""
import sys
import time

from probe_round import train_round

seed, n, size = int(sys.argv[2]), int(sys.argv[3]), tuple(int(s) for s in sys.argv[4].split("x"))
t0 = time.perf_counter()
_, m, _, _ = train_round(sys.argv[1], seed, n, size=size)
print(f"seed {seed} labels {n} size {sys.argv[4]} test_dice {m['test_dice']:.4f} val_dice {m['val_dice']:.4f} "
      f"best_epoch {m['best_epoch']:.0f} seconds {time.perf_counter() - t0:.0f}", flush=True)
