"""The review app (``medwb review``) with two readers at once and a senior reader, in headless Chromium.

Each reader opens their own link (their own token, their own browser context: no shared cookie) and decides cases
with the keys only (typed in the keys box, or pressed after a click on the image): 200 decisions over a 190-case round, 10 of its cases double-read (blind) and answered
differently by the two readers, one undo, then the senior reader adjudicates the 10 disagreements. Meanwhile the
researcher's notebook (JupyterLab, in the same browser) shows the readers' progress live: the round's count, each
reader's answers and the disagreements, as the store holds them, with no click. The store
must hold exactly what was chosen: 0 cases lost, 0 decided twice (but the double reads), 0 under a wrong class
or reader; the adjudicated class is the current label. The round is then retrained and the next one proposed: a
reader's page shows the model's class probabilities with their MC spread and its saliency map beside the case.
Requests without a valid token get 403, and every request that is not to this machine is aborted and recorded (the
test fails on any). Screenshots go to reports/.
"""
from __future__ import annotations

import os
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from browser.jupyterlab_driver import NetworkLog, guard_context, open_and_run_all, start_lab

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
_IN_CI = bool(os.environ.get("CI"))
pytestmark = [pytest.mark.slow, pytest.mark.browser,
              pytest.mark.skipif(not _IN_CI and not Path(CHROMIUM).is_file(), reason="needs Debian's chromium")]


N_CASES, N_DOUBLE = 190, 10


@pytest.fixture(scope="module")
def open_round(samples: Path, tmp_path_factory):
    """A study whose round 1 (190 cases, cold start: no pre-labels, the readers choose; 10 double reads) is open."""
    from _fixtures import PNEUMONIA, tiny_pneumonia_npz

    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.store import Study

    tmp = tmp_path_factory.mktemp("review_app")
    path = tiny_pneumonia_npz(samples / PNEUMONIA, tmp / "p.npz", n_train=N_CASES + 10, n_val=10, n_test=10)
    ds = open_dataset(path, progress=False)
    study = Study.create(tmp / "study", dataset_path=str(path), task=ds.task, classes=ds.classes)
    loop = ActiveLearningLoop(study, ds, strategy="random", batch_size=N_CASES, seed=0, progress=False,
                              pretrain=False, semi=False)
    batch = list(loop.propose()["case_id"])
    double = batch[5:5 + N_DOUBLE]
    study.set_reads(double, 2)
    study.close()
    return tmp / "study", batch, set(double)


