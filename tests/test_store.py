from __future__ import annotations

import random
import sqlite3
import threading
from pathlib import Path

import pytest

from bandit.errors import Conflict
from bandit.history import DAY, HISTORY_DAYS, Contact, CustomerHistory
from bandit.records import DecisionRecord, OutcomeRecord
from bandit.store import MAX_IDS, SQLiteStore


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


def _decision(decision_id: str, customer: str, at: float, action: str = "renewal/email/morning") -> DecisionRecord:
    offer, channel, slot = action.split("/") if "/" in action else (action, "", "")
    return DecisionRecord(
        decision_id=decision_id, request_id=f"r-{decision_id}", customer_id=customer, touchpoint="app", event_time=at,
        action_id=action, offer=offer, channel=channel, slot=slot, send_at=at, probability=0.5, exploratory=False,
        policy_id="p", model_version="v", personalised=True, features={"n": {"touchpoint": "app"}},
        eligible=("do_nothing", action), pmf=(0.5, 0.5),
    )  # fmt: skip


def test_neighbouring_decision_writes_commit_together_and_a_refused_one_fails_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    store.submit_decision(_decision("d0", "c0", 1.0)).result()
    gate = threading.Event()
    blocker = store.submit(lambda conn: gate.wait(5))  # the next writes queue up as one group
    first = store.submit_decisions([_decision("d1", "c1", 2.0), _decision("d2", "c1", 3.0)])
    again = store.submit_decision(_decision("d0", "c0", 1.0))  # already logged: refused
    last = store.submit_decision(_decision("d3", "c2", 4.0))
    outcome = store.submit_outcome(OutcomeRecord("o1", "c1", "complaint", -50.0, 5.0))  # not a decision: on its own
    after = store.submit_decision(_decision("d4", "c3", 6.0))
    gate.set()
    assert blocker.result() is True
    assert first.result() is None and last.result() is None and after.result() is None and outcome.result() is False
    with pytest.raises(sqlite3.IntegrityError):
        again.result()
    for table in ("decisions", "join_queue"):
        logged = [r[0] for r in store.db.execute(f"SELECT decision_id FROM {table} ORDER BY decision_id")]
        assert logged == ["d0", "d1", "d2", "d3", "d4"]
    store.close()


def _reference_history(conn: sqlite3.Connection, customer: str, now: float, days: float) -> CustomerHistory:
    """What the log's history of a customer was before reads of many customers at once: three queries."""
    since = now - max(days, HISTORY_DAYS) * DAY
    rows = conn.execute(
        "SELECT decision_id, event_time, channel, offer FROM decisions "
        "WHERE customer_id = ? AND event_time >= ? AND event_time < ? AND action_id != 'do_nothing' ORDER BY event_time",
        (customer, since, now),
    ).fetchall()
    contacts = tuple(Contact(*r) for r in rows)
    last = contacts[-1].event_time if contacts else conn.execute(
        "SELECT MAX(event_time) FROM decisions WHERE customer_id = ? AND event_time < ? AND action_id != 'do_nothing'",
        (customer, now),
    ).fetchone()[0]  # fmt: skip
    outcomes = conn.execute(
        "SELECT type, MAX(event_time) FROM outcomes WHERE customer_id = ? AND event_time < ? GROUP BY type", (customer, now)
    ).fetchall()
    return CustomerHistory(contacts, last, dict(outcomes))


def test_customer_logs_give_each_history_as_of_any_time_in_their_span(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    rng = random.Random(5)
    customers = [f"c{i}" for i in range(12)]
    actions = ["do_nothing", "renewal/email/morning", "sim_only/sms/evening"]
    futures = []
    for i in range(600):
        record = _decision(f"d{i}", rng.choice(customers), rng.uniform(0, 90) * DAY, rng.choice(actions))
        futures.append(store.submit_decision(record))
    for i in range(80):
        kind = rng.choice(["complaint", "contract_renewal"])
        futures.append(store.submit_outcome(OutcomeRecord(f"o{i}", rng.choice(customers), kind, 1.0, rng.uniform(0, 90) * DAY)))
    for future in futures:
        future.result()
    conn = sqlite3.connect(store.path)
    for days in (7.0, 45.0):
        for _ in range(20):
            first = rng.uniform(20, 80) * DAY
            last = first + rng.choice([0.0, 1.0, rng.uniform(0, 10) * DAY])
            wanted = rng.sample(customers + ["nobody"], 5)
            logs = store.customer_logs(wanted, first, last, days)
            assert set(logs) == set(wanted)
            for customer in wanted:
                for now in (first, last, rng.uniform(first, last)):
                    assert logs[customer].at(now) == _reference_history(conn, customer, now, days)
                    assert store.history(customer, now, days) == _reference_history(conn, customer, now, days)
    conn.close()
    store.close()


def test_decisions_by_request_finds_the_logged_ones(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "log.db")
    store.submit_decisions([_decision(f"d{i}", "c", float(i)) for i in range(MAX_IDS + 20)]).result()
    wanted = [f"r-d{i}" for i in range(0, MAX_IDS + 20, 2)] + ["r-unknown"]
    found = store.decisions_by_request(wanted)
    assert set(found) == set(wanted) - {"r-unknown"}
    assert found["r-d4"] == store.decision_by_request("r-d4")
    assert store.decisions_by_request([]) == {}
    store.close()
