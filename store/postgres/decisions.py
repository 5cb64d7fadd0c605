"""The decision log on PostgreSQL (store.ports.DecisionLog), shared by several serving replicas.

One customer, one brain: each customer has a head (customer_heads), read with its history and
bumped by every write of its decisions, with that row locked since the transaction began (the
customer's lock: LOCK_CUSTOMERS in store/postgres/engine.py). A write made on a head that another
store instance has moved since is refused as StaleHistory, and its caller decides again. This
instance's own writes do not make its heads stale: its concurrent decisions for one customer are
counted in flight by the decider.
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
INSERT_DECISIONS = f"""WITH asked AS (
    SELECT * FROM unnest(%b::int[], %b::text[], %b::int8[]) AS a(w, customer_id, head)
), stale AS (  -- fresh: the head is the customer's, or this instance wrote every decision since
    SELECT a.w, a.customer_id FROM asked a LEFT JOIN customer_heads h ON h.customer_id = a.customer_id
    WHERE NOT COALESCE(a.head = h.head OR (h.writer = %s AND a.head >= h.since), a.head = 0)
), d AS (
    INSERT INTO decisions ({DECISION_COLUMNS})
    SELECT {DECISION_COLUMNS} FROM unnest(%b::int[], {", ".join(f"%b::{kind}[]" for kind in DECISION_TYPES)})
        AS r(w, {DECISION_COLUMNS})
    WHERE NOT EXISTS (SELECT FROM stale s WHERE s.w = r.w AND s.customer_id = r.customer_id)
    ON CONFLICT DO NOTHING RETURNING decision_id, event_time, customer_id
), queued AS (
    INSERT INTO join_queue (decision_id, event_time) SELECT decision_id, event_time FROM d ON CONFLICT DO NOTHING
), heads AS (
    INSERT INTO customer_heads AS h (customer_id, head, writer, since) SELECT DISTINCT customer_id, 1, %s, 0 FROM d
    ON CONFLICT (customer_id) DO UPDATE SET head = h.head + 1, writer = EXCLUDED.writer,
        since = CASE WHEN h.writer = EXCLUDED.writer THEN h.since ELSE h.head END
)
SELECT decision_id, NULL, NULL FROM d UNION ALL SELECT NULL, w, customer_id FROM stale"""
"""The head check and the write of decisions, their join-queue entries and their customers' heads, in
one statement. ``asked``: the head (w, customer, head) each write ``w`` was decided on; a customer
whose head another store instance has moved since is stale in that write, and its rows are left
out (the write's other customers' are not), as is a row whose decision id or request id is taken
(ON CONFLICT DO NOTHING: its write is refused). Rows: the inserted decision ids, then each write's
stale customers (w, customer). The arrays go in binary (``%b``):
psycopg's text format escapes every element with a regular expression, seven times the cost (for
500 decisions: 487 µs a decision against 68, measured on a loaded machine)."""
STALE = "another replica decided for the customer meanwhile"
UNDO = "WITH gone AS (DELETE FROM decisions WHERE decision_id = ANY(%s)) DELETE FROM join_queue WHERE decision_id = ANY(%s)"
OUTCOME_TYPES = ("text", "text", "text", "float8", "float8", "text", "float8", "int", "int")
INSERT_OUTCOMES = (
    f"INSERT INTO outcomes ({OUTCOME_COLUMNS}) SELECT {OUTCOME_COLUMNS} FROM unnest("
    f"{', '.join(f'%b::{kind}[]' for kind in OUTCOME_TYPES)}) WITH ORDINALITY AS u({OUTCOME_COLUMNS}, n) ORDER BY n "
    "ON CONFLICT (outcome_id) DO NOTHING RETURNING outcome_id"
)
"""Outcomes in the order given (so their seqs are), an outcome_id stored already left out."""
BY_REQUEST = f"SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id = ANY(%b::text[])"
STORED = f"SELECT outcome_id, {SENT_COLUMNS} FROM outcomes WHERE outcome_id = ANY(%s)"
INSERT_ACTIVATIONS = (
    "INSERT INTO activations (decision_id, event_time, received_at) SELECT decision_id, event_time, received_at "
    "FROM unnest(%b::text[], %b::float8[], %b::float8[]) WITH ORDINALITY AS u(decision_id, event_time, received_at, n) "
    "ORDER BY n ON CONFLICT DO NOTHING RETURNING decision_id"
)
CUSTOMER_LOGS = "SELECT * FROM customer_logs(%(ids)b::text[], %(requests)b::text[], %(since)s, %(until)s, %(first)s, %(last)s)"
"""Every part of the customers' logs, their heads and which of the asked request ids are logged, in one
statement (the function's docstring in store/postgres/schema.py says why it is a function)."""


def _columns(rows: list[tuple[Any, ...]], floats: Sequence[int], width: int) -> list[list[Any]]:
    """Rows of ``width`` values as one list a column, for unnest() (empty lists for no rows); float
    columns made all floats (psycopg sends a list of one type)."""
    columns = [list(column) for column in zip(*rows, strict=True)] if rows else [[] for _ in range(width)]
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
    def statement(cls, writes: Sequence[DecisionWrite]) -> tuple[str, Sequence[Any]]:
        asked = [(w, c, h) for w, write in enumerate(writes) if write.heads for c, h in write.heads.items() if h is not None]
        rows = [(w, *decision_row(r)) for w, write in enumerate(writes) for r in write.records]
        me = writes[0].me
        return INSERT_DECISIONS, (
            *_columns(asked, (), 3),
            me,
            *_columns(rows, [i + 1 for i in FLOATS], 1 + len(DECISION_TYPES)),
            me,
        )

    @classmethod
    def settle(cls, conn: Connection, writes: Sequence[DecisionWrite], rows: list[tuple[Any, ...]]) -> list[Outcome]:
        """A write with stale customers fails as StaleHistory naming them (its other customers'
        decisions are written); one with another row left out (an id taken, also by a write merged
        with it) as Conflict, and its other rows undone."""
        inserted = {d for d, _, _ in rows if d is not None}
        stale: dict[int, set[str]] = {}
        for d, w, customer in rows:
            if d is None:
                stale.setdefault(w, set()).add(customer)
        outcomes: list[Outcome] = []
        undo: list[str] = []
        for w, write in enumerate(writes):
            behind = stale.get(w, set())
            mine = [r.decision_id for r in write.records if r.customer_id not in behind]
            if len(set(mine)) == len(mine) and inserted.issuperset(mine):
                inserted.difference_update(mine)  # a later write with one of these ids is refused
                outcomes.append((None, StaleHistory(STALE, frozenset(behind)) if behind else None))
            else:
                undo += [d for d in mine if d in inserted]
                inserted.difference_update(mine)
                outcomes.append((None, Conflict("the store refused the write: a decision id or request id is logged already")))
        if undo:
            conn.execute(UNDO, (undo, undo))
        return outcomes


class OutcomeWrite(Mergeable):
    __slots__ = ("record",)

    def __init__(self, record: OutcomeRecord) -> None:
        self.record = record

    @classmethod
    def statement(cls, writes: Sequence[OutcomeWrite]) -> tuple[str, Sequence[Any]]:
        """New outcomes in one statement, in the order given."""
        return INSERT_OUTCOMES, _columns([outcome_row(w.record) for w in writes], (3, 4, 6), len(OUTCOME_TYPES))

    @classmethod
    def settle(cls, conn: Connection, writes: Sequence[OutcomeWrite], rows: list[tuple[Any, ...]]) -> list[Outcome]:
        """False for a new outcome; True for a duplicate, Conflict for other content under a stored id."""
        inserted = {o for (o,) in rows}
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
    def statement(cls, writes: Sequence[ActivationWrite]) -> tuple[str, Sequence[Any]]:
        """New activations in one statement."""
        rows = [(w.record.decision_id, w.record.event_time, w.record.received_at) for w in writes]
        return INSERT_ACTIVATIONS, _columns(rows, (1, 2), 3)

    @classmethod
    def settle(cls, conn: Connection, writes: Sequence[ActivationWrite], rows: list[tuple[Any, ...]]) -> list[Outcome]:
        """False for a first activation, True for a decision activated before."""
        inserted = {d for (d,) in rows}
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

    def may_refuse(self, heads: Mapping[str, Head]) -> bool:
        """Another replica may decide for a customer or forget them at any time."""
        return any(head is not None for head in heads.values())

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        return self._engine.submit(OutcomeWrite(record), sequenced=True)

    def submit_activation(self, record: ActivationRecord) -> Future[bool]:
        return self._engine.submit(ActivationWrite(record))

    def decision(self, decision_id: str) -> DecisionRecord | None:
        rows = self._engine.rows(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id = %s", (decision_id,))
        return decision_from_row(rows[0]) if rows else None

    def features_before(self, until: float | None, limit: int) -> list[tuple[str, SharedFeatures]]:
        rows = self._engine.rows("SELECT customer_id, features FROM decisions WHERE event_time < %s "
                                 "ORDER BY event_time DESC LIMIT %s", (math.inf if until is None else until, limit))  # fmt: skip
        return [(customer, from_json(features)) for customer, features in rows]

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        if not request_ids:
            return {}
        return {row[1]: decision_from_row(row) for row in self._engine.rows(BY_REQUEST, (list(request_ids),))}

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        return self._read((), customer_ids, first, last, lookback_days)[1]

    def deciding_reads(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[dict[str, DecisionRecord], dict[str, CustomerLog]]:
        """The request ids are looked up in the customers' statement: one read for a Decide; a request
        found (a replay) is read whole afterwards."""
        found, logs = self._read(request_ids, customer_ids, first, last, lookback_days)
        return (self.decisions_by_request(found) if found else {}), logs

    def _read(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[list[str], dict[str, CustomerLog]]:
        """Which of ``request_ids`` are logged, and the customers' logs: one statement."""
        since, until = first - lookback_days * DAY, last + lookback_days * DAY
        args = {
            "ids": list(set(customer_ids)),
            "requests": list(set(request_ids)),
            "since": since,
            "until": until,
            "first": first,
            "last": last,
        }
        return _customer_logs(self._engine.rows(CUSTOMER_LOGS, args), customer_ids, lookback_days)

    def decision_count(self) -> int:
        return int(self._engine.value("SELECT COUNT(*) FROM decisions"))


def _customer_logs(
    rows: list[tuple[Any, ...]], customer_ids: Collection[str], lookback_days: float
) -> tuple[list[str], dict[str, CustomerLog]]:
    """The logged request ids and the customers' logs, from the rows of CUSTOMER_LOGS."""
    found: list[str] = []
    contacts: dict[str, list[Contact]] = {}
    before: dict[str, float | None] = {}
    outcomes: dict[str, list[tuple[str, float]]] = {}
    heads: dict[str, int] = {}
    for part, customer, at, name, channel, offer in rows:
        if part == 0:
            contacts.setdefault(customer, []).append(Contact(name, at, channel, offer))
        elif part == 1:
            before[customer] = at
        elif part == 4:
            heads[customer] = int(at)
        elif part == 5:
            found.append(name)
        elif at is not None:
            outcomes.setdefault(customer, []).append((name, at))
    logs = {}
    for customer in customer_ids:
        mine = sorted(contacts.get(customer, []), key=lambda contact: contact.event_time)
        logs[customer] = CustomerLog(
            lookback_days, tuple(mine), before.get(customer), tuple(outcomes.get(customer, ())), heads.get(customer, 0)
        )
    return found, logs
