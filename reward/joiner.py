"""The delayed-reward joiner: every decision whose window has closed becomes one joined example.

Time is event time. The watermark is the latest event time seen (or ``until``); a decision closes
at its time + the longest attribution window + the allowed lateness. Decisions wait in the join
queue (filled in the transaction that logged them); a batch of joined examples is written in the
same transaction that takes its decisions out of the queue (and only for decisions still in it, so
one forgotten during the run is not brought back), so a joiner killed at any point and restarted
writes each example exactly once. Outcomes are read at close time, so an outcome that
arrived before its decision was logged is credited all the same; one that arrives after the
window it falls in was closed is stored and counted as late, never credited twice.
"""

from __future__ import annotations

import functools
import json
import sqlite3
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from itertools import chain, groupby
from operator import attrgetter, itemgetter

import orjson
from sqlite_utils import Database, Migrations

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.history import DAY
from bandit.store import SQLiteStore
from reward.credit import Credit, CreditRules, DecisionFacts, OutcomeFacts

READ_DECISIONS = 5000
READ_CUSTOMERS = 1500
WRITE_ROWS = 50_000
"""Examples a write commits. Each write rewrites most pages of the joined_examples and join_queue
indexes, whose keys (decision ids, event times) are random in customer order: few large writes
rewrite them far fewer times than many small ones. Large enough for that, small enough that a
write holds SQLite's write lock (and the Decide writes waiting on it) about a second (two cores)."""
WRITE_CACHE_KIB = 256 * 1024
"""The writer's page cache during a write of examples, so that the pages it changes stay in memory
until the commit instead of being spilled to the WAL and read back (half the write's time)."""
ROWS_PER_STATEMENT = 2000
"""Examples one INSERT takes: 20,000 values bound, under SQLite's limit of 32,766."""
IN_FLIGHT_WRITES = 1
NOTHING_CREDITED = ("{}", "[]")
FACT_COLUMNS = "d.decision_id, d.event_time, d.offer, d.channel, d.action_id"
Closed = tuple[str, int, str, float, str, str, float]
"""A decision to join now: its customer, its rowid in decisions, then the fields of its
DecisionFacts but the activation. A plain tuple of plain values, which the garbage collector stops
tracking: a run holds a million of them, and tracked ones would make each collection walk them all
(3x slower)."""

migrations = Migrations("brein.joiner")


