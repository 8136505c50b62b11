"""Per-round test AUC / accuracy of the runs in this folder side by side (reads each RUN/curves.csv)."""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

here = Path(__file__).parent
runs = [a for a in sys.argv[1:]] or sorted(p.name for p in here.iterdir() if (p / "curves.csv").is_file())
frames = {r: pd.read_csv(here / r / "curves.csv") for r in runs}
for metric in ("auc", "accuracy"):
    print(f"test {metric} (1 seed; rows: strategy @ labels; full rows: every pool label)")
    keys = []
    for c in frames.values():
        keys += [tuple(k) for k in c[c["metric"] == metric][["strategy", "n_labeled"]].values.tolist()]
    keys = list(dict.fromkeys(keys))
    print(f"{'':<24}" + "".join(f"{r:>22}" for r in runs))
    for s, n in keys:
        vals = []
        for r in runs:
            c = frames[r]
            v = c[(c["metric"] == metric) & (c["strategy"] == s) & (c["n_labeled"] == n)]["value"]
            vals.append(f"{v.mean():>22.3f}" if len(v) else f"{'-':>22}")
        print(f"{s + ' @' + str(n):<24}" + "".join(vals))
    print()
