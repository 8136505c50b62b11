"""The store at scale (issue 15 item 4): v7's indexes exist and are used, single-case writes read no whole table,
and the round's status reads only the round's labels. Timings: benchmarks/store/bench_store.py."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from medwb.store import Study
from medwb.store.schema import INDEXES_V7


def _study(tmp_path: Path, n: int = 2000) -> Study:
    s = Study.create(tmp_path / "s", dataset_path=tmp_path, task="classification", classes={0: "a", 1: "b"}, key=False)
    s.add_cases(pd.DataFrame({"case_id": [f"c{i:05d}" for i in range(n)], "split": "train",
                              "sha256": [f"{i:064x}" for i in range(n)], "label": [i % 2 for i in range(n)]}))
    return s


def _statements(s: Study, fn) -> list[str]:
    seen: list[str] = []
    s.conn.set_trace_callback(seen.append)
    try:
        fn()
    finally:
        s.conn.set_trace_callback(None)
    return seen


def test_v7_indexes_exist_and_serve_the_hot_queries(tmp_path: Path) -> None:
    s = _study(tmp_path)
    names = {r[0] for r in s.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {n for n, _ in INDEXES_V7} <= names
    plans = {
        "SELECT id FROM review_queue WHERE case_id = 'c1' AND resolved_at IS NULL": "review_queue_case",
        "SELECT label_id FROM label_history WHERE case_id = 'c1'": "label_history_case",
        "SELECT 1 FROM adjudications WHERE case_id = 'c1'": "adjudications_case",
        "DELETE FROM leases WHERE expires_at <= 5": "leases_expires",
        "SELECT round FROM proposals WHERE case_id = 'c1'": "proposals_case",
    }
    for sql, index in plans.items():
        plan = " ".join(str(r[-1]) for r in s.conn.execute("EXPLAIN QUERY PLAN " + sql))
        assert index in plan, (sql, plan)
    s.close()


def test_single_case_writes_read_no_whole_table(tmp_path: Path) -> None:
    """Adding one case, re-adding known ones and saving a label look cases up by id, never all of them."""
    s = _study(tmp_path)
    one = pd.DataFrame({"case_id": ["new"], "split": ["train"], "sha256": ["f" * 64], "label": [1]})
    for fn in (lambda: s.add_cases(one), lambda: s.add_cases(one),
               lambda: s.add_label("c00007", value=1, annotator="ann")):
        for sql in _statements(s, fn):
            assert "FROM cases" not in sql or "WHERE" in sql, sql
    assert s.add_cases(one) == 0 and len(s.cases()) == 2001
    s.close()


def test_round_status_reads_only_the_rounds_labels(tmp_path: Path) -> None:
    """case_status and disagreements give what they gave before, from the round's cases / double reads only."""
    s = _study(tmp_path)
    s.add_labels([{"case_id": f"c{i:05d}", "value": i % 2, "annotator": "alice"} for i in range(0, 300)])
    s.add_labels([{"case_id": f"c{i:05d}", "value": (i + (i % 3 == 0)) % 2, "annotator": "bob"} for i in range(0, 30)])
    s.add_labels([{"case_id": "c00500", "value": 1, "annotator": "model:r1-v1", "source": "auto"}])
    contested = {f"c{i:05d}" for i in range(0, 30) if i % 3 == 0}
    assert set(s.disagreements()["case_id"]) == contested
    s.adjudicate("c00000", value=1, by="senior")
    assert set(s.disagreements()["case_id"]) == contested - {"c00000"}
    agreed = set(s.agreed_labels()["case_id"])
    assert "c00000" in agreed and "c00003" not in agreed and "c00500" in agreed and len(agreed) == 301 - 9
    sel = ["c00000", "c00001", "c00003", "c00400"]
    s.start_round(1, "random", {}, sel, [])
    s.save_proposals(1, sel)
    st = s.case_status(1).set_index("case_id")
    assert st.loc["c00000", "status"] == "adjudicated" and st.loc["c00001", "decided"]
    assert st.loc["c00003", "status"] == "readers disagree: adjudication needed"
    assert st.loc["c00400", "status"] == "not read" and st.loc["c00001", "readers"] == ["alice", "bob"]
    s.close()