@migrations()
def m001_joined_examples(db: Database) -> None:
    db.execute(
        """CREATE TABLE joined_examples (
            decision_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            event_time REAL NOT NULL,
            run INTEGER NOT NULL,
            status TEXT NOT NULL,
            reward REAL NOT NULL,
            cost REAL NOT NULL,
            credit TEXT NOT NULL,
            outcomes TEXT NOT NULL,
            outcome_rowid INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX joined_examples_order ON joined_examples (run, event_time, decision_id)")
    db.execute("CREATE TABLE late_outcomes (outcome_id TEXT NOT NULL, decision_id TEXT NOT NULL, run INTEGER NOT NULL, "
               "PRIMARY KEY (outcome_id, decision_id))")  # fmt: skip
    db.execute(
        """CREATE TABLE join_runs (
            run INTEGER PRIMARY KEY,
            watermark REAL NOT NULL,
            cutoff REAL NOT NULL,
            finished_at REAL NOT NULL,
            joined INTEGER NOT NULL,
            unactivated INTEGER NOT NULL,
            late_outcomes INTEGER NOT NULL,
            late_checked_rowid INTEGER NOT NULL
        )"""
    )


@dataclass(frozen=True, slots=True)
class JoinReport:
    run: int
    watermark: float
    cutoff: float
    joined: int
    unactivated: int
    late_outcomes: int
    pending: int
    seconds: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


Progress = Callable[[int, int], None]
"""Called with (decisions done, decisions to do) as the run goes."""


class Joiner:
    def __init__(self, config: BreinConfig, store: SQLiteStore, *, write_rows: int = WRITE_ROWS) -> None:
        """``write_rows``: examples a write commits (see WRITE_ROWS)."""
        if write_rows < 1:
            raise ValueError(f"write_rows: expected at least 1, got {write_rows}")
        self.config = config
        self.store = store
        self.write_rows = write_rows
        self.rules = CreditRules(config)
        self._costs = {a.id: a.cost for a in Catalog(config).actions}
        self._offer_costs = {o: c.cost for o, c in config.offers.items()}
        self._channel_costs = {c: cfg.cost for c, cfg in config.channels.items()}
        store.submit(lambda conn: migrations.apply(Database(conn))).result()

    def _cost(self, action_id: str, offer: str, channel: str) -> float:
        """The action's cost now; an action dropped from the catalog costs what its parts cost."""
        cost = self._costs.get(action_id)
        return cost if cost is not None else self._offer_costs.get(offer, 0.0) + self._channel_costs.get(channel, 0.0)

    def watermark(self) -> float | None:
        """The latest event time seen in decisions and outcomes."""
        row = self.store.db.execute("SELECT MAX(t) FROM (SELECT MAX(event_time) AS t FROM decisions UNION ALL "
                                    "SELECT MAX(event_time) FROM outcomes)").fetchone()  # fmt: skip
        return None if row[0] is None else float(row[0])

    def run(self, until: float | None = None, progress: Progress | None = None) -> JoinReport:
        started = time.perf_counter()
        conn = self.store.db.conn
        watermark = until if until is not None else self.watermark()
        run = int(conn.execute("SELECT MAX(r) FROM (SELECT MAX(run) AS r FROM joined_examples UNION ALL "
                               "SELECT MAX(run) FROM join_runs)").fetchone()[0] or 0) + 1  # fmt: skip
        if watermark is None:
            return JoinReport(run, 0.0, 0.0, 0, 0, 0, 0, time.perf_counter() - started)
        cutoff = watermark - self.rules.close_after
        outcome_rowid = int(conn.execute("SELECT COALESCE(MAX(rowid), 0) FROM outcomes").fetchone()[0])
        closed = self._closed(conn, cutoff)
        unactivated = done = 0
        writing: deque[Future[None]] = deque()
        rows: list[tuple[object, ...]] = []
        for customers in _customer_batches(closed):
            batch = self._join_customers(conn, customers, watermark, outcome_rowid, run)
            done += len(batch)
            unactivated += sum(1 for row in batch if row[4] == "unactivated")
            rows += batch
            while len(rows) >= self.write_rows:
                self._write(writing, rows[: self.write_rows])
                rows = rows[self.write_rows :]
            if progress:
                progress(done, len(closed))
        self._write(writing, rows)
        while writing:
            writing.popleft().result()
        joined = done - unactivated
        checked = int(conn.execute("SELECT COALESCE(MAX(late_checked_rowid), 0) FROM join_runs").fetchone()[0])
        late = self._count_late(conn, run, checked)
        pending = int(conn.execute("SELECT COUNT(*) FROM join_queue").fetchone()[0])

        def finish(write_conn: sqlite3.Connection) -> None:
            write_conn.execute("INSERT INTO join_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (run, watermark, cutoff, time.time(), joined, unactivated, late, outcome_rowid))  # fmt: skip

        # A run that found nothing to do leaves no row: the server runs one every few seconds.
        if done or late or outcome_rowid > checked:
            self.store.submit(finish).result()
        return JoinReport(run, watermark, cutoff, joined, unactivated, late, pending, time.perf_counter() - started)

    def _write(self, writing: deque[Future[None]], rows: Sequence[tuple[object, ...]]) -> None:
        """Queue a write of ``rows`` (all or nothing) and wait for the one before it: the next rows
        are computed while these are written."""
        if rows:
            writing.append(self.store.submit(_write_examples(rows)))
        while len(writing) > IN_FLIGHT_WRITES:
            writing.popleft().result()

    def _closed(self, conn: sqlite3.Connection, cutoff: float) -> list[Closed]:
        """Every queued decision closed by ``cutoff``, ordered by customer and time. One read, whole:
        it visits each decision's row once, where reading them customer by customer would visit
        each again; and a read kept open for the whole run would stop SQLite from checkpointing
        the WAL that the run's own writes grow. Activations are read batch by batch, while the
        store writes the batch before."""
        rows = conn.execute(
            f"SELECT d.customer_id, d.rowid, {FACT_COLUMNS} FROM join_queue q JOIN decisions d ON d.decision_id = q.decision_id "
            f"WHERE q.event_time <= ? ORDER BY d.customer_id, d.event_time, d.decision_id",
            (cutoff,),
        )
        intern, cost = sys.intern, self._cost
        return [(intern(c), rowid, d, t, intern(o), intern(ch), cost(a, o, ch)) for c, rowid, d, t, o, ch, a in rows]

    def _join_customers(
        self, conn: sqlite3.Connection, closing: dict[str, list[Closed]], watermark: float, outcome_rowid: int, run: int
    ) -> list[tuple[object, ...]]:
        activations = self._activations(conn, closing)
        others = self._other_decisions(conn, closing, watermark)
        outcomes = self._outcomes(conn, list(closing), outcome_rowid)
        rows: list[tuple[object, ...]] = []
        for customer, mine in closing.items():
            closed = [DecisionFacts(*decision[2:], activations.get(decision[2])) for decision in mine]
            credits = self.rules.credit(_merged(closed, others.get(customer, [])), outcomes.get(customer, ()))
            rows += [self._example(customer, d, credits.get(d.decision_id), outcome_rowid, run) for d in closed]
        return rows

    @staticmethod
    def _activations(conn: sqlite3.Connection, closing: dict[str, list[Closed]]) -> dict[str, float]:
        """When each of these decisions was activated, if it was."""
        ids = sorted(decision[2] for mine in closing.values() for decision in mine)
        query = "SELECT decision_id, event_time FROM activations WHERE decision_id IN (SELECT value FROM json_each(?))"
        return dict(conn.execute(query, (_json(ids),)).fetchall())

    def _other_decisions(
        self, conn: sqlite3.Connection, closing: dict[str, list[Closed]], watermark: float
    ) -> dict[str, list[DecisionFacts]]:
        """These customers' decisions up to the watermark that are not closing now (joined by an
        earlier run, or still open), which share their credit. Closed rows are left out by rowid,
        from the index alone, so that no decision's row is read twice."""
        rowids = [decision[1] for mine in closing.values() for decision in mine]
        rows = conn.execute(
            f"SELECT d.customer_id, {FACT_COLUMNS}, a.event_time FROM decisions d "
            f"LEFT JOIN activations a ON a.decision_id = d.decision_id "
            f"WHERE d.customer_id IN ({','.join('?' * len(closing))}) AND d.event_time <= ? "
            f"AND d.rowid NOT IN (SELECT value FROM json_each(?))",
            (*closing, watermark, _json(rowids)),
        ).fetchall()
        others: dict[str, list[DecisionFacts]] = {}
        for customer, decision_id, event_time, offer, channel, action_id, activated_at in rows:
            cost = self._cost(action_id, offer, channel)
            others.setdefault(customer, []).append(DecisionFacts(decision_id, event_time, offer, channel, cost, activated_at))
        return others

    @staticmethod
    def _outcomes(conn: sqlite3.Connection, customers: list[str], outcome_rowid: int) -> dict[str, list[OutcomeFacts]]:
        rows = conn.execute(
            f"SELECT customer_id, outcome_id, type, value, event_time, decision_id FROM outcomes "
            f"WHERE customer_id IN ({','.join('?' * len(customers))}) AND rowid <= ? "
            f"ORDER BY customer_id, event_time, outcome_id",
            (*customers, outcome_rowid),
        ).fetchall()
        return {customer: [OutcomeFacts(*r[1:]) for r in mine] for customer, mine in groupby(rows, key=itemgetter(0))}

    def _example(
        self, customer: str, decision: DecisionFacts, credit: Credit | None, outcome_rowid: int, run: int
    ) -> tuple[object, ...]:
        """The joined_examples row of one closed decision."""
        head = (decision.decision_id, customer, decision.event_time, run)
        if not self.rules.shown(decision, decision.event_time + self.rules.close_after):
            return (*head, "unactivated", 0.0, 0.0, *NOTHING_CREDITED, outcome_rowid)
        if credit is None:
            return (*head, "joined", 0.0 - decision.cost, decision.cost, *NOTHING_CREDITED, outcome_rowid)
        credited = (_json(credit.by_type), _json(credit.outcomes))
        return (*head, "joined", credit.total - decision.cost, decision.cost, *credited, outcome_rowid)

    def _count_late(self, conn: sqlite3.Connection, run: int, checked: int) -> int:
        """Record outcomes that arrived since ``checked`` (an outcome rowid) and fall in a window
        closed by an earlier run."""
        if not self.rules.types:
            return 0
        windows = " ".join(f"WHEN {json.dumps(name)} THEN {kind.window_days * DAY}" for name, kind in self.rules.types.items())
        query = (
            "SELECT o.outcome_id, d.decision_id FROM outcomes o "
            "JOIN decisions d ON d.customer_id = o.customer_id AND d.event_time < o.event_time "
            f"AND d.event_time >= o.event_time - (CASE o.type {windows} ELSE 0 END) "
            "JOIN joined_examples j ON j.decision_id = d.decision_id AND j.outcome_rowid < o.rowid "
            "WHERE o.rowid > ?"
        )
        late = conn.execute(query, (checked,)).fetchall()
        if late:
            self.store.submit(lambda c: c.executemany("INSERT OR IGNORE INTO late_outcomes VALUES (?, ?, ?)",
                                                      [(o, d, run) for o, d in late])).result()  # fmt: skip
        return len({o for o, _ in late})


def _customer_batches(closed: list[Closed]) -> Iterator[dict[str, list[Closed]]]:
    """Closed decisions grouped by customer, a few thousand decisions at a time (one read each)."""
    batch: dict[str, list[Closed]] = {}
    size = 0
    for customer, rows in groupby(closed, key=itemgetter(0)):
        batch[customer] = list(rows)
        size += len(batch[customer])
        if size >= READ_DECISIONS or len(batch) >= READ_CUSTOMERS:
            yield batch
            batch, size = {}, 0
    if batch:
        yield batch


def _merged(closed: list[DecisionFacts], others: list[DecisionFacts]) -> list[DecisionFacts]:
    """One customer's decisions in time order (then by id, as the log orders them)."""
    if not others:
        return closed
    ids = {d.decision_id for d in closed}
    return sorted(closed + [d for d in others if d.decision_id not in ids], key=attrgetter("event_time", "decision_id"))


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


@functools.lru_cache(maxsize=16)
def _insert_sql(count: int) -> str:
    """Insert examples of decisions still in the queue: one forgotten (or past retention) while the
    run computed it is not brought back."""
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * count)
    return (f"INSERT OR IGNORE INTO joined_examples SELECT * FROM (VALUES {values}) AS v "
            f"WHERE v.column1 IN (SELECT decision_id FROM join_queue)")  # fmt: skip


@functools.lru_cache(maxsize=16)
def _dequeue_sql(count: int) -> str:
    return f"DELETE FROM join_queue WHERE decision_id IN ({', '.join('?' * count)})"


def _write_examples(examples: Sequence[tuple[object, ...]]) -> Callable[[sqlite3.Connection], None]:
    """Insert the examples and take their decisions out of the queue, in statements of many rows
    (the writer thread then needs the GIL once a statement, not once a row, while the joiner's own
    thread keeps it busy crediting the next rows), in decision id order (each index page keyed by
    decision id is then visited once, not once a row)."""
    rows = sorted(examples, key=itemgetter(0))

    def write(conn: sqlite3.Connection) -> None:
        cache_size = conn.execute("PRAGMA cache_size").fetchone()[0]
        conn.execute(f"PRAGMA cache_size = -{WRITE_CACHE_KIB}")
        try:
            for start in range(0, len(rows), ROWS_PER_STATEMENT):
                part = rows[start : start + ROWS_PER_STATEMENT]
                conn.execute(_insert_sql(len(part)), tuple(chain.from_iterable(part)))
                conn.execute(_dequeue_sql(len(part)), [row[0] for row in part])
        finally:
            conn.execute(f"PRAGMA cache_size = {int(cache_size)}")  # the store's own setting again

    return write
