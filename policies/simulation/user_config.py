"""The Brein config a new user would write for a generated world.

A user knows the catalog (offers and their costs, channels and theirs, which are sent later, the
send slots, which combinations the business runs, the rules a channel comes with: a web banner is
shown on the web, an app push needs the app), the outcome types with their values and windows, the
consent defaults, a plain contact cap, quiet periods after a complaint or an unsubscribe, and not
offering again what a customer just took. A user does not know the world's hidden structure: the
config has no numeric thresholds or bin edges (numeric fields keep Brein's default encoding), no
credit restrictions (``outcomes.*.offers``), no ``[learner]`` section, and ``[joiner]`` at its defaults.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tomli_w

from policies.simulation.worldspec import ChannelSpec, WorldSpec

QUIET_AFTER_COMPLAINT_DAYS = 30.0
QUIET_AFTER_UNSUBSCRIBE_DAYS = 180.0
SUPPRESS_CLOCK_DAYS = 90.0  # no renewal offer for 90 days after a renewal
SUPPRESS_OTHER_DAYS = 60.0


def _channel_rule(channel: ChannelSpec) -> str | None:
    rules = []
    if channel.touchpoint is not None:
        rules.append(f'touchpoint == "{channel.touchpoint}"')
    if channel.gate is not None:
        field, level = channel.gate
        rules.append(f'has(categorical.{field}) && categorical.{field} == "{level}"')
    return " && ".join(rules) or None


def user_config(spec: WorldSpec) -> dict[str, Any]:
    """The config as TOML data (``bandit.config.parse_config`` takes it as it is)."""
    channels: dict[str, dict[str, Any]] = {}
    for channel in spec.channels:
        entry: dict[str, Any] = {"cost": channel.cost, "deferred": channel.deferred}
        rule = _channel_rule(channel)
        if rule is not None:
            entry["eligible_if"] = rule
        channels[channel.name] = entry
    outcomes: dict[str, dict[str, Any]] = {}
    for outcome in spec.outcomes:
        entry = {"value": outcome.value, "window_days": outcome.window_days}
        if outcome.value < 0:
            entry["allow_negative"] = True
        outcomes[outcome.name] = entry
    quiet = [
        {"after": o.name, "days": QUIET_AFTER_COMPLAINT_DAYS if o.kind == "complaint" else QUIET_AFTER_UNSUBSCRIBE_DAYS}
        for o in spec.outcomes
        if o.kind != "conversion"
    ]
    suppressions = []
    for outcome in spec.outcomes:
        offers = [o.name for o in spec.offers if o.outcome == outcome.name]
        if offers:
            days = SUPPRESS_CLOCK_DAYS if outcome.name == spec.clock.outcome else SUPPRESS_OTHER_DAYS
            suppressions.append({"after": outcome.name, "offers": offers, "days": days})
    cap, days = spec.contact_cap
    data: dict[str, Any] = {
        "timezone": spec.timezone,
        "currency": "EUR",
        "touchpoints": list(spec.touchpoints),
        "consent": {"personalisation_default": "denied", "contact_default": "granted"},
        "offers": {o.name: {"cost": o.cost, "description": o.description} for o in spec.offers},
        "channels": channels,
        "combinations": [{"offers": list(c.offers), "channels": [c.name], "slots": list(c.slots)} for c in spec.channels],
        "outcomes": outcomes,
        "contact_policy": {"caps": [{"max": cap, "days": days}], "quiet_periods": quiet, "suppressions": suppressions},
        "features": {"non_personal": list(spec.non_personal)},
    }
    if spec.slots:
        data["slots"] = dict(spec.slots)
    return data


def write_config(spec: WorldSpec, path: Path) -> None:
    """Save the world's config as TOML, with a header saying where it came from."""
    header = f"# The Brein config a new user would write for generated world {spec.name} ({spec.domain}).\n\n"
    path.write_text(header + tomli_w.dumps(user_config(spec)), encoding="utf-8")
