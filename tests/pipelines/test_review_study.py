"""``medwb review --rounds``: the review app's command also runs the rounds (retrain when the readers decided a
round, open the next), so no notebook cell is needed (issue 14, item 8). Readers decide through the store from
other threads, as their pages do."""
from __future__ import annotations

import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from medwb.errors import ConfigError


def decide_as_readers(folder: Path, truth, stop: threading.Event) -> threading.Thread:
    """A reader's page in a thread: claim a case, answer the truth, until ``stop``."""
    def run() -> None:
        from medwb.store import Study

        with Study.open(folder) as s:
            while not stop.is_set():
                c = s.claim_case("ana")
                if c is None:
                    stop.wait(0.05)
                    continue
                rnd = int(s.conn.execute("SELECT round FROM leases WHERE case_id = ? AND reader = ?",
                                         (c, "ana")).fetchone()[0])
                s.add_label(c, value=int(truth[c]), annotator="ana", round=rnd)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def port_of(out: str) -> int:
    return int(re.search(r"http://127\.0\.0\.1:(\d+)/", out).group(1))


def port_closes(port: int, within: float = 20.0) -> bool:
    """Whether nothing listens on ``port`` any more, within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return True
        time.sleep(0.5)
    return False


def test_a_killed_review_command_leaves_no_app_serving(samples: Path, tmp_path: Path) -> None:
    from _fixtures import tiny_pneumonia_loop

    study, _, loop = tiny_pneumonia_loop(samples, tmp_path)
    loop.propose()
    study.close()
    argv = [sys.executable, "-m", "medwb.cli", "review", str(study.folder), "--readers", "ana"]
    proc = subprocess.Popen(argv, env={**os.environ, "MEDWB_OFFLINE": "1"}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = ""
    while "ana: http" not in out:
        line = proc.stdout.readline()
        assert line, out
        out += line
    port = port_of(out)
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) == 0  # the app serves
    proc.kill()  # SIGKILL: no cleanup runs in the command; the kernel stops its server
    proc.wait(timeout=30)
    assert port_closes(port)


def test_loop_for_study_reads_the_study_and_its_arm(samples: Path, tmp_path: Path) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.pipelines.review_study import RoundProgress, loop_for_study

    study, ds, _ = tiny_pneumonia_loop(samples, tmp_path)
    loop = loop_for_study(study, arm="entropy:scratch", batch_size=3, progress=False)
    assert (loop.strategy, loop.batch_size, loop.pretrain, loop.semi) == ("entropy", 3, False, False)
    assert loop.ds.path == ds.path
    medwb = loop_for_study(study, arm="hybrid", progress=False)
    assert medwb.pretrain is True
    with pytest.raises(ConfigError, match="--data"):
        loop_for_study(study, data=tmp_path / "moved.npz", progress=False)
    with pytest.raises(ConfigError, match="2D segmentation"):  # medwb review --prelabel ellipse on a classifier
        loop_for_study(study, prelabel="ellipse", progress=False)
    lines: list[str] = []
    progress = RoundProgress(lines.append)
    progress(study)  # no open round: nothing to say
    loop.propose()
    progress(study)
    progress(study)  # unchanged: said once
    assert lines == ["round 1: 0 of 3 cases decided"]
    study.close()


def test_review_command_runs_the_rounds_as_readers_decide(samples: Path, tmp_path: Path) -> None:
    from _fixtures import tiny_pneumonia_loop

    from medwb.store import Study

    study, ds, _ = tiny_pneumonia_loop(samples, tmp_path)
    folder = study.folder
    study.close()
    truth = ds.cohort.set_index("case_id")["label"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MEDWB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "medwb.cli", "review", str(folder), "--readers", "ana", "--rounds", "2",
            "--strategy", "entropy:scratch", "--batch-size", "4", "--poll-seconds", "0.2", "--quiet"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(x) for x in proc.stdout], daemon=True).start()
    stop = threading.Event()
    reader = decide_as_readers(folder, truth, stop)
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 400
        while not any("all 2 rounds done" in s for s in seen):
            assert time.monotonic() < deadline and proc.poll() is None, "".join(seen)[-3000:]
            try:
                seen.append(lines.get(timeout=1))
            except queue.Empty:
                pass
    finally:
        stop.set()
        proc.terminate()
        proc.wait(timeout=60)
        reader.join(timeout=30)
    out = "".join(seen)
    assert "ana: http://127.0.0.1:" in out  # the app served the reader's link while the rounds ran
    assert proc.returncode == 143  # SIGTERM leaves through the command's cleanup ...
    assert port_closes(port_of(out))  # ... which stopped the app's server
    assert "round 1 closed: 4 labels, model retrained" in out and "round 2 closed: 8 labels" in out
    with Study.open(folder) as s:
        assert s.last_finished_round() == 2
        lab = s.labels()
        assert len(lab) == 8 and set(lab["annotator"]) == {"ana"} and set(lab["round"]) == {1, 2}
        assert all(int(v) == int(truth[c]) for c, v in zip(lab["case_id"], lab["value"]))
