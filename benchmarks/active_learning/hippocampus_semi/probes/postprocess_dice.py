"""Session-21 probe (README.md here): test and validation Dice of saved probabilities (save_probs.py) with MONAI's
KeepLargestConnectedComponent over the foreground union, per class, or both.

    python postprocess_dice.py OUT
"""
import glob
import sys

import numpy as np
import torch
from monai.transforms import KeepLargestConnectedComponent
from probe_round import mean_dice

MODES = {"union": [False], "perclass": [True], "union+per": [False, True]}


def postprocess(masks: np.ndarray, mode: str) -> np.ndarray:
    out = []
    for x in masks:
        t = torch.from_numpy(x[None].astype(np.int64))
        for independent in MODES.get(mode, []):
            t = KeepLargestConnectedComponent(applied_labels=[1, 2], independent=independent, connectivity=3)(t)
        out.append(np.asarray(t)[0])
    return np.stack(out)


for f in sorted(glob.glob(sys.argv[1] + "/probs_*.npz")):
    z = np.load(f)
    r = {split: {mode: round(mean_dice(postprocess(z[split].astype(np.float32).argmax(1), mode), z["y" + split]), 4)
                 for mode in ("none", *MODES)} for split in ("val", "test")}
    print(f.split("/")[-1], r)
