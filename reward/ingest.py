"""Outcome and activation ingestion: validate, resolve defaults, store durably."""

from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass

from bandit.config import BreinConfig
from bandit.errors import InvalidRequest, OutOfRange, UnknownDecision, excerpt
from bandit.requests import check_text, resolve_event_time
from store.ports import DecisionLog
from store.records import ActivationRecord, OutcomeRecord


@dataclass(frozen=True, slots=True)
class OutcomeReport:
    outcome_id: str
    customer_id: str
    type: str
    value: float | None = None
    event_time: float | None = None
    decision_id: str = ""


@dataclass(frozen=True, slots=True)
class ActivationReport:
    decision_id: str
    event_time: float | None = None


def outcome_record(report: OutcomeReport, config: BreinConfig, now: float) -> OutcomeRecord:
    """Check an outcome report and resolve its defaults (value of its type, event time now)."""
    check_text("outcome_id", report.outcome_id, required=True)
    check_text("customer_id", report.customer_id, required=True)
    check_text("decision_id", report.decision_id, required=False)
    outcome_type = config.outcomes.get(report.type)
    if outcome_type is None:
        known = ", ".join(config.outcomes)
        raise InvalidRequest("type", f"unknown outcome type {excerpt(report.type)}; expected one of {known}")
    value = outcome_type.value if report.value is None else report.value
    bound = outcome_type.value_bound
    if not abs(value) <= bound:  # NaN too
        reason = f"must be a finite number within ±{bound:g} (outcomes.{report.type}.max_value), got {value:g}"
        raise OutOfRange("value", reason, "outcome_value")
    if outcome_type.attribution == "direct" and not report.decision_id:
        raise InvalidRequest("decision_id", f"required: outcome type {report.type!r} is credited only to the decision it names")
    if value < 0 and not outcome_type.allow_negative:
        raise InvalidRequest("value", f"outcome type {report.type!r} does not allow a negative value, got {value}")
    event_time = resolve_event_time("event_time", report.event_time, now)
    return OutcomeRecord(report.outcome_id, report.customer_id, report.type, value, event_time, report.decision_id, now,
                         value_sent=report.value is not None, event_time_sent=report.event_time is not None)


def record_outcome(report: OutcomeReport, config: BreinConfig, store: DecisionLog, now: float) -> tuple[OutcomeRecord, Future[bool]]:
    """Queue the outcome; the future resolves to True for a duplicate outcome_id once durable."""
    record = outcome_record(report, config, now)
    if record.decision_id:
        check_named_decision(record, store)
    return record, store.submit_outcome(record)


def check_named_decision(record: OutcomeRecord, store: DecisionLog) -> None:
    """An outcome that names a decision must name one of its customer's, made before it: the joiner
    credits a named decision only then, so any other would be stored and never credited, and the
    caller would never know. Another customer's decision is reported as unknown (an id says nothing
    about who else was decided for)."""
    decision = store.decision(record.decision_id)
    if decision is None or decision.customer_id != record.customer_id:
        raise UnknownDecision(record.decision_id, "for this customer_id")
    if record.event_time <= decision.event_time:
        raise InvalidRequest("event_time", f"the outcome is dated {decision.event_time - record.event_time:.3f} s before the "
                                           f"decision it names ({excerpt(record.decision_id)}), not after it: it cannot be "
                                           "credited to it")  # fmt: skip


def record_activation(report: ActivationReport, store: DecisionLog, now: float) -> Future[bool]:
    """Queue the activation of a logged decision; resolves to True when it was activated before."""
    check_text("decision_id", report.decision_id, required=True)
    event_time = resolve_event_time("event_time", report.event_time, now)
    if store.decision(report.decision_id) is None:
        raise UnknownDecision(report.decision_id)
    return store.submit_activation(ActivationRecord(report.decision_id, event_time, now))
