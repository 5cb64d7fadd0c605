"""The action catalog: every (offer, channel, send-time slot) the config allows, plus do-nothing."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from bandit.config import BreinConfig

DO_NOTHING = "do_nothing"
NOW_SLOT = "now"
SLOT_DAYS_MEMO_SIZE = 4096
"""(day, slot) pairs whose send times a Catalog remembers; a day's decisions ask for the same few."""


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
        self._slot_days: dict[tuple[date, str], tuple[datetime, float, float]] = {}
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
        day = local.date()
        times = self._slot_days.get((day, action.slot))
        if times is None:
            times = self._slot_day(day, action.slot)
        candidate, today, tomorrow = times
        return tomorrow if candidate < local else today

    def _slot_day(self, day: date, slot: str) -> tuple[datetime, float, float]:
        """The slot's moment on ``day`` (local), its time and the next day's (epoch seconds), remembered:
        every decision of a day asks for the same few."""
        at = self._slot_times[slot]
        candidate = datetime.combine(day, at, tzinfo=self._zone)
        times = (candidate, candidate.timestamp(), datetime.combine(day + timedelta(days=1), at, tzinfo=self._zone).timestamp())
        if len(self._slot_days) >= SLOT_DAYS_MEMO_SIZE:
            self._slot_days.clear()
        self._slot_days[day, slot] = times
        return times
