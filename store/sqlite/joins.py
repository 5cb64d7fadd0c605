"""The joiner's state on SQLite (store.ports.JoinState).

Two tricks keep a run over a million decisions fast, both behind the port: a closed decision's key
is its rowid, so that the customers' other decisions are read with the closed ones left out from
the index alone (no row read twice); and a write of examples raises the writer's page cache, so
the index pages it changes stay in memory until the commit instead of being spilled to the WAL
and read back (half the write's time).
"""

from __future__ import annotations

import functools
import sqlite3
import sys
import time
from collections.abc import Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from itertools import chain, groupby
from operator import itemgetter

from store.records import ClosingCustomer, JoinDecision, JoinedExample, JoinRun, LateOutcome, OutcomeFacts
from store.rows import RUN_COLUMNS, example_rows, to_json
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

_Closed = tuple[str, int, str, float, str, str, str]
"""A closed decision: (customer id, its rowid, decision id, event time, offer, channel, action id).
A plain tuple: a run holds a million of them."""
_Facts = tuple[dict[str, float], dict[str, list[JoinDecision]], dict[str, list[OutcomeFacts]]]


@functools.lru_cache(maxsize=16)
def _insert_sql(count: int) -> str:
    """Insert examples of decisions still in the queue (found by its key, (event time, decision id)):
    one forgotten (or past retention) while the run computed it is not brought back."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return (f"INSERT OR IGNORE INTO joined_examples SELECT * FROM (VALUES {values}) AS v "
            f"WHERE (v.column3, v.column1) IN (SELECT event_time, decision_id FROM join_queue)")  # fmt: skip


@functools.lru_cache(maxsize=16)
def _dequeue_sql(count: int) -> str:
    """By the queue's key: a subquery of row values searches it, where ``IN (VALUES ...)`` would scan it."""
    values = ", ".join(["(?, ?)"] * count)
    return f"DELETE FROM join_queue WHERE (event_time, decision_id) IN (SELECT column1, column2 FROM (VALUES {values}))"


