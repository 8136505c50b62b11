"""Session-21 probe (README.md here): a round's validation and test probabilities, for postprocess_dice.py.

    python save_probs.py HIPPOCAMPUS_DIR SEED LABELS OUT
"""
import sys
from pathlib import Path

import numpy as np
from probe_round import train_round

from medwb.models.train import predict_proba

data, seed, n, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4])
model, m, val, test = train_round(data, seed, n)
print(seed, n, m["test_dice"], flush=True)
np.savez_compressed(out / f"probs_s{seed}_n{n}.npz", val=predict_proba(model, val[0]).astype(np.float16), yval=val[1],
                    test=predict_proba(model, test[0]).astype(np.float16), ytest=test[1])
