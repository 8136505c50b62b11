"""The study store at scale (issue 15 item 4): SQLite with N cases, timed store calls against the issue's targets.

    .venv/bin/python benchmarks/store/bench_store.py --n 1000000

Builds a plain study in a temp folder with N synthetic cases (case id, split, sha256 and a small meta dict: path,
label, site), then a labelled history shaped like a running study: 1% of the cases labelled by one reader, a tenth
of those read a second time (some disagree), one adjudication. Then the store side of ``loop.propose()`` (open the
round with a 32-case selection, keep the autolabel stats, save the proposals, read labels / agreed labels /
rounds / models / the round's status), saving one label (median of 50), a reader's claim, and the report's
queries. Model training and scoring are not timed: only the store. Prints a table and writes results.md (--out).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from medwb.store import Study

BATCH = 32


def cohort(n: int, seed: int = 0) -> pd.DataFrame:
    """N synthetic cases as ``Study.add_cases`` takes them: case_id, split, sha256 and meta columns."""
    rng = np.random.default_rng(seed)
    ids = np.char.add("case_", np.char.zfill(np.arange(n).astype(str), 7))
    return pd.DataFrame({"case_id": ids, "split": np.where(rng.random(n) < 0.9, "train", "test"),
                         "sha256": [f"{i:064x}" for i in range(n)], "path": np.char.add(ids, ".png"),
                         "label": rng.integers(0, 2, n), "site": rng.choice(["A", "B", "C"], n)})


def unlabelled(study: Study, pool: list[str]) -> list[str]:
    """The pool ids without an agreed label, in pool order: what ``ActiveLearningLoop._select`` computes."""
    done = set(study.agreed_labels()["case_id"].astype(str))
    return [c for c in pool if c not in done]


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def run(n: int) -> tuple[list[tuple[str, float, float | None, str]], dict[str, Any]]:
    rows: list[tuple[str, float, float | None, str]] = []
    info: dict[str, Any] = {}

    def row(name: str, secs: float, target: float | None, note: str = "") -> None:
        rows.append((name, secs, target, note))
        print(f"  {name}: {secs:.4f} s {note}", flush=True)

    with tempfile.TemporaryDirectory(prefix="medwb-bench-store-") as tmp:
        study = Study.create(Path(tmp) / "study", dataset_path=tmp, task="classification",
                             classes={0: "normal", 1: "pneumonia"}, key=False)
        co = cohort(n)
        secs, added = timed(lambda: study.add_cases(co))
        row(f"add_cases ({n:,} new cases, one call)", secs, 60.0, f"{added:,} added")
        secs, _ = timed(lambda: study.add_cases(co))
        row("add_cases again (all known: no-op)", secs, None)
        one = co.iloc[:1].assign(case_id="case_extra", sha256="f" * 64)
        secs, _ = timed(lambda: study.add_cases(one))
        row("add_cases (one new case)", secs, None)
        secs, _ = timed(lambda: study.case_ids())
        row("case_ids() (the loop's known cases)", secs, None)
        train = co.loc[co["split"] == "train", "case_id"].tolist()
        secs, _ = timed(lambda: study.save_splits({"train": train, "test": co.loc[co["split"] == "test", "case_id"].tolist()}))
        row(f"save_splits ({len(train):,} train)", secs, None)

        # a labelled history: 1% read by alice, a tenth of those by bob too (every 4th of them disagreeing)
        n_lab = max(100, n // 100)
        lab_ids = train[:n_lab]
        recs = [{"case_id": c, "value": i % 2, "annotator": "alice", "seconds": 3.0, "round": 0}
                for i, c in enumerate(lab_ids)]
        recs += [{"case_id": c, "value": (i % 2) ^ (i % 4 == 0), "annotator": "bob", "round": 0}
                 for i, c in enumerate(lab_ids[: n_lab // 10])]
        secs, _ = timed(lambda: study.add_labels(recs))
        row(f"add_labels ({len(recs):,} labels, one transaction)", secs, None)
        study.adjudicate(lab_ids[0], value=1, by="senior")
        info["labels"] = len(recs) + 1

        # the store side of loop.propose(): what is labelled, what is open, open a round, save its proposals
        t_prop = 0.0
        secs, _ = timed(lambda: study.rounds())
        t_prop += secs
        row("propose: rounds() (is a round open?)", secs, None)
        secs, _ = timed(lambda: study.last_finished_round())
        t_prop += secs
        row("propose: last_finished_round()", secs, None)
        secs, agreed = timed(lambda: study.agreed_labels())
        t_prop += secs
        row(f"propose: agreed_labels() ({len(agreed):,} rows: the loop's labeled())", secs, None)
        secs, unl = timed(lambda: unlabelled(study, train))
        t_prop += secs
        row(f"propose: unlabelled pool ids (agreed_labels + set, as loop._select; {len(unl):,} of {len(train):,})", secs, None)
        secs, done = timed(lambda: study.labelled_ids(train))
        row(f"labelled_ids(pool) ({len(done):,})", secs, None)
        secs, _ = timed(lambda: study.models())
        t_prop += secs
        row("propose: models() (the current model)", secs, None)
        sel = train[n_lab: n_lab + BATCH]  # never labelled (the loop's pool also holds contested cases)
        secs, _ = timed(lambda: study.start_round(1, "uncertainty", {"k": BATCH}, sel, np.linspace(1, 0, BATCH)))
        t_prop += secs
        row(f"propose: start_round ({BATCH} selected)", secs, None)
        secs, lab_now = timed(lambda: study.labels(latest=True))
        t_prop += secs
        row(f"propose: labels(latest=True) ({len(lab_now):,} rows)", secs, None)
        secs, _ = timed(lambda: study.save_round_autolabel(1, {"n_auto": 0}))
        t_prop += secs
        row("propose: save_round_autolabel", secs, None)
        secs, _ = timed(lambda: study.save_proposals(1, sel, [0] * BATCH, [0.9] * BATCH, None))
        t_prop += secs
        row(f"propose: save_proposals ({BATCH} cases)", secs, None)
        secs, st = timed(lambda: study.case_status(1))
        t_prop += secs
        row(f"propose: case_status(round 1) ({len(st)} rows)", secs, None)
        row("propose() bookkeeping, total of the rows marked propose", t_prop, 2.0)

        # saving one label (a reader's decision): median of 50 single-label transactions
        times = []
        for i, c in enumerate(sel[:25] + lab_ids[1:26]):
            s, _ = timed(lambda c=c, i=i: study.add_label(c, value=i % 2, annotator="carol", seconds=2.0, round=1))
            times.append(s)
        row("add_label, one label (median of 50)", statistics.median(times), 0.010,
            f"max {max(times) * 1000:.1f} ms")
        secs, _ = timed(lambda: study.agreed_labels())
        row("agreed_labels()", secs, None)
        secs, got = timed(lambda: study.claim_case("dave"))
        row(f"claim_case (a reader's next case: {got})", secs, None)

        # the report's queries
        secs, cs = timed(lambda: study.cases())
        row(f"report: cases() ({len(cs):,} rows)", secs, None)
        secs, _ = timed(lambda: study.labels(latest=False))
        row("report: labels(latest=False)", secs, None)
        secs, _ = timed(lambda: study.label_history())
        row("report: label_history()", secs, None)
        secs, _ = timed(lambda: study.metrics_curve())
        row("report: metrics_curve()", secs, None)
        secs, _ = timed(lambda: study.verdicts())
        row("report: verdicts()", secs, None)
        info["db_mb"] = sum(p.stat().st_size for p in study.layout.db_files() if p.exists()) / 1e6
        study.close()
    return rows, info


def table(rows: list[tuple[str, float, float | None, str]]) -> str:
    out = ["| step | seconds | target | met? | note |", "|---|---|---|---|---|"]
    for name, secs, target, note in rows:
        met = "" if target is None else ("yes" if secs <= target else "**no**")
        tgt = "" if target is None else f"<= {target:g} s"
        out.append(f"| {name} | {secs:.4f} | {tgt} | {met} | {note} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000, help="cases in the study")
    ap.add_argument("--out", type=Path, default=HERE / "results.md", help="where the table goes ('-': nowhere)")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows, info = run(args.n)
    load1 = os.getloadavg()[0]
    text = table(rows)
    print(text)
    if str(args.out) != "-":
        cmd = "python benchmarks/store/bench_store.py" + (f" --n {args.n}" if args.n != 1_000_000 else "")
        args.out.write_text(
            "# The study store at scale (medwb.store, issue 15 item 4)\n\n"
            f"Command: `{cmd}`\n\n"
            f"Study: {args.n:,} cases (synthetic ids, split, sha256, meta: path, label, site), {info['labels']:,} "
            f"labels (1% of the cases by one reader, a tenth of those double-read, one adjudication), database "
            f"{info['db_mb']:.0f} MB, plain SQLite (WAL, synchronous=FULL).\n\n"
            f"Machine: {os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
            f"SQLite {__import__('sqlite3').sqlite_version}; **shared with other jobs while this ran** (1-minute load "
            f"average {load0:.1f} before, {load1:.1f} after), so timings carry that noise.\n\n" + text + "\n")


if __name__ == "__main__":
    main()
