"""Offline guarantee: refuse every network connection, datagram and name lookup that leaves this machine.

Installed for the whole test suite (tests/conftest.py) and wherever ``MEDWB_OFFLINE=1`` is set when medwb is
imported (the demo, ``medwb`` CLI subprocesses, papermill kernels running medwb notebooks: they inherit the
variable and import medwb). What passes: Unix sockets and other non-IP families (netlink...), loopback
(127.0.0.0/8, ::1, ``localhost``), the unspecified address (0.0.0.0 / ::, which Linux routes to loopback) and
this machine's own interface addresses (:func:`own_addresses`: delivered through loopback, they never leave it).

What is guarded, all at the Python ``socket`` layer that every library (urllib, requests, httpx, asyncio, ssl,
zmq's Python side) goes through:

* ``socket.socket.connect`` / ``connect_ex`` (TCP, and UDP "connect") and ``socket.create_connection``;
* ``socket.socket.sendto`` / ``sendmsg`` with an address (UDP datagrams, e.g. DNS or telemetry beacons);
* name resolution: ``getaddrinfo``, ``gethostbyname(_ex)``, ``gethostbyaddr``, ``getnameinfo`` and ``getfqdn``
  for anything but loopback names, numeric addresses and this machine's own host name (resolving any other name
  would itself send a DNS query). A connection to whatever the own name resolves to is still checked by address.

Limits: C extensions that open sockets without Python's ``socket`` module, and child processes that do not
import medwb, are not covered (run those under an OS-level sandbox, e.g. ``unshare -n`` or a container without
a network, for a hard guarantee).
"""
from __future__ import annotations

import ipaddress
import socket
from functools import lru_cache
from typing import Any

from medwb.errors import NetworkBlockedError

_IP_FAMILIES = {socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET)}
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}

_orig: dict[str, Any] = {
    "connect": socket.socket.connect,
    "connect_ex": socket.socket.connect_ex,
    "sendto": socket.socket.sendto,
    "sendmsg": getattr(socket.socket, "sendmsg", None),
    "create_connection": socket.create_connection,
    "getaddrinfo": socket.getaddrinfo,
    "gethostbyname": socket.gethostbyname,
    "gethostbyname_ex": socket.gethostbyname_ex,
    "gethostbyaddr": socket.gethostbyaddr,
    "getnameinfo": socket.getnameinfo,
    "getfqdn": socket.getfqdn,
}
_installed = False
blocked_attempts: list[str] = []  # what the guard refused in this process (for tests and reports)


@lru_cache(maxsize=1)
def own_addresses() -> frozenset[str]:
    """The IP addresses of this machine's own interfaces (e.g. its LAN address). A packet to one of them never leaves
    the machine (the kernel delivers it through loopback), so ``medwb review --host <LAN address>`` can check its
    own server. Read once, through psutil (a dependency of Dask's distributed); empty if it is missing."""
    try:
        import psutil
    except ImportError:
        return frozenset()
    fams = {socket.AF_INET, getattr(socket, "AF_INET6", socket.AF_INET)}
    return frozenset(a.address.split("%")[0] for addrs in psutil.net_if_addrs().values() for a in addrs
                     if a.family in fams)


def _host_is_local(host: Any) -> bool:
    """True for loopback / unspecified addresses, this machine's own addresses and loopback names; False for any
    other host."""
    if host is None:
        return True
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    h = str(host).strip().rstrip(".").lower()
    if h in _LOCAL_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(h.split("%")[0])
    except ValueError:
        return False  # a host name: only loopback names are known without asking a resolver
    return ip.is_loopback or ip.is_unspecified or str(ip) in own_addresses()


def _is_numeric(host: Any) -> bool:
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    try:
        ipaddress.ip_address(str(host).split("%")[0])
        return True
    except ValueError:
        return False


def _refuse(what: str) -> None:
    blocked_attempts.append(what)
    raise NetworkBlockedError(f"medwb is offline: blocked {what}. Fix: medwb needs no network; if this is a "
                              "library phoning home, disable that (offline mode / telemetry off)")


def _check_address(sock: socket.socket, address: Any, verb: str) -> None:
    if sock.family not in _IP_FAMILIES or not isinstance(address, tuple) or not address:
        return  # AF_UNIX path, netlink, abstract names
    if not _host_is_local(address[0]):
        _refuse(f"{verb} to {address!r}")


