"""The decision log on SQLite: the hot path's statements (store.ports.DecisionLog).

One process writes a SQLite store's decisions (the server; its worker writes only joined examples),
so decisions need no per-customer serialisation across processes. A customer's head moves only when
the customer is forgotten (store/sqlite/forgets.py): a write of decisions made on a history read
before a Forget of its customer committed, and run after it, is refused as StaleHistory.
"""

from __future__ import annotations

import functools
import math
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future

from store.errors import StaleHistory
from store.records import (
    DAY,
    HISTORY_CONTACTS,
    ActivationRecord,
    Contact,
    CustomerLog,
    DecisionRecord,
    Head,
    OutcomeRecord,
    SharedFeatures,
    decision_id_for,
)
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
from store.sqlite.engine import Engine, Mergeable
from store.sqlite.forgets import Forgets
from store.sqlite.schema import CONTACT
from store.sqlite.statements import MAX_IDS, insert_rows, marks, slices

_INSERT_DECISIONS = f"INSERT INTO decisions ({DECISION_COLUMNS}, derived) VALUES "
_INSERT_OUTCOME = f"INSERT INTO outcomes ({OUTCOME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SENT = f"SELECT {SENT_COLUMNS} FROM outcomes WHERE outcome_id = ?"


@functools.lru_cache(maxsize=64)
def _customer_logs_sql(count: int, requests: int = 0) -> str:
    """The histories of ``count`` customers over a span of decision times, in one statement (see
    CustomerLog): ?1..?count the customer ids (distinct), then the first decision time less the
    lookback, the last decision time plus the lookback, the first and the last decision times; then ``requests``
    request ids, each found one a row of part 4 (its request id, its decision id). A customer's
    contacts are found in the index of contacts alone, the latest first, and read by rowid; its last
    outcome of each type before the first time and its first after the last time by one search a type
    each (not a walk of its outcomes), and its outcomes between them by a range a type."""
    since, until, first, last = f"?{count + 1}", f"?{count + 2}", f"?{count + 3}", f"?{count + 4}"
    # One customer (every unary Decide) is compared directly: no table of wanted ids to build.
    ids = ", ".join(f"(?{i + 1})" for i in range(count))
    wanted, each = ("", "?1") if count == 1 else (f"wanted(id) AS (VALUES {ids}), ", "id")
    # The outcome types of each customer, one search of the index of types each (a skip scan).
    kinds = (f"kinds(customer, type) AS (SELECT {each}, (SELECT MIN(type) FROM outcomes WHERE customer_id = {each}) "
             f"{'' if count == 1 else 'FROM wanted '}UNION ALL SELECT k.customer, (SELECT MIN(o.type) FROM outcomes o "
             "WHERE o.customer_id = k.customer AND o.type > k.type) FROM kinds k WHERE k.type IS NOT NULL)")  # fmt: skip
    return f"""WITH RECURSIVE {wanted}{kinds}
SELECT 0, d.customer_id, d.event_time, d.decision_id, d.channel, d.offer FROM {"" if count == 1 else "wanted, "}decisions d
    WHERE d.rowid IN (SELECT rowid FROM decisions WHERE customer_id = {each} AND event_time >= {since} AND event_time < {until}
                      AND {CONTACT} ORDER BY event_time DESC LIMIT {HISTORY_CONTACTS})
UNION ALL
SELECT 1, {each}, (SELECT event_time FROM decisions
                   WHERE customer_id = {each} AND event_time < {since} AND {CONTACT}
                   ORDER BY event_time DESC LIMIT 1), NULL, NULL, NULL {"" if count == 1 else "FROM wanted"}
UNION ALL
SELECT 2, k.customer, (SELECT MAX(o.event_time) FROM outcomes o WHERE o.customer_id = k.customer AND o.type = k.type
                       AND o.event_time < {first}), k.type, NULL, NULL FROM kinds k WHERE k.type IS NOT NULL
UNION ALL
SELECT 3, k.customer, o.event_time, k.type, NULL, NULL FROM kinds k JOIN outcomes o
    ON o.customer_id = k.customer AND o.type = k.type AND o.event_time >= {first} AND o.event_time <= {last}
UNION ALL
SELECT 3, k.customer, (SELECT MIN(o.event_time) FROM outcomes o WHERE o.customer_id = k.customer AND o.type = k.type
                       AND o.event_time > {last}), k.type, NULL, NULL FROM kinds k
    WHERE k.type IS NOT NULL{_logged_sql(count + 5, requests)}"""


