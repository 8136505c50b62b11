"""Are two ``medwb demo`` output folders the same study?  (issue 11: the restructure changes no behaviour)

Compares every CSV the demo writes (simulation curves/summary/auto-label rows, the validation report's
``tables/*.csv`` and the explanation checks) cell by cell, after dropping the columns that hold wall-clock
timings. Prints one line per file and exits 1 when any file differs or is missing on one side.

    python benchmarks/restructure/compare_outputs.py BEFORE_DIR AFTER_DIR
"""
from __future__ import annotations

import io
import sys
from pathlib import Path

import pandas as pd

#: columns measured with a clock (they differ between any two runs of the same code).
TIMING_COLUMNS = {"train_seconds", "seconds", "total_s"}

PATTERNS = ("simulation/curves.csv", "simulation/summary.csv", "simulation/autolabel.csv",
            "validation/tables/*.csv", "simulation/studies/*/exports/explain/checks.csv")


def csv_files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for pat in PATTERNS for p in root.glob(pat)}


def without_timing(path: Path) -> bytes:
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df = df.drop(columns=[c for c in df.columns if c in TIMING_COLUMNS])
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue().encode()


def compare(before: Path, after: Path) -> list[str]:
    """Names of the files that differ (or exist on one side only); prints a line per file."""
    a, b = csv_files(before), csv_files(after)
    bad = []
    for rel in sorted(a | b):
        if rel not in a or rel not in b:
            print(f"MISSING  {rel} (only in {'after' if rel in b else 'before'})")
            bad.append(rel)
            continue
        same = without_timing(before / rel) == without_timing(after / rel)
        print(f"{'same    ' if same else 'DIFFERS '} {rel}")
        if not same:
            bad.append(rel)
    return bad


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    bad = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    print(f"\n{len(bad)} file(s) differ" if bad else "\nidentical except timing columns")
    sys.exit(1 if bad else 0)
