"""Probe (README.md here): the loop's supervised segmentation round with another grid or UNet width; session 21's
width (16-32-64-128, now the default) and session 22's larger grid (40x56x40).

    python round_variant.py HIPPOCAMPUS_DIR SEED LABELS [--size 40x56x40] [--channels 16,32,64,128]
"""
import argparse
import time

from probe_round import SIZE, train_round

from medwb.models.networks import build_segmenter

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("data")
ap.add_argument("seed", type=int)
ap.add_argument("labels", type=int)
ap.add_argument("--size", default="x".join(map(str, SIZE)), help="training grid (default: the benchmarks' 32x48x32)")
ap.add_argument("--channels", default=None, help="UNet widths, e.g. 8,16,32,64 (default: medwb's segmenter)")
a = ap.parse_args()
model = (build_segmenter(3, 1, 3, channels=tuple(int(c) for c in a.channels.split(",")), seed=a.seed)
         if a.channels else None)
t0 = time.perf_counter()
_, m, _, _ = train_round(a.data, a.seed, a.labels, model=model, size=tuple(int(s) for s in a.size.split("x")))
print(f"seed {a.seed} labels {a.labels} size {a.size} channels {a.channels or 'default'} "
      f"test_dice {m['test_dice']:.4f} val_dice {m['val_dice']:.4f} best_epoch {m['best_epoch']:.0f} "
      f"seconds {time.perf_counter() - t0:.0f}", flush=True)
