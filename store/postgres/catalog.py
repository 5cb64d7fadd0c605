"""Model snapshots, the policy registry's rows and the audit trail on PostgreSQL
(store.ports.ModelSnapshots, RegistryStorage, AuditTrail): compare-and-set registry writes, each
appending its events and audit entries in its own transaction."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from typing import Any

from store.errors import Conflict
from store.postgres.engine import Connection, Engine
from store.records import (
    AuditEntry,
    EvaluationRecord,
    Leftovers,
    ModelSnapshot,
    PolicyEntry,
    PolicyEvent,
    State,
)
from store.rows import (
    AUDIT_COLUMNS,
    EVALUATION_COLUMNS,
    EVENT_COLUMNS,
    MODEL_COLUMNS,
    POLICY_COLUMNS,
    evaluation_from_row,
    evaluation_row,
    policy_from_row,
    policy_row,
    snapshot_from_row,
    snapshot_row,
)

NEWEST_FIRST = "ORDER BY created_at DESC, seq DESC"
MOVE = "UPDATE policies SET state = %s WHERE id = %s AND state = %s"


def _marks(count: int) -> str:
    return ", ".join(["%s"] * count)


def append_audit(conn: Connection, entries: Sequence[AuditEntry]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES ({_marks(5)})",
                           [(e.at, e.actor, e.action, e.subject, e.detail) for e in entries])  # fmt: skip


class PostgresModelSnapshots:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def save(self, snapshot: ModelSnapshot) -> Future[None]:
        row = (*snapshot_row(snapshot), time.time())

        def write(conn: Connection) -> None:
            conn.execute(f"INSERT INTO models ({MODEL_COLUMNS}, created_at) VALUES ({_marks(7)}) ON CONFLICT DO NOTHING", row)

        return self._engine.submit(write)

    def get(self, policy_id: str, version: str) -> ModelSnapshot | None:
        query = f"SELECT {MODEL_COLUMNS} FROM models WHERE policy_id = %s AND version = %s"
        rows = self._engine.rows(query, (policy_id, version))
        return snapshot_from_row(rows[0]) if rows else None

    def newest_version(self, policy_id: str) -> str | None:
        rows = self._engine.rows(f"SELECT version FROM models WHERE policy_id = %s {NEWEST_FIRST} LIMIT 1", (policy_id,))
        return str(rows[0][0]) if rows else None

    def newest_first(self, policy_id: str) -> Iterator[ModelSnapshot]:
        """One snapshot read at a time: the versions first, then each model when it is asked for."""
        versions = self._engine.rows(f"SELECT version FROM models WHERE policy_id = %s {NEWEST_FIRST}", (policy_id,))
        for (version,) in versions:
            snapshot = self.get(policy_id, version)
            if snapshot is not None:  # gone meanwhile: passed over
                yield snapshot


class PostgresRegistryStorage:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _entries(self, where: str = "", args: tuple[Any, ...] = ()) -> list[PolicyEntry]:
        rows = self._engine.rows(f"SELECT {POLICY_COLUMNS} FROM policies {where} ORDER BY created, id", args)
        return [policy_from_row(row) for row in rows]

    def policy(self, policy_id: str) -> PolicyEntry | None:
        return next(iter(self._entries("WHERE id = %s", (policy_id,))), None)

    def policies(self, state: State | None = None) -> list[PolicyEntry]:
        return self._entries() if state is None else self._entries("WHERE state = %s", (state,))

    def champion(self) -> PolicyEntry | None:
        return next(iter(self._entries("WHERE state = 'champion'")), None)

    def events(self, policy_id: str | None = None) -> list[PolicyEvent]:
        where, args = ("WHERE policy_id = %s", (policy_id,)) if policy_id is not None else ("", ())
        rows = self._engine.rows(f"SELECT {EVENT_COLUMNS} FROM policy_events {where} ORDER BY id", args)
        return [PolicyEvent(*row) for row in rows]

    def evaluations(self, policy_id: str) -> list[EvaluationRecord]:
        rows = self._engine.rows(
            f"SELECT {EVALUATION_COLUMNS} FROM evaluations WHERE policy_id = %s ORDER BY id DESC", (policy_id,)
        )
        return [evaluation_from_row(row) for row in rows]

    def register(
        self,
        entry: PolicyEntry,
        event: PolicyEvent,
        audit: Sequence[AuditEntry],
        evidence: Sequence[EvaluationRecord] = (),
        snapshot: ModelSnapshot | None = None,
    ) -> Future[Leftovers]:
        row = policy_row(entry)
        model = None if snapshot is None else (*snapshot_row(snapshot), time.time())

        def write(conn: Connection) -> Leftovers:
            # The primary key refuses a taken id (a registration of it in flight holds its row: this one waits
            # for that one's end, then fails), the one_champion index a second champion: Conflict, and the
            # write's savepoint, its snapshot with it, is rolled back.
            conn.execute(f"INSERT INTO policies ({POLICY_COLUMNS}) VALUES ({_marks(len(row))})", row)
            leftovers = _remove_leftovers(conn, entry.id)
            if model is not None:
                conn.execute(f"INSERT INTO models ({MODEL_COLUMNS}, created_at) VALUES ({_marks(len(model))})", model)
            _append(conn, [event], [*leftovers.audit(event), *audit])
            _insert_evaluations(conn, evidence)
            return leftovers

        return self._engine.submit(write)

    def transition(self, events: Sequence[PolicyEvent], audit: Sequence[AuditEntry]) -> Future[None]:
        changes = [(e.to_state, e.policy_id, e.from_state) for e in events]

        def write(conn: Connection) -> None:
            # Retirements first: the one_champion index checks each statement, not the transaction.
            for to_state, policy_id, from_state in sorted(changes, key=lambda change: change[0] == "champion"):
                moved = conn.execute(MOVE, (to_state, policy_id, from_state))
                if moved.rowcount != 1:
                    raise Conflict(f"policy {policy_id!r} is not {from_state} (any more)")
            _append(conn, events, audit)

        return self._engine.submit(write)

    def record_evaluation(self, record: EvaluationRecord) -> Future[None]:
        return self._engine.submit(lambda conn: _insert_evaluations(conn, [record]))


def _remove_leftovers(conn: Connection, policy_id: str) -> Leftovers:
    """Delete the evaluations and snapshots under ``policy_id``, which the caller has just claimed for a new entry."""
    removed = conn.execute("DELETE FROM models WHERE policy_id = %s RETURNING version, created_at, seq", (policy_id,))
    snapshots = tuple(str(version) for version, *_ in sorted(removed.fetchall(), key=lambda row: (row[1], row[2])))
    evaluations = conn.execute("DELETE FROM evaluations WHERE policy_id = %s", (policy_id,)).rowcount
    return Leftovers(evaluations, snapshots)


def _insert_evaluations(conn: Connection, records: Sequence[EvaluationRecord]) -> None:
    for record in records:
        row = evaluation_row(record)
        conn.execute(f"INSERT INTO evaluations ({EVALUATION_COLUMNS}) VALUES ({_marks(len(row))})", row)


def _append(conn: Connection, events: Sequence[PolicyEvent], audit: Sequence[AuditEntry]) -> None:
    with conn.cursor() as cursor:
        cursor.executemany(f"INSERT INTO policy_events ({EVENT_COLUMNS}) VALUES ({_marks(6)})",
                           [(e.policy_id, e.at, e.actor, e.from_state, e.to_state, e.reason) for e in events])  # fmt: skip
    append_audit(conn, audit)


class PostgresAuditTrail:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(self, entry: AuditEntry) -> Future[None]:
        def write(conn: Connection) -> None:
            append_audit(conn, [entry])

        return self._engine.submit(write)

    def entries(self, action: str | None = None) -> list[AuditEntry]:
        where, args = ("WHERE action = %s", (action,)) if action is not None else ("", ())
        return [AuditEntry(*row) for row in self._engine.rows(f"SELECT {AUDIT_COLUMNS} FROM audit {where} ORDER BY id", args)]
