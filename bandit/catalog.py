"""The action catalog: every (offer, channel, send-time slot) the config allows, plus do-nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bandit.config import BreinConfig

DO_NOTHING = "do_nothing"
NOW_SLOT = "now"


@dataclass(frozen=True, slots=True)
class Action:
    id: str
    offer: str
    channel: str
    slot: str
    cost: float

    @property
    def do_nothing(self) -> bool:
        return self.id == DO_NOTHING


def action_id(offer: str, channel: str, slot: str) -> str:
    return f"{offer}/{channel}/{slot}"


class Catalog:
    """The actions in a fixed order (do-nothing first) with their costs and send times."""

    def __init__(self, config: BreinConfig) -> None:
        self._zone = ZoneInfo(config.timezone)
        self._slot_times = {name: time.fromisoformat(at) for name, at in config.slots.items()}
        actions: dict[str, Action] = {DO_NOTHING: Action(DO_NOTHING, DO_NOTHING, "", "", 0.0)}
        for combo in config.combinations:
            for offer in combo.offers:
                for channel in combo.channels:
                    for slot in combo.slots:
                        cost = config.offers[offer].cost + config.channels[channel].cost
                        aid = action_id(offer, channel, slot)
                        actions.setdefault(aid, Action(aid, offer, channel, slot, cost))
        self.actions: tuple[Action, ...] = tuple(actions.values())
        self.by_id: dict[str, Action] = actions
        self.offers: tuple[str, ...] = tuple(config.offers)
        self.channels: tuple[str, ...] = tuple(config.channels)
        self.deferred_channels: frozenset[str] = frozenset(c for c, cfg in config.channels.items() if cfg.deferred)

    def __len__(self) -> int:
        return len(self.actions)

    def send_at(self, action: Action, event_time: float) -> float | None:
        """The next moment, at or after the decision, that the action's slot delivers (epoch seconds)."""
        if action.do_nothing:
            return None
        if action.slot == NOW_SLOT:
            return event_time
        local = datetime.fromtimestamp(event_time, tz=UTC).astimezone(self._zone)
        at = self._slot_times[action.slot]
        candidate = datetime.combine(local.date(), at, tzinfo=self._zone)
        if candidate < local:
            candidate = datetime.combine(local.date() + timedelta(days=1), at, tzinfo=self._zone)
        return candidate.timestamp()
