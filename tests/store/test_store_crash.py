"""Crash safety of the label store: a worker writing labels is SIGKILLed at random points, 24 times.

After every kill: ``PRAGMA integrity_check`` is ok, every label whose id the worker printed (printed only after
``Study.add_label`` returned, i.e. after COMMIT) is in the database with the value it wrote, and no write is half
there (every label has its label_history row, each (case, annotator) has exactly one current label, and every
``add_labels`` batch of 10 is in the database whole or not at all). On a plain and on an encrypted (SQLCipher)
study: the worker inherits the configured key.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medwb.store import Study, StudyLayout, cipher

TRIALS = 24
BATCH = 10

WORKER = f"BATCH = {BATCH}\n" + r"""
import random, sys
from medwb.store import Study, StudyLayout, cipher
folder, seed = sys.argv[1], int(sys.argv[2])
rng = random.Random(seed)
study = Study.open(folder)
ids = list(study.cases()["case_id"])
print("ready", flush=True)
k = 0
while True:
    k += 1
    recs = []
    n = 1 if rng.random() < 0.5 else BATCH
    for _ in range(n):  # single labels and all-or-nothing batches
        annotator = rng.choice(["alice", "bob", "model:auto"])
        recs.append({"case_id": rng.choice(ids), "value": rng.randint(0, 1), "annotator": annotator,
                     "source": "auto" if annotator == "model:auto" else rng.choice(["human", "corrected"]),
                     "seconds": rng.random() * 10, "note": f"w{seed}-{k}-{len(recs)}of{n}"})
    if len(recs) == 1:
        lids = [study.add_label(**recs[0])]
    else:
        lids = study.add_labels(recs)
    for lid, r in zip(lids, recs):
        print(lid, r["case_id"], r["value"], r["annotator"], flush=True)
"""


@pytest.mark.slow
def test_sigkill_loses_no_committed_label(tmp_path: Path, samples: Path, study_encryption: str) -> None:
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

        lay = StudyLayout(tmp_path / "study")
        con = cipher.connect(lay.db, cipher.study_key(lay))  # the store's one way in (a key when encrypted)
        assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = {r[0]: (r[1], r[2], r[3]) for r in con.execute("SELECT id, case_id, value, annotator FROM labels")}
        missing = [i for i in committed if i not in rows]
        assert not missing, f"trial {trial}: committed labels lost: {missing[:5]}"
        assert all(rows[i] == committed[i] for i in committed), f"trial {trial}: a committed label changed"
        # no partial write: every label has its audit row, history and labels agree one to one
        hist = {r[0] for r in con.execute("SELECT label_id FROM label_history")}
        assert hist == set(rows), f"trial {trial}: label and label_history out of step"
        # batches are all or nothing: each write w<seed>-<k> has all n of its rows or none
        groups: dict[str, list[int]] = {}
        for (note,) in con.execute("SELECT note FROM labels WHERE note LIKE 'w%'"):
            write, rest = note.rsplit("-", 1)
            groups.setdefault(write, []).append(int(rest.split("of")[1]))
        partial = {w: (len(v), v[0]) for w, v in groups.items() if len(v) != v[0]}
        assert not partial, f"trial {trial}: partially written batches {list(partial.items())[:3]}"
        n_batches = sum(v[0] > 1 for v in groups.values())
        dup = con.execute("SELECT case_id, annotator, COUNT(*) FROM labels WHERE superseded = 0 "
                          "GROUP BY case_id, annotator HAVING COUNT(*) > 1").fetchall()
        assert not dup, f"trial {trial}: more than one current label per (case, annotator): {dup[:3]}"
        con.close()
    assert len(committed) > TRIALS  # the worker really was killed mid-stream, many times over
    assert n_batches > TRIALS  # and batches were among the writes
    study = Study.open(tmp_path / "study")  # and the study still opens and takes writes
    assert study.encrypted == (study_encryption == "encrypted")
    lid = study.add_label("train_00000", value=int(labels[0]), annotator="after-crash")
    assert study.labels().set_index("case_id").at["train_00000", "label_id"] == lid
    study.close()
    assert time.monotonic() - t0 < 90
