"""Why actions are ineligible for one request, kept compact: per offer, per channel, or all contacts.

The decision log stores this, and Explain turns it back into a reason per removed action.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from bandit.catalog import Action

NOT_A_CANDIDATE = "not among the request's candidate_actions"


@dataclass(slots=True)
class Exclusions:
    # Set when every contact action is out (a contact cap, a quiet period); do-nothing never is.
    all_contacts: str | None = None
    offers: dict[str, str] = field(default_factory=dict)
    channels: dict[str, str] = field(default_factory=dict)
    candidates: frozenset[str] | None = None

    def exclude_offers(self, reasons: dict[str, str]) -> None:
        for offer, reason in reasons.items():
            self.offers.setdefault(offer, reason)

    def exclude_channels(self, reasons: dict[str, str]) -> None:
        for channel, reason in reasons.items():
            self.channels.setdefault(channel, reason)

    def reason(self, action: Action) -> str | None:
        """Why this action is ineligible, or None when it is eligible."""
        if action.do_nothing:
            return None
        if self.candidates is not None and action.id not in self.candidates:
            return NOT_A_CANDIDATE
        return self.all_contacts or self.channels.get(action.channel) or self.offers.get(action.offer)

    def eligible(self, actions: Iterable[Action]) -> list[Action]:
        return [a for a in actions if self.reason(a) is None]

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        if self.all_contacts:
            data["all"] = self.all_contacts
        if self.offers:
            data["offers"] = self.offers
        if self.channels:
            data["channels"] = self.channels
        if self.candidates is not None:
            data["candidates"] = sorted(self.candidates)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Exclusions:
        candidates = data.get("candidates")
        return cls(
            all_contacts=data.get("all"),
            offers=dict(data.get("offers", {})),
            channels=dict(data.get("channels", {})),
            candidates=frozenset(candidates) if candidates is not None else None,
        )
