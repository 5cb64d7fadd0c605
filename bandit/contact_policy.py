"""Contact policy across all channels: caps, quiet periods after negative outcomes, and
suppression of offers after their conversion. Computed from the decision log's history."""

from __future__ import annotations

from typing import NamedTuple

from bandit.config import ContactPolicyConfig
from bandit.exclusions import Exclusions
from store.records import DAY, CustomerHistory


def _days(value: float) -> str:
    return f"{value:g} day" + ("" if value == 1 else "s")


class _Cap(NamedTuple):
    max: int
    seconds: float
    per_channel: bool
    reason: str
    channel_reasons: dict[str, dict[str, str]]
    """Channel -> the reason for excluding it, as Exclusions.exclude_channels takes it (read, never changed)."""


class ContactPolicy:
    def __init__(self, config: ContactPolicyConfig, channels: tuple[str, ...]) -> None:
        self._config = config
        self._channels = channels
        # How many days of contacts the history must hold for the caps to be exact.
        self.lookback_days: float = max([cap.days for cap in config.caps], default=0.0)
        # Each cap's period in seconds and its reasons, worded once: every Decide checks every cap.
        self._caps = tuple(
            _Cap(cap.max, cap.days * DAY, cap.per_channel, f"contact cap: at most {cap.max} contact(s) per {_days(cap.days)}",
                 {channel: {channel: f"contact cap: at most {cap.max} {channel} contact(s) per {_days(cap.days)}"}
                  for channel in channels})
            for cap in config.caps
        )  # fmt: skip

    def apply(self, history: CustomerHistory, now: float, exclusions: Exclusions) -> None:
        """Caps count the contacts within their period on either side of ``now`` and quiet periods
        and suppressions start from an outcome on either side (conservative): a decision or outcome with a later event
        time may reach the log first, and two decisions must not both pass a cap by being logged out
        of event-time order."""
        for cap in self._caps:
            since, until = now - cap.seconds, now + cap.seconds
            if cap.per_channel:
                counts = history.contacts_by_channel(since, until)
                for channel in self._channels:
                    if counts.get(channel, 0) >= cap.max:
                        exclusions.exclude_channels(cap.channel_reasons[channel])
            elif history.contacts_since(since) + history.contacts_before(until) >= cap.max:
                exclusions.all_contacts = exclusions.all_contacts or cap.reason
        for quiet in self._config.quiet_periods:
            when = _near(history, quiet.after, now, quiet.days)
            if when is not None:
                exclusions.all_contacts = exclusions.all_contacts or f"quiet period: {when}, no contact for {_days(quiet.days)}"
        for rule in self._config.suppressions:
            when = _near(history, rule.after, now, rule.days)
            if when is not None:
                reason = f"suppressed: {when}, no such offer for {_days(rule.days)}"
                exclusions.exclude_offers({offer: reason for offer in rule.offers})


def _near(history: CustomerHistory, outcome: str, now: float, days: float) -> str | None:
    """When an ``outcome`` lies within ``days`` of ``now``, before it or after it (an outcome with a
    later event time may reach the log first), in words; None when none does."""
    at = history.last_outcome.get(outcome)
    if at is not None and now - at < days * DAY:
        return f"{outcome} {(now - at) / DAY:.1f} days ago"
    later = history.next_outcome.get(outcome)
    if later is not None and later - now < days * DAY:
        return f"{outcome} {(later - now) / DAY:.1f} days after this decision's time"
    return None
