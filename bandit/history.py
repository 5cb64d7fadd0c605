"""A customer's history as Brein's own log knows it, and the features derived from it.

Every touchpoint's decisions land in the same log, so the history (and the contact policy built
on it) is the same whichever channel asks: this is what keeps channels consistent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

DAY = 86_400.0
# How far back the history query looks for contacts; the contact policy may ask for more.
HISTORY_DAYS = 30.0


@dataclass(frozen=True, slots=True)
class Contact:
    decision_id: str
    event_time: float
    channel: str
    offer: str


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """Contacts (non-do-nothing decisions) inside the lookback, newest last; last time of each outcome type."""

    contacts: tuple[Contact, ...] = ()
    last_contact: float | None = None
    last_outcome: dict[str, float] = field(default_factory=dict)

    def contacts_since(self, since: float, channel: str | None = None) -> int:
        if not self.contacts:
            return 0
        return sum(1 for c in self.contacts if c.event_time >= since and (channel is None or c.channel == channel))


EMPTY_HISTORY = CustomerHistory()


@dataclass(frozen=True, slots=True)
class CustomerLog:
    """What the log holds about a customer for its history as of any time in a span [first, last]:
    its contacts in [first - days, last) (oldest first), the time of its last contact before those,
    the last time of each outcome type before ``first`` and every outcome in [first, last).

    One read gives the histories of many decisions (a DecideBatch chunk) made at different times."""

    days: float
    contacts: tuple[Contact, ...] = ()
    contact_before: float | None = None
    outcomes: tuple[tuple[str, float], ...] = ()

    def at(self, now: float) -> CustomerHistory:
        """The history as of ``now`` (in [first, last]): contacts in the ``days`` before ``now``."""
        since = now - self.days * DAY
        last_contact = self.contact_before
        contacts = []
        for contact in self.contacts:
            if contact.event_time >= now:
                break
            last_contact = contact.event_time
            if contact.event_time >= since:
                contacts.append(contact)
        last_outcome: dict[str, float] = {}
        for kind, at in self.outcomes:
            if at < now and (kind not in last_outcome or at > last_outcome[kind]):
                last_outcome[kind] = at
        return CustomerHistory(tuple(contacts), last_contact, last_outcome)


CONTACT_COUNT_DAYS = (7, 30)


def history_feature_names(channels: Iterable[str], outcome_types: Iterable[str]) -> tuple[str, ...]:
    """Every name ``history_features`` can give, in a fixed order: the columns of a table of them."""
    channels = tuple(channels)
    return (
        *(f"contacts_{days}d{suffix}" for days in CONTACT_COUNT_DAYS for suffix in ("", *(f"_{c}" for c in channels))),
        "days_since_contact",
        *(f"days_since_{t}" for t in outcome_types),
    )


def history_features(history: CustomerHistory, now: float, channels: Iterable[str], outcome_types: Iterable[str]) -> dict[str, float]:
    """Counts of contacts in the last 7 and 30 days (in all and per channel), days since the last
    contact and since the last outcome of each type. Zero counts and never-happened are absent."""
    features: dict[str, float] = {}
    for days in CONTACT_COUNT_DAYS:
        since = now - days * DAY
        total = history.contacts_since(since)
        if total:
            features[f"contacts_{days}d"] = float(total)
            for channel in channels:
                count = history.contacts_since(since, channel)
                if count:
                    features[f"contacts_{days}d_{channel}"] = float(count)
    if history.last_contact is not None:
        features["days_since_contact"] = (now - history.last_contact) / DAY
    for outcome_type in outcome_types:
        at = history.last_outcome.get(outcome_type)
        if at is not None:
            features[f"days_since_{outcome_type}"] = (now - at) / DAY
    return features
