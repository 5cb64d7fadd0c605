"""A model that cannot take the service down: before a snapshot serves, it scores a fixed probe set
and is refused if any of its distributions is not finite (a model learned from an infinite reward
scores NaN for every context). The set: the first PROBE_SIZE logged contexts, as the serving model
saw them with the actions then eligible, and one context with every feature missing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.policies import Policy
from bandit.sampling import finite_pmf
from reward.online import action_from_id
from store.ports import JoinedExamples
from store.records import START, SharedFeatures

PROBE_SIZE = 64
"""Logged contexts a model is scored on before it serves: a few milliseconds of scoring."""


@dataclass(frozen=True, slots=True)
class ProbeContext:
    shared_line: str
    actions: tuple[Action, ...]
    features: SharedFeatures


class Prober:
    """Scores models on the probe set of a store's joined examples."""

    def __init__(self, config: BreinConfig, examples: JoinedExamples) -> None:
        self.examples = examples
        self._catalog = Catalog(config)
        self._encoder = FeatureEncoder(config)
        nothing = self._encoder.shared_features(
            touchpoint=config.touchpoints[0], event_time=0.0, numeric={}, categorical={}, history={}, personalised=False
        )
        self._missing = ProbeContext(self._encoder.shared_line(nothing), tuple(self._catalog.actions), nothing)

    def contexts(self, model: Policy | None = None) -> list[ProbeContext]:
        """The all-missing context and the first PROBE_SIZE logged ones (fixed once that many are
        logged), in ``model``'s numeric encoding (a lineage's learned one: bandit/encoding.py)."""
        encoder = self._encoder.with_encoding(None if model is None else model.encoding)
        missing = self._missing if encoder is self._encoder else replace(
            self._missing, shared_line=encoder.shared_line(self._missing.features))  # fmt: skip
        logged = [
            ProbeContext(encoder.shared_line(row.features), tuple(action_from_id(self._catalog, a) for a in row.eligible),
                         row.features)
            for row in self.examples.logged(START, PROBE_SIZE)
        ]  # fmt: skip
        return [missing, *logged]

    def check(self, model: Policy) -> str | None:
        """None when ``model`` gives every probe context a finite distribution; else what it gave."""
        return probe(model, self.contexts(model))


def probe(model: Policy, contexts: Sequence[ProbeContext]) -> str | None:
    """None when ``model`` gives every context a finite distribution; else the first it did not."""
    for context in contexts:
        pmf = model.pmf(context.shared_line, context.actions, context.features)
        if not finite_pmf(pmf):
            return f"it scores {list(pmf)[:4]} for the context {context.shared_line[:120]!r}"
    return None
