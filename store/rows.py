"""Records as rows and back, for every backend: the column lists, JSON columns, and each record's
encoding. A backend writes its own SQL around these; what a column holds is decided once, here.

Booleans are stored as integers and JSON as compact text (orjson) on every backend, so that one
encoding serves all. An evaluation's report uses the standard JSON encoder: it writes a NaN or an
infinity (an interval without a bound) as such, where orjson would write null.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any

import orjson

from store.errors import Conflict
from store.records import (
    DecisionRecord,
    EvaluationRecord,
    JoinDecision,
    JoinedExample,
    LateCustomer,
    LearningRow,
    LoggedExample,
    ModelSnapshot,
    OutcomeFacts,
    OutcomeRecord,
    PolicyEntry,
    StoredStage,
    WrittenExamples,
)

DECISION_COLUMNS = (
    "decision_id, request_id, customer_id, touchpoint, event_time, received_at, action_id, offer, channel, slot, "
    "send_at, probability, exploratory, policy_id, model_version, personalised, features, eligible, pmf, "
    "exclusions, contact_consent, shadow, shared_line"
)
OUTCOME_COLUMNS = "outcome_id, customer_id, type, value, event_time, decision_id, received_at, value_sent, event_time_sent"
SENT_COLUMNS = "customer_id, type, value, value_sent, event_time, event_time_sent, decision_id"
"""What an outcome's client sent, as stored: read back to tell a duplicate from a conflict (``check_sent``)."""
EXAMPLE_COLUMNS = "decision_id, customer_id, event_time, run, status, reward, cost, credit, outcomes, horizon"
EXAMPLE_STATUS = EXAMPLE_COLUMNS.split(", ").index("status")
"""Where an example row holds its status."""
RUN_COLUMNS = "run, watermark, cutoff, horizon, joined, unactivated, late_outcomes, late_checked, finished_at"
MODEL_COLUMNS = "version, args, data, policy_id, learned, encoding"
POLICY_COLUMNS = "id, kind, artifact, artifact_hash, args, features, parent, created, state, note, trained_until, selected_among"
EVENT_COLUMNS = "policy_id, at, actor, from_state, to_state, reason"
EVALUATION_COLUMNS = (
    "policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, report, gate_window"
)
AUDIT_COLUMNS = "at, actor, action, subject, detail"
NOTHING_CREDIT, NO_OUTCOMES = "{}", "[]"
ACTION_LISTS = 1024
"""Logged action lists remembered parsed: a list recurs for every customer left the same actions."""


def to_json(value: Any) -> str:
    # orjson: the decision row's JSON columns cost a tenth of the standard encoder's time, and
    # Decide encodes six per decision. Compact, like the standard encoder with separators (",", ":").
    return orjson.dumps(value).decode()


from_json = orjson.loads


# -- the decision log ---------------------------------------------------------------------------------


def decision_row(r: DecisionRecord) -> tuple[Any, ...]:
    return (
        r.decision_id, r.request_id, r.customer_id, r.touchpoint, r.event_time, r.received_at, r.action_id,
        r.offer, r.channel, r.slot, r.send_at, r.probability, int(r.exploratory), r.policy_id, r.model_version,
        int(r.personalised), to_json(r.features), to_json(r.eligible), to_json(r.pmf), to_json(r.exclusions),
        to_json(r.contact_consent), to_json(r.shadow), r.shared_line,
    )  # fmt: skip


def decision_from_row(row: Sequence[Any]) -> DecisionRecord:
    """A decision from a row of DECISION_COLUMNS, in that order."""
    (decision_id, request_id, customer_id, touchpoint, event_time, received_at, action_id, offer, channel, slot, send_at,
     probability, exploratory, policy_id, model_version, personalised, features, eligible, pmf, exclusions, contact_consent,
     shadow, shared_line) = row  # fmt: skip
    return DecisionRecord(
        decision_id=decision_id, request_id=request_id, customer_id=customer_id, touchpoint=touchpoint, event_time=event_time,
        received_at=received_at, action_id=action_id, offer=offer, channel=channel, slot=slot, send_at=send_at,
        probability=probability, exploratory=bool(exploratory), policy_id=policy_id, model_version=model_version,
        personalised=bool(personalised), features=from_json(features), eligible=tuple(from_json(eligible)),
        pmf=tuple(from_json(pmf)), exclusions=from_json(exclusions), contact_consent=from_json(contact_consent),
        shadow={k: tuple(v) for k, v in from_json(shadow).items()}, shared_line=shared_line,
    )  # fmt: skip


