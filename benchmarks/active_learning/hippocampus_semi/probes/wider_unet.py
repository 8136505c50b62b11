"""Session-21 probe (README.md here): the loop's supervised segmentation round with a wider 3D UNet.

    python wider_unet.py HIPPOCAMPUS_DIR SEED LABELS CHANNELS   # e.g. 0 17 16,32,64,128 (default 8,16,32,64)
"""
import sys
import time

from probe_round import train_round

from medwb.models.networks import build_segmenter

seed, n, channels = int(sys.argv[2]), int(sys.argv[3]), tuple(int(c) for c in sys.argv[4].split(","))
t0 = time.perf_counter()
_, m, _, _ = train_round(sys.argv[1], seed, n, model=build_segmenter(3, 1, 3, channels=channels, seed=seed))
print(f"seed {seed} labels {n} channels {sys.argv[4]} test_dice {m['test_dice']:.4f} val_dice {m['val_dice']:.4f} "
      f"best_epoch {m['best_epoch']:.0f} seconds {time.perf_counter() - t0:.0f}", flush=True)
