"""Labels to 98% of full per class count: the committed class sweep (hybrid, random + scratch) beside the same
sweep's hybrid arm with ``--self-train``, every arm measured against the same all-labels bar.

The two sweeps trained their own all-labels references (seed 0); they differ by a few test cases (e.g. 2 classes:
accuracy 0.991 and 0.996), so each arm's labels-to-98% is given against both bars ("bar: committed" and "bar:
self-train run"), with :func:`medwb.al.curves.summarize`, the function that wrote both sweeps' tables.

    python benchmarks/active_learning/bloodmnist_classes_self_training/compare.py \
        benchmarks/active_learning/bloodmnist_classes SWEEP_WITH_SELF_TRAIN > OUT.txt
"""
from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from medwb.al.curves import REFERENCES, summarize

METRICS = ("auc", "accuracy", "balanced_accuracy")


def arms(committed: Path, self_train: Path, k: int, bar_from: Path) -> pd.DataFrame:
    old = pd.read_csv(committed / f"classes_{k}" / "curves.csv")
    new = pd.read_csv(self_train / f"classes_{k}" / "curves.csv")
    new_arm = new[~new["strategy"].isin(REFERENCES)].assign(strategy=lambda d: d["strategy"] + "+self-train")
    refs = (old if bar_from == committed else new)
    refs = refs[refs["strategy"].isin(REFERENCES)]
    merged = pd.concat([refs, old[~old["strategy"].isin(REFERENCES)], new_arm], ignore_index=True)
    return summarize(merged, 0.1)


def main() -> None:
    committed, self_train = Path(sys.argv[1]), Path(sys.argv[2])
    counts = sorted(int(p.parent.name.split("_")[1]) for p in self_train.glob("classes_*/curves.csv"))
    rows = []
    for k in counts:
        for bar_name, bar in (("committed", committed), ("self-train run", self_train)):
            s = arms(committed, self_train, k, bar)
            for r in s[s["metric"].isin(METRICS)].itertuples(index=False):
                rows.append({"classes": k, "bar": bar_name, "metric": r.metric, "arm": r.strategy,
                             "full": round(r.full_value, 4), "at 10%": f"{r.value_at_budget:.3f}±{r.std_at_budget:.3f}",
                             "share": round(r.share_of_full, 3),
                             "labels to 98%": "> 100" if r.labels_to_98pct != r.labels_to_98pct
                             else round(r.labels_to_98pct)})
    table = pd.DataFrame(rows)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main()
