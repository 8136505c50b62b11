"""The resumable results file of the fixed-label-set benchmarks (bench_recipe.py, bench_seg_semi.py).

One row per (recipe, label count, seed). Rows already in the file are skipped on a rerun, and each new row is
appended after re-reading the file, because another run on the same OUT (another recipe, side by side) may have
added rows since this one started, and rewriting its own copy would drop them.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def read_results(csv: Path) -> pd.DataFrame:
    """The rows written so far (an empty frame with the key columns when there are none)."""
    return pd.read_csv(csv) if csv.is_file() else pd.DataFrame(columns=["recipe", "labels", "seed"])


def has_result(done: pd.DataFrame, recipe: str, labels: int, seed: int) -> bool:
    """Whether this run is already in the file (so a rerun skips it)."""
    return bool(((done["recipe"] == recipe) & (done["labels"] == labels) & (done["seed"] == seed)).any())


def append_result(csv: Path, row: dict) -> pd.DataFrame:
    """Append one row to the file as it is now on disk, and return the whole file."""
    done = pd.concat([read_results(csv), pd.DataFrame([row])], ignore_index=True)
    done.to_csv(csv, index=False)
    return done