def _status(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # straight to the app, never a proxy
    try:
        return opener.open(url, timeout=60).status
    except urllib.error.HTTPError as e:
        return e.code


def _lan_address() -> str | None:
    """This machine's first IPv4 address that is not loopback (its address on a hospital LAN), if it has one."""
    from medwb.offline import own_addresses

    return next((a for a in sorted(own_addresses()) if ":" not in a and not a.startswith("127.")), None)


def _refused(host: str, port: int) -> bool:
    import socket

    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        return True
    return False


def test_no_token_no_page(open_round):
    from medwb.pipelines.review_app import ReviewServer

    lan = _lan_address()
    with ReviewServer(open_round[0], ["ana"]) as srv:
        assert srv.url.startswith("http://127.0.0.1:")
        assert _status(srv.url) == 403 and _status(srv.url + "?token=forged") == 403
        assert _status(srv.url + "api/kernels") == 403
        assert _status(srv.links["ana"]) == 200
        if lan is not None:  # by default nothing listens on the machine's LAN address
            assert _refused(lan, srv.port)
    if lan is not None:  # asked with --host: served there, and still 403 without the reader's token
        with ReviewServer(open_round[0], ["ana"], host=lan) as srv:
            assert srv.url.startswith(f"http://{lan}:") and _status(srv.url) == 403
            assert _status(srv.links["ana"]) == 200 and _refused("127.0.0.1", srv.port)


_TEXTS = "Array.from(document.querySelectorAll('.widget-html-content'))"


class Reader:
    """One reader's browser page: reads the case on screen, types keys, waits for the status line."""

    def __init__(self, browser, name: str, link: str, net: NetworkLog) -> None:
        self.name, self.context = name, browser.new_context(viewport={"width": 1100, "height": 1000})
        guard_context(self.context, net)  # non-loopback requests aborted and recorded
        self.page = self.context.new_page()
        self.page.goto(link, wait_until="domcontentloaded", timeout=180_000)
        self.keys = self.page.locator(".widget-text:has(label:text-is('keys')) input").first
        self.keys.wait_for(timeout=180_000)
        self.saved: dict[str, int] = {}
        self.decisions = 0
        self.seen_at = time.monotonic()
        self.use_image = False  # alternate: keys box, then a click on the image and a key press

    def texts(self) -> list[str]:
        return self.page.locator(".widget-html-content").all_inner_texts()

    def case_on_screen(self, prefix: str = r"case \d+/\d+:") -> str | None:
        for t in self.texts():
            m = re.match(prefix + r" (\S+)", t)
            if m:
                return m.group(1)
        return None

    def status(self) -> str:
        return next((t for t in self.texts() if re.match(r"^(saved case|undone|not saved|adjudicated case)", t)), "")

    def press(self, key: str, expect: str) -> str:
        """Type ``key`` once the case has been on screen 0.5 s (waiting only what is left of it); wait for a
        status line starting with ``expect`` (or a refusal) and return it."""
        left = 0.6 - (time.monotonic() - self.seen_at)
        if left > 0:
            time.sleep(left)
        if self.use_image and not key.isalpha():  # click the image, press the key: the panel catches it
            self.page.locator(".widget-image:visible").first.click()
            self.page.keyboard.press(key)
        else:
            self.keys.click()
            self.keys.type(key)
        self.use_image = not self.use_image
        self.page.wait_for_function(
            f"want => {_TEXTS}.some(e => e.innerText.startsWith(want) || e.innerText.startsWith('not saved'))",
            arg=expect, timeout=60_000)
        return self.status()

    def wait_for_next(self, cid: str, prefix: str = r"^case \d+/\d+: ") -> None:
        self.page.wait_for_function(  # the next case (or the end of the list) is on screen; pre: a JS regex
            f"([cid, pre]) => !{_TEXTS}.some(e => new RegExp(pre).test(e.innerText) && e.innerText.includes(cid + ' '))",
            arg=[cid, prefix], timeout=60_000)
        self.seen_at = time.monotonic()

    def decide(self, cls: int) -> str | None:
        cid = self.case_on_screen()
        if cid is None:
            return None
        out = self.press(str(cls), f"saved case {cid} ")
        assert out.startswith(f"saved case {cid} as {cls}:"), out
        self.saved[cid] = cls
        self.decisions += 1
        self.wait_for_next(cid)
        return cid


class ResearcherNotebook:
    """The researcher's notebook in JupyterLab: the readers panel of notebook 02 (``ReadersPanel(study, every=S)``),
    which re-reads the store by itself while the readers work."""

    def __init__(self, browser, folder: Path, root: Path, net: NetworkLog) -> None:
        import nbformat

        root.mkdir(parents=True, exist_ok=True)
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(
            "from medwb.store import Study\nfrom medwb.ui.widgets.reader import ReadersPanel\n"
            f"study = Study.open({str(folder)!r})\nReadersPanel(study, every=1).widget")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, str(root / "researcher.ipynb"))
        self.folder, self.server = folder, start_lab(root)
        context = browser.new_context(viewport={"width": 1100, "height": 800})
        guard_context(context, net)
        self.page = context.new_page()
        open_and_run_all(self.page, self.server, "researcher.ipynb")

    def shows_the_store(self) -> str:
        """Wait until the panel shows the round's progress line as the store has it now (the readers are idle while
        this runs), then check each reader's count of answers and disagreements; returns the panel's text."""
        from medwb.store import Study
        from medwb.ui.widgets.reader import readers_summary, round_progress

        with Study.open(self.folder) as s:
            line = round_progress(s).split(";")[0]
            rows = readers_summary(s)
        self.page.wait_for_function("want => Array.from(document.querySelectorAll('.jp-OutputArea-output'))"
                                    ".some(e => e.innerText.includes(want))", arg=line, timeout=60_000)
        self.page.wait_for_timeout(1500)  # one more re-read: the table is written with the line
        text = self.page.locator(".jp-OutputArea-output").first.inner_text()
        for r in rows.itertuples():
            m = re.search(rf"^{r.reader}\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s*$", text, re.M)
            assert m and tuple(map(int, m.groups())) == (r.answered, r.double_reads, r.disagreed, r.adjudicated), \
                (r, text)
        return text

    def stop(self) -> None:
        self.page.context.close()
        self.server.stop()


def _answer(cid: str, reader: str, double: set[str]) -> int:
    """The class a reader types: fixed per case; on a double-read case the two readers differ."""
    base = int(cid.split("_")[-1]) % 2
    return 1 - base if (cid in double and reader == "ben") else base


def _next_round_shows_the_model(folder: Path, browser, link: str, net: NetworkLog, shots: Path) -> None:
    """Retrain on the decided round (one short epoch) and propose the next: the reader's page shows, beside the
    case, the model's class probabilities (mean +- sd of the MC passes) and its saliency map."""
    from medwb.al.loop import ActiveLearningLoop
    from medwb.data import open_dataset
    from medwb.models import TrainConfig
    from medwb.store import Study

    with Study.open(folder) as s:
        loop = ActiveLearningLoop(s, open_dataset(s.dataset_path, progress=False), strategy="random", batch_size=3,
                                  seed=0, progress=False, pretrain=False, semi=False, mc_passes=5,
                                  train_config=TrainConfig(epochs=1, min_epochs=1, batch_size=32, patience=1, seed=0))
        loop.complete()
        loop.propose()
        assert len(s.class_evidence(2)) == 3
    page = Reader(browser, "ana", link, net).page
    page.wait_for_function(f"{_TEXTS}.some(e => /class probabilities/.test(e.innerText))", timeout=60_000)
    text = "\n".join(page.locator(".widget-html-content").all_inner_texts())
    assert re.search(r"1: 1\s+0\.\d\d ± 0\.\d\d", text) and "where the model looked" in text, text
    page.wait_for_function("Array.from(document.querySelectorAll('.widget-image')).filter("
                           "i => i.offsetParent !== null && i.naturalWidth > 0).length >= 2", timeout=60_000)
    page.screenshot(path=str(shots / "review_app_reader_probabilities.png"), full_page=True)


