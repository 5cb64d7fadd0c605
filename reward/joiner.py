"""The delayed-reward joiner: every decision whose window has closed becomes one joined example.

Time is event time. The watermark is the latest event time seen (or ``until``); a decision closes
at its time + the longest attribution window + the allowed lateness. Decisions wait in the join
queue (filled in the transaction that logged them); a batch of joined examples is written in the
same transaction that takes its decisions out of the queue, so a joiner killed at any point and
restarted writes each example exactly once. Outcomes are read at close time, so an outcome that
arrived before its decision was logged is credited all the same; one that arrives after the
window it falls in was closed is stored and counted as late, never credited twice.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass
from itertools import groupby

from sqlite_utils import Database, Migrations

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.history import DAY
from bandit.store import SQLiteStore
from reward.credit import CreditRules, DecisionFacts, OutcomeFacts

BATCH_DECISIONS = 5000
BATCH_CUSTOMERS = 1500
IN_FLIGHT_WRITES = 2
NOTHING_CREDITED = ("{}", "[]")

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
    def __init__(self, config: BreinConfig, store: SQLiteStore) -> None:
        self.config = config
        self.store = store
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
        total = int(conn.execute("SELECT COUNT(*) FROM join_queue WHERE event_time <= ?", (cutoff,)).fetchone()[0])
        joined = unactivated = done = 0
        writing: deque[Future[None]] = deque()
        for customers in self._candidate_batches(conn, cutoff):
            rows = self._join_customers(conn, customers, watermark, outcome_rowid, run)
            # The next batch is computed while this one is written; each write is all-or-nothing.
            writing.append(self.store.submit(_write_examples(rows, [(row[0],) for row in rows])))
            while len(writing) > IN_FLIGHT_WRITES:
                writing.popleft().result()
            done += len(rows)
            unactivated += sum(1 for row in rows if row[4] == "unactivated")
            joined += sum(1 for row in rows if row[4] == "joined")
            if progress:
                progress(done, total)
        while writing:
            writing.popleft().result()
        late = self._count_late(conn, run)
        pending = int(conn.execute("SELECT COUNT(*) FROM join_queue").fetchone()[0])
        checked = outcome_rowid

        def finish(write_conn: sqlite3.Connection) -> None:
            write_conn.execute("INSERT INTO join_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                               (run, watermark, cutoff, time.time(), joined, unactivated, late, checked))  # fmt: skip

        self.store.submit(finish).result()
        return JoinReport(run, watermark, cutoff, joined, unactivated, late, pending, time.perf_counter() - started)

    def _candidate_batches(self, conn: sqlite3.Connection, cutoff: float) -> Iterator[dict[str, set[str]]]:
        """Closed decisions grouped by customer, a few hundred customers at a time. The list is read
        whole first: a read kept open for the whole run would stop SQLite from checkpointing the WAL
        that the run's own writes grow."""
        closed = conn.execute(
            "SELECT d.customer_id, q.decision_id FROM join_queue q JOIN decisions d ON d.decision_id = q.decision_id "
            "WHERE q.event_time <= ? ORDER BY d.customer_id",
            (cutoff,),
        ).fetchall()
        batch: dict[str, set[str]] = {}
        size = 0
        for customer, rows in groupby(closed, key=lambda row: row[0]):
            batch[customer] = {row[1] for row in rows}
            size += len(batch[customer])
            if size >= BATCH_DECISIONS or len(batch) >= BATCH_CUSTOMERS:
                yield batch
                batch, size = {}, 0
        if batch:
            yield batch

    def _join_customers(
        self, conn: sqlite3.Connection, closing: dict[str, set[str]], watermark: float, outcome_rowid: int, run: int
    ) -> list[tuple[object, ...]]:
        customers = list(closing)
        marks = ",".join("?" * len(customers))
        decisions: dict[str, list[DecisionFacts]] = defaultdict(list)
        for r in conn.execute(
            f"SELECT customer_id, decision_id, event_time, offer, channel, action_id FROM decisions "
            f"WHERE customer_id IN ({marks}) AND event_time <= ? ORDER BY customer_id, event_time, decision_id",
            (*customers, watermark),
        ):
            decisions[r[0]].append(DecisionFacts(r[1], r[2], r[3], r[4], self._cost(r[5], r[3], r[4])))
        outcomes: dict[str, list[OutcomeFacts]] = defaultdict(list)
        for r in conn.execute(
            f"SELECT customer_id, outcome_id, type, value, event_time, decision_id FROM outcomes "
            f"WHERE customer_id IN ({marks}) AND rowid <= ? ORDER BY customer_id, event_time, outcome_id",
            (*customers, outcome_rowid),
        ):
            outcomes[r[0]].append(OutcomeFacts(r[1], r[2], r[3], r[4], r[5]))
        activations = dict(
            conn.execute(
                f"SELECT a.decision_id, a.event_time FROM activations a JOIN decisions d ON d.decision_id = a.decision_id "
                f"WHERE d.customer_id IN ({marks})",
                customers,
            ).fetchall()
        )
        rows: list[tuple[object, ...]] = []
        for customer, closed in closing.items():
            facts = decisions[customer]
            credits = self.rules.credit(facts, outcomes[customer], activations)
            for decision in facts:
                if decision.decision_id not in closed:
                    continue
                close = decision.event_time + self.rules.close_after
                shown = self.rules.shown(decision, activations.get(decision.decision_id), close)
                credit = credits[decision.decision_id]
                cost = decision.cost if shown else 0.0
                credited = (json.dumps(credit.by_type), json.dumps(credit.outcomes)) if credit.outcomes else NOTHING_CREDITED
                rows.append((
                    decision.decision_id, customer, decision.event_time, run, "joined" if shown else "unactivated",
                    credit.total - cost if shown else 0.0, cost, *credited, outcome_rowid,
                ))  # fmt: skip
        return rows

    def _count_late(self, conn: sqlite3.Connection, run: int) -> int:
        """Record outcomes, new since the last run, that fall in a window closed by an earlier run."""
        checked = int(conn.execute("SELECT COALESCE(MAX(late_checked_rowid), 0) FROM join_runs").fetchone()[0])
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


def _write_examples(rows: Sequence[tuple[object, ...]], ids: Sequence[tuple[str]]) -> Callable[[sqlite3.Connection], None]:
    def write(conn: sqlite3.Connection) -> None:
        conn.executemany("INSERT OR IGNORE INTO joined_examples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("DELETE FROM join_queue WHERE decision_id = ?", ids)

    return write
