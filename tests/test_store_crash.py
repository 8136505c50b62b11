"""Crash safety of the label store: a worker writing labels is SIGKILLed at random points, 24 times.

After every kill: ``PRAGMA integrity_check`` is ok, every label whose id the worker printed (printed only after
``Study.add_label`` returned, i.e. after COMMIT) is in the database with the value it wrote, and no write is half
there (every label has its label_history row, and each (case, annotator) has exactly one current label).
"""
from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.store import Study

TRIALS = 24

WORKER = r"""
import random, sys
from medwb.store import Study
folder, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
study = Study.open(folder)
ids = list(study.cases()["case_id"])
print("ready", flush=True)
while True:
    cid = rng.choice(ids)
    value = rng.randint(0, 1)
    annotator = rng.choice(["alice", "bob", "model:auto"])
    source = "auto" if annotator == "model:auto" else rng.choice(["human", "corrected"])
    lid = study.add_label(cid, value=value, annotator=annotator, source=source, seconds=rng.random() * 10,
                          note="crash-test")
    print(lid, cid, value, annotator, flush=True)
"""


@pytest.mark.slow
def test_sigkill_loses_no_committed_label(tmp_path: Path, samples: Path) -> None:
    with np.load(samples / "classification_2d" / "pneumoniamnist.npz") as z:
        labels = z["train_labels"][:50, 0]
    study = Study.create(tmp_path / "study", dataset_path="pneumoniamnist.npz", task="classification",
                         classes={0: "normal", 1: "pneumonia"})
    study.add_cases(pd.DataFrame({"case_id": [f"train_{i:05d}" for i in range(len(labels))], "split": "train",
                                  "label": pd.array(labels, dtype="Int64")}))
    study.close()
    rng = random.Random(0)
    committed: dict[int, tuple[str, int, str]] = {}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.monotonic()
    for trial in range(TRIALS):
        proc = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path / "study"), str(trial)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        first = proc.stdout.readline()
        assert first.strip() == "ready", proc.stderr.read()
        time.sleep(rng.uniform(0.02, 0.4))  # a random point in the write loop
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == -signal.SIGKILL, err
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 4:  # a line cut by the kill is not a report of a commit
                committed[int(parts[0])] = (parts[1], int(parts[2]), parts[3])

        con = sqlite3.connect(tmp_path / "study" / "study.sqlite")
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0]: (r[1], r[2], r[3]) for r in con.execute("SELECT id, case_id, value, annotator FROM labels")}
        missing = [i for i in committed if i not in rows]
        assert not missing, f"trial {trial}: committed labels lost: {missing[:5]}"
        assert all(rows[i] == committed[i] for i in committed), f"trial {trial}: a committed label changed"
        # no partial write: every label has its audit row, history and labels agree one to one
        hist = {r[0] for r in con.execute("SELECT label_id FROM label_history")}
        assert hist == set(rows), f"trial {trial}: label and label_history out of step"
        dup = con.execute("SELECT case_id, annotator, COUNT(*) FROM labels WHERE superseded = 0 "
                          "GROUP BY case_id, annotator HAVING COUNT(*) > 1").fetchall()
        assert not dup, f"trial {trial}: more than one current label per (case, annotator): {dup[:3]}"
        con.close()
    assert len(committed) > TRIALS  # the worker really was killed mid-stream, many times over
    study = Study.open(tmp_path / "study")  # and the study still opens and takes writes
    lid = study.add_label("train_00000", value=int(labels[0]), annotator="after-crash")
    assert study.labels().set_index("case_id").at["train_00000", "label_id"] == lid
    study.close()
    assert time.monotonic() - t0 < 90
