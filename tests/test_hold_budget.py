"""The worker's hold on SQLite's write lock beside a server: its writes of joined examples committed
in parts sized to a time budget (store/sqlite/holds.py)."""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from pathlib import Path

import pytest

from bandit.config import BreinConfig
from brain.worker import BESIDE_A_SERVER_HOLD_BUDGET, BESIDE_A_SERVER_SYNCED_COMMITS
from reward.joiner import Joiner
from store.records import DecisionRecord
from store.sqlite import SQLiteStore
from store.sqlite.holds import FIRST_PART_ROWS, LEAST_PART_ROWS, PartSizer
from tests.conftest import T0, sqlite_count

DAY = 86_400.0
CLOSED = T0 + 40 * DAY
DECISIONS = 3000
BUDGET = 0.005


def _decision(number: int) -> DecisionRecord:
    decision_id = f"d{number:05d}"
    return DecisionRecord(
        decision_id=decision_id, request_id=decision_id, customer_id=f"c{number % 700}", touchpoint="app",
        event_time=T0 + number, action_id="renewal/email/morning", offer="renewal", channel="email", slot="morning",
        send_at=T0 + number, probability=0.5, exploratory=False, policy_id="p", model_version="v", personalised=True,
        features={"n": {"touchpoint": "app"}}, eligible=("do_nothing", "renewal/email/morning"), pmf=(0.5, 0.5),
    )  # fmt: skip


def _settle(sizer: PartSizer, fixed: float, per_row: float, parts: int, spike_every: int = 0) -> list[int]:
    """Rows of ``parts`` parts whose hold is ``fixed`` + ``per_row`` a row (ten times that every ``spike_every``-th)."""
    sizes = []
    for number in range(1, parts + 1):
        rows = sizer.rows()
        sizes.append(rows)
        held = fixed + per_row * rows
        sizer.held(rows, 10 * held if spike_every and number % spike_every == 0 else held)
    return sizes


@pytest.mark.parametrize("fixed", [0.0005, 0.002, 0.0035])
def test_parts_settle_where_their_hold_is_the_budget_whatever_the_fixed_cost(fixed: float) -> None:
    per_row = 0.000_02
    sizes = _settle(PartSizer(BUDGET), fixed, per_row, 40)
    assert sizes[0] == FIRST_PART_ROWS
    settled = sizes[-10:]
    assert all(fixed + per_row * rows == pytest.approx(BUDGET, rel=0.1) for rows in settled), settled


def test_a_part_held_up_by_the_scheduler_does_not_shrink_the_next_ones() -> None:
    calm = _settle(PartSizer(BUDGET), 0.002, 0.000_02, 60)
    spiky = _settle(PartSizer(BUDGET), 0.002, 0.000_02, 60, spike_every=7)
    assert min(spiky[-30:]) >= 0.9 * calm[-1]


def test_a_part_is_never_smaller_than_the_least_however_slow() -> None:
    assert _settle(PartSizer(BUDGET), 0.05, 0.001, 10)[-1] == LEAST_PART_ROWS


def test_the_budget_must_be_positive() -> None:
    with pytest.raises(ValueError, match="budget: expected seconds > 0, got 0"):
        PartSizer(0)


@pytest.fixture
def commits(tmp_path: Path) -> Iterator[tuple[SQLiteStore, list[tuple[float, int]]]]:
    seen: list[tuple[float, int]] = []
    store = SQLiteStore(
        tmp_path / "log.db", hold_budget=BUDGET, on_commit=lambda seconds, writes, ok: seen.append((seconds, writes))
    )
    for start in range(0, DECISIONS, 500):
        store.decisions.submit_decisions([_decision(n) for n in range(start, start + 500)]).result()
    seen.clear()
    yield store, seen
    store.close()


def test_a_joiners_write_beside_a_server_is_committed_in_parts_that_each_hold_the_lock_about_the_budget(
    config: BreinConfig, commits: tuple[SQLiteStore, list[tuple[float, int]]]
) -> None:
    """One write of 3,000 examples, with a budget of 5 ms: whole, it holds the lock for all of them
    (a transaction of the joiner's beside a server held it 13-16 ms for 500); in parts, each part
    is one commit of its own, the parts' median hold within the budget, and every example is
    written once and its decision dequeued."""
    store, seen = commits
    report = Joiner(config, store.joins, write_rows=DECISIONS).run(until=CLOSED)
    assert report.joined + report.unactivated == DECISIONS
    parts = seen[1:-1]  # between the run's start and its finish
    assert len(parts) >= DECISIONS // 1000 and all(writes == 1 for _, writes in parts)
    assert statistics.median(seconds for seconds, _ in parts) <= 2 * BUDGET
    assert sqlite_count(store, "joined_examples") == DECISIONS
    assert sqlite_count(store, "join_queue") == 0


def test_without_a_budget_a_write_is_one_transaction(config: BreinConfig, tmp_path: Path) -> None:
    seen: list[int] = []
    store = SQLiteStore(tmp_path / "log.db", on_commit=lambda seconds, writes, ok: seen.append(writes))
    try:
        store.decisions.submit_decisions([_decision(n) for n in range(DECISIONS)]).result()
        seen.clear()
        Joiner(config, store.joins, write_rows=DECISIONS).run(until=CLOSED)
        assert len(seen) == 3  # the run's start, its one write, its finish
        assert sqlite_count(store, "joined_examples") == DECISIONS
    finally:
        store.close()


@pytest.mark.parametrize(("synced", "synchronous"), [(True, 2), (False, 1)])
def test_a_writer_beside_a_server_may_leave_its_commits_to_be_synced_by_the_servers(
    tmp_path: Path, synced: bool, synchronous: int
) -> None:
    """Unsynced: PRAGMA synchronous = NORMAL (1) on the writer's connection, FULL (2) otherwise."""
    store = SQLiteStore(tmp_path / "log.db", synced_commits=synced)
    try:
        assert store.engine.submit(lambda conn: conn.execute("PRAGMA synchronous").fetchone()[0]).result() == synchronous
    finally:
        store.close()


def test_the_worker_beside_a_server_writes_in_parts_and_unsynced() -> None:
    """What brain/worker_process.py and `brein worker` open their store with."""
    assert 0 < BESIDE_A_SERVER_HOLD_BUDGET <= 0.005
    assert not BESIDE_A_SERVER_SYNCED_COMMITS
