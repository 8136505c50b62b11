"""Offline guarantee: refuse every socket connection that does not go to this machine.

Installed for the whole test suite (tests/conftest.py) and for the demo (``MEDWB_OFFLINE=1``, which also
reaches papermill kernels because they import medwb). Unix sockets and loopback (127.0.0.0/8, ::1) pass.
"""
from __future__ import annotations

import ipaddress
import socket
from typing import Any

from medwb.errors import NetworkBlockedError

_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex
_installed = False


def _is_local(address: Any) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path or abstract name
        return True
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:  # a host name: resolving it would itself touch the network
        return False


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if not _is_local(address):
        raise NetworkBlockedError(f"medwb is offline: blocked a connection to {address!r}")
    return _original_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if not _is_local(address):
        raise NetworkBlockedError(f"medwb is offline: blocked a connection to {address!r}")
    return _original_connect_ex(self, address)


def install_guard() -> None:
    """Make any non-loopback ``socket.connect`` raise :class:`NetworkBlockedError` in this process."""
    global _installed
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    _installed = True


def uninstall_guard() -> None:
    global _installed
    socket.socket.connect = _original_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _original_connect_ex  # type: ignore[method-assign]
    _installed = False


def guard_active() -> bool:
    return _installed