class SQLiteJoinState:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def watermark(self) -> float | None:
        with self._engine.reading() as conn:
            row = conn.execute("SELECT MAX(t) FROM (SELECT MAX(event_time) AS t FROM decisions UNION ALL "
                               "SELECT MAX(event_time) FROM outcomes)").fetchone()  # fmt: skip
        return None if row[0] is None else float(row[0])

    def outcome_horizon(self) -> int:
        """The newest outcome's seq: one writer, so everything up to it is committed."""
        with self._engine.reading() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM outcomes").fetchone()[0])

    def closed_count(self, cutoff: float) -> int:
        with self._engine.reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM join_queue WHERE event_time <= ?", (cutoff,)).fetchone()[0])

    def closing(self, cutoff: float, watermark: float, horizon: int) -> Generator[ClosingCustomer, None, None]:
        """The closed decisions in one read, then their customers' facts a batch at a time."""
        for batch in _customer_batches(self._closed(cutoff)):
            activated, others, outcomes = self._facts(batch, watermark, horizon)
            for customer, mine in batch.items():
                closed = [(d, t, o, ch, a, activated.get(d)) for _, _, d, t, o, ch, a in mine]
                yield ClosingCustomer(customer, closed, others.get(customer, []), outcomes.get(customer, []))

    def _closed(self, cutoff: float) -> list[_Closed]:
        """One read, whole: it visits each decision's row once, where reading them customer by
        customer would visit each again; and a read kept open for the whole run would stop SQLite
        from checkpointing the WAL that the run's own writes grow."""
        with self._engine.reading() as conn:
            rows = conn.execute(
                f"SELECT d.customer_id, d.rowid, {FACT_COLUMNS} FROM join_queue q "
                f"JOIN decisions d ON d.decision_id = q.decision_id "
                f"WHERE q.event_time <= ? ORDER BY d.customer_id, d.event_time, d.decision_id",
                (cutoff,),
            )
            intern = sys.intern
            return [(intern(c), rowid, d, t, intern(o), intern(ch), intern(a)) for c, rowid, d, t, o, ch, a in rows]

    def _facts(self, closing: Mapping[str, Sequence[_Closed]], watermark: float, horizon: int) -> _Facts:
        """Activations of the closing decisions, the customers' other decisions, their outcomes."""
        customers = list(closing)
        closed = [decision for mine in closing.values() for decision in mine]
        with self._engine.reading() as conn:
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
        started = time.time()

        def write(conn: sqlite3.Connection) -> int:
            # Runs killed before they finished have examples but may have no row: numbered after both.
            last = conn.execute("SELECT MAX(r) FROM (SELECT MAX(run) AS r FROM joined_examples UNION ALL "
                                "SELECT MAX(run) FROM join_runs)").fetchone()[0]  # fmt: skip
            run = int(last or 0) + 1
            conn.execute("INSERT INTO join_runs (run, watermark, cutoff, horizon, started_at) VALUES (?, ?, ?, ?, ?)",
                         (run, watermark, cutoff, horizon, started))  # fmt: skip
            return run

        return self._engine.submit(write)

    def write_examples(self, examples: Sequence[JoinedExample]) -> Future[None]:
        """In statements of many rows (the writer thread then needs the GIL once a statement, not
        once a row, while the joiner's own thread keeps it busy crediting the next rows), in
        decision id order (each index page keyed by decision id is then visited once, not once a row)."""
        rows = example_rows(examples)

        def write(conn: sqlite3.Connection) -> None:
            cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
            conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
            try:
                for start in range(0, len(rows), ROWS_PER_STATEMENT):
                    part = rows[start : start + ROWS_PER_STATEMENT]
                    conn.execute(_insert_sql(len(part)), tuple(chain.from_iterable(part)))
                    conn.execute(_dequeue_sql(len(part)), tuple(chain.from_iterable((row[2], row[0]) for row in part)))
            finally:
                conn.execute(f"PRAGMA cache_size = {int(cache_size)}")  # the store's own setting again

        return self._engine.submit(write)

    def late_checked(self) -> int:
        with self._engine.reading() as conn:
            return int(conn.execute("SELECT COALESCE(MAX(late_checked), 0) FROM join_runs").fetchone()[0])

    def late_outcomes(self, after: int, horizon: int, windows: Mapping[str, float]) -> list[LateOutcome]:
        if not windows:
            return []
        cases = " ".join("WHEN ? THEN ?" for _ in windows)
        query = (
            "SELECT o.outcome_id, d.decision_id FROM outcomes o "
            "JOIN decisions d ON d.customer_id = o.customer_id AND d.event_time < o.event_time "
            f"AND d.event_time >= o.event_time - (CASE o.type {cases} ELSE 0 END) "
            "JOIN joined_examples j ON j.decision_id = d.decision_id AND j.horizon < o.seq "
            "WHERE o.seq > ? AND o.seq <= ?"
        )
        with self._engine.reading() as conn:
            return conn.execute(query, (*chain.from_iterable(windows.items()), after, horizon)).fetchall()

    def finish_run(self, run: JoinRun, late: Sequence[LateOutcome]) -> Future[None]:
        marked = [(outcome_id, decision_id, run.run) for outcome_id, decision_id in late]
        counts = (time.time(), run.joined, run.unactivated, run.late_outcomes, run.late_checked, run.run)

        def write(conn: sqlite3.Connection) -> None:
            conn.executemany("INSERT OR IGNORE INTO late_outcomes VALUES (?, ?, ?)", marked)
            conn.execute("UPDATE join_runs SET finished_at = ?, joined = ?, unactivated = ?, late_outcomes = ?, late_checked = ? "
                         "WHERE run = ?", counts)  # fmt: skip

        return self._engine.submit(write)

    def pending_count(self) -> int:
        with self._engine.reading() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM join_queue").fetchone()[0])

    def runs(self) -> list[JoinRun]:
        with self._engine.reading() as conn:
            return [JoinRun(*row) for row in conn.execute(f"SELECT {RUN_COLUMNS} FROM join_runs ORDER BY run")]


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
