"""Reference policies and the world's difficulty: the oracle, do-nothing, the best single fixed
action (the campaign a marketer runs today) and uniform random, valued with the world's true
expected values on a sample of decisions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bandit.catalog import DO_NOTHING, Action
from policies.simulation.eligibility import Eligibility
from policies.simulation.interface import SimulatedWorld

Policy = Callable[[SimulatedWorld, int, float, Sequence[Action], np.random.Generator], Action]
"""(world, customer, event time, eligible actions, rng) -> the chosen action."""


def oracle_policy(
    world: SimulatedWorld, customer: int, t: float, eligible: Sequence[Action], rng: np.random.Generator
) -> Action:
    """The eligible action of highest true expected value."""
    return world.oracle(customer, t, eligible)


def do_nothing_policy(
    world: SimulatedWorld, customer: int, t: float, eligible: Sequence[Action], rng: np.random.Generator
) -> Action:
    return world.catalog.by_id[DO_NOTHING]


def uniform_policy(
    world: SimulatedWorld, customer: int, t: float, eligible: Sequence[Action], rng: np.random.Generator
) -> Action:
    """Any eligible action (do-nothing included) with equal probability."""
    return eligible[int(rng.integers(len(eligible)))]


def fixed_policy(action_id: str) -> Policy:
    """One action for everyone it is eligible for, do-nothing for the others."""

    def choose(world: SimulatedWorld, customer: int, t: float, eligible: Sequence[Action], rng: np.random.Generator) -> Action:
        for action in eligible:
            if action.id == action_id:
                return action
        return world.catalog.by_id[DO_NOTHING]

    return choose


@dataclass(frozen=True, slots=True)
class DecisionPoint:
    """One decision to value: a customer at a moment, with the actions Brein would allow."""

    customer: int
    event_time: float
    touchpoint: str
    eligible: tuple[Action, ...]


def decision_points(
    world: SimulatedWorld, count: int, seed: int, *, start: float | None = None, days: float = 60.0
) -> list[DecisionPoint]:
    """``count`` arrivals drawn uniformly from ``[start, start + days)`` (default: the world's start),
    with the eligible sets of Brein's rules on the world's current history."""
    if count < 1:
        raise ValueError(f"count: expected at least 1, got {count}")
    start = world.start if start is None else start
    schedule = world.arrivals(start, days)
    if len(schedule) == 0:
        raise ValueError("days: no arrivals in the window")
    rng = np.random.default_rng([seed, 0xCA11B])
    chosen = np.sort(rng.choice(len(schedule), size=min(count, len(schedule)), replace=False))
    eligibility = Eligibility(world.config)
    points = []
    for k in chosen.tolist():
        customer = int(schedule.customers[k])
        t = float(schedule.times[k])
        touchpoint = schedule.touchpoint_names[int(schedule.touchpoint_index[k])]
        points.append(DecisionPoint(customer, t, touchpoint, tuple(eligibility.eligible(world, customer, t, touchpoint))))
    return points


@dataclass(frozen=True, slots=True)
class Calibration:
    """Mean true expected value per decision of each reference policy, over the same decisions."""

    decisions: int
    do_nothing: float
    oracle: float
    best_fixed: float
    best_fixed_action: str
    uniform_random: float
    # Standard error of the best fixed action's share of the oracle's gain (over decisions).
    best_fixed_share_se: float

    @property
    def oracle_gain(self) -> float:
        """What the oracle adds over do-nothing, per decision."""
        return self.oracle - self.do_nothing

    @property
    def best_fixed_share(self) -> float:
        return (self.best_fixed - self.do_nothing) / self.oracle_gain

    @property
    def uniform_share(self) -> float:
        return (self.uniform_random - self.do_nothing) / self.oracle_gain

    def summary(self) -> str:
        return (
            f"{self.decisions} decisions; per decision: do-nothing {self.do_nothing:.2f}, oracle {self.oracle:.2f} "
            f"(gain {self.oracle_gain:.2f}), best fixed {self.best_fixed_action} {self.best_fixed:.2f} "
            f"(share {self.best_fixed_share:.3f} ± {self.best_fixed_share_se:.3f}), uniform random {self.uniform_random:.2f} "
            f"(share {self.uniform_share:.3f})"
        )


def calibrate(world: SimulatedWorld, points: Sequence[DecisionPoint]) -> Calibration:
    """Value the reference policies on ``points``. The best fixed action is the one whose policy
    (that action where eligible, do-nothing elsewhere) has the highest mean value on these points."""
    if not points:
        raise ValueError("points: expected at least one decision point, got none")
    actions = world.actions
    n, m = len(points), len(actions)
    fixed = np.empty((n, m))
    oracle = np.empty(n)
    uniform = np.empty(n)
    nothing = np.empty(n)
    position = {a.id: k for k, a in enumerate(actions)}
    for row, point in enumerate(points):
        values = world.expected_values(point.customer, point.event_time)
        mask = np.zeros(m, dtype=bool)
        mask[[position[a.id] for a in point.eligible]] = True
        mask[position[DO_NOTHING]] = True
        nothing[row] = values[position[DO_NOTHING]]
        oracle[row] = values[mask].max()
        uniform[row] = values[mask].mean()
        fixed[row] = np.where(mask, values, nothing[row])
    best = int(np.argmax(fixed.mean(axis=0)))
    gain = oracle - nothing
    best_gain = fixed[:, best] - nothing
    share = best_gain.mean() / gain.mean()
    # Delta method for a ratio of means.
    residual = best_gain - share * gain
    share_se = float(residual.std(ddof=1) / np.sqrt(n) / gain.mean()) if n > 1 else float("nan")
    return Calibration(
        decisions=n,
        do_nothing=float(nothing.mean()),
        oracle=float(oracle.mean()),
        best_fixed=float(fixed[:, best].mean()),
        best_fixed_action=actions[best].id,
        uniform_random=float(uniform.mean()),
        best_fixed_share_se=share_se,
    )


def best_single_action(world: SimulatedWorld, seed: int) -> str:
    """The campaign a marketer runs today: the one action of highest mean value on 3,000 decisions
    of the world's first 60 days."""
    return calibrate(world, decision_points(world, 3000, seed, days=60)).best_fixed_action


__all__ = [
    "Calibration",
    "DecisionPoint",
    "Policy",
    "best_single_action",
    "calibrate",
    "decision_points",
    "do_nothing_policy",
    "fixed_policy",
    "oracle_policy",
    "uniform_policy",
]
