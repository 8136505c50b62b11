"""Two processes registering cases in one study at once (issue 16: ``IntegrityError`` in 5 of 5 trials): both
succeed, every case is stored once. Real processes (spawn), started together on a barrier; on a plain and on an
encrypted (SQLCipher) study."""
from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

import pandas as pd

from medwb.store import Study


def cohort(n: int, start: int = 0) -> pd.DataFrame:
    return pd.DataFrame({"case_id": [f"case-{i:05d}" for i in range(start, start + n)],
                         "split": ["train"] * n, "source": [f"/data/img{i}.png" for i in range(start, start + n)],
                         "sha256": [f"{i:064x}" for i in range(start, start + n)], "label": [i % 2 for i in range(n)]})


def add_in_child(folder: str, start: int, barrier: mp.synchronize.Barrier, results: mp.Queue) -> None:
    study = Study.open(folder)
    try:
        barrier.wait(timeout=60)
        n = study.add_cases(cohort(3000, start))
        results.put(("ok", n))
    except Exception as e:  # reported to the parent, which fails the test with it
        results.put(("error", f"{type(e).__name__}: {e}"))
    finally:
        study.close()


def test_two_processes_add_the_same_cases_at_once(tmp_path: Path, study_encryption: str) -> None:
    ctx = mp.get_context("spawn")
    for trial in range(5):
        folder = tmp_path / f"s{trial}"
        Study.create(folder, dataset_path="/data", task="classification", classes=["a", "b"]).close()
        barrier, results = ctx.Barrier(2), ctx.Queue()
        # overlapping cohorts: 0..2999 and 1500..4499
        procs = [ctx.Process(target=add_in_child, args=(str(folder), start, barrier, results)) for start in (0, 1500)]
        for p in procs:
            p.start()
        outcome = [results.get(timeout=120) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert all(kind == "ok" for kind, _ in outcome), outcome
        assert sum(n for _, n in outcome) == 4500  # each case inserted by exactly one of them
        with Study.open(folder) as s:
            assert s.encrypted == (study_encryption == "encrypted")
            got = s.cases()
            assert len(got) == 4500 and got["case_id"].is_unique
            assert s.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
