"""A JupyterLab 4 server on 127.0.0.1 and Debian's chromium driven by Playwright, with the network cut off.

Three layers keep every request on this machine, and the last two also *record* what was attempted:
1. chromium flags: no background networking / component updates, every host name resolves to nothing
   except loopback (``--host-resolver-rules``), a dead proxy for anything that is not loopback;
2. ``context.route("**/*")`` aborts (and records) any page request whose host is not loopback;
3. the Jupyter server runs with medwb's socket guard (``medwb.offline``) and with news, update checks and
   the PyPI extension manager switched off; a blocked server-side connection shows up in its log.
"""
from __future__ import annotations

import io
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np

CHROMIUM = "/usr/bin/chromium"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
CHROMIUM_ARGS = [
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-breakpad",
    "--no-first-run",
    "--no-default-browser-check",
    "--metrics-recording-only",
    "--dns-prefetch-disable",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--proxy-bypass-list=127.0.0.1;localhost",
]
SERVER_BOOT = (
    "import sys; from medwb.offline import install_guard; install_guard(); "
    "from jupyterlab.labapp import main; sys.exit(main())"
)


def require_browser() -> None:
    """Skip (locally) or fail (in CI, which must prove the browser paths) when Playwright or chromium is missing."""
    import pytest

    pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} not installed: scripts/setup_env.sh dev installs Debian's 'chromium'")
        pytest.skip(f"{CHROMIUM} not installed (Debian package 'chromium')")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def is_loopback_url(url: str, *, allow_file: bool = False) -> bool:
    """True for this machine's addresses and browser-internal schemes (``file:`` only with ``allow_file``)."""
    p = urlparse(url)
    if p.scheme in ("data", "blob", "about", "chrome", "devtools") or (allow_file and p.scheme == "file"):
        return True
    return (p.hostname or "") in {h.strip("[]") for h in LOOPBACK_HOSTS}


@dataclass
class LabServer:
    """A running ``jupyter lab`` process rooted in a temporary folder."""

    root: Path
    port: int
    token: str
    proc: subprocess.Popen
    log_path: Path

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        """Shut down through the REST API (kernels too), then make sure the process is gone."""
        try:
            req = urllib.request.Request(self.url("api/shutdown"), method="POST", data=b"")
            urllib.request.urlopen(req, timeout=10).read()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def start_lab(root: Path, *, timeout_s: float = 90.0) -> LabServer:
    """Start JupyterLab on 127.0.0.1 with private config/settings dirs and nothing that phones home."""
    root = Path(root)
    home = root.parent / "jupyter_home"
    for sub in ("config", "data", "runtime", "settings", "workspaces"):
        (home / sub).mkdir(parents=True, exist_ok=True)
    # Lab settings: no "would you like news?" prompt, no update check (both would call out from the page).
    notif = home / "settings" / "@jupyterlab" / "apputils-extension"
    notif.mkdir(parents=True, exist_ok=True)
    (notif / "notification.jupyterlab-settings").write_text('{"fetchNews": "false", "checkForUpdates": false}')
    # Render every cell even when off screen, so widget views (and niivue's canvas) exist without scrolling.
    nbset = home / "settings" / "@jupyterlab" / "notebook-extension"
    nbset.mkdir(parents=True, exist_ok=True)
    (nbset / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    port, token = free_port(), secrets.token_hex(16)
    env = dict(os.environ)
    env.update(
        JUPYTER_CONFIG_DIR=str(home / "config"),
        JUPYTER_RUNTIME_DIR=str(home / "runtime"),
        JUPYTERLAB_SETTINGS_DIR=str(home / "settings"),
        JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"),
        JUPYTER_PLATFORM_DIRS="1",
        MEDWB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    # The default kernel spec must be this interpreter (the venv), not a system one.
    args = [
        sys.executable, "-c", SERVER_BOOT,
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={root}", "--ServerApp.allow_remote_access=False",
        "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        "--LabApp.extension_manager=readonly", "--ServerApp.log_level=INFO",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:  # containers / CI run as root
        args.append("--ServerApp.allow_root=True")
    log_path = root.parent / "jupyterlab.log"
    log = open(log_path, "wb")  # noqa: SIM115 - lives as long as the server
    proc = subprocess.Popen(args, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = LabServer(root=root, port=port, token=token, proc=proc, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited early:\n{server.log()}")
        try:
            urllib.request.urlopen(server.url("api/status"), timeout=2).read()
            return server
        except OSError:
            time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"jupyter lab did not answer within {timeout_s}s:\n{server.log()}")


@dataclass
class NetworkLog:
    """Every request the page attempted; non-loopback ones are aborted and kept in ``blocked``."""

    requests: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    websockets: list[str] = field(default_factory=list)

    def non_loopback(self) -> list[str]:
        return [u for u in self.requests + self.websockets if not is_loopback_url(u)]


def guard_context(context, net: NetworkLog) -> None:
    """Abort and record any request from any page of ``context`` that leaves the machine."""

    def handle(route) -> None:
        url = route.request.url
        if is_loopback_url(url):
            route.continue_()
        else:
            net.blocked.append(url)
            route.abort("internetdisconnected")

    context.route("**/*", handle)
    context.on("request", lambda r: net.requests.append(r.url))
    context.on("requestfailed", lambda r: net.failed.append(r.url))


def open_click_editor(browser, link: str, net: NetworkLog, *, viewport: tuple[int, int] = (1100, 1000)):
    """A reader's page of the review app (``link``) in a guarded context, once its region-click picture has loaded:
    (page, the picture's locator)."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    guard_context(context, net)
    page = context.new_page()
    page.goto(link, wait_until="domcontentloaded", timeout=180_000)
    img = page.locator("img.medwb-click-image").first
    img.wait_for(state="visible", timeout=180_000)
    page.wait_for_function("document.querySelector('img.medwb-click-image').naturalWidth > 0", timeout=60_000)
    return page, img


def image_stats(png: bytes) -> tuple[float, int]:
    """(grey-level standard deviation, number of distinct colours) of a PNG: a blank view has ~0 and 1."""
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=np.float32)
    colours = len(np.unique(a.reshape(-1, 3), axis=0))
    return float(a.mean(axis=-1).std()), colours


def open_and_run_all(page, server: LabServer, notebook: str) -> None:
    """Open ``notebook`` (a name under the server's root) in JupyterLab, wait for an idle kernel, and run all
    cells from the Run menu, as a user would."""
    import re

    page.goto(server.url(f"lab/tree/{notebook}"))
    page.wait_for_selector(".jp-Notebook .jp-CodeCell", timeout=90_000)
    page.wait_for_function("document.body.innerText.includes('| Idle')", timeout=90_000)  # the kernel is up
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click()


@contextmanager
def lab_page(root: Path, notebook: str, net: NetworkLog, *, viewport: tuple[int, int] = (1300, 1000),
             on_page: Callable[[Any], None] | None = None) -> Iterator[tuple[Any, LabServer]]:
    """A JupyterLab server on ``root``, headless chromium with the network guard, and ``notebook`` opened and
    run as a user would; yields (page, server). ``on_page(page)`` attaches listeners before the notebook opens.
    Browser and server are stopped on the way out, whatever happened (the server's log stays readable)."""
    from playwright.sync_api import sync_playwright

    server = start_lab(root)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
                guard_context(context, net)
                page = context.new_page()
                if on_page is not None:
                    on_page(page)
                open_and_run_all(page, server, notebook)
                yield page, server
            finally:
                browser.close()
    finally:
        server.stop()
