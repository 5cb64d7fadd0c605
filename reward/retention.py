"""Retention: decisions, outcomes and joined examples older than ``privacy.retention_days`` (by event
time) are deleted, with what hangs off them (activations, join-queue entries, late-outcome marks).

Deletes run in small batches through the store's writer, so Decide never waits long behind them;
each batch is one transaction. A run that deleted anything leaves one row in the audit table.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import asdict, dataclass

from sqlite_utils import Database

from bandit.history import DAY
from bandit.store import SQLiteStore, Write
from reward.audit import audit
from reward.joiner import migrations as joiner_migrations

BATCH = 2000


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoff: float
    decisions: int = 0
    outcomes: int = 0
    activations: int = 0
    joined_examples: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def deleted(self) -> dict[str, int]:
        return {"decisions": self.decisions, "outcomes": self.outcomes, "activations": self.activations,
                "joined_examples": self.joined_examples}  # fmt: skip


def _delete_decisions(cutoff: float, batch: int) -> Write[tuple[int, int, int]]:
    def write(conn: sqlite3.Connection) -> tuple[int, int, int]:
        ids = [(r[0],) for r in conn.execute(
            "SELECT decision_id FROM decisions WHERE event_time < ? ORDER BY event_time LIMIT ?", (cutoff, batch))]  # fmt: skip
        if not ids:
            return 0, 0, 0
        activations = sum(conn.execute("DELETE FROM activations WHERE decision_id = ?", i).rowcount for i in ids)
        joined = sum(conn.execute("DELETE FROM joined_examples WHERE decision_id = ?", i).rowcount for i in ids)
        conn.executemany("DELETE FROM join_queue WHERE decision_id = ?", ids)
        conn.executemany("DELETE FROM late_outcomes WHERE decision_id = ?", ids)
        conn.executemany("DELETE FROM decisions WHERE decision_id = ?", ids)
        return len(ids), activations, joined

    return write


def _delete_outcomes(cutoff: float, batch: int) -> Write[int]:
    def write(conn: sqlite3.Connection) -> int:
        ids = [(r[0],) for r in conn.execute(
            "SELECT outcome_id FROM outcomes WHERE event_time < ? ORDER BY event_time LIMIT ?", (cutoff, batch))]  # fmt: skip
        conn.executemany("DELETE FROM late_outcomes WHERE outcome_id = ?", ids)
        conn.executemany("DELETE FROM outcomes WHERE outcome_id = ?", ids)
        return len(ids)

    return write


def apply_retention(store: SQLiteStore, retention_days: float, *, now: float, actor: str, batch: int = BATCH) -> RetentionReport:
    """Delete everything older than ``now - retention_days``; return how many rows of each kind went."""
    if not retention_days > 0:
        raise ValueError(f"expected retention_days > 0, got {retention_days}")
    started = time.perf_counter()
    store.submit(lambda conn: joiner_migrations.apply(Database(conn))).result()
    cutoff = now - retention_days * DAY
    decisions = activations = joined = outcomes = 0
    while True:
        d, a, j = store.submit(_delete_decisions(cutoff, batch)).result()
        decisions, activations, joined = decisions + d, activations + a, joined + j
        if d < batch:
            break
    while True:
        o = store.submit(_delete_outcomes(cutoff, batch)).result()
        outcomes += o
        if o < batch:
            break
    report = RetentionReport(cutoff, decisions, outcomes, activations, joined, time.perf_counter() - started)
    if any(report.deleted.values()):
        detail = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.deleted.items())
        audit(store, actor=actor, action="retention", subject=f"before {cutoff:.0f}",
              detail=f"deleted {detail} older than {retention_days:g} days", now=now).result()  # fmt: skip
    return report