def _guarded_connect(self: socket.socket, address: Any) -> None:
    _check_address(self, address, "a connection")
    return _orig["connect"](self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    _check_address(self, address, "a connection")
    return _orig["connect_ex"](self, address)


def _guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
    if args:  # sendto(data, address) or sendto(data, flags, address)
        _check_address(self, args[-1], "a datagram")
    return _orig["sendto"](self, data, *args)


def _guarded_sendmsg(self: socket.socket, buffers: Any, ancdata: Any = (), flags: int = 0, address: Any = None) -> int:
    if address is not None:
        _check_address(self, address, "a datagram")
        return _orig["sendmsg"](self, buffers, ancdata, flags, address)
    return _orig["sendmsg"](self, buffers, ancdata, flags)


def _guarded_create_connection(address: Any, *args: Any, **kwargs: Any) -> socket.socket:
    if isinstance(address, tuple) and address and not _host_is_local(address[0]):
        _refuse(f"a connection to {address!r}")  # before any DNS lookup of the name
    return _orig["create_connection"](address, *args, **kwargs)


def _own_hostname(host: Any) -> bool:
    """This machine's own name (resolved from /etc/hosts on a normal setup; servers such as Jupyter look it up)."""
    if isinstance(host, (bytes, bytearray)):
        host = bytes(host).decode("ascii", "replace")
    return str(host).strip().rstrip(".").lower() == socket.gethostname().lower()


def _check_lookup(host: Any, fn: str) -> None:
    if not (_host_is_local(host) or _is_numeric(host) or _own_hostname(host)):
        _refuse(f"a name lookup ({fn}) of {host!r}")


def _guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    _check_lookup(host, "getaddrinfo")
    return _orig["getaddrinfo"](host, *args, **kwargs)


def _guarded_gethostbyname(host: Any) -> str:
    _check_lookup(host, "gethostbyname")
    return _orig["gethostbyname"](host)


def _guarded_gethostbyname_ex(host: Any) -> Any:
    _check_lookup(host, "gethostbyname_ex")
    return _orig["gethostbyname_ex"](host)


def _guarded_gethostbyaddr(host: Any) -> Any:
    if not _host_is_local(host):  # a reverse lookup of a non-loopback address is a DNS query
        _refuse(f"a reverse name lookup of {host!r}")
    return _orig["gethostbyaddr"](host)


def _guarded_getnameinfo(sockaddr: Any, flags: int) -> Any:
    numeric = getattr(socket, "NI_NUMERICHOST", 1) | getattr(socket, "NI_NUMERICSERV", 2)
    if isinstance(sockaddr, tuple) and sockaddr and not _host_is_local(sockaddr[0]) and (flags & numeric) != numeric:
        _refuse(f"a reverse name lookup (getnameinfo) of {sockaddr!r}")
    return _orig["getnameinfo"](sockaddr, flags)


def _guarded_getfqdn(name: str = "") -> str:
    """Offline ``getfqdn``: the local host name as is (the real one asks the resolver)."""
    return name if name and name not in ("0.0.0.0", "::") else socket.gethostname()


_PATCHES: dict[tuple[Any, str], Any] = {
    (socket.socket, "connect"): _guarded_connect,
    (socket.socket, "connect_ex"): _guarded_connect_ex,
    (socket.socket, "sendto"): _guarded_sendto,
    (socket, "create_connection"): _guarded_create_connection,
    (socket, "getaddrinfo"): _guarded_getaddrinfo,
    (socket, "gethostbyname"): _guarded_gethostbyname,
    (socket, "gethostbyname_ex"): _guarded_gethostbyname_ex,
    (socket, "gethostbyaddr"): _guarded_gethostbyaddr,
    (socket, "getnameinfo"): _guarded_getnameinfo,
    (socket, "getfqdn"): _guarded_getfqdn,
}
if _orig["sendmsg"] is not None:
    _PATCHES[(socket.socket, "sendmsg")] = _guarded_sendmsg


def install_guard() -> None:
    """Refuse non-loopback connections, datagrams and name lookups in this process (idempotent)."""
    global _installed
    for (owner, name), fn in _PATCHES.items():
        setattr(owner, name, fn)
    _installed = True


def uninstall_guard() -> None:
    global _installed
    for (owner, name), _fn in _PATCHES.items():
        setattr(owner, name, _orig[name])
    _installed = False


def guard_active() -> bool:
    """True when the guard is installed and every patch is still in place (nothing re-patched it away)."""
    return _installed and all(getattr(owner, name) is fn for (owner, name), fn in _PATCHES.items())
