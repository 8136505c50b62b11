"""Does another validation threshold rule rescue hybrid's balanced accuracy on the shifted test split? (session 22)

For every round checkpoint of the studies: the threshold the loop chose (``current``: maximal validation balanced
accuracy, the one nearest 0.5 among ties), 0.5, and for a tolerance of 0.5 / 1 / 2 points of validation balanced
accuracy the near-optimal threshold nearest 0.5 (``near``) or the median of the near-optimal ones (``mid``);
balanced accuracy of each on the held-out training cases ("in") and the test split, mean over seeds.

    python threshold_rules.py DATA.npz MAX_POOL OUT.csv STUDIES_DIR
"""
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from eval_held_out import held_out_sets

from medwb.metrics import balanced_accuracy
from medwb.models import load_checkpoint, predict_proba

_, split_sets = held_out_sets(sys.argv[1], int(sys.argv[2]))
sets = {"val": split_sets["val"], "in": split_sets["in-dist"], "test": split_sets["test"]}

def rule(s: np.ndarray, y: np.ndarray, tol: float) -> tuple[float, float]:
    u = np.unique(s); cand = np.unique(np.concatenate([[0.5], (u[1:] + u[:-1]) / 2]))
    pos, neg = s[y == 1], s[y == 0]
    bal = ((pos[None] >= cand[:, None]).mean(1) + (neg[None] < cand[:, None]).mean(1)) / 2
    best = np.flatnonzero(bal >= bal.max() - tol - 1e-12)
    return float(cand[best[np.argmin(np.abs(cand[best] - 0.5))]]), float(np.median(cand[best]))

rows = []
for study in sorted(Path(sys.argv[4]).glob("*-seed*")):
    if study.name.startswith("full"): continue
    arm, seed = re.fullmatch(r"(.+)-seed(\d+)", study.name).groups()
    for cp in sorted((study / "models").glob("round_*.pt")):
        m, _ = load_checkpoint(cp)
        P = {k: predict_proba(m, X)[:, 1] for k, (X, y) in sets.items()}
        yv = sets["val"][1]
        ths = {"current": rule(P["val"], yv, 0)[0], "half": 0.5}
        for tol in (0.005, 0.01, 0.02):
            near, mid = rule(P["val"], yv, tol)
            ths[f"near{tol}"] = near; ths[f"mid{tol}"] = mid
        for name, t in ths.items():
            r = {"arm": arm, "seed": int(seed), "round": int(cp.stem[-3:]), "rule": name, "t": t}
            for k in ("in", "test"):
                r[k] = balanced_accuracy(sets[k][1], (P[k] >= t).astype(int))
            rows.append(r)
d = pd.DataFrame(rows); d.to_csv(sys.argv[3], index=False)
print(d.groupby(["rule", "arm", "round"])[["t", "in", "test"]].mean().round(3).unstack("round").to_string())
