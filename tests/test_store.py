from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from bandit.errors import Conflict
from bandit.records import OutcomeRecord
from bandit.store import SQLiteStore


def test_a_failing_write_fails_alone_in_its_group(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    gate = threading.Event()
    blocker = store.submit(lambda conn: gate.wait(5))  # holds the writer so the next writes queue up as one group
    good = store.submit_outcome(OutcomeRecord("o1", "c1", "complaint", -50.0, 1.0))

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO outcomes VALUES ('o2', 'c1', 'complaint', -50, 1, '', 0)")
        raise Conflict("half-way")

    bad = store.submit(broken)
    also_good = store.submit_outcome(OutcomeRecord("o3", "c1", "complaint", -50.0, 2.0))
    gate.set()
    assert blocker.result() is True
    assert good.result() is False and also_good.result() is False
    with pytest.raises(Conflict):
        bad.result()
    ids = {r[0] for r in store.db.execute("SELECT outcome_id FROM outcomes")}
    assert ids == {"o1", "o3"}  # o2 was rolled back with its savepoint
    store.close()


def test_duplicate_outcome_is_recognised_and_a_different_one_refused(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    record = OutcomeRecord("o1", "c1", "contract_renewal", 240.0, 10.0, "d1", received_at=1.0)
    assert store.submit_outcome(record).result() is False
    assert store.submit_outcome(OutcomeRecord("o1", "c1", "contract_renewal", 240.0, 10.0, "d1", received_at=2.0)).result() is True
    with pytest.raises(Conflict, match="outcome_id 'o1' was already recorded with different content"):
        store.submit_outcome(OutcomeRecord("o1", "c1", "contract_renewal", 100.0, 10.0, "d1")).result()
    store.close()


def test_close_commits_what_is_queued_and_reopening_keeps_it(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    futures = [store.submit_outcome(OutcomeRecord(f"o{i}", "c", "complaint", -1.0, float(i))) for i in range(500)]
    store.close()
    assert all(f.result() is False for f in futures)
    reopened = SQLiteStore(tmp_path / "log.db")
    assert reopened.db.execute("SELECT COUNT(*) FROM outcomes").fetchone()[0] == 500
    assert reopened.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reopened.close()


def test_in_memory_is_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="expected a file path"):
        SQLiteStore(":memory:")
