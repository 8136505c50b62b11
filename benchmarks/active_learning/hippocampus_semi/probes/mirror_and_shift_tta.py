"""Session-21 probe (README.md here): a round's model on mirrored inputs per axis, and +-1 voxel shift TTA.

    python mirror_and_shift_tta.py HIPPOCAMPUS_DIR SEED
"""
import sys

import numpy as np
from probe_round import mean_dice, train_round

from medwb.models.train import predict_proba

model, _, _, (X, y) = train_round(sys.argv[1], int(sys.argv[2]), 17)
p0 = predict_proba(model, X)
print("plain", mean_dice(p0.argmax(1), y))
for ax in (2, 3, 4):
    pf = np.flip(predict_proba(model, np.ascontiguousarray(np.flip(X, ax))), ax)
    print("mirror", ax, mean_dice(pf.argmax(1), y), "tta", mean_dice(((p0 + pf) / 2).argmax(1), y), flush=True)
views = [p0]
for s in [(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)]:
    pr = predict_proba(model, np.ascontiguousarray(np.roll(X, s, axis=(2, 3, 4))))
    views.append(np.roll(pr, tuple(-v for v in s), axis=(2, 3, 4)))
print("shift-tta", mean_dice(np.mean(views, 0).argmax(1), y))
