"""What the decision log holds: decisions, outcomes and activations as stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bandit.features import SharedFeatures


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    decision_id: str
    request_id: str
    customer_id: str
    touchpoint: str
    event_time: float
    action_id: str
    offer: str
    channel: str
    slot: str
    send_at: float | None
    probability: float
    exploratory: bool
    policy_id: str
    model_version: str
    personalised: bool
    features: SharedFeatures
    eligible: tuple[str, ...]
    pmf: tuple[float, ...]
    exclusions: dict[str, Any] = field(default_factory=dict)
    contact_consent: dict[str, str] = field(default_factory=dict)
    # Shadow policy id -> its pmf over ``eligible``: logged for evaluation, never served.
    shadow: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # The shared features in VW text, as the serving model saw them.
    shared_line: str = ""
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    outcome_id: str
    customer_id: str
    type: str
    value: float
    event_time: float
    decision_id: str = ""
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class ActivationRecord:
    decision_id: str
    event_time: float
    received_at: float = 0.0
