"""The policy registry's rows on SQLite (store.ports.RegistryStorage): compare-and-set writes."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from store.errors import Conflict
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
    snapshot_row,
)
from store.sqlite.engine import Engine


def append_audit(conn: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    conn.executemany(f"INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
                     [(e.at, e.actor, e.action, e.subject, e.detail) for e in entries])  # fmt: skip


def _append(conn: sqlite3.Connection, events: Sequence[PolicyEvent], audit: Sequence[AuditEntry]) -> None:
    conn.executemany(f"INSERT INTO policy_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)",
                     [(e.policy_id, e.at, e.actor, e.from_state, e.to_state, e.reason) for e in events])  # fmt: skip
    append_audit(conn, audit)


class SQLiteRegistryStorage:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _entries(self, where: str = "", args: tuple[Any, ...] = ()) -> list[PolicyEntry]:
        with self._engine.reading() as conn:
            rows = conn.execute(f"SELECT {POLICY_COLUMNS} FROM policies {where} ORDER BY created, id", args).fetchall()
        return [policy_from_row(row) for row in rows]

    def policy(self, policy_id: str) -> PolicyEntry | None:
        return next(iter(self._entries("WHERE id = ?", (policy_id,))), None)

    def policies(self, state: State | None = None) -> list[PolicyEntry]:
        return self._entries() if state is None else self._entries("WHERE state = ?", (state,))

    def champion(self) -> PolicyEntry | None:
        return next(iter(self._entries("WHERE state = 'champion'")), None)

    def events(self, policy_id: str | None = None) -> list[PolicyEvent]:
        where, args = ("WHERE policy_id = ?", (policy_id,)) if policy_id is not None else ("", ())
        with self._engine.reading() as conn:
            rows = conn.execute(f"SELECT {EVENT_COLUMNS} FROM policy_events {where} ORDER BY id", args)
            return [PolicyEvent(*row) for row in rows]

    def evaluations(self, policy_id: str) -> list[EvaluationRecord]:
        with self._engine.reading() as conn:
            rows = conn.execute(f"SELECT {EVALUATION_COLUMNS} FROM evaluations WHERE policy_id = ? ORDER BY id DESC",
                                (policy_id,)).fetchall()  # fmt: skip
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

        def write(conn: sqlite3.Connection) -> Leftovers:
            # The primary key refuses a taken id, the one_champion index a second champion: Conflict, and
            # the transaction (the snapshot's file too: Engine.submit_spanning) is rolled back whole.
            conn.execute(f"INSERT INTO policies ({POLICY_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)
            leftovers = _remove_leftovers(conn, entry.id)
            if model is not None:
                conn.execute(f"INSERT INTO models ({MODEL_COLUMNS}, created_at) VALUES ({', '.join('?' * len(model))})", model)
            _append(conn, [event], [*leftovers.audit(event), *audit])
            _insert_evaluations(conn, evidence)
            return leftovers

        return self._engine.submit_spanning(write)

    def transition(self, events: Sequence[PolicyEvent], audit: Sequence[AuditEntry]) -> Future[None]:
        changes = [(e.to_state, e.policy_id, e.from_state) for e in events]

        def write(conn: sqlite3.Connection) -> None:
            # Retirements first: the one_champion index checks each statement, not the transaction.
            for to_state, policy_id, from_state in sorted(changes, key=lambda change: change[0] == "champion"):
                moved = conn.execute(
                    "UPDATE policies SET state = ? WHERE id = ? AND state = ?", (to_state, policy_id, from_state)
                )
                if moved.rowcount != 1:
                    raise Conflict(f"policy {policy_id!r} is not {from_state} (any more)")
            _append(conn, events, audit)

        return self._engine.submit(write)

    def record_evaluation(self, record: EvaluationRecord) -> Future[None]:
        return self._engine.submit(lambda conn: _insert_evaluations(conn, [record]))


def _remove_leftovers(conn: sqlite3.Connection, policy_id: str) -> Leftovers:
    """Delete the evaluations and snapshots under ``policy_id``, which the caller has just claimed for a new entry."""
    versions = conn.execute("SELECT version FROM models WHERE policy_id = ? ORDER BY created_at, rowid", (policy_id,))
    snapshots = tuple(str(version) for (version,) in versions)
    conn.execute("DELETE FROM models WHERE policy_id = ?", (policy_id,))
    evaluations = conn.execute("DELETE FROM evaluations WHERE policy_id = ?", (policy_id,)).rowcount
    return Leftovers(evaluations, snapshots)


def _insert_evaluations(conn: sqlite3.Connection, records: Sequence[EvaluationRecord]) -> None:
    for record in records:
        row = evaluation_row(record)
        conn.execute(f"INSERT INTO evaluations ({EVALUATION_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)