def _logged_sql(start: int, requests: int) -> str:
    """Part 4: ``requests`` request ids from ?start on, then as many decision ids (theirs, if derived)."""
    if not requests:
        return ""
    ids = ", ".join(f"?{start + i}" for i in range(requests))
    derived_ids = ", ".join(f"?{start + requests + i}" for i in range(requests))
    return f"""
UNION ALL
SELECT 4, request_id, NULL, decision_id, NULL, NULL FROM decisions WHERE decision_id IN ({derived_ids}) AND derived = 1
UNION ALL
SELECT 4, request_id, NULL, decision_id, NULL, NULL FROM decisions WHERE request_id IN ({ids}) AND derived = 0"""


@functools.lru_cache(maxsize=64)
def _by_request_sql(count: int) -> str:
    """The decisions of ``count`` request ids, then as many decision ids (theirs, if derived)."""
    return (
        f"SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id IN ({marks(count)}) AND derived = 0 "
        f"UNION ALL SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id IN ({marks(count)}) AND derived = 1"
    )


def _with_derived_ids(request_ids: Sequence[str]) -> tuple[str, ...]:
    """The request ids, then the decision id each would have if the Decider made it."""
    return (*request_ids, *map(decision_id_for, request_ids))


class DecisionWrite(Mergeable):
    """Decision rows (each enters the join queue by the schema's trigger): a write the writer merges
    with its neighbours.

    One decision a request id: a derived decision (its id is its request id's, as the Decider makes
    them) by its primary key, others by a partial unique index, the two kinds against each other
    by the schema's trigger decisions_queued (an other one came first) and by ``_check_not_derived`` (a derived one
    came first, or comes in the same statement)."""

    __slots__ = ("rows", "not_derived", "heads", "forgets")

    def __init__(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None, forgets: Forgets) -> None:
        self.rows = [(*decision_row(r), int(r.decision_id == decision_id_for(r.request_id))) for r in records]
        self.not_derived = [row[1] for row in self.rows if not row[-1]]
        self.heads = heads
        self.forgets = forgets

    @classmethod
    def merged(cls, conn: sqlite3.Connection, writes: Sequence[DecisionWrite]) -> None:
        for w in writes:  # a stale write fails alone (the writer then writes the others one by one)
            if w.heads and w.forgets.refuses(w.heads):
                raise StaleHistory("the customer was forgotten after their history was read")
        insert_rows(conn, _INSERT_DECISIONS, [row for w in writes for row in w.rows])
        _check_not_derived(conn, [request_id for w in writes for request_id in w.not_derived])


def _check_not_derived(conn: sqlite3.Connection, request_ids: Sequence[str]) -> None:
    """Refuse (IntegrityError, as the database would) request ids just written for decisions whose
    id is not derived from them when a derived decision has one of them too."""
    for ids in slices(request_ids):
        if conn.execute(f"SELECT 1 FROM decisions WHERE decision_id IN ({marks(len(ids))}) AND derived = 1 LIMIT 1",
                        [decision_id_for(i) for i in ids]).fetchone() is not None:  # fmt: skip
            raise sqlite3.IntegrityError("UNIQUE constraint failed: decisions.request_id")


def _contact_time(contact: Contact) -> float:
    return contact.event_time


