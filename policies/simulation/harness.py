"""Run a policy through the simulated world in event time and value what it did.

A ``Driver`` is whatever decides: Brein over gRPC (serving.simulate), Brein in-process, or one of
the reference policies (do-nothing, the best single action, uniform random, the oracle) choosing
among the actions Brein's rules allow. Every run on the same seed sees the same customers and the
same arrivals; what differs is what the policy does, and so how the customers respond.

The value of a decision is its true expected gain: the expected money of the outcomes the chosen
action brings in its windows minus its cost, over what doing nothing at that moment would bring.
Outcomes already on their way cancel out, so each caused outcome counts once, and a policy is
judged without the noise of one draw of the outcomes. Next to it, the net money of the run's
last days: every outcome's value minus every action's cost, per decision.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from bandit.catalog import Action
from bandit.config import BreinConfig
from policies.simulation.base import DAY, Arrival, Consent, Outcome
from policies.simulation.baselines import Policy as ReferencePolicy
from policies.simulation.baselines import do_nothing_policy, fixed_policy, oracle_policy, uniform_policy
from policies.simulation.eligibility import Eligibility
from policies.simulation.interface import SimulatedWorld

Progress = Callable[[float], None]
"""Called with the share of the simulated horizon done."""
WorldFactory = Callable[[], SimulatedWorld]
"""A fresh world of the same draw: the same customers and arrivals, nothing acted yet."""


class Driver(Protocol):
    name: str

    def decide(self, arrival: Arrival, numeric: dict[str, float], categorical: dict[str, str], consent: Consent) -> tuple[str, Action]:
        """(decision id, chosen action) for a customer arriving at a touchpoint."""
        ...

    def activate(self, decision_id: str, at: float) -> None: ...

    def report(self, outcome: Outcome) -> None: ...

    def finish(self) -> None:
        """Wait until everything sent has been taken in."""
        ...


@dataclass
class RunResult:
    name: str
    start: float
    end: float
    times: list[float] = field(default_factory=list)
    values: list[float] = field(default_factory=list)
    costs: list[float] = field(default_factory=list)
    contacts: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    money: list[tuple[float, float]] = field(default_factory=list)  # (event time, value) of every outcome
    offers: list[str] = field(default_factory=list)  # the offer chosen at each decision ("do_nothing" for none)

    def value_per_decision(self, last_days: float | None = None) -> float:
        """Mean true expected gain per decision, over the last ``last_days`` of the run (or all of it)."""
        times, values = np.asarray(self.times), np.asarray(self.values)
        if last_days is not None:
            values = values[times >= self.end - last_days * DAY]
        return float(values.mean()) if values.size else float("nan")

    def gain_by_offer(self, last_days: float) -> dict[str, float]:
        """What each chosen offer added to ``value_per_decision(last_days)``: its gains over the last
        ``last_days`` divided by all decisions in them (so the offers sum to the whole)."""
        since = self.end - last_days * DAY
        recent = [(offer, value) for at, offer, value in zip(self.times, self.offers, self.values, strict=True) if at >= since]
        totals: dict[str, float] = {}
        for offer, value in recent:
            totals[offer] = totals.get(offer, 0.0) + value
        return {offer: total / len(recent) for offer, total in sorted(totals.items())}

    def net_per_decision(self, last_days: float) -> float:
        """Outcome money minus action costs in the last ``last_days``, per decision made in them."""
        since = self.end - last_days * DAY
        times = np.asarray(self.times)
        recent = times >= since
        income = sum(value for at, value in self.money if at >= since)
        return float((income - np.asarray(self.costs)[recent].sum()) / max(int(recent.sum()), 1))

    def curve(self, bucket_days: float = 7.0) -> tuple[list[float], list[float]]:
        """(day, value per decision) per bucket of ``bucket_days``: the learning curve."""
        days = (np.asarray(self.times) - self.start) / DAY
        values = np.asarray(self.values)
        edges = np.arange(0.0, (self.end - self.start) / DAY + bucket_days, bucket_days)
        xs, ys = [], []
        for low, high in zip(edges[:-1], edges[1:], strict=True):
            inside = (days >= low) & (days < high)
            if inside.any():
                xs.append(float(high))
                ys.append(float(values[inside].mean()))
        return xs, ys


def run(world: SimulatedWorld, driver: Driver, days: float, *, seed: int, progress: Progress | None = None) -> RunResult:
    """Drive ``world`` for ``days`` from its start: every arrival asks the driver, every contact is
    activated when it is delivered, every outcome is reported in event-time order."""
    rng = np.random.default_rng([seed, 0x5117])
    start = world.start
    result = RunResult(driver.name, start, start + days * DAY)
    activations: list[tuple[float, str]] = []  # (deliver at, decision id), delivered in time order
    for event in world.events(start, days):
        now = event.event_time
        while activations and activations[0][0] <= now:
            at, decision_id = activations.pop(0)
            driver.activate(decision_id, at)
        if isinstance(event, Outcome):
            driver.report(event)
            result.outcomes[event.type] = result.outcomes.get(event.type, 0) + 1
            result.money.append((now, event.value))
            continue
        numeric, categorical = world.context(event.customer, now)
        decision_id, action = driver.decide(event, numeric, categorical, world.consent(event.customer, now))
        result.times.append(now)
        result.values.append(float(world.expected_gains(event.customer, now, [action])[0]))
        result.costs.append(action.cost)
        result.offers.append(action.offer)
        world.act(event.customer, now, action, rng, decision=decision_id)
        if not action.do_nothing:
            result.contacts += 1
            send = world.catalog.send_at(action, now)
            activations.append((now if send is None else send, decision_id))
            activations.sort()
        if progress and len(result.times) % 500 == 0:
            progress((now - start) / (days * DAY))
    for at, decision_id in activations:
        driver.activate(decision_id, at)
    driver.finish()
    if progress:
        progress(1.0)
    return result


class ReferenceDriver:
    """A reference policy choosing among the actions Brein's rules, consent and contact policy allow."""

    def __init__(self, name: str, world: SimulatedWorld, policy: ReferencePolicy, config: BreinConfig, seed: int) -> None:
        self.name = name
        self._world = world
        self._policy = policy
        self._eligibility = Eligibility(config)
        self._rng = np.random.default_rng([seed, 0xBA5E])
        self._count = 0

    def decide(self, arrival: Arrival, numeric: dict[str, float], categorical: dict[str, str], consent: Consent) -> tuple[str, Action]:
        eligible = self._eligibility.eligible(self._world, arrival.customer, arrival.event_time, arrival.touchpoint)
        self._count += 1
        return f"{self.name}-{self._count}", self._policy(self._world, arrival.customer, arrival.event_time, eligible, self._rng)

    def activate(self, decision_id: str, at: float) -> None:
        pass

    def report(self, outcome: Outcome) -> None:
        pass

    def finish(self) -> None:
        pass


def reference_policies(best_single_action: str) -> list[tuple[str, ReferencePolicy]]:
    return [
        ("do-nothing", do_nothing_policy),
        (f"best single action ({best_single_action})", fixed_policy(best_single_action)),
        ("uniform random", uniform_policy),
        ("oracle", oracle_policy),
    ]


def run_references(
    make_world: WorldFactory,
    seed: int,
    days: float,
    best_single_action: str,
    progress: Progress | None = None,
    *,
    extra: Sequence[tuple[str, ReferencePolicy]] = (),
) -> list[RunResult]:
    """Each reference policy (then each of ``extra``) on a fresh world of the same draw, choosing
    among the actions the world's config allows."""
    results = []
    for name, policy in [*reference_policies(best_single_action), *extra]:
        world = make_world()
        driver = ReferenceDriver(name, world, policy, world.config, seed)
        results.append(run(world, driver, days, seed=seed, progress=progress))
    return results


def gain_share(result: RunResult, oracle: RunResult, last_days: float) -> float:
    """The share of the oracle's gain over do-nothing that ``result`` captures."""
    return result.value_per_decision(last_days) / oracle.value_per_decision(last_days)
