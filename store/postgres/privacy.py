"""Forget and retention on PostgreSQL (store.ports.Privacy)."""

from __future__ import annotations

from concurrent.futures import Future

from store.postgres.catalog import append_audit
from store.postgres.engine import Connection, Engine
from store.records import AuditEntry, DeletedDecisions, ForgetReport

CUSTOMER_DECISIONS = "SELECT decision_id FROM decisions WHERE customer_id = %s"


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
            conn.execute("DELETE FROM customer_heads WHERE customer_id = %s", mine)
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
