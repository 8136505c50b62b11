"""Re-run issue 16's adversarial probes and write their table with today's outcome.

docs/privacy.md's "Probes: before -> after" table names, per probe, what it did before, what it does now and the
test that reproduces it. This script reads that table, runs every named test with pytest, and writes
``benchmarks/privacy/probes.md``: the same rows plus the test outcome (passed / FAILED / not found) and its
time, the command, the date and the machine, so the table's "after" column is a measured claim, not prose.

    .venv/bin/python scripts/privacy_probes.py [--out benchmarks/privacy/probes.md]

Exit status 1 when any probe's test fails or cannot be found.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "privacy.md"
REF = re.compile(r"`((?:[\w./-]+/)?(?:test_\w+\.py))(?:::([\w\[\]-]+))?`|`(test_\w+)`")


def probe_rows(doc: Path = DOC) -> list[list[str]]:
    """The cells of every row of the probes table (header and rule excluded)."""
    text = doc.read_text(encoding="utf-8")
    table = text.split("## Probes: before → after", 1)[1]
    rows = []
    for line in table.splitlines():
        if line.startswith("| ") and not line.startswith("| probe |"):
            rows.append([c.strip() for c in line.strip().strip("|").split(" | ")])
        elif rows and not line.startswith("|"):
            break
    return rows


def test_ids(cell: str, previous: list[str]) -> list[str]:
    """pytest node ids named in a row's test cell: ``file.py::test`` (a bare file name is searched under tests/),
    a later bare ``test_x`` belongs to the last file named; "same test" repeats the previous row's."""
    if cell.strip().lower().startswith("same test"):
        return previous
    ids, last_file = [], None
    for m in REF.finditer(cell):
        file, name, bare = m.groups()
        if file:
            found = [file] if (ROOT / file).is_file() else [str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob(Path(file).name)]
            last_file = found[0] if found else file
            ids.append(f"{last_file}::{name}" if name else last_file)
        elif bare and last_file:
            ids.append(f"{last_file}::{bare}")
    return ids


def run(ids: list[str]) -> dict[str, tuple[str, float]]:
    """Outcome and seconds per node id (a file id: the sum of its tests), from one pytest run's JUnit XML."""
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}",
                        *sorted(set(ids))], cwd=ROOT, check=False, capture_output=True, text=True)
        cases = ET.parse(xml).getroot().iter("testcase") if xml.is_file() else []
        out: dict[str, tuple[str, float]] = {}
        for c in cases:
            file = c.get("classname", "").replace(".", "/") + ".py"
            name = c.get("name", "").split("[")[0]
            failed = any(ch.tag in ("failure", "error") for ch in c)
            skipped = any(ch.tag == "skipped" for ch in c)
            status = "FAILED" if failed else "skipped" if skipped else "passed"
            for key in (f"{file}::{name}", file):
                prev = out.get(key)
                worst = status if prev is None or status == "FAILED" or prev[0] == "passed" else prev[0]
                out[key] = (worst, (prev[1] if prev else 0.0) + float(c.get("time", 0)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "privacy" / "probes.md"))
    a = ap.parse_args()
    rows, previous, per_row = probe_rows(), [], []
    for cells in rows:
        previous = test_ids(cells[-1], previous)
        per_row.append(previous)
    results = run([i for ids in per_row for i in ids])
    lines = ["# Issue 16's probes, re-run", "",
             f"Command: `.venv/bin/python scripts/privacy_probes.py` on {dt.date.today()} "
             f"({platform.system()} {platform.machine()}, {os.cpu_count()} cores). Rows from docs/privacy.md's "
             "\"Probes: before → after\" table; outcome = the named tests' pytest result (worst of them).", "",
             "| probe | after | test | outcome | seconds |", "|---|---|---|---|---|"]
    bad = 0
    for cells, ids in zip(rows, per_row):
        got = [results.get(i, ("not found", 0.0)) for i in ids] or [("no test named", 0.0)]
        status = next((s for s, _ in got if s in ("FAILED", "not found", "no test named")), got[0][0])
        bad += status in ("FAILED", "not found", "no test named")
        lines.append(f"| {cells[0]} | {cells[2]} | {', '.join(f'`{i}`' for i in ids)} | {status} | "
                     f"{sum(t for _, t in got):.1f} |")
    lines += ["", f"{len(rows)} probes, {len(rows) - bad} reproduced by passing tests, {bad} not."]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines[-1:]))
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
