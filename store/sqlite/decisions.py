"""The decision log on SQLite: the hot path's statements (store.ports.DecisionLog).

One process writes a SQLite store's decisions (the server; its worker writes only joined examples),
so decisions need no per-customer serialisation across processes: ``heads`` are not checked and
every CustomerLog's head is None.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from store.errors import Conflict
from store.records import DAY, ActivationRecord, Contact, CustomerLog, DecisionRecord, Head, OutcomeRecord
from store.sqlite.engine import Engine, Mergeable
from store.sqlite.statements import from_json, insert_rows, marks, slices, to_json

DECISION_COLUMNS = (
    "decision_id, request_id, customer_id, touchpoint, event_time, received_at, action_id, offer, channel, slot, "
    "send_at, probability, exploratory, policy_id, model_version, personalised, features, eligible, pmf, "
    "exclusions, contact_consent, shadow, shared_line"
)
_INSERT_DECISIONS = f"INSERT INTO decisions ({DECISION_COLUMNS}) VALUES "
_INSERT_QUEUED = "INSERT INTO join_queue (decision_id, event_time) VALUES "
OUTCOME_COLUMNS = "outcome_id, customer_id, type, value, event_time, decision_id, received_at, value_sent, event_time_sent"
_INSERT_OUTCOME = f"INSERT INTO outcomes ({OUTCOME_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_SENT = "SELECT customer_id, type, value, value_sent, event_time, event_time_sent, decision_id FROM outcomes WHERE outcome_id = ?"


@functools.lru_cache(maxsize=64)
def _customer_logs_sql(count: int) -> str:
    """The histories of ``count`` customers over a span of decision times, in one statement (see
    CustomerLog): ?1..?count the customer ids (distinct), then the first decision time less the
    lookback, the last decision time, the first decision time."""
    since, last, first = f"?{count + 1}", f"?{count + 2}", f"?{count + 3}"
    # One customer (every unary Decide) is compared directly: no table of wanted ids to build.
    wanted, is_wanted, each = (
        ("", "= ?1", "?1")
        if count == 1
        else (f"WITH wanted(id) AS (VALUES {', '.join(f'(?{i + 1})' for i in range(count))})", "IN wanted", "id")
    )
    return f"""{wanted}
SELECT 0, customer_id, event_time, decision_id, channel, offer FROM decisions
    WHERE customer_id {is_wanted} AND event_time >= {since} AND event_time < {last} AND action_id != 'do_nothing'
UNION ALL
SELECT 1, {each}, (SELECT event_time FROM decisions
                   WHERE customer_id = {each} AND event_time < {since} AND action_id != 'do_nothing'
                   ORDER BY event_time DESC LIMIT 1), NULL, NULL, NULL {"" if count == 1 else "FROM wanted"}
UNION ALL
SELECT 2, customer_id, MAX(event_time), type, NULL, NULL FROM outcomes WHERE customer_id {is_wanted} AND event_time < {first}
    GROUP BY customer_id, type
