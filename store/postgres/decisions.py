"""The decision log on PostgreSQL (store.ports.DecisionLog), shared by several serving replicas.

One customer, one brain: each customer has a head (customer_heads), read with its history and
bumped by every write of its decisions, under the customer's transaction-level advisory lock (see
store/postgres/engine.py). A write made on a head that another store instance has moved since is
refused as StaleHistory, and its caller decides again. This instance's own writes do not make its
heads stale: its concurrent decisions for one customer are counted in flight by the decider.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

import psycopg

from store.errors import StaleHistory, StoreError
from store.postgres.engine import Connection, Engine, Mergeable, alone
from store.records import DAY, ActivationRecord, Contact, CustomerLog, DecisionRecord, Head, OutcomeRecord
from store.rows import DECISION_COLUMNS, OUTCOME_COLUMNS, SENT_COLUMNS, check_sent, decision_from_row, decision_row, outcome_row

INSERT_DECISION = f"INSERT INTO decisions ({DECISION_COLUMNS}) VALUES ({', '.join(['%s'] * 23)})"
INSERT_QUEUED = "INSERT INTO join_queue (decision_id, event_time) VALUES (%s, %s)"
HEADS = "SELECT customer_id, head, writer, since FROM customer_heads WHERE customer_id = ANY(%s)"
BUMP_HEADS = (
    "INSERT INTO customer_heads AS h (customer_id, head, writer, since) SELECT c, 1, %(me)s, 0 FROM unnest(%(ids)s::text[]) AS c "
    "ON CONFLICT (customer_id) DO UPDATE SET head = h.head + 1, writer = EXCLUDED.writer, "
    "since = CASE WHEN h.writer = EXCLUDED.writer THEN h.since ELSE h.head END"
)
INSERT_OUTCOME = (
    f"INSERT INTO outcomes ({OUTCOME_COLUMNS}) VALUES ({', '.join(['%s'] * 9)}) ON CONFLICT (outcome_id) DO NOTHING RETURNING seq"
)
CUSTOMER_LOGS = """WITH wanted(id) AS (SELECT unnest(%(ids)s::text[]))
SELECT 0, customer_id, event_time, decision_id, channel, offer FROM decisions
    WHERE customer_id = ANY(%(ids)s) AND event_time >= %(since)s AND event_time < %(last)s AND action_id <> 'do_nothing'
UNION ALL
SELECT 1, id, (SELECT event_time FROM decisions
               WHERE customer_id = id AND event_time < %(since)s AND action_id <> 'do_nothing'
               ORDER BY event_time DESC LIMIT 1), NULL, NULL, NULL FROM wanted
UNION ALL
SELECT 2, customer_id, MAX(event_time), type, NULL, NULL FROM outcomes WHERE customer_id = ANY(%(ids)s) AND event_time < %(first)s
    GROUP BY customer_id, type
UNION ALL
SELECT 3, customer_id, event_time, type, NULL, NULL FROM outcomes
    WHERE customer_id = ANY(%(ids)s) AND event_time >= %(first)s AND event_time < %(last)s
UNION ALL
SELECT 4, customer_id, head, NULL, NULL, NULL FROM customer_heads WHERE customer_id = ANY(%(ids)s)"""
"""Every part of the customers' logs, and their heads, in one statement: one snapshot."""


def _fresh(current: tuple[int, str, int] | None, head: Head, me: str) -> bool:
    """Whether no other store instance wrote a decision for the customer after ``head``."""
    if head is None:
        return True
    if current is None:
        return head == 0
    now, writer, since = current
    return head == now or (writer == me and head >= since)


