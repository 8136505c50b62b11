"""Round-level crash safety: SIGKILL a running active-learning loop at >= 20 random points, then resume.

A "zygote" subprocess imports torch/MONAI/medwb once and forks one worker per trial (importing torch takes
seconds; forking takes milliseconds), so 20+ real kills fit in CI. Each worker opens the study, runs the loop
on a tiny real PneumoniaMNIST subset (1 training epoch) and logs, after each call returns, the round it works
on and every label it saved. The test kills the worker with SIGKILL after a random delay and checks:

* ``PRAGMA integrity_check`` is ``ok``;
* every label the worker reported saved is in the store (none lost);
* the next worker resumes at the right round (the open round, else the one after the last finished) and asks
  only for that round's cases that have no label yet;
* finally a worker runs to the end: every round finished, one model per round, each selected case labelled
  exactly once, no case selected twice.

Run on a plain and on an encrypted study (a configured key, inherited by the zygote: SQLCipher database,
encrypted checkpoints that the resumed loop loads back).
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _fixtures import PNEUMONIA, tiny_pneumonia_npz

ROUNDS, BATCH, POOL = 3, 4, 40  # 3 rounds: kills still land in every phase (propose, label, train, complete) and resume across rounds


# ------------------------------------------------------------------------------------------ worker side
def _zygote(data: str, study_root: str) -> None:
    """Import everything once, then fork a worker per 'run STUDY LOG' line read from stdin."""
    import tqdm.std

    # tqdm guards every bar (disabled ones too) with a multiprocessing RLock shared by all forks: a worker
    # SIGKILLed inside it leaves it held forever and the next fork hangs in tqdm.__new__ (seen in a CI run).
    # Thread locks only (per process) and no monitor thread, so a kill cannot block the workers after it.
    tqdm.std.TqdmDefaultWriteLock.mp_lock = None
    tqdm.std.tqdm.monitor_interval = 0
    import torch

    import medwb.al.acquire  # noqa: F401 - imported once here, inherited by every fork
    import medwb.al.loop  # noqa: F401
    import medwb.models.uncertainty  # noqa: F401
    from medwb.data import open_dataset
    from medwb.store import Study

    torch.set_num_threads(1)
    ds = open_dataset(data, progress=False)
    # Warm-up: one complete run in this process, so every lazy import and first-call cost is paid once and
    # inherited by the forks; its duration tells the test over which span to spread the kills.
    warm = Path(study_root) / "warmup"
    Study.create(warm, dataset_path=data, task=ds.task, classes=ds.classes).close()
    _worker(ds, data, str(warm), str(Path(study_root) / "warmup.log"))
    stamps = [float(ln.rsplit("t=", 1)[1]) for ln in (Path(study_root) / "warmup.log").read_text().splitlines()
              if ln.startswith(("ROUND", "DONE"))]
    steady = (stamps[-1] - stamps[1]) / (len(stamps) - 2)  # seconds per round once everything is imported
    print(f"ready {steady * ROUNDS:.3f}", flush=True)
    for line in sys.stdin:
        cmd, study_dir, log = line.split()
        if cmd != "run":
            break
        if not (Path(study_dir) / "study.sqlite").exists():  # created here, never under a kill
            Study.create(study_dir, dataset_path=data, task=ds.task, classes=ds.classes).close()
        pid = os.fork()
        if pid == 0:  # worker
            code = 0
            try:
                _worker(ds, data, study_dir, log)
            except BaseException as e:  # noqa: BLE001 - report, then exit non-zero
                with open(log, "a") as f:
                    f.write(f"ERROR {type(e).__name__}: {e}\n")
                code = 1
            os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {status}", flush=True)


def _worker(ds, data: str, study_dir: str, log: str) -> None:
    from medwb.al.loop import ActiveLearningLoop
    from medwb.al.oracle import simulated_oracle
    from medwb.models import TrainConfig
    from medwb.store import Study

    f = open(log, "a", buffering=1)  # line-buffered: a written line survives the kill (page cache)
    f.write(f"START t={time.time():.3f}\n")

    class LoggingLoop(ActiveLearningLoop):
        def propose(self):  # type: ignore[override]
            batch = super().propose()
            f.write(f"ROUND {self.round} {json.dumps(list(batch['case_id']), separators=(',', ':'))} t={time.time():.3f}\n")
            return batch

        def save_label(self, case_id, answer):  # type: ignore[override]
            lid = super().save_label(case_id, answer)
            f.write(f"SAVED {case_id} {lid} t={time.time():.3f}\n")
            return lid

    study = Study.open(study_dir)
    truth = simulated_oracle(ds)

    def slow_oracle(case_id, prelabel):  # an annotator takes time: widens the label-saving window
        time.sleep(0.03)
        return truth(case_id, prelabel)

    loop = LoggingLoop(study, ds, strategy="entropy", batch_size=BATCH, seed=0, mc_passes=4, progress=False,
                       train_config=TrainConfig(epochs=1, min_epochs=1, batch_size=8, seed=0), pretrain=False, semi=False)
    loop.run(ROUNDS, slow_oracle)
    f.write(f"DONE t={time.time():.3f}\n")
    f.close()
    study.close()


# ------------------------------------------------------------------------------------------ test side
def _db_state(db: Path) -> dict:
    from medwb.store import StudyLayout, cipher

    lay = StudyLayout(db.parent)
    con = cipher.connect(db, cipher.study_key(lay), uri="mode=ro")  # the store's one way in
    try:
        integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
        rounds = con.execute("SELECT number, status, selected_ids FROM rounds ORDER BY number").fetchall()
        labels = con.execute("SELECT id, case_id, round FROM labels").fetchall()
        models = con.execute("SELECT round, checkpoint_path FROM models").fetchall()
    finally:
        con.close()
    return {"integrity": integrity, "rounds": [(n, s, json.loads(sel)) for n, s, sel in rounds],
            "labels": labels, "models": models}


def _expected(state: dict) -> tuple[int, list[str] | None]:
    """(round the next worker must work on, its cases still to label or None when not selected yet)."""
    open_ = [r for r in state["rounds"] if r[1] != "finished"]
    if open_:
        n, _, sel = open_[-1]
        done = {c for _, c, _ in state["labels"]}  # selected cases were unlabelled when selected
        return n, [c for c in sel if c not in done]
    finished = [r[0] for r in state["rounds"] if r[1] == "finished"]
    return (max(finished) if finished else 0) + 1, None


@pytest.mark.slow
def test_sigkill_rounds_resume(samples: Path, tmp_path: Path, study_encryption: str) -> None:
    data = tiny_pneumonia_npz(samples / PNEUMONIA, tmp_path / "tiny_pneumonia.npz", n_train=POOL, n_val=16, n_test=16)
    tests_dir = str(Path(__file__).resolve().parents[1])  # the zygote imports _fixtures like pytest does
    env = dict(os.environ, OMP_NUM_THREADS="1", MEDWB_CACHE=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join(filter(None, [tests_dir, os.environ.get("PYTHONPATH")])))
    zyg = subprocess.Popen([sys.executable, __file__, "zygote", str(data), str(tmp_path)], stdin=subprocess.PIPE,
                           stdout=subprocess.PIPE, text=True, env=env, cwd=str(Path(__file__).resolve().parents[2]))
    rng = random.Random(20261126)
    studies = [tmp_path / "study0"]
    kills = resumed_checked = 0
    try:
        ready, full_run = zyg.stdout.readline().split()
        assert ready == "ready"
        span = 1.2 * float(full_run)  # a worker forked after the warm-up runs the whole study in ~full_run s

        def run(study: Path, log: Path, kill_after: float | None) -> int:
            zyg.stdin.write(f"run {study} {log}\n")
            zyg.stdin.flush()
            pid = int(zyg.stdout.readline().split()[1])
            if kill_after is not None:
                time.sleep(kill_after)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return int(zyg.stdout.readline().split()[1])

        trial = 0
        while kills < 22:
            study = studies[-1]
            db = study / "study.sqlite"
            before = _db_state(db) if db.exists() else {"rounds": [], "labels": [], "models": []}
            log = tmp_path / f"log{trial}.txt"
            status = run(study, log, kill_after=rng.uniform(0.01, span))
            trial += 1
            lines = log.read_text().splitlines() if log.exists() else []
            assert not any(ln.startswith("ERROR") for ln in lines), lines
            if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
                kills += 1
            if not db.exists():
                continue  # killed before the study was created
            after = _db_state(db)
            assert after["integrity"] == "ok"
            saved = {int(ln.split()[2]) for ln in lines if ln.startswith("SAVED")}
            stored = {lid for lid, _, _ in after["labels"]}
            assert saved <= stored, f"labels reported saved but missing after kill: {saved - stored}"
            first_round = next((ln for ln in lines if ln.startswith("ROUND")), None)
            if first_round is not None and before["rounds"]:
                n_exp, todo_exp = _expected(before)
                _, n_got, todo_got, _ = first_round.split(" ", 3)
                assert int(n_got) == n_exp, f"resumed at round {n_got}, expected {n_exp}"
                if todo_exp is not None:
                    assert json.loads(todo_got) == todo_exp
                resumed_checked += 1
            if any(ln.startswith("DONE") for ln in lines):
                studies.append(tmp_path / f"study{len(studies)}")
        # run the last study to the end without a kill
        status = run(studies[-1], tmp_path / "final.txt", kill_after=None)
        assert status == 0, (tmp_path / "final.txt").read_text()
    finally:
        zyg.stdin.close()
        zyg.wait(timeout=60)
    assert kills >= 20 and resumed_checked >= 10, (kills, resumed_checked)
    for study in studies:
        st = _db_state(study / "study.sqlite")
        assert st["integrity"] == "ok"
        assert [r[:2] for r in st["rounds"]] == [(n, "finished") for n in range(1, ROUNDS + 1)]
        assert sorted(r for r, _ in st["models"]) == list(range(1, ROUNDS + 1))
        assert all((study / p).is_file() or Path(p).is_file() for _, p in st["models"])
        sealed = [(study / p).read_bytes().startswith(b"MEDWBENC1") for _, p in st["models"]]
        assert sealed == [study_encryption == "encrypted"] * ROUNDS  # checkpoints encrypted at write time
        selected = [c for _, _, sel in st["rounds"] for c in sel]
        assert len(selected) == len(set(selected)) == ROUNDS * BATCH
        for n, _, sel in st["rounds"]:
            in_round = sorted(c for _, c, r in st["labels"] if r == n)
            assert in_round == sorted(sel), f"round {n}: labels {in_round} vs selected {sel}"


if __name__ == "__main__" and len(sys.argv) == 4 and sys.argv[1] == "zygote":
    _zygote(sys.argv[2], sys.argv[3])
