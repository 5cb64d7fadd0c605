"""The audit trail, Forget and retention on SQLite (store.ports.AuditTrail, store.ports.Privacy)."""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future

from store.records import AuditEntry, DeletedDecisions, ForgetReport
from store.rows import AUDIT_COLUMNS
from store.sqlite.engine import Engine
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
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def forget(self, customer_id: str, *, actor: str, at: float) -> Future[ForgetReport]:
        mine = (customer_id,)

        def write(conn: sqlite3.Connection) -> ForgetReport:
            activations = conn.execute(f"DELETE FROM activations WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine).rowcount
            conn.execute(f"DELETE FROM join_queue WHERE (event_time, decision_id) IN ({CUSTOMER_QUEUED})", mine)
            conn.execute(f"DELETE FROM late_outcomes WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine)
            joined = conn.execute(f"DELETE FROM joined_examples WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine).rowcount
            decisions = conn.execute("DELETE FROM decisions WHERE customer_id = ?", mine).rowcount
            outcomes = conn.execute("DELETE FROM outcomes WHERE customer_id = ?", mine).rowcount
            report = ForgetReport(decisions, outcomes, activations, joined)
            append_audit(conn, [AuditEntry(at, actor, "forget", customer_id, report.detail())])
            return report

        return self._engine.submit(write)

    def delete_decisions_before(self, cutoff: float, limit: int) -> Future[DeletedDecisions]:
        def write(conn: sqlite3.Connection) -> DeletedDecisions:
            keys = conn.execute(
                "SELECT event_time, decision_id FROM decisions WHERE event_time < ? ORDER BY event_time LIMIT ?", (cutoff, limit)
            ).fetchall()
            if not keys:
                return DeletedDecisions(0, 0, 0)
            ids = [(decision_id,) for _, decision_id in keys]
            activations = sum(conn.execute("DELETE FROM activations WHERE decision_id = ?", i).rowcount for i in ids)
            joined = sum(conn.execute("DELETE FROM joined_examples WHERE decision_id = ?", i).rowcount for i in ids)
            conn.executemany("DELETE FROM join_queue WHERE event_time = ? AND decision_id = ?", keys)  # the queue's key
            conn.executemany("DELETE FROM late_outcomes WHERE decision_id = ?", ids)
            conn.executemany("DELETE FROM decisions WHERE decision_id = ?", ids)
            return DeletedDecisions(len(ids), activations, joined)

        return self._engine.submit(write)

    def delete_outcomes_before(self, cutoff: float, limit: int) -> Future[int]:
        def write(conn: sqlite3.Connection) -> int:
            ids = conn.execute(
                "SELECT outcome_id FROM outcomes WHERE event_time < ? ORDER BY event_time LIMIT ?", (cutoff, limit)
            ).fetchall()
            conn.executemany("DELETE FROM late_outcomes WHERE outcome_id = ?", ids)
            conn.executemany("DELETE FROM outcomes WHERE outcome_id = ?", ids)
            return len(ids)

        return self._engine.submit(write)
