"""The right to be forgotten: one transaction deletes everything stored about a customer, and the
audit trail records that it happened (not what was deleted)."""

from __future__ import annotations

from concurrent.futures import Future

from bandit.requests import check_text
from store.ports import Privacy
from store.records import ForgetReport


def forget_customer(privacy: Privacy, customer_id: str, *, actor: str, now: float) -> Future[ForgetReport]:
    check_text("customer_id", customer_id, required=True)
    return privacy.forget(customer_id, actor=actor, at=now)
