"""The right to be forgotten: one transaction deletes everything stored about a customer, and the
audit table records that it happened (not what was deleted)."""

from __future__ import annotations

import sqlite3
from concurrent.futures import Future
from dataclasses import dataclass

from bandit.requests import check_text
from bandit.store import SQLiteStore


@dataclass(frozen=True, slots=True)
class ForgetReport:
    decisions: int
    outcomes: int
    activations: int
    joined_examples: int


def forget_customer(store: SQLiteStore, customer_id: str, *, actor: str, now: float) -> Future[ForgetReport]:
    check_text("customer_id", customer_id, required=True)

    def write(conn: sqlite3.Connection) -> ForgetReport:
        mine = "SELECT decision_id FROM decisions WHERE customer_id = ?"
        activations = conn.execute(f"DELETE FROM activations WHERE decision_id IN ({mine})", (customer_id,)).rowcount
        conn.execute(f"DELETE FROM join_queue WHERE decision_id IN ({mine})", (customer_id,))
        conn.execute(f"DELETE FROM late_outcomes WHERE decision_id IN ({mine})", (customer_id,))
        joined = conn.execute(f"DELETE FROM joined_examples WHERE decision_id IN ({mine})", (customer_id,)).rowcount
        decisions = conn.execute("DELETE FROM decisions WHERE customer_id = ?", (customer_id,)).rowcount
        outcomes = conn.execute("DELETE FROM outcomes WHERE customer_id = ?", (customer_id,)).rowcount
        report = ForgetReport(decisions, outcomes, activations, joined)
        conn.execute(
            "INSERT INTO audit (at, actor, action, subject, detail) VALUES (?, ?, 'forget', ?, ?)",
            (now, actor, customer_id, f"deleted {decisions} decisions, {outcomes} outcomes, {activations} activations, {joined} joined examples"),
        )
        return report

    return store.submit(write)
