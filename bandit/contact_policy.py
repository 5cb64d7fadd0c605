"""Contact policy across all channels: caps, quiet periods after negative outcomes, and
suppression of offers after their conversion. Computed from the decision log's history."""

from __future__ import annotations

from bandit.config import ContactPolicyConfig
from bandit.exclusions import Exclusions
from store.records import DAY, CustomerHistory


def _days(value: float) -> str:
    return f"{value:g} day" + ("" if value == 1 else "s")


class ContactPolicy:
    def __init__(self, config: ContactPolicyConfig, channels: tuple[str, ...]) -> None:
        self._config = config
        self._channels = channels
        # How many days of contacts the history must hold for the caps to be exact.
        self.lookback_days: float = max([cap.days for cap in config.caps], default=0.0)

    def apply(self, history: CustomerHistory, now: float, exclusions: Exclusions) -> None:
        for cap in self._config.caps:
            since = now - cap.days * DAY
            if cap.per_channel:
                for channel in self._channels:
                    if history.contacts_since(since, channel) >= cap.max:
                        exclusions.exclude_channels({channel: f"contact cap: at most {cap.max} {channel} contact(s) per {_days(cap.days)}"})
            elif history.contacts_since(since) >= cap.max:
                exclusions.all_contacts = exclusions.all_contacts or f"contact cap: at most {cap.max} contact(s) per {_days(cap.days)}"
        for quiet in self._config.quiet_periods:
            at = history.last_outcome.get(quiet.after)
            if at is not None and now - at < quiet.days * DAY:
                exclusions.all_contacts = exclusions.all_contacts or (
                    f"quiet period: {quiet.after} {(now - at) / DAY:.1f} days ago, no contact for {_days(quiet.days)}"
                )
        for rule in self._config.suppressions:
            at = history.last_outcome.get(rule.after)
            if at is not None and now - at < rule.days * DAY:
                reason = f"suppressed: {rule.after} {(now - at) / DAY:.1f} days ago, no such offer for {_days(rule.days)}"
                exclusions.exclude_offers({offer: reason for offer in rule.offers})
