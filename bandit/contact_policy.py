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
        """Caps count the contacts within their period on either side of ``now`` and quiet periods
        start from an outcome on either side (conservative): a decision or outcome with a later event
        time may reach the log first, and two decisions must not both pass a cap by being logged out
        of event-time order."""
        for cap in self._config.caps:
            since, until = now - cap.days * DAY, now + cap.days * DAY
            if cap.per_channel:
                for channel in self._channels:
                    if history.contacts_since(since, channel) + history.contacts_before(until, channel) >= cap.max:
                        exclusions.exclude_channels({channel: f"contact cap: at most {cap.max} {channel} contact(s) per {_days(cap.days)}"})
            elif history.contacts_since(since) + history.contacts_before(until) >= cap.max:
                exclusions.all_contacts = exclusions.all_contacts or f"contact cap: at most {cap.max} contact(s) per {_days(cap.days)}"
        for quiet in self._config.quiet_periods:
            at = history.last_outcome.get(quiet.after)
            if at is not None and now - at < quiet.days * DAY:
                exclusions.all_contacts = exclusions.all_contacts or (
                    f"quiet period: {quiet.after} {(now - at) / DAY:.1f} days ago, no contact for {_days(quiet.days)}"
                )
            later = history.next_outcome.get(quiet.after)
            if later is not None and later - now < quiet.days * DAY:
                exclusions.all_contacts = exclusions.all_contacts or (
                    f"quiet period: {quiet.after} {(later - now) / DAY:.1f} days after this decision's time, "
                    f"no contact within {_days(quiet.days)} of it"
                )
        for rule in self._config.suppressions:
            at = history.last_outcome.get(rule.after)
            if at is not None and now - at < rule.days * DAY:
                reason = f"suppressed: {rule.after} {(now - at) / DAY:.1f} days ago, no such offer for {_days(rule.days)}"
                exclusions.exclude_offers({offer: reason for offer in rule.offers})
