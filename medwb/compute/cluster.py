"""Where Dask work runs: an existing client, an embedded LocalCluster, or a scheduler address.

Why a context manager: a LocalCluster medwb starts is medwb's to stop (its worker processes must not outlive the
call, even when scoring fails); a cluster someone else started is only disconnected from.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from medwb.errors import ClusterError

#: environment variable naming a running scheduler (``tcp://HOST:PORT``), read by ``medwb score``
SCHEDULER_ENV = "MEDWB_DASK_SCHEDULER"
FIX = ("check the address (tcp://HOST:PORT, as `dask scheduler` prints it) and that the scheduler is running: "
       "start one with `dask scheduler --host 127.0.0.1` and workers with `dask worker tcp://127.0.0.1:8786`, "
       "or use a local cluster instead (--workers N, client='local')")


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask (a batch job's or a container's share), not the
    machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def local_cluster_workers(workers: int | None) -> int:
    """Worker processes of an embedded LocalCluster: ``workers`` or one per usable core."""
    return max(1, int(workers) if workers else usable_cores())


def reachable(address: str, timeout: float) -> None:
    """Raise at once (ValueError, OSError) when a tcp/tls address is malformed or nothing listens there, before
    a Client retries for ``timeout`` seconds and leaves a half-built client behind."""
    import socket

    from distributed.comm.addressing import parse_address, parse_host_port

    scheme, location = parse_address(address)
    if scheme in ("tcp", "tls"):
        socket.create_connection(parse_host_port(location), timeout=timeout).close()


@contextmanager
def environment_kept() -> Iterator[None]:
    """Put ``os.environ`` back as it was on exit. Why: Dask's nanny writes its workers' settings
    (``OMP_NUM_THREADS=1``, ``MKL_NUM_THREADS=1``, ``MALLOC_TRIM_THRESHOLD_=65536``) into this process's
    environment before it spawns them (and again before a restart), so every later child of this process (a
    papermill kernel, a CLI subprocess, a simulation's worker) would start with one thread and glibc settings
    that make torch 4-5x slower; in the test suite such children ran about twice as long after the first
    local cluster."""
    before = dict(os.environ)
    try:
        yield
    finally:
        for key in set(os.environ) - set(before):
            del os.environ[key]
        for key, value in before.items():
            if os.environ.get(key) != value:
                os.environ[key] = value


@contextmanager
def dask_client(client: Any, *, workers: int | None = None, timeout: float = 10.0) -> Iterator[Any]:
    """A ``distributed.Client`` for ``client``: a Client (used as is), ``'local'`` (a LocalCluster of
    ``workers`` single-thread processes on loopback, closed on exit) or a scheduler address (connected within
    ``timeout`` seconds and waited on until it has a worker; ClusterError otherwise)."""
    from distributed import Client, LocalCluster

    if isinstance(client, Client):
        yield client
        return
    if client == "local":
        with environment_kept():
            cluster = LocalCluster(n_workers=local_cluster_workers(workers), threads_per_worker=1, processes=True,
                                   host="127.0.0.1", dashboard_address=None)
        with environment_kept(), cluster, Client(cluster) as c:
            yield c
        return
    address = str(client)
    try:
        reachable(address, timeout)
        c = Client(address, timeout=f"{timeout}s")
    except (OSError, ValueError, TypeError) as e:
        raise ClusterError(address, f"cannot connect ({type(e).__name__}: {e})", FIX) from None
    try:
        try:
            c.wait_for_workers(1, timeout=timeout)
        except (OSError, TimeoutError) as e:
            raise ClusterError(address, f"has no worker after {timeout:g} s ({type(e).__name__})",
                               "start workers with `dask worker " + address + "` (they must see the dataset's "
                               "path), or use a local cluster (--workers N)") from None
        yield c
    finally:
        c.close()
