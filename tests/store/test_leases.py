"""Per-case leases and stored proposals: several readers on one study never get the same case."""
from __future__ import annotations

import threading
from pathlib import Path

import pandas as pd
import pytest

from medwb.errors import StoreError
from medwb.store import Study

CLASSES = {0: "normal", 1: "pneumonia"}


@pytest.fixture
def study(tmp_path: Path) -> Study:
    s = Study.create(tmp_path / "s", dataset_path="x.npz", task="classification", classes=CLASSES)
    s.add_cases(pd.DataFrame({"case_id": [f"c{i}" for i in range(6)], "split": "train"}))
    s.start_round(1, "hybrid", {}, [f"c{i}" for i in range(6)], [0.0] * 6)
    s.save_proposals(1, [f"c{i}" for i in range(6)], [0, 1, None, 1, 0, 1], [0.9, 0.55, float("nan"), 0.8, 0.7, 0.6],
                     "r0")
    return s


def test_two_readers_never_share_a_case_and_decided_cases_leave(study: Study) -> None:
    a, b = study.claim_case("ana", clock=0), study.claim_case("ben", clock=0)
    assert (a, b) == ("c0", "c1")
    assert study.claim_case("ana", clock=1) == "c0"  # a reloaded page resumes the same case
    study.add_label("c0", value=0, annotator="ana")
    assert study.claim_case("ana", clock=2) == "c2"  # c0 decided, c1 is ben's
    p = study.proposals()
    assert list(p["case_id"]) == [f"c{i}" for i in range(6)] and p["labelled"].tolist()[:2] == [True, False]
    assert p.loc[1, "prelabel"] == 1 and p["prelabel"].isna().tolist()[2] and p["confidence"].isna().tolist()[2]


def test_a_lease_expires_when_its_reader_leaves(study: Study) -> None:
    assert study.claim_case("ana", ttl=10, clock=0) == "c0"
    assert study.holds_lease("c0", "ana", clock=5) and not study.holds_lease("c0", "ben", clock=5)
    assert study.claim_case("ben", clock=11) == "c0"  # ana's lease ran out: ben gets the case
    assert not study.holds_lease("c0", "ana", clock=11) and not study.renew_lease("c0", "ana", clock=12)
    assert not study.retake_case("c0", "ana", clock=12)  # ben holds it
    assert study.release_case("c0", "ben") and study.retake_case("c0", "ana", clock=13)


def test_every_case_handed_out_once_under_concurrent_claims(study: Study) -> None:
    got: list[str] = []
    lock = threading.Lock()

    def reader(name: str) -> None:
        with Study.open(study.folder) as s:
            while (c := s.claim_case(name)) is not None:
                with lock:
                    got.append(c)
                s.add_label(c, value=0, annotator=name)

    threads = [threading.Thread(target=reader, args=(n,)) for n in ("ana", "ben", "cy")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == [f"c{i}" for i in range(6)]  # 0 lost, 0 twice
    assert study.claim_case("ana") is None


def test_bad_claims_are_refused(study: Study) -> None:
    with pytest.raises(StoreError, match="reader"):
        study.claim_case(" ")
    with pytest.raises(StoreError, match="ttl"):
        study.claim_case("ana", ttl=0)
    with pytest.raises(StoreError, match="one per case"):
        study.save_proposals(1, ["c0", "c1"], [0])
