"""The joiner's state on SQLite (store.ports.JoinState).

A decision enters the join intake in the log's file (by a trigger, in the write that logs it). A run
first takes the intake into the join queue in the worker's file (store/sqlite/worker_schema.py) and
then deletes what it took from the intake, a range of its increasing key at a time; everything else
the joiner writes (its examples, their decisions' removal from the queue, its runs) is in the
worker's file, whose write lock no Decide waits for.

Two tricks keep a run over a million decisions fast, both behind the port: a closed decision's key
is its rowid, so that the customers' other decisions are read with the closed ones left out from
the index alone (no row read twice); and a write of examples raises the writer's page cache, so
the index pages it changes stay in memory until the commit instead of being spilled to the WAL
and read back (half the write's time).
"""

from __future__ import annotations

import functools
import math
import sqlite3
import sys
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from itertools import chain, groupby
from operator import itemgetter
from typing import Any

from store.records import (
    ClosingCustomer,
    JoinDecision,
    JoinedExample,
    JoinRun,
    LateCustomer,
    LateOutcome,
    OutcomeFacts,
    ProvisionalExample,
    StoredStage,
    WrittenExamples,
)
from store.rows import (
    NEW_OUTCOMES,
    RUN_COLUMNS,
    example_rows,
    from_json,
    late_customers,
    late_windows,
    new_stage_keys,
    stored_stages,
    to_json,
    written_examples,
)
from store.sqlite.engine import Engine
from store.sqlite.statements import marks

WRITE_CACHE_KIB = 256 * 1024
"""The writer's page cache during a write of examples."""
ROWS_PER_STATEMENT = 2000
"""Examples one INSERT takes: 20,000 values bound, under SQLite's limit of 32,766."""
FACT_COLUMNS = "d.decision_id, d.event_time, d.offer, d.channel, d.action_id"
READ_DECISIONS = 5000
READ_CUSTOMERS = 1500
"""A batch of customers whose facts are read together: at most about this many closed decisions
and customers (one read each)."""
INTAKE_ROWS = 50_000
"""Decisions taken from the intake into the join queue in one write of the worker's file."""
TRIM_ROWS = 2_000
"""Intake rows one write of the log's file deletes: each such write holds the lock a Decide's
commit waits for, so it stays short (a range of the intake's key: a few pages)."""
TRIM_EVERY_SECONDS = 0.1
"""At most one trim write this often."""
QUEUED = ("SELECT (SELECT COUNT(*) FROM join_queue WHERE event_time <= ?1) + (SELECT COUNT(*) FROM join_intake i "
          "WHERE i.seq > ?2 AND i.event_time <= ?1 "
          "AND NOT EXISTS (SELECT 1 FROM join_queue q WHERE (q.event_time, q.decision_id) = (i.event_time, i.decision_id)) "
          "AND NOT EXISTS (SELECT 1 FROM joined_examples j WHERE j.decision_id = i.decision_id))")  # fmt: skip
"""Decisions queued (event time <= ?1): in the join queue, or in the intake past ?2 (what this process
has taken: each of those is in the queue or joined) and neither in the queue nor joined. Only the
intake's rows past ?2 are looked up: a backlog's intake, trimmed a little at a time, holds a million
rows for minutes, and looking each up made every count a second long."""

CLOSED = (
    # The queue's key is the decision's (id, event time): read from the queue, it names a gone one too.
    "SELECT d.customer_id, d.rowid, q.decision_id, q.event_time, d.offer, d.channel, d.action_id FROM join_queue q "
    "LEFT JOIN decisions d ON d.decision_id = q.decision_id WHERE {closes} ORDER BY d.customer_id, d.event_time, d.decision_id"
)
CLOSING = CLOSED.format(closes="q.event_time <= :cutoff")
STAGING = CLOSED.format(
    closes="q.event_time > :since AND q.event_time <= :cutoff AND NOT EXISTS "
    "(SELECT 1 FROM provisional_examples p JOIN provisional_stages s ON s.stage = p.stage WHERE p.decision_id = q.decision_id "
    "AND s.age >= (SELECT age FROM provisional_stages WHERE stage = :stage))"
)
"""CLOSING for a provisional stage: the queued decisions in (since, cutoff] without an example of that
stage's age or a later one (one staged later under other windows is not staged again earlier)."""
LATE = (
    "WITH fresh AS (SELECT json_extract(value, '$[0]') AS customer_id, json_extract(value, '$[1]') AS since, "
    "json_extract(value, '$[2]') AS until, json_extract(value, '$[3]') AS newest FROM json_each(?)), "
    "late AS (SELECT customer_id, since, until FROM fresh f WHERE EXISTS (SELECT 1 FROM decisions d JOIN joined_examples j "
    "ON j.decision_id = d.decision_id WHERE d.customer_id = f.customer_id AND d.event_time >= f.since "
    "AND d.event_time < f.until AND j.horizon < f.newest)) "
    "SELECT l.customer_id, d.decision_id, d.event_time, d.offer, d.channel, d.action_id, a.event_time, j.horizon "
    "FROM late l JOIN decisions d ON d.customer_id = l.customer_id AND d.event_time >= l.since AND d.event_time < l.until "
    "LEFT JOIN activations a ON a.decision_id = d.decision_id LEFT JOIN joined_examples j ON j.decision_id = d.decision_id "
    "ORDER BY l.customer_id, d.event_time, d.decision_id"
)
"""The decisions in the late windows (store.rows.late_windows) of the customers one of whose
decisions there was joined before the newest of their new outcomes arrived."""
RECENT_CREDIT = ("SELECT d.action_id, j.credit FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
                 "WHERE j.status = 'joined' ORDER BY j.run DESC, j.event_time DESC, j.decision_id DESC LIMIT ?")