def outcome_row(record: OutcomeRecord) -> tuple[Any, ...]:
    """A row of OUTCOME_COLUMNS."""
    return (record.outcome_id, record.customer_id, record.type, record.value, record.event_time, record.decision_id,
            record.received_at, int(record.value_sent), int(record.event_time_sent))  # fmt: skip


def check_sent(record: OutcomeRecord, stored: Sequence[Any]) -> None:
    """Conflict unless ``stored`` (a row of SENT_COLUMNS) holds what ``record``'s client sent."""
    customer_id, kind, value, value_sent, event_time, event_time_sent, decision_id = stored
    if (customer_id, kind, value if value_sent else None, event_time if event_time_sent else None, decision_id) != record.sent():
        raise Conflict(f"outcome_id {record.outcome_id!r} was already recorded with different content")


# -- joined examples ------------------------------------------------------------------------------------


def written_examples(statuses: Iterable[str]) -> WrittenExamples:
    """What a write of joined examples wrote, from the status of each example it inserted."""
    joined = unactivated = 0
    for status in statuses:
        if status == "joined":
            joined += 1
        else:
            unactivated += 1
    return WrittenExamples(joined, unactivated)


def example_rows(examples: Iterable[JoinedExample]) -> list[tuple[Any, ...]]:
    """Rows of EXAMPLE_COLUMNS in decision id order (each index page keyed by decision id is then
    visited once, not once a row)."""
    rows = [
        (decision_id, customer_id, event_time, run, status, reward, cost,
         to_json(credit) if outcomes else NOTHING_CREDIT, to_json(outcomes) if outcomes else NO_OUTCOMES, horizon)
        for decision_id, customer_id, event_time, run, status, reward, cost, credit, outcomes, horizon in examples
    ]  # fmt: skip
    rows.sort(key=_first)
    return rows


def _first(row: tuple[Any, ...]) -> Any:
    return row[0]


@functools.lru_cache(maxsize=ACTION_LISTS)
def _eligible(text: str) -> tuple[str, ...]:
    return tuple(from_json(text))


def learning_rows(rows: Iterable[Sequence[Any]]) -> list[LearningRow]:
    """From rows of (run, event time, decision id, reward, eligible, action id, probability, shared
    line, features, policy id, model version): the raw features left as their JSON text."""
    return [
        LearningRow(run, time, decision_id, reward, _eligible(eligible), action_id, probability, line, features, policy, version)
        for run, time, decision_id, reward, eligible, action_id, probability, line, features, policy, version in rows
    ]


def logged_examples(rows: Iterable[Sequence[Any]]) -> list[LoggedExample]:
    """From rows of learning_rows' columns then credit, pmf and shadow."""
    return [
        LoggedExample(run, time, decision_id, reward, _eligible(eligible), action_id, probability, line, from_json(features),
                      from_json(credit), tuple(from_json(pmf)), {k: tuple(v) for k, v in from_json(shadow).items()},
                      policy, version)
        for run, time, decision_id, reward, eligible, action_id, probability, line, features, policy, version, credit, pmf, shadow
        in rows
    ]  # fmt: skip


NEW_OUTCOMES = "customer_id, outcome_id, type, value, event_time, decision_id, seq"
"""The columns of the new outcomes a late search reads first, in customer, time, then id order."""
LateWindow = tuple[str, float, float, int]
"""(customer id, since, until, newest seq): where a customer's decisions that may share its new
outcomes' credit are, and the newest of those outcomes."""


def late_windows(new_outcomes: Sequence[Sequence[Any]], window: float) -> list[LateWindow]:
    """Per customer of NEW_OUTCOMES rows: its decisions from ``window`` before its earliest new outcome
    to its latest, and the newest's seq."""
    windows = []
    for customer, rows in groupby(new_outcomes, key=itemgetter(0)):
        mine = list(rows)  # (customer, outcome id, type, value, event time, decision id, seq)
        windows.append((customer, mine[0][4] - window, mine[-1][4], max(row[6] for row in mine)))
    return windows


