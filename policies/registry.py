"""The policy registry: which policies exist, which one serves, and every state change with who,
when and why. Exactly one champion; the history is append-only.

States: ``candidate`` (registered, not serving), ``shadow`` (scores every live decision alongside
the champion, logged, never served), ``champion`` (serves), ``retired``.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlite_utils import Database, Migrations

from bandit.errors import BreinError
from bandit.store import SQLiteStore

State = Literal["candidate", "shadow", "champion", "retired"]
Kind = Literal["vw", "rules", "uniform", "do_nothing"]
STATES: tuple[State, ...] = ("candidate", "shadow", "champion", "retired")
KINDS: tuple[Kind, ...] = ("vw", "rules", "uniform", "do_nothing")
_AS_NOUN = {"candidate": "a candidate", "shadow": "a shadow", "champion": "the champion", "retired": "retired"}

migrations = Migrations("brein.registry")


@migrations()
def m001_registry(db: Database) -> None:
    db.execute(
        """CREATE TABLE policies (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            artifact BLOB,
            artifact_hash TEXT NOT NULL,
            args TEXT NOT NULL,
            features TEXT NOT NULL,
            parent TEXT NOT NULL,
            created REAL NOT NULL,
            state TEXT NOT NULL,
            note TEXT NOT NULL
        )"""
    )
    db.execute("CREATE UNIQUE INDEX one_champion ON policies (state) WHERE state = 'champion'")
    db.execute(
        """CREATE TABLE policy_events (
            id INTEGER PRIMARY KEY,
            policy_id TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            policy_id TEXT NOT NULL,
            against TEXT NOT NULL,
            at REAL NOT NULL,
            since REAL NOT NULL,
            until REAL NOT NULL,
            decisions INTEGER NOT NULL,
            estimator TEXT NOT NULL,
            lift REAL NOT NULL,
            lift_lower REAL NOT NULL,
            lift_upper REAL NOT NULL,
            ess REAL NOT NULL,
            report TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX evaluations_policy ON evaluations (policy_id, at)")


class UnknownPolicy(BreinError):
    def __init__(self, policy_id: str) -> None:
        super().__init__(f"no policy {policy_id!r} in the registry")


class InvalidTransition(BreinError):
    """A state change the registry does not allow (retiring the champion, ...)."""


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    id: str
    kind: Kind
    artifact: bytes | None
    artifact_hash: str
    args: list[str]
    features: dict[str, Any]
    parent: str
    created: float
    state: State
    note: str


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    policy_id: str
    at: float
    actor: str
    from_state: str
    to_state: str
    reason: str


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    policy_id: str
    against: str
    at: float
    since: float
    until: float
    decisions: int
    estimator: str
    lift: float
    lift_lower: float
    lift_upper: float
    ess: float
    report: dict[str, Any]


# Registry has a method named ``list``; inside the class these aliases name the builtin type.
Entries = list[PolicyEntry]
Events = list[PolicyEvent]
Evaluations = list[EvaluationRecord]
Strings = list[str]


def artifact_hash(kind: str, artifact: bytes | None) -> str:
    return hashlib.sha256(kind.encode() + b"\0" + (artifact or b"")).hexdigest()


def _entry(row: sqlite3.Row) -> PolicyEntry:
    return PolicyEntry(
        row["id"], row["kind"], None if row["artifact"] is None else bytes(row["artifact"]), row["artifact_hash"],
        json.loads(row["args"]), json.loads(row["features"]), row["parent"], row["created"], row["state"], row["note"],
    )  # fmt: skip


class Registry:
    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        store.submit(lambda conn: migrations.apply(Database(conn))).result()

    # -- reads --------------------------------------------------------------------------------

    def get(self, policy_id: str) -> PolicyEntry:
        row = self.store.db.execute("SELECT * FROM policies WHERE id = ?", (policy_id,)).fetchone()
        if row is None:
            raise UnknownPolicy(policy_id)
        return _entry(row)

    def has(self, policy_id: str) -> bool:
        return self.store.db.execute("SELECT 1 FROM policies WHERE id = ?", (policy_id,)).fetchone() is not None

    def list(self) -> list[PolicyEntry]:
        return [_entry(r) for r in self.store.db.execute("SELECT * FROM policies ORDER BY created, id")]

    def champion(self) -> PolicyEntry | None:
        row = self.store.db.execute("SELECT * FROM policies WHERE state = 'champion'").fetchone()
        return None if row is None else _entry(row)

    def in_state(self, state: State) -> Entries:
        return [_entry(r) for r in self.store.db.execute("SELECT * FROM policies WHERE state = ? ORDER BY created", (state,))]

    def history(self, policy_id: str | None = None) -> Events:
        query = "SELECT policy_id, at, actor, from_state, to_state, reason FROM policy_events"
        rows = self.store.db.execute(query + (" WHERE policy_id = ?" if policy_id else "") + " ORDER BY id", (policy_id,) if policy_id else ())
        return [PolicyEvent(*r) for r in rows]

    def evaluations(self, policy_id: str) -> Evaluations:
        rows = self.store.db.execute(
            "SELECT policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, report "
            "FROM evaluations WHERE policy_id = ? ORDER BY at DESC, id DESC",
            (policy_id,),
        )
        return [EvaluationRecord(**{**dict(r), "report": json.loads(r["report"])}) for r in rows]

    # -- writes -------------------------------------------------------------------------------

    def register(
        self,
        policy_id: str,
        kind: Kind,
        *,
        artifact: bytes | None = None,
        args: Strings | None = None,
        features: dict[str, Any] | None = None,
        parent: str = "",
        note: str = "",
        actor: str,
        state: State = "candidate",
        now: float | None = None,
    ) -> PolicyEntry:
        if kind not in KINDS:
            raise ValueError(f"kind: expected one of {', '.join(KINDS)}, got {kind!r}")
        if state not in STATES:
            raise ValueError(f"state: expected one of {', '.join(STATES)}, got {state!r}")
        if not policy_id:
            raise ValueError("policy_id: expected a non-empty id")
        at = time.time() if now is None else now
        entry = PolicyEntry(policy_id, kind, artifact, artifact_hash(kind, artifact), list(args or []), dict(features or {}),
                            parent, at, state, note)  # fmt: skip

        def write(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM policies WHERE id = ?", (policy_id,)).fetchone():
                raise InvalidTransition(f"a policy {policy_id!r} is already registered")
            if state == "champion" and conn.execute("SELECT 1 FROM policies WHERE state = 'champion'").fetchone():
                raise InvalidTransition("there is a champion already: register as a candidate and promote it")
            conn.execute(
                "INSERT INTO policies VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (policy_id, kind, artifact, entry.artifact_hash, json.dumps(entry.args), json.dumps(entry.features), parent, at, state, note),
            )
            _event(conn, policy_id, at, actor, "", state, note or "registered")

        self.store.submit(write).result()
        return entry

    def set_state(self, policy_id: str, to_state: State, *, actor: str, reason: str, now: float | None = None) -> None:
        """Shadow, retire or re-candidate a policy; the champion changes only by promote/rollback."""
        if to_state not in STATES:
            raise ValueError(f"state: expected one of {', '.join(STATES)}, got {to_state!r}")
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> None:
            current = _state(conn, policy_id)
            if current == "champion":
                raise InvalidTransition(f"{policy_id} is the champion: promote another policy or roll back first")
            if to_state == "champion":
                raise InvalidTransition("use promote to make a policy the champion")
            if to_state == current:
                raise InvalidTransition(f"{policy_id} is {_AS_NOUN[current]} already")
            conn.execute("UPDATE policies SET state = ? WHERE id = ?", (to_state, policy_id))
            _event(conn, policy_id, at, actor, current, to_state, reason)

        self.store.submit(write).result()

    def make_champion(self, policy_id: str, *, actor: str, reason: str, now: float | None = None) -> str | None:
        """The policy serves from now on; the previous champion is retired. Returns the previous champion."""
        at = time.time() if now is None else now

        def write(conn: sqlite3.Connection) -> str | None:
            current = _state(conn, policy_id)
            if current == "champion":
                raise InvalidTransition(f"{policy_id} is the champion already")
            previous = conn.execute("SELECT id FROM policies WHERE state = 'champion'").fetchone()
            if previous is not None:
                conn.execute("UPDATE policies SET state = 'retired' WHERE id = ?", (previous[0],))
                _event(conn, previous[0], at, actor, "champion", "retired", f"replaced by {policy_id}: {reason}")
            conn.execute("UPDATE policies SET state = 'champion' WHERE id = ?", (policy_id,))
            _event(conn, policy_id, at, actor, current, "champion", reason)
            return None if previous is None else str(previous[0])

        return self.store.submit(write).result()

    def previous_champion(self) -> str | None:
        """The champion before the current one, from the history."""
        champion = self.champion()
        rows = self.store.db.execute("SELECT policy_id FROM policy_events WHERE to_state = 'champion' ORDER BY id DESC").fetchall()
        for (policy_id,) in rows:
            if champion is None or policy_id != champion.id:
                return str(policy_id)
        return None

    def record_evaluation(self, record: EvaluationRecord) -> None:
        row = (record.policy_id, record.against, record.at, record.since, record.until, record.decisions, record.estimator,
               record.lift, record.lift_lower, record.lift_upper, record.ess, json.dumps(record.report))  # fmt: skip
        self.store.submit(lambda conn: conn.execute(
            "INSERT INTO evaluations (policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, report) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", row)).result()  # fmt: skip


def _state(conn: sqlite3.Connection, policy_id: str) -> State:
    row = conn.execute("SELECT state FROM policies WHERE id = ?", (policy_id,)).fetchone()
    if row is None:
        raise UnknownPolicy(policy_id)
    return row[0]  # type: ignore[no-any-return]


def _event(conn: sqlite3.Connection, policy_id: str, at: float, actor: str, from_state: str, to_state: str, reason: str) -> None:
    conn.execute(
        "INSERT INTO policy_events (policy_id, at, actor, from_state, to_state, reason) VALUES (?, ?, ?, ?, ?, ?)",
        (policy_id, at, actor, from_state, to_state, reason),
    )
    conn.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, 'policy', ?, ?)",
                 (at, actor, policy_id, f"{from_state or 'new'} -> {to_state}: {reason}"))  # fmt: skip
