"""The review app (``medwb review``) with two readers at once in headless Chromium, through Voilà.

Each reader opens their own link (their own token, their own browser context: no shared cookie) and decides cases
with the keys only. The store must hold exactly what the readers chose: every case of the round once, under the
reader who decided it, with the class they typed, an undone decision taken back. Requests without a valid token
get 403, and every request that is not to this machine is aborted and recorded (the test fails on any).
"""
from __future__ import annotations

import os
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser.jupyterlab_driver import is_loopback_url

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
_IN_CI = bool(os.environ.get("CI"))
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not _IN_CI and not Path(CHROMIUM).is_file(), reason="needs Debian's chromium")]


@pytest.fixture(scope="module")
def open_round(samples: Path, tmp_path_factory):
    """A study whose round 1 (12 cases, cold start: no pre-labels, the readers choose) is open."""
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.store import Study

    tmp = tmp_path_factory.mktemp("review_app")
    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp / "p.npz", n_train=40, n_val=10, n_test=10)
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp / "study", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="entropy", batch_size=12, seed=0, progress=False,
                              pretrain=False, semi=False)
    batch = loop.propose()
    study.close()
    return tmp / "study", list(batch["case_id"])


def _status(url: str) -> int:
    try:
        return urllib.request.urlopen(url, timeout=60).status
    except urllib.error.HTTPError as e:
        return e.code


def test_no_token_no_page(open_round):
    from medwb.pipelines.review_app import ReviewServer

    with ReviewServer(open_round[0], ["ana"]) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert _status(srv.url) == 403 and _status(srv.url + "?token=forged") == 403
        assert _status(srv.url + "api/kernels") == 403
        assert _status(srv.links["ana"]) == 200


class Reader:
    """One reader's browser page: reads the case on screen, types keys, waits for the status line."""

    def __init__(self, browser, name: str, link: str, attempted: list[str]) -> None:
        self.name, self.context = name, browser.new_context(viewport={"width": 1100, "height": 1000})

        def gate(route):
            if is_loopback_url(route.request.url):
                route.continue_()
            else:
                attempted.append(route.request.url)
                route.abort()

        self.context.route("**/*", gate)
        self.page = self.context.new_page()
        self.page.goto(link, wait_until="domcontentloaded", timeout=180_000)
        self.keys = self.page.locator(".widget-text:has(label:text-is('keys')) input")
        self.keys.wait_for(timeout=180_000)
        self.saved: dict[str, int] = {}

    def case_on_screen(self) -> str | None:
        text = self.page.locator(".widget-html-content").filter(has_text=re.compile(r"^case \d+")).first
        if not text.count():
            return None
        m = re.search(r"case \d+/\d+: (\S+)", text.inner_text())
        return m.group(1) if m else None

    def status(self) -> str:
        return self.page.locator(".widget-html-content").filter(
            has_text=re.compile(r"^(saved case|undone|not saved)")).first.inner_text()

    def press(self, key: str, expect: str) -> str:
        """Type ``key`` in the keys box once the case has been on screen 0.5 s; wait for a status line starting
        with ``expect`` (or a refusal) and return it."""
        self.page.wait_for_timeout(650)
        self.keys.click()
        self.keys.type(key)
        self.page.wait_for_function(
            "want => Array.from(document.querySelectorAll('.widget-html-content'))"
            ".some(e => e.innerText.startsWith(want) || e.innerText.startsWith('not saved'))",
            arg=expect, timeout=60_000)
        return self.status()

    def decide(self, cls: int) -> str | None:
        cid = self.case_on_screen()
        if cid is None:
            return None
        out = self.press(str(cls), f"saved case {cid} ")
        assert out.startswith(f"saved case {cid} as {cls}:"), out
        self.saved[cid] = cls
        self.page.wait_for_function(  # the next case (or the end of the queue) is on screen
            "cid => !Array.from(document.querySelectorAll('.widget-html-content'))"
            ".some(e => /^case \\d+\\/\\d+: /.test(e.innerText) && e.innerText.includes(cid + ' '))",
            arg=cid, timeout=60_000)
        return cid


def test_two_readers_decide_every_case_once_with_keys(open_round):
    from playwright.sync_api import sync_playwright

    from medwb.pipelines.review_app import ReviewServer
    from medwb.store import Study

    folder, batch = open_round
    attempted: list[str] = []
    shots = ROOT / "reports"
    shots.mkdir(exist_ok=True)
    with ReviewServer(folder, ["ana", "ben"]) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            ana = Reader(browser, "ana", srv.links["ana"], attempted)
            ben = Reader(browser, "ben", srv.links["ben"], attempted)
            assert ana.case_on_screen() != ben.case_on_screen()  # leases: never the same case at once
            first = ana.decide(1)
            ana.decide(0)
            undone = ana.press("u", "undone")  # back to her second case: its label is taken back
            assert undone.startswith("undone")
            ana.page.wait_for_function("() => Array.from(document.querySelectorAll('.widget-html-content'))"
                                       ".some(e => /^case \\d+\\/\\d+: /.test(e.innerText))")
            ana.saved.pop(ana.case_on_screen())
            ana.page.screenshot(path=str(shots / "review_app_reader.png"), full_page=True)
            k = 0
            while True:
                a = ana.decide(k % 2)
                b = ben.decide((k + 1) % 2)
                k += 1
                if a is None and b is None:
                    break
        finally:
            browser.close()
    assert attempted == [], f"the app tried to reach: {attempted}"
    assert first in ana.saved
    chosen = {**{c: ("ana", v) for c, v in ana.saved.items()}, **{c: ("ben", v) for c, v in ben.saved.items()}}
    assert not set(ana.saved) & set(ben.saved)  # 0 cases decided by both
    with Study.open(folder) as s:
        cur = s.labels(latest=True)
        stored = {str(r.case_id): (r.annotator, int(r.value)) for r in cur.itertuples()}
        assert sorted(stored) == sorted(batch)  # every case of the round, 0 lost
        assert stored == chosen  # under the reader who decided it, with the class typed: 0 wrong
        assert len(cur) == len(batch) and (cur["round"] == 1).all()
        retracted = s.label_history()
        assert (retracted["reason"].str.contains("undone")).sum() == 1
