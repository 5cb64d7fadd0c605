"""Retention: decisions, outcomes and joined examples older than ``privacy.retention_days`` (by event
time) are deleted, with what hangs off them (activations, join-queue entries, late-outcome marks).

Deletes run in small batches, each its own transaction, so Decide never waits long behind them.
A run that deleted anything leaves one entry in the audit trail.
"""

from __future__ import annotations

import time

from store.ports import AuditTrail, Privacy
from store.records import DAY, AuditEntry, RetentionReport

BATCH = 2000
ACTOR = "brein retention"


def apply_retention(
    privacy: Privacy, audit: AuditTrail, retention_days: float, *, now: float, actor: str = ACTOR, batch: int = BATCH
) -> RetentionReport:
    """Delete everything older than ``now - retention_days``; return how many rows of each kind went."""
    if not retention_days > 0:
        raise ValueError(f"expected retention_days > 0, got {retention_days}")
    started = time.perf_counter()
    cutoff = now - retention_days * DAY
    decisions = activations = joined = outcomes = 0
    while True:
        deleted = privacy.delete_decisions_before(cutoff, batch).result()
        decisions += deleted.decisions
        activations += deleted.activations
        joined += deleted.joined_examples
        if deleted.decisions < batch:
            break
    while True:
        gone = privacy.delete_outcomes_before(cutoff, batch).result()
        outcomes += gone
        if gone < batch:
            break
    report = RetentionReport(cutoff, decisions, outcomes, activations, joined, time.perf_counter() - started)
    if any(report.deleted.values()):
        counts = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in report.deleted.items())
        detail = f"deleted {counts} older than {retention_days:g} days"
        audit.record(AuditEntry(now, actor, "retention", f"before {cutoff:.0f}", detail)).result()
    return report
