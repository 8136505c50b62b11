"""The offline guard: active for the whole suite, blocks TCP, UDP and DNS off this machine, reaches subprocesses
and papermill kernels through MEDWB_OFFLINE=1, and lets loopback through."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from medwb import offline
from medwb.errors import NetworkBlockedError
from medwb.offline import guard_active, own_addresses

# RFC 5737 documentation addresses: never routed, so nothing leaks even if a check failed (one that is not this
# machine's own address: a sandbox may give its interface one of them)
TEST_NET = next(a for a in ("192.0.2.1", "198.51.100.1", "203.0.113.1") if a not in own_addresses())


def test_guard_is_active_for_the_whole_suite():
    """conftest.py installs it before any test module is imported; this proves it is still in place in CI."""
    assert guard_active()
    assert os.environ.get("MEDWB_OFFLINE") == "1"
    assert socket.socket.connect is offline._guarded_connect
    assert socket.getaddrinfo is offline._guarded_getaddrinfo


def test_tcp_connections_off_the_machine_are_refused():
    for family, addr in ((socket.AF_INET, ("93.184.216.34", 80)), (socket.AF_INET, (TEST_NET, 443))):
        s = socket.socket(family, socket.SOCK_STREAM)
        try:
            with pytest.raises(NetworkBlockedError):
                s.connect(addr)
            with pytest.raises(NetworkBlockedError):
                s.connect_ex(addr)
        finally:
            s.close()
    if socket.has_ipv6:
        s6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        try:
            with pytest.raises(NetworkBlockedError):
                s6.connect(("2001:db8::1", 80, 0, 0))
        finally:
            s6.close()
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("8.8.8.8", 53), timeout=1)


def test_create_connection_by_name_fails_before_any_dns_query():
    t = time.perf_counter()
    n = len(offline.blocked_attempts)
    with pytest.raises(NetworkBlockedError):
        socket.create_connection(("pypi.org", 443), timeout=5)
    assert time.perf_counter() - t < 0.5  # refused locally, not a resolver timeout
    assert "pypi.org" in offline.blocked_attempts[n]


def test_udp_datagrams_off_the_machine_are_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(NetworkBlockedError):
            s.sendto(b"\x00" * 12, ("8.8.8.8", 53))  # a would-be DNS query
        with pytest.raises(NetworkBlockedError):
            s.sendto(b"x", 0, (TEST_NET, 9))
        if hasattr(s, "sendmsg"):
            with pytest.raises(NetworkBlockedError):
                s.sendmsg([b"x"], [], 0, (TEST_NET, 9))
        with pytest.raises(NetworkBlockedError):
            s.connect((TEST_NET, 9))
    finally:
        s.close()


def test_name_lookups_are_refused_but_loopback_and_numeric_work():
    for fn, arg in ((socket.getaddrinfo, ("example.com", 80)), (socket.gethostbyname, ("example.com",)),
                    (socket.gethostbyname_ex, ("pypi.org",)), (socket.gethostbyaddr, ("8.8.8.8",))):
        with pytest.raises(NetworkBlockedError):
            fn(*arg)
    assert socket.getaddrinfo("localhost", 80)
    assert socket.getaddrinfo("127.0.0.1", 80)[0][4][0] == "127.0.0.1"
    assert socket.getaddrinfo(TEST_NET, 80)[0][4][0] == TEST_NET  # numeric: no resolver involved
    assert socket.getfqdn() == socket.gethostname()
    try:  # own name: allowed (normally from /etc/hosts); a connection is still checked by address
        socket.gethostbyname(socket.gethostname())
    except NetworkBlockedError:
        pytest.fail("the guard refused this machine's own host name")
    except OSError:
        pass  # the container does not resolve its own name: not the guard's business


def test_high_level_clients_are_blocked():
    with pytest.raises(urllib.error.URLError) as e:
        urllib.request.urlopen("http://example.com/", timeout=2)
    assert isinstance(e.value.reason, NetworkBlockedError)

    async def go() -> None:
        await asyncio.open_connection(TEST_NET, 80)

    with pytest.raises(NetworkBlockedError):
        asyncio.run(go())


def test_loopback_tcp_udp_and_unix_sockets_are_allowed(tmp_path):
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.create_connection(srv.getsockname(), timeout=2)
    conn, _ = srv.accept()
    c.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    for s in (c, conn, srv):
        s.close()
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.sendto(b"dgram", rx.getsockname())
    rx.settimeout(2)
    assert rx.recv(16) == b"dgram"
    rx.close()
    tx.close()
    path = str(tmp_path / "s.sock")
    us = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    us.bind(path)
    us.listen(1)
    uc = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    uc.connect(path)
    uc.close()
    us.close()


def test_uninstall_and_reinstall():
    try:
        offline.uninstall_guard()
        assert not guard_active() and socket.socket.connect is offline._orig["connect"]
    finally:
        offline.install_guard()
    assert guard_active()


def test_subprocesses_importing_medwb_inherit_the_guard():
    code = ("import medwb, socket\n"
            f"socket.create_connection(({TEST_NET!r}, 80), timeout=3)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "MEDWB_OFFLINE": "1"})
    assert r.returncode != 0 and "NetworkBlockedError" in r.stderr
    r = subprocess.run([sys.executable, "-m", "medwb.cli", "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "medwb" in r.stdout


@pytest.mark.slow
def test_papermill_kernel_refuses_connections(tmp_path):
    import nbformat
    import papermill as pm

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell("import medwb, socket\nfrom medwb.offline import guard_active\nprint('ACTIVE', guard_active())"),
        nbformat.v4.new_code_cell(
            "try:\n"
            f"    socket.create_connection(({TEST_NET!r}, 80), timeout=3)\n"
            "    print('RESULT connected')\n"
            "except Exception as e:\n"
            "    print('RESULT', type(e).__name__)\n"),
    ]
    src, out = tmp_path / "probe.ipynb", tmp_path / "probe_out.ipynb"
    nbformat.write(nb, src)
    pm.execute_notebook(str(src), str(out), kernel_name="python3", progress_bar=False, cwd=str(tmp_path),
                        execution_timeout=120)
    text = "".join(o.get("text", "") for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", []))
    assert "ACTIVE True" in text
    assert "RESULT NetworkBlockedError" in text


def test_this_machines_own_lan_address_is_allowed():
    """A server bound to the machine's LAN address (``medwb review --host``) is reached through loopback: allowed."""
    lan = next((a for a in own_addresses() if ":" not in a and not a.startswith("127.")), None)
    if lan is None:
        pytest.skip("this machine has no IPv4 address besides loopback")
    srv = socket.socket()
    try:
        srv.bind((lan, 0))
        srv.listen(1)
        socket.create_connection(srv.getsockname(), timeout=2).close()
    finally:
        srv.close()
