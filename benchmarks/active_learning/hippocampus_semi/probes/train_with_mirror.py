"""Session-21 probe (README.md here): the round trained with a random mirror of one axis (on top of the loop's
shift; patched in, not a medwb option), then mirror TTA on that axis.

    python train_with_mirror.py HIPPOCAMPUS_DIR SEED AXIS [LABELS]
"""
import sys

import numpy as np
import torch
from probe_round import mean_dice, train_round

import medwb.models.train  # noqa: F401 - registers the submodule patched below
from medwb.models.augment import augment_batch
from medwb.models.train import predict_proba

AX = int(sys.argv[3])


def with_mirror(x, y, g, kind="shift"):
    x, y = augment_batch(x, y, g, kind)
    if kind == "shift" and x.ndim == 5:
        m = (torch.rand(x.shape[0], generator=g) < 0.5).view(-1, 1, 1, 1, 1)
        x = torch.where(m, torch.flip(x, (AX,)), x)
        if y is not None and y.ndim == x.ndim:
            y = torch.where(m, torch.flip(y, (AX,)), y)
    return x, y


sys.modules["medwb.models.train"].augment_batch = with_mirror
seed, n = int(sys.argv[2]), int(sys.argv[4]) if len(sys.argv) > 4 else 17
model, _, _, (X, y) = train_round(sys.argv[1], seed, n)
p0 = predict_proba(model, X)
pf = np.flip(predict_proba(model, np.ascontiguousarray(np.flip(X, AX))), AX)
print("seed", seed, "n", n, "axis", AX, "plain", mean_dice(p0.argmax(1), y), "mirrored", mean_dice(pf.argmax(1), y),
      "tta", mean_dice(((p0 + pf) / 2).argmax(1), y), flush=True)