def test_two_readers_and_an_adjudicator_store_exactly_what_they_chose(open_round, tmp_path):
    from playwright.sync_api import sync_playwright

    from medwb.pipelines.review_app import ReviewServer
    from medwb.store import Study

    folder, batch, double = open_round
    net = NetworkLog()
    shots = ROOT / "reports"
    shots.mkdir(exist_ok=True)
    with ReviewServer(folder, ["ana", "ben"], adjudicators=["dr_s"]) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        researcher = None
        try:
            researcher = ResearcherNotebook(browser, folder, tmp_path / "lab", net)
            assert f"Round 1: 0 of {N_CASES} cases decided" in researcher.shows_the_store()
            ana = Reader(browser, "ana", srv.links["ana"], net)
            ben = Reader(browser, "ben", srv.links["ben"], net)
            assert ana.case_on_screen() != ben.case_on_screen()  # leases: never the same case at once
            first = ana.case_on_screen()
            ana.decide(_answer(first, "ana", double))
            second = ana.case_on_screen()
            ana.decide(1 - _answer(second, "ana", double))  # a slip ...
            undone = ana.press("u", "undone")  # ... taken back: the label is retracted, the case shown again
            assert undone.startswith("undone") and second in undone
            ana.saved.pop(second)
            ana.seen_at = time.monotonic()
            ana.page.screenshot(path=str(shots / "review_app_reader.png"), full_page=True)
            halfway = False
            while True:
                if not halfway and ana.decisions + ben.decisions >= N_CASES // 2:  # live, mid-round
                    halfway = True
                    researcher.shows_the_store()
                a, b = ana.case_on_screen(), ben.case_on_screen()
                if a:
                    ana.decide(_answer(a, "ana", double))
                if b:
                    ben.decide(_answer(b, "ben", double))
                if a is None and b is None:
                    break
            text = researcher.shows_the_store()  # every read in; the disagreements wait for the senior reader
            assert f"{N_DOUBLE} disagreement(s) wait for adjudication" in text and f"{N_DOUBLE} cases" in text, text
            dr = Reader(browser, "dr_s", srv.links["dr_s"], net)
            dr.page.get_by_role("tab", name="adjudicate").click()
            dr.keys = dr.page.locator(".widget-text:has(label:text-is('keys')) input").nth(1)
            dr.seen_at = time.monotonic()
            dr.page.screenshot(path=str(shots / "review_app_adjudication.png"), full_page=True)
            adjudicated = {}
            while (cid := dr.case_on_screen(r"adjudication \d+/\d+: case")) is not None:
                v = _answer(cid, "ana", double)
                out = dr.press(str(v), f"adjudicated case {cid} ")
                assert out.startswith(f"adjudicated case {cid} as {v}:"), out
                adjudicated[cid] = v
                dr.wait_for_next(cid, r"^adjudication \d+/\d+: case ")
            text = researcher.shows_the_store()
            assert f"Round 1: {N_CASES} of {N_CASES} cases decided" in text and "disagreement" not in text, text
            assert re.search(rf"^dr_s\s+0\s+0\s+0\s+{N_DOUBLE}\s*$", text, re.M) and f"{N_DOUBLE} cases" in text
            researcher.page.screenshot(path=str(shots / "review_app_researcher.png"), full_page=True)
            _next_round_shows_the_model(folder, browser, srv.links["ana"], net, shots)
            assert "Round 2: 0 of 3 cases decided" in researcher.shows_the_store()  # the next round, unasked
        finally:
            if researcher is not None:
                researcher.stop()
            browser.close()
    assert net.non_loopback() == [] and net.blocked == [], f"the app tried to reach: {net.non_loopback()}"
    decisions = ana.decisions + ben.decisions + 1  # + the undone one
    assert decisions >= 200, decisions
    assert set(adjudicated) == double
    assert not (set(ana.saved) & set(ben.saved)) - double  # single reads: never both readers
    with Study.open(folder) as s:
        per = s.labels(per_annotator=True)
        reads = {(str(r.case_id), r.annotator): int(r.value) for r in per.itertuples()}
        want = {**{(c, "ana"): v for c, v in ana.saved.items()}, **{(c, "ben"): v for c, v in ben.saved.items()},
                **{(c, "dr_s"): v for c, v in adjudicated.items()}}
        assert reads == want  # every answer stored once, under its reader, with the class typed
        cur = s.labels(latest=True).set_index("case_id")
        assert sorted(cur.index) == sorted(batch)  # 0 cases lost
        assert all(cur.loc[c, "annotator"] == "dr_s" and cur.loc[c, "value"] == adjudicated[c] for c in double)
        assert s.case_status(1)["decided"].all() and s.disagreements().empty
        assert (s.label_history()["to_source"] == "retracted").sum() == 1
        s.check_round_decided(1)
