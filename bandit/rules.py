"""Eligibility rules per offer and per channel, written in CEL and compiled once at start-up.

A rule sees these variables: ``numeric`` and ``categorical`` (the request context), ``history``
(the history features, see bandit.history), ``touchpoint`` (the calling channel), ``hour`` and
``weekday`` (local time of the request, Monday = 0). A rule that errors on a request (say, a
missing key without ``has()``) makes its subject ineligible for that request, with the error as
the reason: a broken rule must not send offers it was meant to guard.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cel

from bandit.config import BreinConfig
from bandit.errors import ConfigError

RULE_VARIABLES: dict[str, Any] = {
    "numeric": {},
    "categorical": {},
    "history": {},
    "touchpoint": "",
    "hour": 0,
    "weekday": 0,
}


@dataclass(frozen=True, slots=True)
class Rule:
    subject: Literal["offer", "channel"]
    name: str
    source: str
    program: Any

    @property
    def key(self) -> str:
        return f"{self.subject}s.{self.name}.eligible_if"


@dataclass(frozen=True, slots=True)
class RuleVerdict:
    """Subjects a request's rules removed, each with the reason."""

    offers: dict[str, str]
    channels: dict[str, str]


def _compile(subject: Literal["offer", "channel"], name: str, source: str) -> Rule:
    key = f"{subject}s.{name}.eligible_if"
    try:
        program = cel.compile(source)
    except ValueError as error:
        raise ConfigError(f"{key}: invalid CEL rule {source!r}: {error}") from None
    try:
        result = program.execute(cel.Context(RULE_VARIABLES))
    except KeyError:
        result = True  # a key absent from the empty dry-run context: fine at start-up
    except Exception as error:
        raise ConfigError(f"{key}: rule {source!r} cannot run: {error}") from None
    if not isinstance(result, bool):
        raise ConfigError(f"{key}: rule {source!r} must give true or false, gives {type(result).__name__}")
    return Rule(subject, name, source, program)


class EligibilityRules:
    def __init__(self, config: BreinConfig) -> None:
        rules = [_compile("offer", n, o.eligible_if) for n, o in config.offers.items() if o.eligible_if]
        rules += [_compile("channel", n, c.eligible_if) for n, c in config.channels.items() if c.eligible_if]
        self.rules: tuple[Rule, ...] = tuple(rules)

    def evaluate(self, variables: dict[str, Any]) -> RuleVerdict:
        verdict = RuleVerdict({}, {})
        if not self.rules:
            return verdict
        context = cel.Context(variables)
        for rule in self.rules:
            removed = verdict.offers if rule.subject == "offer" else verdict.channels
            try:
                result = rule.program.execute(context)
            except KeyError as error:
                removed[rule.name] = f"{rule.key} needs {error.args[0]!r}, absent from the request"
                continue
            except Exception as error:
                removed[rule.name] = f"{rule.key} failed: {error}"
                continue
            if result is not True:
                removed[rule.name] = f"{rule.key}: {rule.source}"
        return verdict
