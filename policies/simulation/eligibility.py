"""Which actions Brein would allow for a simulated request, computed with Brein's own rule, consent
and contact-policy code from the world's view of the customer: the eligible sets the oracle and the
baselines choose from, without a server."""

from __future__ import annotations

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.contact_policy import ContactPolicy
from bandit.exclusions import Exclusions
from bandit.features import local_hour_weekday
from bandit.history import HISTORY_DAYS, history_features
from bandit.rules import EligibilityRules
from policies.simulation.interface import SimulatedWorld


class Eligibility:
    """Brein's eligibility (CEL rules, contact consent, caps, quiet periods, suppressions) for a
    world customer, assuming every contact went through Brein and every outcome was reported."""

    def __init__(self, config: BreinConfig) -> None:
        self._config = config
        self._catalog = Catalog(config)
        self._rules = EligibilityRules(config)
        self._policy = ContactPolicy(config.contact_policy, self._catalog.channels)
        self._lookback = max(HISTORY_DAYS, self._policy.lookback_days)
        self._outcome_types = tuple(config.outcomes)

    def exclusions(self, world: SimulatedWorld, customer: int, t: float, touchpoint: str) -> Exclusions:
        """Why each excluded offer or channel is out for this request."""
        if touchpoint not in self._config.touchpoints:
            raise ValueError(f"touchpoint: expected one of {', '.join(self._config.touchpoints)}, got {touchpoint!r}")
        history = world.history(customer, t, self._lookback)
        numeric, categorical = world.context(customer, t)
        consent = world.consent(customer, t)
        exclusions = Exclusions()
        for channel in self._catalog.channels:
            if not consent.contact.get(channel, True):
                exclusions.exclude_channels({channel: f"no contact consent for {channel}"})
        hour, weekday = local_hour_weekday(t, self._config.zone)
        verdict = self._rules.evaluate(
            {
                "numeric": numeric,
                "categorical": categorical,
                "history": history_features(history, t, self._catalog.channels, self._outcome_types),
                "touchpoint": touchpoint,
                "hour": hour,
                "weekday": weekday,
            }
        )
        exclusions.exclude_channels(verdict.channels)
        exclusions.exclude_offers(verdict.offers)
        self._policy.apply(history, t, exclusions)
        return exclusions

    def eligible(self, world: SimulatedWorld, customer: int, t: float, touchpoint: str) -> list[Action]:
        """The eligible actions in catalog order, do-nothing first (always eligible)."""
        return self.exclusions(world, customer, t, touchpoint).eligible(self._catalog.actions)
