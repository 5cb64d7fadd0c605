"""What a caller sends to decide, and its validation.

Validation happens once, at the edge of the core, and raises InvalidRequest naming the field.
Times are event times in epoch seconds; ``None`` means "now" and is resolved by validation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.errors import InvalidRequest, OutOfRange, excerpt

ConsentValue = Literal["granted", "denied", "unspecified"]

MAX_FEATURES = 1000
MAX_TEXT_BYTES = 1024
MAX_FUTURE_SECONDS = 300.0
"""How far a request's event time may be ahead of the server's clock: clocks that differ a little.
The joiner closes windows by the latest event time logged, so every second a caller may date ahead
is a second of allowed lateness taken from every customer (at a day, a renewal reported 0.2 days
after its window closed, within the day's lateness, was joined as worth nothing)."""
EARLIEST_EVENT_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_FEATURE_MAGNITUDE = 1e12
"""The largest |value| of a numeric context feature, whatever its name and encoding. VW computes in
float32 (largest 3.4e38) and a feature encoded raw enters interactions of up to three namespaces:
with a self-interaction (``uuu``) its cube, 1e36 at this bound, still leaves room for the weight it
is multiplied by. Measured on a trained cb_explore_adf model with ``uuu``: scores finite up to 1e12,
not from 1e13; with the example's interactions a 3.5e38 feature makes every score non-finite. The
bound holds for binned and log1p features too: the log keeps raw values, and a later feature set-up
may encode them raw. Learning overflows sooner (VW sums g²x² for each product): a value enters VW
within bandit.features.numeric_bound, this bound's k-th root for interactions of order k."""


@dataclass(frozen=True, slots=True)
class DecisionRequest:
    customer_id: str
    touchpoint: str
    request_id: str = ""
    event_time: float | None = None
    numeric: Mapping[str, float] = field(default_factory=dict)
    categorical: Mapping[str, str] = field(default_factory=dict)
    candidate_actions: tuple[str, ...] = ()
    personalisation: ConsentValue = "unspecified"
    contact_consent: Mapping[str, ConsentValue] = field(default_factory=dict)


def check_text(field_name: str, value: str, *, required: bool, key: str | None = None) -> None:
    """Every text a caller sends passes here: so no text reaches a store that one backend keeps and
    another refuses (PostgreSQL's ``text`` cannot hold the NUL character; SQLite's can). ``key``: the
    value is ``field_name[key]``, a name made only for an error (a Decide checks a value a feature)."""
    if required and not value:
        raise InvalidRequest(_named(field_name, key), "is required")
    if "\x00" in value:
        raise InvalidRequest(_named(field_name, key), "contains a NUL character")
    # ASCII text is as many bytes as characters; only other text needs encoding to be measured.
    if len(value) > MAX_TEXT_BYTES if value.isascii() else len(value.encode("utf-8")) > MAX_TEXT_BYTES:
        raise OutOfRange(_named(field_name, key), f"longer than {MAX_TEXT_BYTES} bytes", "text")


def _named(field_name: str, key: str | None) -> str:
    return field_name if key is None else f"{field_name}[{excerpt(key)}]"


def resolve_event_time(field_name: str, event_time: float | None, now: float) -> float:
    """The request's event time, or now; refuses times before 2000 or more than MAX_FUTURE_SECONDS ahead."""
    if event_time is None:
        return now
    if not math.isfinite(event_time):
        raise InvalidRequest(field_name, f"must be a finite time, got {event_time}")
    if event_time < EARLIEST_EVENT_TIME:
        raise InvalidRequest(field_name, "before 2000-01-01")
    if event_time > now + MAX_FUTURE_SECONDS:
        ahead = f"{event_time - now:.0f} s ahead of the server's clock, at most {MAX_FUTURE_SECONDS:.0f} s allowed"
        raise InvalidRequest(field_name, ahead)
    return event_time


def validate_decision_request(request: DecisionRequest, config: BreinConfig, catalog: Catalog, now: float) -> float:
    """Check every field of a decision request; return its resolved event time."""
    check_text("request_id", request.request_id, required=False)
    check_text("customer_id", request.customer_id, required=True)
    if request.touchpoint not in config.touchpoints:
        known = ", ".join(config.touchpoints)
        raise InvalidRequest("channel", f"unknown touchpoint {excerpt(request.touchpoint)}; expected one of {known}")
    for action in request.candidate_actions:
        if action not in catalog.by_id:
            raise InvalidRequest("candidate_actions", f"unknown action id {excerpt(action)}")
    count = len(request.numeric) + len(request.categorical)
    if count > MAX_FEATURES:
        raise InvalidRequest("context", f"{count} features, at most {MAX_FEATURES} allowed")
    for key, number in request.numeric.items():
        check_text("context.numeric key", key, required=True)
        if not abs(number) <= MAX_FEATURE_MAGNITUDE:  # NaN too
            reason = f"must be a finite number within ±{MAX_FEATURE_MAGNITUDE:g}, got {number:g}"
            raise OutOfRange(f"context.numeric[{excerpt(key)}]", reason, "numeric_feature")
    for key, text in request.categorical.items():
        check_text("context.categorical key", key, required=True)
        check_text("context.categorical", text, required=False, key=key)
    if not request.numeric.keys().isdisjoint(request.categorical.keys()):  # no set made for none in common
        name = excerpt(min(request.numeric.keys() & request.categorical.keys()))
        both_kinds = f"{name} is both context.numeric[{name}] and context.categorical[{name}]: a feature has one value"
        raise InvalidRequest("context", both_kinds)
    for channel in request.contact_consent:
        if channel not in catalog.channels:
            raise InvalidRequest("consent.contact", f"unknown channel {excerpt(channel)}")
    return resolve_event_time("event_time", request.event_time, now)
