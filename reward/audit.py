"""The audit trail: who did what to which subject, in the store's `audit` table (append-only).

Every admin action and every Explain is recorded, with the authenticated caller as the actor.
Subjects are decision ids or (pseudonymised, when configured) customer ids; details never hold
feature values.
"""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future

from bandit.store import DecisionLog


def audit(store: DecisionLog, *, actor: str, action: str, subject: str, detail: str, now: float) -> Future[None]:
    """Queue one audit row; the future resolves once it is durable."""
    row = (now, actor, action, subject, detail)

    def write(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, ?, ?, ?)", row)

    return store.submit(write)
