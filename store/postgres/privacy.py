"""Forget and retention on PostgreSQL (store.ports.Privacy)."""

from __future__ import annotations

from concurrent.futures import Future

from store.postgres.catalog import append_audit
from store.postgres.engine import Connection, Engine
from store.records import AuditEntry, DeletedDecisions, ForgetReport

CUSTOMER_DECISIONS = "SELECT decision_id FROM decisions WHERE customer_id = %s"
MOVE_HEAD = """INSERT INTO customer_heads AS h (customer_id, head, writer, since) VALUES (%s, 1, '', 1)
ON CONFLICT (customer_id) DO UPDATE SET head = h.head + 1, writer = '', since = h.head + 1"""
"""A Forget moves the customer's head past every head read before it, written by no store instance
(so no instance's own run of writes covers it): a write of decisions made on a history read before
the Forget is refused as stale (store/postgres/decisions.py), also one of a customer who had no head
(0: no decisions, outcomes only) and one of the instance that wrote last. The row outlives the Forget:
the customer's id and a counter, which the audit entry names anyway; deleting it would let a head
read before the Forget match again once new decisions bring the count back to it."""


class PostgresPrivacy:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def forget(self, customer_id: str, *, actor: str, at: float) -> Future[ForgetReport]:
        mine = (customer_id,)

        def write(conn: Connection) -> ForgetReport:
            activations = conn.execute(f"DELETE FROM activations WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine).rowcount
            conn.execute(f"DELETE FROM join_queue WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine)
            conn.execute(f"DELETE FROM late_outcomes WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine)
            joined = conn.execute(f"DELETE FROM joined_examples WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine).rowcount
            conn.execute(f"DELETE FROM provisional_examples WHERE decision_id IN ({CUSTOMER_DECISIONS})", mine)
            decisions = conn.execute("DELETE FROM decisions WHERE customer_id = %s", mine).rowcount
            outcomes = conn.execute("DELETE FROM outcomes WHERE customer_id = %s", mine).rowcount
            conn.execute(MOVE_HEAD, mine)
            report = ForgetReport(decisions, outcomes, activations, joined)
            append_audit(conn, [AuditEntry(at, actor, "forget", customer_id, report.detail())])
            return report

        return self._engine.submit(write, customers=mine)

    def delete_decisions_before(self, cutoff: float, limit: int) -> Future[DeletedDecisions]:
        def write(conn: Connection) -> DeletedDecisions:
            found = conn.execute(
                "SELECT decision_id FROM decisions WHERE event_time < %s ORDER BY event_time LIMIT %s", (cutoff, limit)
            ).fetchall()
            ids = ([decision_id for (decision_id,) in found],)
            if not found:
                return DeletedDecisions(0, 0, 0)
            activations = conn.execute("DELETE FROM activations WHERE decision_id = ANY(%s)", ids).rowcount
            joined = conn.execute("DELETE FROM joined_examples WHERE decision_id = ANY(%s)", ids).rowcount
            for table in ("join_queue", "late_outcomes", "provisional_examples", "decisions"):
                conn.execute(f"DELETE FROM {table} WHERE decision_id = ANY(%s)", ids)
            return DeletedDecisions(len(found), activations, joined)

        return self._engine.submit(write)

    def delete_outcomes_before(self, cutoff: float, limit: int) -> Future[int]:
        def write(conn: Connection) -> int:
            found = conn.execute(
                "SELECT outcome_id FROM outcomes WHERE event_time < %s ORDER BY event_time LIMIT %s", (cutoff, limit)
            ).fetchall()
            ids = ([outcome_id for (outcome_id,) in found],)
            conn.execute("DELETE FROM late_outcomes WHERE outcome_id = ANY(%s)", ids)
            conn.execute("DELETE FROM outcomes WHERE outcome_id = ANY(%s)", ids)
            return len(found)

        return self._engine.submit(write)
