"""The definition of a generated world: everything ``draw.draw_spec`` draws from a seed, as plain
frozen data. ``GeneratedWorld`` draws customer populations from it; ``user_config`` writes the Brein
config a new user would write for it (which knows only what such a user knows: the catalog, costs,
outcome values and windows, consent defaults — none of the hidden structure below)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

NumericKind = Literal["skewed", "count", "rate", "age", "tenure", "clock"]


@dataclass(frozen=True, slots=True)
class NumericField:
    """A numeric context field. ``a`` and ``b`` parameterise its distribution by kind: skewed
    (lognormal: log median, sigma), count (gamma-mixed Poisson: shape, scale), rate (beta: a, b),
    age (normal: mean, sd), tenure (lognormal months at the start: log median, sigma; grows with
    time). The clock field's values come from ``Clock``."""

    name: str
    kind: NumericKind
    a: float = 0.0
    b: float = 0.0
    digits: int = 2


@dataclass(frozen=True, slots=True)
class CategoricalField:
    name: str
    levels: tuple[str, ...]
    weights: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Condition:
    """A visible field at the world's start against a threshold (numeric: ``value >= threshold``,
    or ``value < threshold`` when ``below``) or a set of levels (categorical)."""

    field: str
    threshold: float = 0.0
    below: bool = False
    levels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Trait:
    """A hidden yes/no trait: its chance is ``inside`` where every condition holds (a threshold,
    or a conjunction of two) and ``outside`` elsewhere, each customer's log-odds shifted by normal
    noise of sd ``noise``: what Brein sees tells about it, never for sure."""

    conditions: tuple[Condition, ...]
    inside: float
    outside: float
    noise: float


@dataclass(frozen=True, slots=True)
class Clock:
    """A field counting down to the end of a term (a contract), which restarts when an outcome of
    type ``outcome`` happens. Offers of that type convert fully within ``near`` months of the end,
    falling linearly to ``floor`` at ``far`` months and before; customers who convert anyway do so
    between ``early_days`` before and ``late_days`` after their end; at the start some are up to
    ``lapsed_months`` past it (out of term, still receptive)."""

    field: str
    outcome: str
    unit_days: float
    term_months: float
    near_months: float
    far_months: float
    floor: float
    early_days: float
    late_days: float
    lapsed_months: float


@dataclass(frozen=True, slots=True)
class OutcomeSpec:
    """An outcome type. Conversions are what offers bring, and what ``sure`` customers do anyway.
    For the clock's type the clock says when (the end of each term) and no second conversion comes
    within ``repeat_days`` of one (a term minus its receptive months). For the others a customer's
    need arises once, at a moment of their own (``WorldSpec.needs_days``): before it nothing converts
    them; a one-off purchase (``repeat_days`` infinite) is then made once, a repeatable one again
    ``repeat_days`` (times the customer's own factor) after the last. Complaints and unsubscribes
    come from contacts, complaints also at ``organic_rate`` a month from everyone."""

    name: str
    kind: Literal["conversion", "complaint", "unsubscribe"]
    value: float
    window_days: float
    delay: tuple[float, float, float, float]  # days after delivery: minimum, maximum, beta a, beta b
    organic_rate: float = 0.0
    repeat_days: float = math.inf
    sure: Trait | None = None


@dataclass(frozen=True, slots=True)
class OfferSpec:
    """An offer converting into ``outcome``: a responder's chance on the preferred channel and slot
    is ``p_responder`` (times the customer's susceptibility, the clock's receptiveness if ``timed``),
    anyone else's ``p_other``. A discounted variant (``discount_of``) shares its plain offer's
    responders; the price-sensitive take the plain offer only rarely."""

    name: str
    description: str
    outcome: str
    cost: float
    responder: Trait
    p_responder: float
    p_other: float
    timed: bool
    discount_of: str | None = None


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """A channel and the offers and slots it carries. ``reach`` is how well it reaches customers
    who prefer another channel; ``preference`` the base log-odds of preferring it, raised by
    ``signal_boost`` where ``signal`` holds. ``touchpoint``: an inbound channel, shown in the session
    at that touchpoint only. ``gate``: only customers with this categorical level can be reached."""

    name: str
    cost: float
    deferred: bool
    slots: tuple[str, ...]
    offers: tuple[str, ...]
    reach: float
    complaint_factor: float
    unsubscribable: bool
    contact_denied: float
    preference: float
    signal: Condition | None = None
    signal_boost: float = 0.0
    touchpoint: str | None = None
    gate: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class WorldSpec:
    """A whole generated world. ``effect_scale`` multiplies every conversion chance (capped at
    ``MAX_CONVERSION``): ``family.generate`` sets it so that the best single action captures
    ``target_share`` of the oracle's gain on the calibration sample."""

    seed: int
    attempt: int
    domain: str
    timezone: str
    touchpoints: tuple[str, ...]
    touchpoint_weights: tuple[float, ...]
    numeric: tuple[NumericField, ...]
    categorical: tuple[CategoricalField, ...]
    non_personal: tuple[str, ...]
    irrelevant: tuple[str, ...]  # fields no trait, signal or response depends on
    clock: Clock
    outcomes: tuple[OutcomeSpec, ...]
    offers: tuple[OfferSpec, ...]
    channels: tuple[ChannelSpec, ...]
    slots: tuple[tuple[str, str], ...]  # named send slots: (name, local time "HH:MM")
    slot_weights: tuple[float, ...]  # how customers' preferred slots spread over the named slots
    lost: Trait
    price_sensitive: Trait
    complainer: Trait
    plain_for_price_sensitive: float
    discount_lift: float
    susceptibility_sd: float
    complaint_base: float
    complaint_prone: float
    complaint_per_7d: float
    complaint_per_30d: float
    unsubscribe_base: float
    fatigue: float
    annoyed: float
    annoyed_days: float
    off_slot: float
    now_slot: float
    preferred_hours_share: tuple[float, float]
    personalisation: float
    needs_days: tuple[float, float]  # needs arise uniformly from this many days before the start to this many after
    repeat_spread: float  # sd of the log of each customer's factor on a repeatable type's repeat_days
    visits_per_day: float
    contact_cap: tuple[int, float]  # (contacts, days) a user would cap at
    target_share: float
    effect_scale: float = 1.0

    @property
    def name(self) -> str:
        return f"g{self.seed}"

    def outcome(self, name: str) -> OutcomeSpec:
        return next(o for o in self.outcomes if o.name == name)

    @property
    def longest_window(self) -> float:
        return max(o.window_days for o in self.outcomes)
