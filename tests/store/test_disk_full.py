"""A disk that refuses writes (here: the kernel's file-size limit, RLIMIT_FSIZE, in a child process) loses no
label already stored, leaves no half-written file, and says what happened and what to do."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.store.test_store import CLASSES, pneumonia_cohort

from medwb.store import Study

CHILD = textwrap.dedent("""
    import json, resource, signal, sys
    from pathlib import Path
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # the write fails with EFBIG instead of killing the process
    folder, old_file = Path(sys.argv[1]), Path(sys.argv[2])
    limit = int(sys.argv[3])
    from medwb.atomic import atomic_write_bytes
    from medwb.errors import MedwbError
    from medwb.store import Study
    study = Study.open(folder)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    out = {}
    try:
        atomic_write_bytes(old_file, b"x" * (limit * 4))
    except MedwbError as e:
        out["file"] = str(e)
    try:
        for i in range(40):   # notes far larger than the limit: the write-ahead log cannot take them
            study.add_label(f"train_{i:05d}", value=0, annotator="ana", note="n" * (limit // 2))
    except MedwbError as e:
        out["label"] = str(e)
    print(json.dumps(out))
""")


def test_disk_full_names_the_problem_and_keeps_what_was_stored(tmp_path: Path, samples: Path) -> None:
    folder = tmp_path / "study"
    s = Study.create(folder, dataset_path=samples / "classification_2d" / "pneumoniamnist.npz",
                     task="classification", classes=CLASSES)
    s.add_cases(pneumonia_cohort(samples)[0])
    s.add_label("train_00000", value=1, annotator="ana")
    s.close()
    old = tmp_path / "report.json"
    old.write_text("previous")
    limit = max(p.stat().st_size for p in folder.glob("study.sqlite*")) + 200_000
    r = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(old), str(limit)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "report.json" in out["file"] and "disk is full" in out["file"] and "Fix:" in out["file"]
    assert old.read_text() == "previous"
    assert not list(tmp_path.glob(".report.json.*"))  # no temporary file left behind
    assert "could not be written" in out["label"] and "Fix: free space" in out["label"]
    # the study opens, and every label is either fully there or absent: the one stored before is intact
    with Study.open(folder) as again:
        labels = again.query("SELECT case_id, value, note FROM labels ORDER BY id")
    assert labels.iloc[0].tolist()[:2] == ["train_00000", 1]
    assert all(len(n) in (0, limit // 2) for n in labels["note"])  # whole labels only, never a truncated one
