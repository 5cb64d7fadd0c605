"""The features derived from a customer's history as Brein's own log knows it (store.records.CustomerHistory).

Every touchpoint's decisions land in the same log, so the history (and the contact policy built
on it) is the same whichever channel asks: this is what keeps channels consistent.
"""

from __future__ import annotations

from collections.abc import Iterable

from store.records import DAY, CustomerHistory

# How far back the history query looks for contacts; the contact policy may ask for more.
HISTORY_DAYS = 30.0

EMPTY_HISTORY = CustomerHistory()


def lookback_days(contact_policy_days: float) -> float:
    """How far back a customer's log is read: far enough for the history features and the contact policy."""
    return max(contact_policy_days, HISTORY_DAYS)


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
    for days in CONTACT_COUNT_DAYS if history.contacts else ():
        since = now - days * DAY
        per_channel = history.contacts_by_channel(since)
        if per_channel:
            features[f"contacts_{days}d"] = float(sum(per_channel.values()))
            for channel in channels:
                count = per_channel.get(channel)
                if count:
                    features[f"contacts_{days}d_{channel}"] = float(count)
    if history.last_contact is not None:
        features["days_since_contact"] = (now - history.last_contact) / DAY
    for outcome_type in outcome_types:
        at = history.last_outcome.get(outcome_type)
        if at is not None:
            features[f"days_since_{outcome_type}"] = (now - at) / DAY
    return features