class SQLiteDecisionLog:
    def __init__(self, engine: Engine, forgets: Forgets) -> None:
        """``forgets``: the store's Forgets (store/sqlite/forgets.py), shared with its Privacy."""
        self._engine = engine
        self._forgets = forgets

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        return self._engine.submit(DecisionWrite(records, heads, self._forgets))

    def may_refuse(self, heads: Mapping[str, Head]) -> bool:
        return self._forgets.may_refuse(heads)

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        row = outcome_row(record)

        def write(conn: sqlite3.Connection) -> bool:
            existing = conn.execute(_SENT, (record.outcome_id,)).fetchone()
            if existing is None:
                conn.execute(_INSERT_OUTCOME, row)
                return False
            check_sent(record, existing)
            return True

        return self._engine.submit(write)

    def submit_activation(self, record: ActivationRecord) -> Future[bool]:
        row = (record.decision_id, record.event_time, record.received_at)

        def write(conn: sqlite3.Connection) -> bool:
            return conn.execute("INSERT OR IGNORE INTO activations VALUES (?, ?, ?)", row).rowcount == 0

        return self._engine.submit(write)

    def decision(self, decision_id: str) -> DecisionRecord | None:
        with self._engine.reading() as conn:
            row = conn.execute(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
        return None if row is None else decision_from_row(row)

    def features_before(self, until: float | None, limit: int) -> list[tuple[str, SharedFeatures]]:
        sql = "SELECT customer_id, features FROM decisions WHERE event_time < ? ORDER BY event_time DESC LIMIT ?"
        with self._engine.reading() as conn:
            rows = conn.execute(sql, (math.inf if until is None else until, limit)).fetchall()
        return [(customer, from_json(features)) for customer, features in rows]

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        """One statement for up to MAX_IDS request ids."""
        found = {}
        with self._engine.reading() as conn:
            for ids in slices(request_ids):
                for row in conn.execute(_by_request_sql(len(ids)), _with_derived_ids(ids)):
                    found[row[1]] = decision_from_row(row)
        return found

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        """One statement (one snapshot) for up to MAX_IDS customers."""
        return self._read(customer_ids, (), first, last, lookback_days)[1]

    def deciding_reads(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[dict[str, DecisionRecord], dict[str, CustomerLog]]:
        """The request ids are looked up in the customers' statement (up to MAX_IDS of each): one read
        for a Decide; a request found (a replay) is read whole afterwards."""
        if len(request_ids) > MAX_IDS:
            return self.decisions_by_request(request_ids), self.customer_logs(customer_ids, first, last, lookback_days)
        found, logs = self._read(customer_ids, request_ids, first, last, lookback_days)
        return (self.decisions_by_request(found) if found else {}), logs

    def _read(
        self, customer_ids: Collection[str], request_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[list[str], dict[str, CustomerLog]]:
        """The request ids of ``request_ids`` that are logged, and the customers' logs."""
        contacts: dict[str, list[Contact]] = {}
        before: dict[str, float | None] = {}
        outcomes: dict[str, list[tuple[str, float]]] = {}
        found: list[str] = []
        asked = list(dict.fromkeys(request_ids))
        span = (first - lookback_days * DAY, last + lookback_days * DAY, first, last)
        head = self._forgets.visible  # before the read: it sees every Forget up to this one
        with self._engine.reading() as conn:
            for ids in slices(customer_ids):
                rows = conn.execute(_customer_logs_sql(len(ids), len(asked)), (*ids, *span, *_with_derived_ids(asked)))
                asked = []  # with the first slice's statement
                for part, customer, at, name, channel, offer in rows:
                    if part == 0:
                        contacts.setdefault(customer, []).append(Contact(name, at, channel, offer))
                    elif part == 1:
                        before[customer] = at
                    elif part == 4:
                        found.append(customer)
                    elif at is not None:
                        outcomes.setdefault(customer, []).append((name, at))
        logs = {}
        for customer in customer_ids:
            mine = contacts.get(customer, [])
            mine.sort(key=_contact_time)
            logs[customer] = CustomerLog(lookback_days, tuple(mine), before.get(customer), tuple(outcomes.get(customer, ())),
                                         head)  # fmt: skip
        return found, logs

    def decision_count(self) -> int:
        with self._engine.reading() as conn:
            count: int = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        return count
