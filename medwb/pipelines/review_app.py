"""``medwb review STUDY``: the code-free review app, served by Voilà, one link (and token) per reader.

Why Voilà: the readers' page is ipywidgets (the same review queue as the notebooks), and Voilà serves a notebook
as a web app with its widgets only: no code cells, no tracebacks, and its kernels accept no code from the
browser (Voilà allows only widget and kernel-info messages on the websocket). JupyterLab's real-time
collaboration does not share widget state between users, so every reader gets a kernel of their own and the
study store is where they meet (leases, labels; :mod:`medwb.store.readers`).

Access: each reader gets a random token; the link ``http://HOST:PORT/?token=...`` names them. The server keeps
only the tokens' sha256 (a 0600 file in a private temporary folder, also read by the page to name the reader)
and answers 403 to any page or API request without a valid token or the signed cookie a valid token set.
It binds 127.0.0.1 unless ``host`` says otherwise (a hospital LAN: ``--host 0.0.0.0`` or the machine's address).

    links = review_links(...)             # what `medwb review` prints
    with ReviewServer("study/", readers=["ana", "ben"]) as srv:
        srv.links                         # {"ana": "http://127.0.0.1:8866/?token=...", ...}
"""
from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from medwb.errors import ConfigError
from medwb.resources import resource_dir
from medwb.store import Study
from medwb.ui.widgets.reader import ADJUDICATORS_ENV, READERS_ENV, STUDY_ENV, TTL_ENV, token_digest

