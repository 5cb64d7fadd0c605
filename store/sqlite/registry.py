"""The policy registry's rows on SQLite (store.ports.RegistryStorage): compare-and-set writes.

An evaluation's report is stored with the standard JSON encoder: it writes a NaN or an infinity
(an interval without a bound) as such, where orjson would write null."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from store.errors import Conflict
from store.records import AuditEntry, EvaluationRecord, PolicyEntry, PolicyEvent, State
from store.sqlite.engine import Engine
from store.sqlite.statements import from_json, to_json

POLICY_COLUMNS = "id, kind, artifact, artifact_hash, args, features, parent, created, state, note"
EVALUATION_COLUMNS = "policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, report"


def _entry(row: tuple[Any, ...]) -> PolicyEntry:
    policy_id, kind, artifact, artifact_hash, args, features, parent, created, state, note = row
    return PolicyEntry(policy_id, kind, None if artifact is None else bytes(artifact), artifact_hash, from_json(args),
                       from_json(features), parent, created, state, note)  # fmt: skip


def append_audit(conn: sqlite3.Connection, entries: Sequence[AuditEntry]) -> None:
    conn.executemany("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)",
                     [(e.at, e.actor, e.action, e.subject, e.detail) for e in entries])  # fmt: skip


def _append(conn: sqlite3.Connection, events: Sequence[PolicyEvent], audit: Sequence[AuditEntry]) -> None:
    conn.executemany("INSERT INTO policy_events (policy_id, at, actor, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?)",
                     [(e.policy_id, e.at, e.actor, e.from_state, e.to_state, e.reason) for e in events])  # fmt: skip
    append_audit(conn, audit)


class SQLiteRegistryStorage:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _entries(self, where: str = "", args: tuple[Any, ...] = ()) -> list[PolicyEntry]:
        with self._engine.reading() as conn:
            rows = conn.execute(f"SELECT {POLICY_COLUMNS} FROM policies {where} ORDER BY created, id", args).fetchall()
        return [_entry(row) for row in rows]

    def policy(self, policy_id: str) -> PolicyEntry | None:
        return next(iter(self._entries("WHERE id = ?", (policy_id,))), None)

    def policies(self, state: State | None = None) -> list[PolicyEntry]:
        return self._entries() if state is None else self._entries("WHERE state = ?", (state,))

    def champion(self) -> PolicyEntry | None:
        return next(iter(self._entries("WHERE state = 'champion'")), None)

    def events(self, policy_id: str | None = None) -> list[PolicyEvent]:
        where, args = ("WHERE policy_id = ?", (policy_id,)) if policy_id is not None else ("", ())
        with self._engine.reading() as conn:
            rows = conn.execute(
                f"SELECT policy_id, at, actor, from_state, to_state, reason FROM policy_events {where} ORDER BY id", args
            )
            return [PolicyEvent(*row) for row in rows]

    def evaluations(self, policy_id: str) -> list[EvaluationRecord]:
        with self._engine.reading() as conn:
            rows = conn.execute(f"SELECT {EVALUATION_COLUMNS} FROM evaluations WHERE policy_id = ? ORDER BY at DESC, id DESC",
                                (policy_id,)).fetchall()  # fmt: skip
        return [
            EvaluationRecord(
                policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, json.loads(report)
            )
            for policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, report in rows
        ]

    def register(self, entry: PolicyEntry, event: PolicyEvent, audit: Sequence[AuditEntry]) -> Future[None]:
        row = (entry.id, entry.kind, entry.artifact, entry.artifact_hash, to_json(entry.args), to_json(entry.features),
               entry.parent, entry.created, entry.state, entry.note)  # fmt: skip

        def write(conn: sqlite3.Connection) -> None:
            # The primary key refuses a taken id, the one_champion index a second champion: Conflict.
            conn.execute(f"INSERT INTO policies ({POLICY_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)
            _append(conn, [event], audit)

        return self._engine.submit(write)

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
        row = (record.policy_id, record.against, record.at, record.since, record.until, record.decisions, record.estimator,
               record.lift, record.lift_lower, record.lift_upper, record.ess, json.dumps(record.report))  # fmt: skip

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT INTO evaluations ({EVALUATION_COLUMNS}) VALUES ({', '.join('?' * len(row))})", row)

        return self._engine.submit(write)
