"""`medwb score --scheduler` against a real cluster started apart from medwb: a `dask scheduler` process and two
`dask worker` processes on loopback, started by the test and always stopped after. The rows must be those of
the in-process path, and the workers must have read the pixels themselves. Bad addresses fail fast and say
what to do."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from _scores import assert_same_scores

DASK = str(Path(sys.executable).with_name("dask"))
SETTINGS = ["--mc", "8", "--shard-size", "32", "--seed", "7"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the process group this test started (a worker's nanny and its worker), SIGKILL if it lingers."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-thread workers on 127.0.0.1, no dashboards; their address."""
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = tmp_path_factory.mktemp("dask")
    procs: list[subprocess.Popen] = []

    def start(name: str, *args: str) -> None:
        log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process's end
        procs.append(subprocess.Popen([DASK, *args], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True, cwd=logs))
    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard")
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert procs[0].poll() is None, (logs / "scheduler.log").read_text()
                assert time.monotonic() < deadline, "the scheduler did not listen within 60 s"
                time.sleep(0.3)
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--nworkers", "1", "--host", "127.0.0.1",
                  "--no-dashboard", "--local-directory", str(logs / f"w{i}"))
        from distributed import Client

        with Client(address, timeout="20s") as c:
            c.wait_for_workers(2, timeout=90)
        yield address
    finally:
        for p in reversed(procs):
            stop(p)


def test_medwb_score_on_a_separately_started_cluster(cluster, checkpoint, small_pool, tmp_path) -> None:
    from distributed import Client

    from medwb.compute import score_pool
    from medwb.compute.worker import worker_dataset

    out = tmp_path / "scores.parquet"
    run = subprocess.run([sys.executable, "-m", "medwb.cli", "score", str(checkpoint), str(small_pool),
                          "--scheduler", cluster, "--out", str(out), *SETTINGS],
                         capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "200 cases scored" in run.stdout
    on_cluster = pd.read_parquet(out)
    in_process = score_pool(checkpoint, small_pool, shard_size=32, mc_samples=8, seed=7, progress=False)
    assert_same_scores(in_process, on_cluster)
    assert on_cluster.attrs["seed"] == 7  # how the scores were made travels in the file
    with Client(cluster, timeout="20s") as c:
        opened = c.run(lambda: worker_dataset.cache_info()._asdict())
    assert len(opened) == 2
    assert sum(o["hits"] + o["misses"] for o in opened.values()) == 7  # 200 cases / 32: every shard on a worker
    assert all(o["misses"] <= 1 for o in opened.values())  # each worker opened the file once


def test_unreachable_scheduler_names_the_address_and_the_fix(checkpoint, small_pool, capsys, monkeypatch,
                                                             tmp_path) -> None:
    from medwb.cli import main

    out = str(tmp_path / "x.parquet")
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    t0 = time.monotonic()
    assert main(["score", str(checkpoint), str(small_pool), "--scheduler", address, "--out", out]) == 2
    err = capsys.readouterr().err
    assert f"Dask scheduler {address}: cannot connect" in err and "Connection refused" in err
    assert "Fix:" in err and "dask scheduler --host 127.0.0.1" in err and "--workers N" in err
    assert time.monotonic() - t0 < 10  # refused at once, no 30 s of retries
    monkeypatch.setenv("MEDWB_DASK_SCHEDULER", "not-an-address")  # the environment variable is read too
    assert main(["score", str(checkpoint), str(small_pool), "--out", out]) == 2
    err = capsys.readouterr().err
    assert "Dask scheduler not-an-address: cannot connect" in err and "tcp://HOST:PORT" in err
    assert not (tmp_path / "x.parquet").exists()