def late_customers(new_outcomes: Sequence[Sequence[Any]], decisions: Iterable[Sequence[Any]]) -> list[LateCustomer]:
    """From NEW_OUTCOMES rows and rows of the decisions in customers' late windows (customer id,
    decision id, event time, offer, channel, action id, activation time, horizon it was joined at or
    None; customer, time, then id order): the customers with decisions among them."""
    outcomes = {customer: [(OutcomeFacts(*row[1:6]), row[6]) for row in rows]
                for customer, rows in groupby(new_outcomes, key=itemgetter(0))}  # fmt: skip
    customers = []
    for customer, rows in groupby(decisions, key=itemgetter(0)):
        mine: list[JoinDecision] = []
        joined: dict[str, int] = {}
        for _, decision_id, at, offer, channel, action, activated, horizon in rows:
            mine.append((decision_id, at, offer, channel, action, activated))
            if horizon is not None:
                joined[decision_id] = horizon
        customers.append(LateCustomer(customer, outcomes[customer], mine, joined))
    return customers


def new_stage_keys(registered: Iterable[tuple[float, int]], ages: Iterable[float]) -> list[tuple[int, float]]:
    """(key, age) of each age not registered yet, shortest first, numbered on from the largest key
    registered: a store's first stages get 0, 1, ... in the order of their ages."""
    known = dict(registered)
    first = max(known.values(), default=-1) + 1
    return list(enumerate(sorted(set(ages) - set(known)), start=first))


def stored_stages(rows: Iterable[Sequence[Any]], ages: Sequence[float]) -> list[StoredStage]:
    """Each of ``ages``' stage from the registry's (age, key, staged until or NULL) rows."""
    by_age = {age: StoredStage(key, -math.inf if until is None else until) for age, key, until in rows}
    return [by_age[age] for age in ages]


# -- snapshots and the registry -----------------------------------------------------------------------


def snapshot_row(snapshot: ModelSnapshot) -> tuple[Any, ...]:
    """A row of MODEL_COLUMNS."""
    learned = None if snapshot.learned is None else to_json(snapshot.learned)
    encoding = None if snapshot.encoding is None else to_json(snapshot.encoding)
    return (snapshot.version, to_json(snapshot.args), snapshot.data, snapshot.policy_id, learned, encoding)


def snapshot_from_row(row: Sequence[Any]) -> ModelSnapshot:
    version, args, data, policy_id, learned, encoding = row
    position = None if learned is None else tuple(from_json(learned))
    learned_encoding = None if encoding is None else from_json(encoding)
    return ModelSnapshot(version, from_json(args), bytes(data), policy_id, position, learned_encoding)


def policy_row(entry: PolicyEntry) -> tuple[Any, ...]:
    """A row of POLICY_COLUMNS."""
    return (entry.id, entry.kind, entry.artifact, entry.artifact_hash, to_json(entry.args), to_json(entry.features),
            entry.parent, entry.created, entry.state, entry.note, entry.trained_until, entry.selected_among)  # fmt: skip


def policy_from_row(row: Sequence[Any]) -> PolicyEntry:
    policy_id, kind, artifact, artifact_hash, args, features, parent, created, state, note, trained_until, selected_among = row
    return PolicyEntry(policy_id, kind, None if artifact is None else bytes(artifact), artifact_hash, from_json(args),
                       from_json(features), parent, created, state, note, trained_until, selected_among)  # fmt: skip


def evaluation_row(record: EvaluationRecord) -> tuple[Any, ...]:
    """A row of EVALUATION_COLUMNS."""
    return (record.policy_id, record.against, record.at, record.since, record.until, record.decisions, record.estimator,
            record.lift, record.lift_lower, record.lift_upper, record.ess, json.dumps(record.report),
            record.gate_window)  # fmt: skip


def evaluation_from_row(row: Sequence[Any]) -> EvaluationRecord:
    policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess, report, gate_window = row
    return EvaluationRecord(policy_id, against, at, since, until, decisions, estimator, lift, lift_lower, lift_upper, ess,
                            json.loads(report), bool(gate_window))  # fmt: skip
