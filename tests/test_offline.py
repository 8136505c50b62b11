import socket

import pytest

from medwb.errors import NetworkBlockedError
from medwb.offline import guard_active


def test_guard_is_active_for_the_whole_suite():
    assert guard_active()


def test_non_loopback_connection_is_refused():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        with pytest.raises(NetworkBlockedError):
            s.connect(("93.184.216.34", 80))
        with pytest.raises(NetworkBlockedError):
            socket.create_connection(("8.8.8.8", 53), timeout=1)
    finally:
        s.close()


def test_loopback_is_allowed():
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    c = socket.socket()
    c.connect(srv.getsockname())
    c.close()
    srv.close()