_Closed = tuple[str, int, str, float, str, str, str]
"""A closed decision: (customer id, its rowid, decision id, event time, offer, channel, action id).
A plain tuple: a run holds a million of them."""
_Facts = tuple[dict[str, float], dict[str, list[JoinDecision]], dict[str, list[OutcomeFacts]]]


@functools.lru_cache(maxsize=16)
def _insert_sql(count: int) -> str:
    """Insert examples of decisions still in the queue (found by its key, (event time, decision id)):
    one forgotten (or past retention) while the run computed it is not brought back. Returns the
    status of each example inserted."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return (f"INSERT OR IGNORE INTO joined_examples SELECT * FROM (VALUES {values}) AS v "
            f"WHERE (v.column3, v.column1) IN (SELECT event_time, decision_id FROM join_queue) RETURNING status")  # fmt: skip


@functools.lru_cache(maxsize=16)
def _insert_provisional_sql(count: int) -> str:
    """Insert provisional examples of decisions still in the queue; a decision's stage written before is kept."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?)"] * count)
    return (f"INSERT OR IGNORE INTO provisional_examples SELECT * FROM (VALUES {values}) AS v "
            f"WHERE (v.column4, v.column1) IN (SELECT event_time, decision_id FROM join_queue)")  # fmt: skip


@functools.lru_cache(maxsize=16)
def _queued_sql(count: int) -> str:
    values = ", ".join(["(?, ?)"] * count)
    return f"SELECT COUNT(*) FROM join_queue WHERE (event_time, decision_id) IN (SELECT column1, column2 FROM (VALUES {values}))"


@functools.lru_cache(maxsize=16)
def _dequeue_sql(count: int) -> str:
    """By the queue's key: a subquery of row values searches it, where ``IN (VALUES ...)`` would scan it."""
    values = ", ".join(["(?, ?)"] * count)
    return f"DELETE FROM join_queue WHERE (event_time, decision_id) IN (SELECT column1, column2 FROM (VALUES {values}))"


