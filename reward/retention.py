"""Retention: decisions, outcomes and joined examples older than ``privacy.retention_days`` (by event
time) are deleted, with what hangs off them (activations, join-queue entries, late-outcome marks).

Deletes run in small batches, each its own transaction, so Decide never waits long behind them.
Every run is in the audit trail however it ends: an entry before its first deletion (what it set out
to delete) and one after each batch that deleted anything (what went), so that a run stopped midway
(a SIGTERM, a crash) has its deletions audited up to its last batch; a single entry written at the
end was never written by such a run.
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
    older = f"older than {retention_days:g} days"

    def record(detail: str) -> None:
        audit.record(AuditEntry(now, actor, "retention", f"before {cutoff:.0f}", detail)).result()

    record(f"started: deleting decisions, outcomes and joined examples {older}")
    decisions = activations = joined = outcomes = 0
    while True:
        deleted = privacy.delete_decisions_before(cutoff, batch).result()
        if deleted.decisions:
            record(f"deleted {deleted.decisions} decisions, {deleted.activations} activations, "
                   f"{deleted.joined_examples} joined examples {older}")  # fmt: skip
        decisions += deleted.decisions
        activations += deleted.activations
        joined += deleted.joined_examples
        if deleted.decisions < batch:
            break
    while True:
        gone = privacy.delete_outcomes_before(cutoff, batch).result()
        if gone:
            record(f"deleted {gone} outcomes {older}")
        outcomes += gone
        if gone < batch:
            break
    return RetentionReport(cutoff, decisions, outcomes, activations, joined, time.perf_counter() - started)
