"""The PDF printer stays off the network, child processes included (issue 16: Chromium looked up
clients2.google.com, update.googleapis.com and accounts.google.com while printing).

The audit is the kernel's view: the PDF build runs under ``strace -f`` (every process Chromium forks), and every
connect / sendto / sendmsg with an IP address is inspected. Before the fix: 33 non-loopback connects, 32 of them
to the resolver's port 53."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ADDR = re.compile(r'sa_family=AF_INET6?, sin6?_port=htons\((\d+)\).*?inet_(?:addr|pton)\((?:AF_INET6, )?"([^"]+)"')
RESULT = re.compile(r"\)\s*=\s*(-?\d+)(?:\s+(\w+))?\s*(?:\(.*\))?\s*$")


def network_calls(log: str) -> list[tuple[str, str, int, str]]:
    """(syscall, address, port, result) for each IP connect/sendto/sendmsg in a strace log (resumed lines joined)."""
    pending: dict[str, str] = {}
    calls = []
    for line in log.splitlines():
        pid, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.endswith("<unfinished ...>"):
            pending[pid] = rest[: -len("<unfinished ...>")]
            continue
        if rest.startswith("<..."):
            rest = pending.pop(pid, "") + rest.split("resumed>", 1)[-1]
        m = ADDR.search(rest)
        if not m or not re.match(r"(connect|sendto|sendmsg)\(", rest):
            continue
        r = RESULT.search(rest)
        calls.append((rest.split("(", 1)[0], m.group(2), int(m.group(1)), (r.group(2) or r.group(1)) if r else "?"))
    return calls


def is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "0.0.0.0", "::") or addr.startswith("::ffff:127.")


def test_pdf_build_sends_nothing_off_the_machine(tmp_path: Path) -> None:
    from medwb.report.build import ReportError, find_chromium

    if shutil.which("strace") is None:
        pytest.skip("strace is not installed: no way to audit the sockets of Chromium's process tree here")
    try:
        find_chromium()
    except ReportError as e:
        pytest.skip(f"no Chromium to print with: {e}")
    probe = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect", "-o", str(tmp_path / "p.txt"), "true"],
                           capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"strace cannot trace here (ptrace not permitted): {probe.stderr.decode()[-200:]}")
    # a page that asks for remote resources: an image, a font, a script, a prefetch
    (tmp_path / "r.html").write_text(
        '<html><head><link rel="dns-prefetch" href="https://fonts.googleapis.com">'
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">'
        '<script src="http://example.com/x.js"></script></head>'
        '<body><h1>report</h1><img src="https://example.org/x.png"></body></html>')
    log = tmp_path / "strace.txt"
    code = "from medwb.report.build import html_to_pdf; html_to_pdf('r.html', 'r.pdf')"
    proc = subprocess.run(["strace", "-f", "-qq", "-e", "trace=connect,sendto,sendmsg", "-o", str(log),
                           sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "r.pdf").stat().st_size > 0
    calls = [c for c in network_calls(log.read_text(errors="replace")) if not is_loopback(c[1])]
    dns = [c for c in calls if c[2] == 53]
    # a call that failed (no route, no address in the namespace) sent nothing; anything else may have
    leaving = [c for c in calls if c[3] not in ("ENETUNREACH", "EADDRNOTAVAIL", "EHOSTUNREACH", "EACCES", "EPERM")]
    assert dns == [], f"DNS queries from the PDF build: {dns}"
    assert leaving == [], f"non-loopback connect/sendto/sendmsg from the PDF build: {leaving}"


def test_the_strace_parser_finds_what_the_fix_removed() -> None:
    """The parser sees the calls the issue reported (a DNS connect split over two lines, an IPv6 probe)."""
    log = ('10 connect(23, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16 '
           "<unfinished ...>\n"
           "10 <... connect resumed>) = 0\n"
           '11 connect(24, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), inet_pton(AF_INET6, '
           '"2001:4860:4860::8888", &sin6_addr), sin6_scope_id=0}, 28) = -1 EADDRNOTAVAIL (Cannot assign requested '
           "address)\n"
           '12 connect(5, {sa_family=AF_INET, sin_port=htons(8888), sin_addr=inet_addr("127.0.0.1")}, 16) = 0\n'
           '12 connect(6, {sa_family=AF_UNIX, sun_path="/tmp/x"}, 110) = 0\n')
    calls = network_calls(log)
    assert calls == [("connect", "10.255.255.53", 53, "0"), ("connect", "2001:4860:4860::8888", 443, "EADDRNOTAVAIL"),
                     ("connect", "127.0.0.1", 8888, "0")]