class DecisionWrite(Mergeable):
    """Decisions, their join-queue entries and their customers' heads: merged with its neighbours."""

    __slots__ = ("records", "heads", "me")

    def __init__(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None, me: str) -> None:
        self.records = records
        self.heads = heads
        self.me = me

    def _insert(self, conn: Connection) -> None:
        with conn.cursor() as cursor:
            cursor.executemany(INSERT_DECISION, [decision_row(r) for r in self.records])
            cursor.executemany(INSERT_QUEUED, [(r.decision_id, r.event_time) for r in self.records])

    @classmethod
    def merged(cls, conn: Connection, writes: Sequence[DecisionWrite]) -> list[StoreError | None]:
        """The heads of every customer in one read, the fresh writes' rows in one executemany (each
        write alone only when a row is refused), every written customer's head bumped in one statement."""
        customers = list({r.customer_id for w in writes for r in w.records})
        current = {c: (head, writer, since) for c, head, writer, since in conn.execute(HEADS, (customers,))}
        failed: list[StoreError | None] = []
        for w in writes:
            stale = w.heads is not None and not all(_fresh(current.get(c), h, w.me) for c, h in w.heads.items())
            failed.append(StaleHistory("another replica decided for the customer meanwhile") if stale else None)
        fresh = [w for w, error in zip(writes, failed, strict=True) if error is None]
        if not fresh:
            return failed
        try:
            with conn.transaction(), conn.cursor() as cursor:
                cursor.executemany(INSERT_DECISION, [decision_row(r) for w in fresh for r in w.records])
                cursor.executemany(INSERT_QUEUED, [(r.decision_id, r.event_time) for w in fresh for r in w.records])
        except psycopg.IntegrityError:
            for i, w in enumerate(writes):
                if failed[i] is None:
                    error = alone(conn, w._insert)[1]
                    failed[i] = error if isinstance(error, StoreError) or error is None else StoreError(str(error))
        written = list({r.customer_id for w, error in zip(writes, failed, strict=True) if error is None for r in w.records})
        if written:
            conn.execute(BUMP_HEADS, {"me": writes[0].me, "ids": written})
        return failed


class PostgresDecisionLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._me = uuid.uuid4().hex
        """This store instance, as the writer of customers' heads."""

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        return self._engine.submit(DecisionWrite(records, heads, self._me), customers={r.customer_id for r in records})

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        row = outcome_row(record)

        def write(conn: Connection) -> bool:
            if conn.execute(INSERT_OUTCOME, row).fetchone() is not None:
                return False
            stored = conn.execute(f"SELECT {SENT_COLUMNS} FROM outcomes WHERE outcome_id = %s", (record.outcome_id,)).fetchone()
            assert stored is not None
            check_sent(record, stored)
            return True

        return self._engine.submit(write, sequenced=True)

    def submit_activation(self, record: ActivationRecord) -> Future[bool]:
        row = (record.decision_id, record.event_time, record.received_at)

        def write(conn: Connection) -> bool:
            inserted = conn.execute("INSERT INTO activations VALUES (%s, %s, %s) ON CONFLICT DO NOTHING", row)
            return inserted.rowcount == 0

        return self._engine.submit(write)

    def decision(self, decision_id: str) -> DecisionRecord | None:
        rows = self._engine.rows(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id = %s", (decision_id,))
        return decision_from_row(rows[0]) if rows else None

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        if not request_ids:
            return {}
        rows = self._engine.rows(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id = ANY(%s)", (list(request_ids),))
        return {row[1]: decision_from_row(row) for row in rows}

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        since = first - lookback_days * DAY
        args: dict[str, Any] = {"ids": list(set(customer_ids)), "since": since, "last": last, "first": first}
        contacts: dict[str, list[Contact]] = {}
        before: dict[str, float | None] = {}
        outcomes: dict[str, list[tuple[str, float]]] = {}
        heads: dict[str, int] = {}
        for part, customer, at, name, channel, offer in self._engine.rows(CUSTOMER_LOGS, args):
            if part == 0:
                contacts.setdefault(customer, []).append(Contact(name, at, channel, offer))
            elif part == 1:
                before[customer] = at
            elif part == 4:
                heads[customer] = int(at)
            elif at is not None:
                outcomes.setdefault(customer, []).append((name, at))
        logs = {}
        for customer in customer_ids:
            mine = sorted(contacts.get(customer, []), key=lambda contact: contact.event_time)
            logs[customer] = CustomerLog(
                lookback_days, tuple(mine), before.get(customer), tuple(outcomes.get(customer, ())), heads.get(customer, 0)
            )
        return logs

    def decision_count(self) -> int:
        return int(self._engine.value("SELECT COUNT(*) FROM decisions"))
