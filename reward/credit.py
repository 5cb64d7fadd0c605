"""Crediting one customer's outcomes to the decisions that preceded them. Pure: no store, no clock.

An outcome of type T at time t is credited to the customer's decisions in T's attribution window
before it — every one of them (``window``), the latest (``last_touch``), or only the decision it
names (``direct``) — restricted to T's offers when the config lists some (do-nothing included when
it does not: a customer who renews after do-nothing credits do-nothing, or restraint never pays).
A decision on a deferred channel that was not activated by then was never shown: it takes no credit.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from bandit.config import BreinConfig, OutcomeTypeConfig
from bandit.history import DAY


@dataclass(frozen=True, slots=True)
class DecisionFacts:
    decision_id: str
    event_time: float
    offer: str
    channel: str
    cost: float


@dataclass(frozen=True, slots=True)
class OutcomeFacts:
    outcome_id: str
    type: str
    value: float
    event_time: float
    decision_id: str


@dataclass(slots=True)
class Credit:
    """What one decision earned: value per outcome type, and which outcomes it came from."""

    by_type: dict[str, float] = field(default_factory=dict)
    outcomes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.by_type.values())


class CreditRules:
    def __init__(self, config: BreinConfig) -> None:
        self.types: Mapping[str, OutcomeTypeConfig] = config.outcomes
        self.share_equally = config.joiner.credit == "equal"
        self.deferred = frozenset(c for c, cfg in config.channels.items() if cfg.deferred)
        self.longest_window_days = max((t.window_days for t in config.outcomes.values()), default=0.0)
        self.close_after = (self.longest_window_days + config.joiner.allowed_lateness_days) * DAY

    def shown(self, decision: DecisionFacts, activated_at: float | None, at: float) -> bool:
        """Was the decision's action really delivered by time ``at``?"""
        return decision.channel not in self.deferred or (activated_at is not None and activated_at <= at)

    def credit(
        self, decisions: Sequence[DecisionFacts], outcomes: Sequence[OutcomeFacts], activations: Mapping[str, float]
    ) -> dict[str, Credit]:
        """Credit per decision id, for every decision of one customer (``decisions`` sorted by time)."""
        times = [d.event_time for d in decisions]
        credits: dict[str, Credit] = {d.decision_id: Credit() for d in decisions}
        for outcome in outcomes:
            kind = self.types.get(outcome.type)
            if kind is None:
                continue
            start = bisect_left(times, outcome.event_time - kind.window_days * DAY)
            end = bisect_left(times, outcome.event_time)
            candidates = [
                d
                for d in decisions[start:end]
                if (not kind.offers or d.offer in kind.offers) and self.shown(d, activations.get(d.decision_id), outcome.event_time)
            ]
            if kind.attribution == "direct":
                candidates = [d for d in candidates if d.decision_id == outcome.decision_id]
            elif kind.attribution == "last_touch":
                candidates = candidates[-1:]
            if not candidates:
                continue
            share = outcome.value / len(candidates) if self.share_equally else outcome.value
            for decision in candidates:
                credit = credits[decision.decision_id]
                credit.by_type[outcome.type] = credit.by_type.get(outcome.type, 0.0) + share
                credit.outcomes.append(outcome.outcome_id)
        return credits
