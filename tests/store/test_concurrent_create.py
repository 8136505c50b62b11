"""Several creators of one study at the same moment (CI run of stop 34: two `medwb simulate` runs on one --out both
made the shared all-labels study; one deleted the other's freshly linked database and both failed). Every caller of
Study.open_or_create gets the one study, and no database is lost. On a plain and on an encrypted study; threads on a barrier (flock serialises separate
open file descriptions, so threads race like processes here)."""
from __future__ import annotations

import threading
from pathlib import Path

from medwb.store import Study


def test_open_or_create_at_once_gives_everyone_the_same_study(tmp_path: Path, study_encryption: str) -> None:
    for trial in range(10):
        folder = tmp_path / f"s{trial}"
        barrier = threading.Barrier(6)
        outcomes: list[str] = []

        def make(who: int) -> None:
            barrier.wait(timeout=30)
            try:
                st = Study.open_or_create(folder, dataset_path="/data", task="classification", classes=["a", "b"],
                                          name=f"by-{who}", key=False)
                outcomes.append(st.name)
                st.close()
            except Exception as e:  # the assertion below names it
                outcomes.append(f"{type(e).__name__}: {e}")

        threads = [threading.Thread(target=make, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(outcomes) == 6 and all(o.startswith("by-") for o in outcomes), outcomes
        assert len(set(outcomes)) == 1, outcomes  # one creator won; everyone else opened its study
        with Study.open(folder) as st:
            assert st.name == outcomes[0]


def test_opening_waits_out_a_moment_of_sqlite_busy_and_nothing_else() -> None:
    """SQLite answers SQLITE_BUSY without its busy handler when a WAL database's last connection is cleaning up as
    another opens (the CI failure of session 35: "not a medwb study database (database is locked)"); opening retries
    that, and only that."""
    import sqlite3

    import pytest

    from medwb.store import cipher, schema

    calls: list[int] = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "open"

    assert schema.retry_busy(flaky) == "open" and len(calls) == 3
    assert cipher.busy(sqlite3.OperationalError("database is locked"))
    assert not cipher.busy(sqlite3.DatabaseError("file is not a database"))
    calls.clear()

    def broken() -> str:
        calls.append(1)
        raise sqlite3.DatabaseError("file is not a database")

    with pytest.raises(sqlite3.DatabaseError, match="not a database"):
        schema.retry_busy(broken)
    assert len(calls) == 1  # a real error is not retried
