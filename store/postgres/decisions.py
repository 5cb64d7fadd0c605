"""The decision log on PostgreSQL (store.ports.DecisionLog), shared by several serving replicas.

One customer, one brain: each customer has a head (customer_heads), read with its history and
bumped by every write of its decisions, under the customer's transaction-level advisory lock (see
store/postgres/engine.py). A write made on a head that another store instance has moved since is
refused as StaleHistory, and its caller decides again. This instance's own writes do not make its
heads stale: its concurrent decisions for one customer are counted in flight by the decider.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from store.errors import Conflict, StaleHistory
from store.postgres.engine import Connection, Engine, Mergeable, Outcome
from store.records import DAY, ActivationRecord, Contact, CustomerLog, DecisionRecord, Head, OutcomeRecord, SharedFeatures
from store.rows import (
    DECISION_COLUMNS,
    OUTCOME_COLUMNS,
    SENT_COLUMNS,
    check_sent,
    decision_from_row,
    decision_row,
    from_json,
    outcome_row,
)

DECISION_TYPES = (
    ("text",) * 4 + ("float8",) * 2 + ("text",) * 4 + ("float8",) * 2 + ("int", "text", "text", "int") + ("text",) * 7
)
"""The SQL type of each of DECISION_COLUMNS."""
FLOATS = [i for i, kind in enumerate(DECISION_TYPES) if kind == "float8"]
INSERT_DECISIONS = f"""WITH d AS (
    INSERT INTO decisions ({DECISION_COLUMNS})
    SELECT * FROM unnest({", ".join(f"%s::{kind}[]" for kind in DECISION_TYPES)})
    ON CONFLICT DO NOTHING RETURNING decision_id, event_time, customer_id
), queued AS (
    INSERT INTO join_queue (decision_id, event_time) SELECT decision_id, event_time FROM d ON CONFLICT DO NOTHING
), heads AS (
    INSERT INTO customer_heads AS h (customer_id, head, writer, since) SELECT DISTINCT customer_id, 1, %s, 0 FROM d
    ON CONFLICT (customer_id) DO UPDATE SET head = h.head + 1, writer = EXCLUDED.writer,
        since = CASE WHEN h.writer = EXCLUDED.writer THEN h.since ELSE h.head END
)
SELECT decision_id FROM d"""
"""Decisions, their join-queue entries and their customers' heads bumped, in one statement. A row
whose decision id or request id is taken is left out (ON CONFLICT DO NOTHING): its write is refused."""
UNDO = "WITH gone AS (DELETE FROM decisions WHERE decision_id = ANY(%s)) DELETE FROM join_queue WHERE decision_id = ANY(%s)"
HEADS = "SELECT customer_id, head, writer, since FROM customer_heads WHERE customer_id = ANY(%s)"
OUTCOME_TYPES = ("text", "text", "text", "float8", "float8", "text", "float8", "int", "int")
INSERT_OUTCOMES = (
    f"INSERT INTO outcomes ({OUTCOME_COLUMNS}) SELECT {OUTCOME_COLUMNS} FROM unnest("
    f"{', '.join(f'%s::{kind}[]' for kind in OUTCOME_TYPES)}) WITH ORDINALITY AS u({OUTCOME_COLUMNS}, n) ORDER BY n "
    "ON CONFLICT (outcome_id) DO NOTHING RETURNING outcome_id"
)
"""Outcomes in the order given (so their seqs are), an outcome_id stored already left out."""
STORED = f"SELECT outcome_id, {SENT_COLUMNS} FROM outcomes WHERE outcome_id = ANY(%s)"
INSERT_ACTIVATIONS = (
    "INSERT INTO activations (decision_id, event_time, received_at) SELECT decision_id, event_time, received_at "
    "FROM unnest(%s::text[], %s::float8[], %s::float8[]) WITH ORDINALITY AS u(decision_id, event_time, received_at, n) "
    "ORDER BY n ON CONFLICT DO NOTHING RETURNING decision_id"
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


def _columns(rows: list[tuple[Any, ...]], floats: Sequence[int]) -> list[list[Any]]:
    """Rows as one list a column, for unnest(); float columns made all floats (psycopg sends a list of one type)."""
    columns = [list(column) for column in zip(*rows, strict=True)]
    for i in floats:
        columns[i] = [None if v is None else float(v) for v in columns[i]]
    return columns


class DecisionWrite(Mergeable):
    """Decisions (all or none), their join-queue entries and their customers' heads."""

    __slots__ = ("records", "heads", "me")

    def __init__(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None, me: str) -> None:
        self.records = records
        self.heads = heads
        self.me = me

    @classmethod
    def merged(cls, conn: Connection, writes: Sequence[DecisionWrite]) -> list[Outcome]:
        """The heads of every customer in one read; the fresh writes' rows in one statement. A write
        with a row left out (an id taken, also by a write merged with it) is refused and undone."""
        customers = list({r.customer_id for w in writes for r in w.records})
        current = {c: (head, writer, since) for c, head, writer, since in conn.execute(HEADS, (customers,))}
        stale = StaleHistory("another replica decided for the customer meanwhile")
        outcomes: list[Outcome] = [
            (
                None,
                stale if w.heads is not None and not all(_fresh(current.get(c), h, w.me) for c, h in w.heads.items()) else None,
            )
            for w in writes
        ]
        rows = [decision_row(r) for w, (_, error) in zip(writes, outcomes, strict=True) if error is None for r in w.records]
        if not rows:
            return outcomes
        inserted = {d for (d,) in conn.execute(INSERT_DECISIONS, (*_columns(rows, FLOATS), writes[0].me))}
        undo: list[str] = []
        for i, w in enumerate(writes):
            if outcomes[i][1] is not None:
                continue
            mine = [r.decision_id for r in w.records]
            if len(set(mine)) == len(mine) and inserted.issuperset(mine):
                inserted.difference_update(mine)  # a later write with one of these ids is refused
            else:
                undo += [d for d in mine if d in inserted]
                inserted.difference_update(mine)
                outcomes[i] = (None, Conflict("the store refused the write: a decision id or request id is logged already"))
        if undo:
            conn.execute(UNDO, (undo, undo))
        return outcomes


