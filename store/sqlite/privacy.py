"""The audit trail, Forget and retention on SQLite (store.ports.AuditTrail, store.ports.Privacy)."""

from __future__ import annotations

import dataclasses
import functools
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future

from store.records import AuditEntry, DeletedDecisions, ForgetReport
from store.rows import AUDIT_COLUMNS
from store.settling import chained
from store.sqlite.engine import Engine
from store.sqlite.forgets import Forgets
from store.sqlite.registry import append_audit

CUSTOMER_DECISIONS = "SELECT decision_id FROM decisions WHERE customer_id = ?"
CUSTOMER_QUEUED = "SELECT event_time, decision_id FROM decisions WHERE customer_id = ?"
"""The customer's decisions by the join queue's key."""


class SQLiteAuditTrail:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, entry: AuditEntry) -> Future[None]:
        def write(conn: sqlite3.Connection) -> None:
            append_audit(conn, [entry])

        return self._engine.submit(write)

    def entries(self, action: str | None = None) -> list[AuditEntry]:
        where, args = ("WHERE action = ?", (action,)) if action is not None else ("", ())
        with self._engine.reading() as conn:
            return [AuditEntry(*row) for row in conn.execute(f"SELECT {AUDIT_COLUMNS} FROM audit {where} ORDER BY id", args)]


class SQLitePrivacy:
    """Forget and retention delete from the log's file first, then from the worker's (by the ids the
    first write deleted), each in its own transaction. A decision taken into the join queue from an
    intake read before the log's deletion is dropped from the queue by the joiner when it closes
    (store/sqlite/joins.py). A Forget moves its customer's head (``forgets``, shared with the
    store's DecisionLog: store/sqlite/forgets.py) in the log's transaction."""

    def __init__(self, engine: Engine, worker_engine: Engine, forgets: Forgets) -> None:
        self._engine = engine
        self._worker = worker_engine
        self._forgets = forgets

    def forget(self, customer_id: str, *, actor: str, at: float) -> Future[ForgetReport]:
        mine = (customer_id,)

        def from_log(conn: sqlite3.Connection, generation: int) -> tuple[list[tuple[float, str]], ForgetReport]:
            self._forgets.ran(customer_id, generation)
            keys = conn.execute(CUSTOMER_QUEUED, mine).fetchall()
            activations = conn.execute(f"DELETE FROM activations WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine).rowcount
            # The intake is short (trimmed as it is taken in): read whole.
            conn.execute(f"DELETE FROM join_intake WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine)
            decisions = conn.execute("DELETE FROM decisions WHERE customer_id = ?", mine).rowcount
            outcomes = conn.execute("DELETE FROM outcomes WHERE customer_id = ?", mine).rowcount
            return keys, ForgetReport(decisions, outcomes, activations, 0)

        def audited(report: ForgetReport) -> Future[ForgetReport]:
            def write(conn: sqlite3.Connection) -> ForgetReport:
                append_audit(conn, [AuditEntry(at, actor, "forget", customer_id, report.detail())])
                return report

            return self._engine.submit(write)

        def from_worker(found: tuple[list[tuple[float, str]], ForgetReport]) -> Future[ForgetReport]:
            keys, report = found

            def write(conn: sqlite3.Connection) -> ForgetReport:
                joined = _delete_worker_rows(conn, keys)
                if not keys:  # nothing left in the log: a Forget run again after its worker's write failed
                    joined += conn.execute("DELETE FROM joined_examples WHERE customer_id = ?", mine).rowcount
                    conn.execute("DELETE FROM provisional_examples WHERE customer_id = ?", mine)
                return dataclasses.replace(report, joined_examples=joined)

            return self._worker.submit(write)

        deletion = self._forgets.call(lambda generation: self._engine.submit(functools.partial(from_log, generation=generation)))
        return chained(chained(deletion, from_worker), audited)

    def delete_decisions_before(self, cutoff: float, limit: int) -> Future[DeletedDecisions]:
        def from_log(conn: sqlite3.Connection) -> tuple[list[tuple[float, str]], int]:
            keys = conn.execute(
                "SELECT event_time, decision_id FROM decisions WHERE event_time < ? ORDER BY event_time LIMIT ?", (cutoff, limit)
            ).fetchall()
            ids = [(decision_id,) for _, decision_id in keys]
            activations = sum(conn.execute("DELETE FROM activations WHERE decision_id = ?", i).rowcount for i in ids)
            conn.executemany("DELETE FROM decisions WHERE decision_id = ?", ids)
            return keys, activations

        def from_worker(found: tuple[list[tuple[float, str]], int]) -> Future[DeletedDecisions]:
            keys, activations = found

            def write(conn: sqlite3.Connection) -> DeletedDecisions:
                return DeletedDecisions(len(keys), activations, _delete_worker_rows(conn, keys))

            return self._worker.submit(write)

        return chained(self._engine.submit(from_log), from_worker)

    def delete_outcomes_before(self, cutoff: float, limit: int) -> Future[int]:
        def from_log(conn: sqlite3.Connection) -> list[tuple[str]]:
            ids = conn.execute(
                "SELECT outcome_id FROM outcomes WHERE event_time < ? ORDER BY event_time LIMIT ?", (cutoff, limit)
            ).fetchall()
            conn.executemany("DELETE FROM outcomes WHERE outcome_id = ?", ids)
            return ids

        def from_worker(ids: list[tuple[str]]) -> Future[int]:
            def write(conn: sqlite3.Connection) -> int:
                conn.executemany("DELETE FROM late_outcomes WHERE outcome_id = ?", ids)
                return len(ids)

            return self._worker.submit(write)

        return chained(self._engine.submit(from_log), from_worker)


def _delete_worker_rows(conn: sqlite3.Connection, keys: Sequence[tuple[float, str]]) -> int:
    """The decisions' (keys: (event time, decision id)) joined and provisional examples, late outcomes
    and queue entries; the number of joined examples deleted."""
    ids = [(decision_id,) for _, decision_id in keys]
    conn.executemany("DELETE FROM join_queue WHERE event_time = ? AND decision_id = ?", keys)  # the queue's key
    conn.executemany("DELETE FROM late_outcomes WHERE decision_id = ?", ids)
    conn.executemany("DELETE FROM provisional_examples WHERE decision_id = ?", ids)
    return sum(conn.execute("DELETE FROM joined_examples WHERE decision_id = ?", i).rowcount for i in ids)
