"""What can choose actions: the VW policy (bandit.learner), fixed rules, uniform random, do-nothing.

Every policy gives its distribution over the eligible actions of a decision, from the decision's
features as used (the log keeps them), so any policy can serve, shadow, or be evaluated on a log.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cel

from bandit.catalog import DO_NOTHING, Action
from bandit.encoding import LearnedEncoding
from bandit.rules import Reads, compiled_conditions, read_context, read_values, reads_of
from store.records import SharedFeatures


class Policy(Protocol):
    version: str
    @property
    def encoding(self) -> LearnedEncoding | None:
        """The numeric encoding the policy's shared line is made with (bandit/encoding.py); None: ``auto``."""
        ...

    @property
    def cold(self) -> bool:
        """Serving uniform exploration because nothing has been learned yet."""
        ...

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]: ...


def one_hot(actions: Sequence[Action], action_id: str) -> list[float]:
    return [1.0 if a.id == action_id else 0.0 for a in actions]


class UniformPolicy:
    version = "uniform"
    cold = False
    encoding = None

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]:
        return [1.0 / len(actions)] * len(actions)


class DoNothingPolicy:
    version = "do-nothing"
    cold = False
    encoding = None

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]:
        return one_hot(actions, DO_NOTHING)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """``when`` (a CEL condition, empty = always) -> ``action`` (an action id)."""

    action: str
    when: str = ""


def rule_variables(features: SharedFeatures) -> dict[str, Any]:
    """The rule variables recovered from a decision's features as used."""
    non_personal = dict(features.get("n", {}))
    variables: dict[str, Any] = {
        "touchpoint": non_personal.pop("touchpoint", ""),
        "hour": int(non_personal.pop("hour", 0)),
        "weekday": int(non_personal.pop("weekday", 0)),
        "history": dict(features.get("h", {})),
    }
    context = {**non_personal, **features.get("u", {})}
    variables["numeric"] = {k: v for k, v in context.items() if not isinstance(v, str)}
    variables["categorical"] = {k: v for k, v in context.items() if isinstance(v, str)}
    return variables


class RulePolicy:
    """The first rule whose condition holds and whose action is eligible; do-nothing otherwise."""

    cold = False
    encoding = None

    def __init__(self, rules: Sequence[RuleSpec], version: str) -> None:
        self.version = version
        self.rules = tuple(rules)
        programs = iter(compiled_conditions("rules", [(f"rules[{i}].when", r.when) for i, r in enumerate(self.rules) if r.when]))
        self._programs = [next(programs) if r.when else None for r in self.rules]
        self._reads = _policy_reads(self.rules, self._programs)

    def choose(self, actions: Sequence[Action], features: SharedFeatures) -> str:
        eligible = {a.id for a in actions}
        variables = rule_variables(features)
        if self._reads is not None:
            variables = read_context(self._reads, read_values(self._reads, variables))
        context = cel.Context(variables)
        for rule, program in zip(self.rules, self._programs, strict=True):
            if rule.action not in eligible:
                continue
            try:
                if program is None or program.execute(context) is True:
                    return rule.action
            except Exception:
                continue  # a condition that cannot be decided does not hold
        return DO_NOTHING

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]:
        return one_hot(actions, self.choose(actions, features or {}))


def _policy_reads(rules: Sequence[RuleSpec], programs: Sequence[cel.Program | None]) -> Reads | None:
    """What a rules policy's conditions read together (``reads_of``), or None when one reads more than
    named keys (a map by ``[key]``, ``in`` or ``size``): then the whole request is its context."""
    reads: list[tuple[str, str | None]] = []
    for rule, program in zip(rules, programs, strict=True):
        if program is None:
            continue
        read = reads_of(rule.when, program.variables())
        if read is None:
            return None
        reads.extend(read)
    return tuple(dict.fromkeys(reads))