APP_NOTEBOOK = "review_app.ipynb"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> Callable[[], None] | None:
    """For the server's child process (Linux): the kernel sends it SIGTERM when the process that started it dies,
    even by SIGKILL, so a killed ``medwb review`` never leaves its app serving the study's cases. libc is loaded
    here, before the fork: the child only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL("libc.so.6", use_errno=True).prctl
    return lambda: prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def check_readers(readers: Sequence[str]) -> list[str]:
    """Reader names as given (stripped); refuses none, blanks and duplicates."""
    names = [str(r).strip() for r in readers]
    if not names or any(not n for n in names):
        raise ConfigError("no reader names. Fix: pass --readers NAME,NAME (one per person who reads)")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"reader name(s) given twice: {dup}. Fix: give every reader a distinct name")
    return names


class ReviewServer:
    """The review app as a child process (Voilà on ``host:port``), stopped by :meth:`stop` or the ``with`` block.

    ``readers``: names; each gets a token (``tokens``) and a link (``links``). ``adjudicators``: senior readers
    (added to the readers) whose page also lists the disagreements of double reads to decide.
    ``lease_seconds``: how long a claimed case stays with a reader who does not decide it. Started on loopback
    by default.
    """

    def __init__(self, study: str | Path, readers: Sequence[str], *, adjudicators: Sequence[str] = (),
                 host: str = "127.0.0.1", port: int | None = None, lease_seconds: float = 600.0,
                 startup_timeout: float = 120.0) -> None:
        self.study_dir = Path(study).resolve()
        with Study.open(self.study_dir):  # refuses a folder that is not a study, with the fix
            pass  # classification and segmentation (region clicks) studies alike
        self.adjudicators = [str(a).strip() for a in adjudicators if str(a).strip()]
        self.readers = check_readers([*readers, *[a for a in self.adjudicators if a not in readers]])
        self.host, self.port = host, int(port) if port else _free_port(host)
        self.lease_seconds, self.startup_timeout = float(lease_seconds), float(startup_timeout)
        self.tokens = {r: secrets.token_urlsafe(24) for r in self.readers}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path: Path | None = None  # the server's log while it runs (in its private temporary folder)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}/"

    @property
    def links(self) -> dict[str, str]:
        return {r: f"{self.url}?token={t}" for r, t in self.tokens.items()}

    def start(self) -> ReviewServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="medwb-review-")
        tmp = Path(self._tmp.name)
        os.chmod(tmp, 0o700)
        readers_file = tmp / "readers.json"
        fd = os.open(readers_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump({token_digest(t): r for r, t in self.tokens.items()}, f)
        app_dir = tmp / "app"  # Voilà's root: only the app notebook (its file handler serves the root folder)
        app_dir.mkdir()
        nb = app_dir / APP_NOTEBOOK
        nb.write_bytes((resource_dir("notebooks") / APP_NOTEBOOK).read_bytes())
        env = {**os.environ, STUDY_ENV: str(self.study_dir), READERS_ENV: str(readers_file),
               TTL_ENV: str(self.lease_seconds), ADJUDICATORS_ENV: ",".join(self.adjudicators)}
        cmd = [sys.executable, "-m", "medwb.pipelines.review_app", str(nb), str(self.port), self.host]
        # the server logs every request: to a file, not a pipe nobody drains (a full pipe would stall the app)
        self.log_path = tmp / "server.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, env=env, cwd=app_dir, stdout=subprocess.DEVNULL, stderr=log,
                                         preexec_fn=die_with_parent())
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                err = self.log_path.read_bytes().decode(errors="replace")[-2000:]
                self.stop()
                raise ConfigError(f"the review app did not start (exit {self.proc.returncode}): {err}. Fix: "
                                  "choose a free --port, and check that voila is installed (pip install voila)")
            try:
                urllib.request.urlopen(self.url + "voila/static/", timeout=2).close()
                return
            except urllib.error.HTTPError:
                return  # the server answers (any HTTP status): it is up
            except OSError:
                time.sleep(0.3)
        self.stop()
        raise ConfigError(f"the review app did not answer on {self.url} within {self.startup_timeout:.0f} s. "
                          "Fix: check that nothing else uses the port, then start it again")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> ReviewServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _serve(notebook: str, port: int, host: str) -> None:
    """The child process: Voilà on one notebook, readers' tokens required on every page and API request."""
    from jupyter_server.auth.identity import IdentityProvider, User
    from tornado import web
    from voila.app import Voila
    from voila.tornado.handler import TornadoVoilaHandler

    known = json.loads(Path(os.environ[READERS_ENV]).read_text(encoding="utf-8"))

    class ReaderTokens(IdentityProvider):
        """A request is a reader's when its ``?token=`` (or ``Authorization: token``) is one of the readers'
        tokens; later requests carry the signed login cookie that request set. No token, no user: 403."""

        @property
        def auth_enabled(self) -> bool:
            return True

        @property
        def login_available(self) -> bool:
            return False

        async def get_user_token(self, handler: web.RequestHandler) -> User | None:
            name = known.get(token_digest(self.get_token(handler) or ""))
            return None if name is None else User(username=name, name=name, display_name=name)

    class ReaderPage(TornadoVoilaHandler):
        def get_login_url(self) -> str:  # no login form to send people to: a page without a token is refused
            raise web.HTTPError(403)

    class ReviewVoila(Voila):
        def setup_template_dirs(self) -> None:
            """Voilà's page template links Font Awesome from a CDN (and bundles it too): a copy without the
            CDN links goes first on the template path, so the page asks nothing of the network."""
            super().setup_template_dirs()
            own = Path(notebook).parent.parent / "template"
            own.mkdir(exist_ok=True)
            for d in self.template_paths:
                if (Path(d) / "index.html.j2").is_file():
                    text = (Path(d) / "index.html.j2").read_text(encoding="utf-8")
                    (own / "index.html.j2").write_text(
                        "\n".join(line for line in text.splitlines() if "cdn.jsdelivr.net" not in line),
                        encoding="utf-8")
                    break
            self.template_paths = [str(own), *self.template_paths]

        def init_handlers(self) -> list:
            return [(h[0], ReaderPage, *h[2:]) if len(h) > 1 and h[1] is TornadoVoilaHandler else h
                    for h in super().init_handlers()]

    app = ReviewVoila()
    app.identity_provider_class = ReaderTokens
    app.initialize([notebook, f"--port={port}", f"--Voila.ip={host}", "--no-browser", "--Voila.port_retries=0",
                    "--VoilaConfiguration.show_tracebacks=False",
                    # Notebook 7's JupyterLab extension fails to load in Voilà's bundled JupyterLab 4.2 (console
                    # errors) and has no use in the app
                    '--VoilaConfiguration.extension_denylist=["@jupyter-notebook/lab-extension"]'])
    app.start()


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]), sys.argv[3])


__all__ = ["APP_NOTEBOOK", "ReviewServer", "check_readers"]
