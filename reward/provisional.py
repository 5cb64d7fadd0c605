"""Provisional examples: a decision learned at the close of each of its shorter windows, before its
whole reward is known.

A decision's whole reward is final only when its longest outcome window has closed, and until then
nothing it taught reached the learner: in a world with a 45-day window, a complaint's lesson came 46
days late, and the model served that long on what it knew then (docs/simulation.md, rounds 11-14).
Each distinct window shorter than the longest is a stage. When a stage's window has closed (plus the
allowed lateness), the joiner writes the decision a provisional example: what the outcome types
whose windows have closed credited it, less its cost, plus, for the types still open, the mean of
what they credited the same action's decisions joined whole. Its whole example follows as before.
The provisional part estimates the open types at the action's level, not the customer's: how the
context changes the late outcomes is learned from the whole examples only. The evaluators and the
export read the whole examples only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

MEMORY = 10_000
"""Whole examples of one action that its open-type means weigh equally; after that each new one
weighs 1/MEMORY (an exponential mean), so a mean follows a world that changes."""


class Stages:
    """The stages of a set of credit windows (seconds per outcome type)."""

    def __init__(self, windows: Mapping[str, float]) -> None:
        distinct = sorted(set(windows.values()))
        self.ages: list[float] = distinct[:-1]
        """Each stage's age in seconds (every distinct window but the longest), shortest first."""
        self._stage = {name: distinct.index(window) for name, window in windows.items()}

    def closed_value(self, by_type: Mapping[str, float], stage: int) -> float:
        """What the types whose windows have closed at ``stage`` credited."""
        return sum(value for name, value in by_type.items() if self._stage[name] <= stage)

    def open_values(self, by_type: Mapping[str, float]) -> list[float]:
        """Per stage, what the types still open at it credited (a type the config no longer has, in
        an example joined before, as closed)."""
        stages = [self._stage.get(name, 0) for name in by_type]
        return [sum(v for v, s in zip(by_type.values(), stages, strict=True) if s > stage) for stage in range(len(self.ages))]


class OpenMeans:
    """Per action and stage, the mean of what the types still open at the stage credited the
    action's decisions joined whole (0.0 for an action not joined yet)."""

    def __init__(self, stages: int) -> None:
        self._stages = stages
        self._means: dict[str, list[float]] = {}
        self._counts: dict[str, int] = {}

    def add(self, action_id: str, open_values: Sequence[float]) -> None:
        means = self._means.get(action_id)
        if means is None:
            means = self._means[action_id] = [0.0] * self._stages
        count = self._counts[action_id] = min(self._counts.get(action_id, 0) + 1, MEMORY)
        for stage, value in enumerate(open_values):
            means[stage] += (value - means[stage]) / count

    def mean(self, action_id: str, stage: int) -> float:
        means = self._means.get(action_id)
        return 0.0 if means is None else means[stage]