class OutcomeWrite(Mergeable):
    __slots__ = ("record",)

    def __init__(self, record: OutcomeRecord) -> None:
        self.record = record

    @classmethod
    def merged(cls, conn: Connection, writes: Sequence[OutcomeWrite]) -> list[Outcome]:
        """New outcomes in one statement; resolves to True for a duplicate, Conflict for other content."""
        inserted = {o for (o,) in conn.execute(INSERT_OUTCOMES, _columns([outcome_row(w.record) for w in writes], (3, 4, 6)))}
        again = [w.record.outcome_id for w in writes if w.record.outcome_id not in inserted]
        stored = {row[0]: row[1:] for row in conn.execute(STORED, (again,))} if again else {}
        outcomes: list[Outcome] = []
        for w in writes:
            if w.record.outcome_id in inserted:
                inserted.discard(w.record.outcome_id)  # the first of one id in this batch stored it
                outcomes.append((False, None))
                continue
            try:
                check_sent(w.record, stored[w.record.outcome_id])
                outcomes.append((True, None))
            except Conflict as error:
                outcomes.append((None, error))
        return outcomes


class ActivationWrite(Mergeable):
    __slots__ = ("record",)

    def __init__(self, record: ActivationRecord) -> None:
        self.record = record

    @classmethod
    def merged(cls, conn: Connection, writes: Sequence[ActivationWrite]) -> list[Outcome]:
        """New activations in one statement; resolves to True for a decision activated before."""
        rows = [(w.record.decision_id, w.record.event_time, w.record.received_at) for w in writes]
        inserted = {d for (d,) in conn.execute(INSERT_ACTIVATIONS, _columns(rows, (1, 2)))}
        outcomes: list[Outcome] = []
        for w in writes:
            first = w.record.decision_id in inserted
            inserted.discard(w.record.decision_id)
            outcomes.append((not first, None))
        return outcomes


class PostgresDecisionLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._me = uuid.uuid4().hex
        """This store instance, as the writer of customers' heads."""

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        return self._engine.submit(DecisionWrite(records, heads, self._me), customers={r.customer_id for r in records})

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        return self._engine.submit(OutcomeWrite(record), sequenced=True)

    def submit_activation(self, record: ActivationRecord) -> Future[bool]:
        return self._engine.submit(ActivationWrite(record))

    def decision(self, decision_id: str) -> DecisionRecord | None:
        rows = self._engine.rows(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id = %s", (decision_id,))
        return decision_from_row(rows[0]) if rows else None

    def features_before(self, until: float | None, limit: int) -> list[SharedFeatures]:
        rows = self._engine.rows("SELECT features FROM decisions WHERE event_time < %s ORDER BY event_time DESC LIMIT %s",
                                 (math.inf if until is None else until, limit))  # fmt: skip
        return [from_json(features) for (features,) in rows]

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