class SQLiteJoinState:
    def __init__(self, engine: Engine, worker_engine: Engine) -> None:
        """``engine``: the log's file, whose readers see the worker's; ``worker_engine``: the
        worker's file, where the joiner writes."""
        self._engine = engine
        self._worker = worker_engine
        self._taken = 0
        """The intake's seq up to which this process has taken decisions into the queue (in memory)."""
        self._trimmed_at = -math.inf

    def watermark(self) -> float | None:
        with self._engine.reading(with_worker=True) as conn:
            row = conn.execute("SELECT MAX(t) FROM (SELECT MAX(event_time) AS t FROM decisions UNION ALL "
                               "SELECT MAX(event_time) FROM outcomes)").fetchone()  # fmt: skip
        return None if row[0] is None else float(row[0])

    def outcome_horizon(self) -> int:
        """The newest outcome's seq: one writer, so everything up to it is committed."""
        with self._engine.reading(with_worker=True) as conn:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outcomes").fetchone()[0])

    def closed_count(self, cutoff: float) -> int:
        """The intake is moved into the queue first (not trimmed: a joiner with nothing to do writes
        nothing to the log's file), so that such a joiner counts only the queue."""
        self._move_intake()
        return self._queued(cutoff)

    def _queued(self, cutoff: float) -> int:
        """Queued decisions with event time <= cutoff, in one read transaction that reads the log's
        file first: the intake is trimmed only after the worker's file has committed what it took,
        so the worker's file, read after, is never behind the log's."""
        with self._engine.reading(with_worker=True) as conn:
            conn.execute("BEGIN")
            try:
                conn.execute("SELECT MAX(seq) FROM join_intake").fetchone()
                return int(conn.execute(QUEUED, (cutoff, self._taken)).fetchone()[0])
            finally:
                conn.execute("COMMIT")

    def _take_intake(self) -> None:
        """Move the intake into the join queue, before anything that reads or writes the queue; then
        trim some of what was taken from the log's file."""
        self._move_intake()
        self._trim()

    def _move_intake(self) -> None:
        """Move the intake's decisions into the join queue (the worker's file). No position is stored:
        what is in the intake is taken, less what is queued or joined already, so a joiner killed
        between the two writes, a second joiner, or a log restored from an older backup takes nothing
        twice and skips nothing (``_taken`` only spares this process reading rows again)."""
        with self._engine.reading(with_worker=True) as conn:
            last = conn.execute("SELECT MAX(seq) FROM join_intake").fetchone()[0]
        page = "SELECT seq, decision_id, event_time FROM join_intake WHERE seq > ? AND seq <= ? ORDER BY seq LIMIT ?"
        while last is not None and self._taken < last:  # what is there now: a server logging meanwhile does not keep it going
            with self._engine.reading(with_worker=True) as conn:
                rows = conn.execute(page, (self._taken, last, INTAKE_ROWS)).fetchall()
            if not rows:
                break
            self._worker.submit(functools.partial(_queue_intake, rows)).result()
            self._taken = rows[-1][0]

    def _trim(self) -> None:
        """Delete up to TRIM_ROWS of the taken intake from the log's file, at most once every
        TRIM_EVERY_SECONDS: a backlog's intake is trimmed while the run goes on, not in a burst of
        writes at its start, each of which a Decide's commit may wait for (docs/benchmarks.md)."""
        now = time.monotonic()
        if now - self._trimmed_at < TRIM_EVERY_SECONDS:
            return
        with self._engine.reading(with_worker=True) as conn:
            first = conn.execute("SELECT MIN(seq) FROM join_intake").fetchone()[0]
        if first is None or first > self._taken:
            return
        self._trimmed_at = now
        self._engine.submit(functools.partial(_trim_intake, min(self._taken, first + TRIM_ROWS - 1))).result()

    def _all_queued(self, rows: Sequence[tuple[Any, ...]]) -> bool:
        """Whether every example's decision is in the worker's join queue (by its key)."""
        found = 0
        with self._engine.reading(with_worker=True) as conn:
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                keys = tuple(chain.from_iterable((row[2], row[0]) for row in rows[start : start + ROWS_PER_STATEMENT]))
                found += int(conn.execute(_queued_sql(len(keys) // 2), keys).fetchone()[0])
        return found == len(rows)

    def closing(self, cutoff: float, watermark: float, horizon: int) -> Generator[ClosingCustomer, None, None]:
        return self._closing(CLOSING, {"cutoff": cutoff}, watermark, horizon)

    def staging(
        self, stage: int, since: float, cutoff: float, watermark: float, horizon: int
    ) -> Generator[ClosingCustomer, None, None]:
        return self._closing(STAGING, {"stage": stage, "since": since, "cutoff": cutoff}, watermark, horizon)

    def _closing(
        self, query: str, args: Mapping[str, Any], watermark: float, horizon: int
    ) -> Generator[ClosingCustomer, None, None]:
        """The closing decisions in one read (the intake taken into the queue first: it may hold
        some), then their customers' facts a batch at a time."""
        self._take_intake()
        for batch in _customer_batches(self._closed(query, args)):
            activated, others, outcomes = self._facts(batch, watermark, horizon)
            for customer, mine in batch.items():
                closed = [(d, t, o, ch, a, activated.get(d)) for _, _, d, t, o, ch, a in mine]
                yield ClosingCustomer(customer, closed, others.get(customer, []), outcomes.get(customer, []))

    def _closed(self, query: str, args: Mapping[str, Any]) -> list[_Closed]:
        """One read, whole: it visits each decision's row once, where reading them customer by
        customer would visit each again; and a read kept open for the whole run would stop SQLite
        from checkpointing the WAL that the run's own writes grow."""
        with self._engine.reading(with_worker=True) as conn:
            rows = conn.execute(query, args).fetchall()
            intern = sys.intern
            closed = [(intern(c), rowid, d, t, intern(o), intern(ch), intern(a))
                      for c, rowid, d, t, o, ch, a in rows if c is not None]  # fmt: skip
            gone = [(t, d) for c, _, d, t, *_ in rows if c is None]
        if gone:
            # Taken into the queue from an intake read before the log deleted them (Forget, retention).
            self._worker.submit(functools.partial(_dequeue, gone)).result()
        return closed

    def _facts(self, closing: Mapping[str, Sequence[_Closed]], watermark: float, horizon: int) -> _Facts:
        """Activations of the closing decisions, the customers' other decisions, their outcomes."""
        customers = list(closing)
        closed = [decision for mine in closing.values() for decision in mine]
        with self._engine.reading(with_worker=True) as conn:
            activated = dict(conn.execute(
                "SELECT decision_id, event_time FROM activations WHERE decision_id IN (SELECT value FROM json_each(?))",
                (to_json(sorted(decision[2] for decision in closed)),),
            ).fetchall())  # fmt: skip
            # The closed rows are left out by rowid, from the index alone.
            other_rows = conn.execute(
                f"SELECT d.customer_id, {FACT_COLUMNS}, a.event_time FROM decisions d "
                f"LEFT JOIN activations a ON a.decision_id = d.decision_id "
                f"WHERE d.customer_id IN ({marks(len(customers))}) AND d.event_time <= ? "
                f"AND d.rowid NOT IN (SELECT value FROM json_each(?))",
                (*customers, watermark, to_json([decision[1] for decision in closed])),
            ).fetchall()
            outcome_rows = conn.execute(
                f"SELECT customer_id, outcome_id, type, value, event_time, decision_id FROM outcomes "
                f"WHERE customer_id IN ({marks(len(customers))}) AND seq <= ? ORDER BY customer_id, event_time, outcome_id",
                (*customers, horizon),
            ).fetchall()
        others: dict[str, list[JoinDecision]] = {}
        for row in other_rows:
            others.setdefault(row[0], []).append(row[1:])
        outcomes = {customer: [OutcomeFacts(*r[1:]) for r in mine] for customer, mine in groupby(outcome_rows, key=itemgetter(0))}
        return activated, others, outcomes

    def start_run(self, watermark: float, cutoff: float, horizon: int) -> Future[int]:
        """The intake taken into the join queue first: the run's writes dequeue from it."""
        started = time.time()
        self._take_intake()

        def write(conn: sqlite3.Connection) -> int:
            # Runs killed before they finished have examples but may have no row: numbered after both.
            last = conn.execute("SELECT MAX(r) FROM (SELECT MAX(run) AS r FROM joined_examples UNION ALL "
                                "SELECT MAX(run) FROM join_runs)").fetchone()[0]  # fmt: skip
            run = int(last or 0) + 1
            conn.execute("INSERT INTO join_runs (run, watermark, cutoff, horizon, started_at) VALUES (?, ?, ?, ?, ?)",
                         (run, watermark, cutoff, horizon, started))  # fmt: skip
            return run

        return self._worker.submit(write)

    def write_examples(self, examples: Sequence[JoinedExample]) -> Future[WrittenExamples]:
        """In statements of many rows (the writer thread then needs the GIL once a statement, not
        once a row, while the joiner's own thread keeps it busy crediting the next rows), in
        decision id order (each index page keyed by decision id is then visited once, not once a row)."""
        rows = example_rows(examples)
        if self._all_queued(rows):
            self._trim()
        else:  # logged after the run began, or forgotten meanwhile
            self._take_intake()

        def write(conn: sqlite3.Connection) -> WrittenExamples:
            cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
            conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
            statuses: list[str] = []
            try:
                for start in range(0, len(rows), ROWS_PER_STATEMENT):
                    part = rows[start : start + ROWS_PER_STATEMENT]
                    statuses += (status for (status,) in conn.execute(_insert_sql(len(part)), tuple(chain.from_iterable(part))))
                    conn.execute(_dequeue_sql(len(part)), tuple(chain.from_iterable((row[2], row[0]) for row in part)))
            finally:
                conn.execute(f"PRAGMA cache_size = {int(cache_size)}")  # the store's own setting again
            return written_examples(statuses)

        return self._worker.submit(write)

    def stages(self, ages: Sequence[float]) -> list[StoredStage]:
        def write(conn: sqlite3.Connection) -> list[StoredStage]:
            conn.executemany("INSERT INTO provisional_stages (stage, age) VALUES (?, ?)",
                             new_stage_keys(conn.execute("SELECT age, stage FROM provisional_stages"), ages))  # fmt: skip
            return stored_stages(conn.execute("SELECT age, stage, staged_until FROM provisional_stages"), ages)

        return self._worker.submit(write).result()

    def write_provisional(self, examples: Sequence[ProvisionalExample], staged: tuple[int, float] | None = None) -> Future[None]:
        rows = sorted(examples)

        def write(conn: sqlite3.Connection) -> None:
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                part = rows[start : start + ROWS_PER_STATEMENT]
                conn.execute(_insert_provisional_sql(len(part)), tuple(chain.from_iterable(part)))
            if staged is not None:
                conn.execute("UPDATE provisional_stages SET staged_until = MAX(COALESCE(staged_until, ?2), ?2) "
                             "WHERE stage = ?1", staged)  # fmt: skip

        return self._worker.submit(write)

    def recent_credit(self, limit: int) -> list[tuple[str, dict[str, float]]]:
        with self._engine.reading(with_worker=True) as conn:
            rows = conn.execute(RECENT_CREDIT, (limit,)).fetchall()
        return [(action_id, from_json(credit)) for action_id, credit in reversed(rows)]

    def late_checked(self) -> int:
        with self._engine.reading(with_worker=True) as conn:
            return int(conn.execute("SELECT COALESCE(MAX(late_checked), 0) FROM join_runs").fetchone()[0])

    def late_candidates(self, after: int, horizon: int, window: float) -> list[LateCustomer]:
        with self._engine.reading(with_worker=True) as conn:
            new = conn.execute(f"SELECT {NEW_OUTCOMES} FROM outcomes WHERE seq > ? AND seq <= ? "
                               "ORDER BY customer_id, event_time, outcome_id", (after, horizon)).fetchall()  # fmt: skip
            if not new:
                return []
            decisions = conn.execute(LATE, (to_json(late_windows(new, window)),)).fetchall()
        return late_customers(new, decisions)

    def finish_run(self, run: JoinRun, late: Sequence[LateOutcome]) -> Future[None]:
        marked = [(outcome_id, decision_id, run.run) for outcome_id, decision_id in late]
        counts = (time.time(), run.joined, run.unactivated, run.late_outcomes, run.late_checked, run.run)

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO late_outcomes VALUES (?, ?, ?)", marked)
            conn.execute("UPDATE join_runs SET finished_at = ?, joined = ?, unactivated = ?, late_outcomes = ?, late_checked = ? "
                         "WHERE run = ?", counts)  # fmt: skip

        return self._worker.submit(write)

    def pending_count(self) -> int:
        return self._queued(float("inf"))

    def maintenance_warnings(self) -> list[str]:
        """None: the store never gathers SQLite's statistics (ANALYZE), so its plans do not go stale
        as tables grow, and a deleted row's page goes back to the file's free list at once."""
        return []

    def runs(self) -> list[JoinRun]:
        with self._engine.reading(with_worker=True) as conn:
            return [JoinRun(*row) for row in conn.execute(f"SELECT {RUN_COLUMNS} FROM join_runs ORDER BY run")]


def _queue_intake(rows: Sequence[tuple[int, str, float]], conn: sqlite3.Connection) -> None:
    conn.executemany("INSERT OR IGNORE INTO join_queue (decision_id, event_time) SELECT ?1, ?2 "
                     "WHERE NOT EXISTS (SELECT 1 FROM joined_examples WHERE decision_id = ?1)",
                     [row[1:] for row in rows])  # fmt: skip


def _dequeue(keys: Sequence[tuple[float, str]], conn: sqlite3.Connection) -> None:
    """Queued decisions by the queue's key, (event time, decision id)."""
    for start in range(0, len(keys), ROWS_PER_STATEMENT):
        part = keys[start : start + ROWS_PER_STATEMENT]
        conn.execute(_dequeue_sql(len(part)), tuple(chain.from_iterable(part)))


def _trim_intake(bound: int, conn: sqlite3.Connection) -> None:
    conn.execute("DELETE FROM join_intake WHERE seq <= ?", (bound,))


def _customer_batches(closed: list[_Closed]) -> Iterator[dict[str, list[_Closed]]]:
    """Closed decisions grouped by customer, a few thousand decisions at a time."""
    batch: dict[str, list[_Closed]] = {}
    size = 0
    for customer, rows in groupby(closed, key=itemgetter(0)):
        batch[customer] = list(rows)
        size += len(batch[customer])
        if size >= READ_DECISIONS or len(batch) >= READ_CUSTOMERS:
            yield batch
            batch, size = {}, 0
    if batch:
        yield batch
