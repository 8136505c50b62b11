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


def test_double_read_is_blind_and_disagreement_waits_for_adjudication(study: Study) -> None:
    assert study.set_reads(["c0"], 2) == 1
    assert study.claim_case("ana", clock=0) == "c0" and study.claim_case("ben", clock=0) == "c0"  # both read it
    assert study.claim_case("cy", clock=0) == "c1"  # two reads are enough: not a third reader
    study.add_label("c0", value=0, annotator="ana")
    st = study.case_status().set_index("case_id")
    assert st.loc["c0", "status"] == "waiting for 1 more read(s)" and not st.loc["c0", "decided"]
    study.add_label("c0", value=1, annotator="ben")
    st = study.case_status().set_index("case_id")
    assert st.loc["c0", "status"] == "readers disagree: adjudication needed" and st.loc["c0", "readers"] == ["ana", "ben"]
    assert list(study.disagreements()["case_id"]) == ["c0"]
    assert "c0" not in set(study.agreed_labels()["case_id"])  # a contested label never trains a model
    with pytest.raises(StoreError, match="double-read case"):
        study.check_round_decided(1)
    assert study.claim_case("dr_senior", clock=1) != "c0"
    lid = study.adjudicate("c0", value=1, by="dr_senior", note="consolidation visible")
    cur = study.labels().set_index("case_id")
    assert cur.loc["c0", "label_id"] == lid and cur.loc["c0", "annotator"] == "dr_senior"
    assert "adjudicated: consolidation visible" == cur.loc["c0", "note"]
    assert study.case_status().set_index("case_id").loc["c0", "status"] == "adjudicated"
    assert study.disagreements().empty and "c0" in set(study.agreed_labels()["case_id"])
    study.check_round_decided(1)  # nothing blocks the round now
    per = study.labels(per_annotator=True)
    assert sorted(per.loc[per["case_id"] == "c0", "annotator"]) == ["ana", "ben", "dr_senior"]  # reads kept


def test_agreeing_double_read_is_decided_without_adjudication(study: Study) -> None:
    study.set_reads(["c1"], 2)
    study.add_label("c1", value=1, annotator="ana")
    study.add_label("c1", value=1, annotator="ben")
    assert study.case_status().set_index("case_id").loc["c1", "decided"]
    assert study.disagreements().empty
    with pytest.raises(StoreError, match="not proposed"):
        study.set_reads(["zz"], 2)


def test_double_read_masks_agree_by_their_dice(tmp_path: Path) -> None:
    """Two readers' masks of a case agree when their Dice reaches min_dice (0.8 by default), not when they are
    equal pixel for pixel; below it the case waits for adjudication and trains no model."""
    import numpy as np

    s = Study.create(tmp_path / "m", dataset_path="x", task="segmentation", classes={0: "background", 1: "head"})
    ids = ["m0", "m1", "m2"]
    s.add_cases(pd.DataFrame({"case_id": ids, "split": "train"}))
    s.start_round(1, "hybrid", {}, ids, [])
    s.save_proposals(1, ids)
    s.set_reads(ids[:2], 2)

    def square(r0: int, side: int = 10) -> np.ndarray:
        m = np.zeros((32, 32), np.int64)
        m[r0:r0 + side, 5:5 + side] = 1
        return m

    for cid, shift in (("m0", 1), ("m1", 4)):  # overlaps of 9 and 6 rows of 10: Dice 0.9 and 0.6
        s.add_label(cid, mask=square(5), annotator="ana", round=1)
        s.add_label(cid, mask=square(5 + shift), annotator="ben", round=1)
    s.add_label("m2", mask=square(5), annotator="ana", round=1)
    st = s.case_status(1).set_index("case_id")
    assert st["dice"].round(3).tolist()[:2] == [0.9, 0.6] and np.isnan(st.loc["m2", "dice"])
    assert st["agree"].tolist() == [True, False, True] and st["decided"].tolist() == [True, False, True]
    assert st.loc["m1", "status"] == "readers disagree: adjudication needed"
    d = s.disagreements()
    assert d["case_id"].tolist() == ["m1"] and d.loc[0, "readers"] == ["ana", "ben"]
    assert [Path(p).is_file() for p in d.loc[0, "mask_files"]] == [True, True] and round(d.loc[0, "dice"], 3) == 0.6
    assert set(s.agreed_labels()["case_id"]) == {"m0", "m2"}  # the contested mask trains nothing
    with pytest.raises(StoreError, match="not decided"):
        s.check_round_decided(1)
    assert s.case_status(1, min_dice=0.95)["agree"].tolist() == [False, False, True]  # the threshold is a parameter
    assert s.disagreements(min_dice=0.5).empty and len(s.agreed_labels(min_dice=0.5)) == 3
    with pytest.raises(StoreError, match="min_dice"):
        s.case_status(1, min_dice=80)
    s.adjudicate("m1", mask=square(5), by="dr_s")
    assert s.case_status(1)["decided"].all() and s.disagreements().empty
    s.check_round_decided(1)
    s.close()
