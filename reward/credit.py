"""Crediting one customer's outcomes to the decisions that preceded them. Pure: no store, no clock.

An outcome of type T at time t is credited to the customer's decisions in T's attribution window
(cut at ``[joiner] horizon_days``) before it — every one of them, up to the latest
``[joiner] max_credited_decisions`` (``window``), the latest (``last_touch``), or only the decision
it names (``direct``) — restricted to T's offers when the config lists some (do-nothing included
when it does not: a customer who renews after do-nothing credits do-nothing, or restraint never
pays). A decision on a deferred channel that was not activated by then was never shown: it takes
no credit.
``[joiner] credit`` says what ``window`` does with several decisions: each gets the value in full,
they share it equally, or only the latest gets it (the default: on the choosing worlds full credit
paid every contact in a window for the same outcome and the model over-contacted; measured in
docs/simulation.md, "Choosing the defaults").
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from bandit.config import BreinConfig, OutcomeTypeConfig
from store.records import DAY, OutcomeFacts


class DecisionFacts(NamedTuple):
    """A tuple, not a dataclass: the joiner makes one per decision it reads, a million in a large run."""

    decision_id: str
    event_time: float
    offer: str
    channel: str
    cost: float
    activated_at: float | None = None


@dataclass(slots=True)
class Credit:
    """What one decision earned: value per outcome type, and which outcomes it came from."""

    by_type: dict[str, float] = field(default_factory=dict)
    outcomes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(self.by_type.values())


@dataclass(frozen=True, slots=True)
class _Rule:
    """One outcome type's attribution, in the units crediting compares: seconds, a set of offers."""

    window: float
    offers: frozenset[str]
    attribution: str


class CreditRules:
    def __init__(self, config: BreinConfig) -> None:
        self.types: Mapping[str, OutcomeTypeConfig] = config.outcomes
        self.share_equally = config.joiner.credit == "equal"
        self.latest_only = config.joiner.credit == "last_touch"
        self.deferred = frozenset(c for c, cfg in config.channels.items() if cfg.deferred)
        self.most_credited = config.joiner.max_credited_decisions
        windows = config.credit_windows_days()
        self.windows = {name: days * DAY for name, days in windows.items()}  # seconds
        self.longest_window_days = max(windows.values(), default=0.0)
        self.close_after = (self.longest_window_days + config.joiner.allowed_lateness_days) * DAY
        self._rules = {name: _Rule(window, frozenset(self.types[name].offers), self.types[name].attribution)
                       for name, window in self.windows.items()}  # fmt: skip

    def shown(self, decision: DecisionFacts, at: float) -> bool:
        """Was the decision's action really delivered by time ``at``?"""
        return decision.channel not in self.deferred or (decision.activated_at is not None and decision.activated_at <= at)

    def credit(self, decisions: Sequence[DecisionFacts], outcomes: Sequence[OutcomeFacts]) -> dict[str, Credit]:
        """Credit per decision id for one customer's decisions (sorted by time); a decision that
        earned nothing is absent."""
        credits: dict[str, Credit] = {}
        for outcome, candidates in self.credited(decisions, outcomes):
            share = outcome.value / len(candidates) if self.share_equally else outcome.value
            for decision in candidates:
                credit = credits.get(decision.decision_id)
                if credit is None:
                    credit = credits[decision.decision_id] = Credit()
                credit.by_type[outcome.type] = credit.by_type.get(outcome.type, 0.0) + share
                credit.outcomes.append(outcome.outcome_id)
        return credits

    def credited(
        self, decisions: Sequence[DecisionFacts], outcomes: Sequence[OutcomeFacts]
    ) -> Iterator[tuple[OutcomeFacts, list[DecisionFacts]]]:
        """Each outcome that is credited to some of one customer's decisions (sorted by time), with
        those decisions in time order. An outcome's work is a search and at most
        ``max_credited_decisions`` steps, however many decisions its window holds."""
        pools: dict[frozenset[str], _Pool] = {}
        by_id: dict[str, DecisionFacts] | None = None
        for outcome in outcomes:
            rule = self._rules.get(outcome.type)
            if rule is None:
                continue
            since, at = outcome.event_time - rule.window, outcome.event_time
            if rule.attribution == "direct":
                if by_id is None:
                    by_id = {d.decision_id: d for d in decisions}
                named = by_id.get(outcome.decision_id)
                candidates = [named] if named and self._may_take(rule, named, since, at) else []
            else:
                pool = pools.get(rule.offers)
                if pool is None:
                    pool = pools[rule.offers] = self._pool(rule, decisions)
                most = 1 if rule.attribution == "last_touch" or self.latest_only else self.most_credited
                candidates = pool.latest(since, at, most, self.shown)
            if candidates:
                yield outcome, candidates

    def _may_take(self, rule: _Rule, decision: DecisionFacts, since: float, until: float) -> bool:
        """Whether an outcome under ``rule`` at ``until`` with its window from ``since`` may be credited to ``decision``."""
        offered = not rule.offers or decision.offer in rule.offers
        return offered and since <= decision.event_time < until and self.shown(decision, until)

    def _pool(self, rule: _Rule, decisions: Sequence[DecisionFacts]) -> _Pool:
        """The decisions that outcomes under ``rule`` may be credited to at some time: of its offers,
        and not on a deferred channel never activated."""
        mine = [d for d in decisions if (not rule.offers or d.offer in rule.offers)
                and (d.activated_at is not None or d.channel not in self.deferred)]  # fmt: skip
        return _Pool(mine, [d.event_time for d in mine])


@dataclass(frozen=True, slots=True)
class _Pool:
    """Decisions sorted by time, and their times (searched)."""

    decisions: list[DecisionFacts]
    times: list[float]

    def latest(self, since: float, until: float, most: int, shown: Callable[[DecisionFacts, float], bool]) -> list[DecisionFacts]:
        """The latest ``most`` decisions in [since, until) shown by ``until``, in time order."""
        first = bisect_left(self.times, since)
        found: list[DecisionFacts] = []
        for index in range(bisect_left(self.times, until) - 1, first - 1, -1):
            decision = self.decisions[index]
            if shown(decision, until):
                found.append(decision)
                if len(found) == most:
                    break
        found.reverse()
        return found