UNION ALL
SELECT 3, customer_id, event_time, type, NULL, NULL FROM outcomes
    WHERE customer_id {is_wanted} AND event_time >= {first} AND event_time < {last}"""


def decision_row(r: DecisionRecord) -> tuple[Any, ...]:
    return (
        r.decision_id, r.request_id, r.customer_id, r.touchpoint, r.event_time, r.received_at, r.action_id,
        r.offer, r.channel, r.slot, r.send_at, r.probability, int(r.exploratory), r.policy_id, r.model_version,
        int(r.personalised), to_json(r.features), to_json(r.eligible), to_json(r.pmf), to_json(r.exclusions),
        to_json(r.contact_consent), to_json(r.shadow), r.shared_line,
    )  # fmt: skip


def decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    """A decision from a row of DECISION_COLUMNS, in that order."""
    (decision_id, request_id, customer_id, touchpoint, event_time, received_at, action_id, offer, channel, slot, send_at,
     probability, exploratory, policy_id, model_version, personalised, features, eligible, pmf, exclusions, contact_consent,
     shadow, shared_line) = row  # fmt: skip
    return DecisionRecord(
        decision_id=decision_id, request_id=request_id, customer_id=customer_id, touchpoint=touchpoint, event_time=event_time,
        received_at=received_at, action_id=action_id, offer=offer, channel=channel, slot=slot, send_at=send_at,
        probability=probability, exploratory=bool(exploratory), policy_id=policy_id, model_version=model_version,
        personalised=bool(personalised), features=from_json(features), eligible=tuple(from_json(eligible)),
        pmf=tuple(from_json(pmf)), exclusions=from_json(exclusions), contact_consent=from_json(contact_consent),
        shadow={k: tuple(v) for k, v in from_json(shadow).items()}, shared_line=shared_line,
    )  # fmt: skip


class DecisionWrite(Mergeable):
    """Decision rows and their join-queue entries: a write the writer merges with its neighbours."""

    __slots__ = ("rows", "queued")

    def __init__(self, records: Sequence[DecisionRecord]) -> None:
        self.rows = [decision_row(r) for r in records]
        self.queued = [(r.decision_id, r.event_time) for r in records]

    @classmethod
    def merged(cls, conn: sqlite3.Connection, writes: Sequence[DecisionWrite]) -> None:
        insert_rows(conn, _INSERT_DECISIONS, [row for w in writes for row in w.rows])
        insert_rows(conn, _INSERT_QUEUED, [queued for w in writes for queued in w.queued])


def _contact_time(contact: Contact) -> float:
    return contact.event_time


class SQLiteDecisionLog:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        return self._engine.submit(DecisionWrite(records))

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        row = (record.outcome_id, record.customer_id, record.type, record.value, record.event_time, record.decision_id,
               record.received_at, int(record.value_sent), int(record.event_time_sent))  # fmt: skip
        sent = record.sent()

        def write(conn: sqlite3.Connection) -> bool:
            existing = conn.execute(_SENT, (record.outcome_id,)).fetchone()
            if existing is None:
                conn.execute(_INSERT_OUTCOME, row)
                return False
            customer_id, kind, value, value_sent, event_time, event_time_sent, decision_id = existing
            if (customer_id, kind, value if value_sent else None, event_time if event_time_sent else None, decision_id) != sent:
                raise Conflict(f"outcome_id {record.outcome_id!r} was already recorded with different content")
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

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        """One statement for up to MAX_IDS request ids."""
        found = {}
        with self._engine.reading() as conn:
            for ids in slices(request_ids):
                for row in conn.execute(f"SELECT {DECISION_COLUMNS} FROM decisions WHERE request_id IN ({marks(len(ids))})", ids):
                    found[row[1]] = decision_from_row(row)
        return found

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        """One statement (one snapshot) for up to MAX_IDS customers."""
        contacts: dict[str, list[Contact]] = {}
        before: dict[str, float | None] = {}
        outcomes: dict[str, list[tuple[str, float]]] = {}
        with self._engine.reading() as conn:
            for ids in slices(customer_ids):
                rows = conn.execute(_customer_logs_sql(len(ids)), (*ids, first - lookback_days * DAY, last, first))
                for part, customer, at, name, channel, offer in rows:
                    if part == 0:
                        contacts.setdefault(customer, []).append(Contact(name, at, channel, offer))
                    elif part == 1:
                        before[customer] = at
                    elif at is not None:
                        outcomes.setdefault(customer, []).append((name, at))
        logs = {}
        for customer in customer_ids:
            mine = contacts.get(customer, [])
            mine.sort(key=_contact_time)
            logs[customer] = CustomerLog(lookback_days, tuple(mine), before.get(customer), tuple(outcomes.get(customer, ())))
        return logs

    def decision_count(self) -> int:
        with self._engine.reading() as conn:
            count: int = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
        return count
