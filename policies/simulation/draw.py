"""Draw a world definition (``WorldSpec``) from a seed.

Everything is drawn: the domain (its vocabulary only: names of fields, offers, outcomes), the
visible fields and their distributions, which of them drive the hidden traits (random thresholds at
random quantiles, and conjunctions of two) and which are irrelevant, the offers and the outcome types
they convert into, costs, values, windows and delays, the channels and send slots and which
combinations exist, complaint and unsubscribe risks, how often customers come back. Ranges are the
issue's: 3-8 offers, 2-5 channels, 1-4 send slots, windows 1-60 days, delays from hours to weeks,
several decisions per customer inside the longest window.

The effect-size scale is not drawn here: ``family.generate`` calibrates it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from policies.simulation.base import DELIVERY_MARGIN_DAYS
from policies.simulation.worldspec import (
    CategoricalField,
    ChannelSpec,
    Clock,
    Condition,
    NumericField,
    NumericKind,
    OfferSpec,
    OutcomeSpec,
    Trait,
    WorldSpec,
)

Range = tuple[float, float]
OutcomeWords = tuple[str, Range, tuple[tuple[str, str], ...]]
"""An outcome type's name, its value range and the offers (name, description) that bring it."""


@dataclass(frozen=True, slots=True)
class Domain:
    """The words of a kind of business: what its fields, offers and outcomes are called. The
    primary outcome's first offer is the plain one, the second its discounted variant."""

    name: str
    clock: tuple[str, float, tuple[float, ...]]  # field, unit in days, term lengths in months
    primary: OutcomeWords
    side: tuple[OutcomeWords, ...]
    numeric: tuple[tuple[str, NumericKind, float], ...]  # name, kind, typical size
    categorical: tuple[tuple[str, tuple[str, ...]], ...]
    repeatable: tuple[str, ...]  # side outcomes bought again and again (add-ons), not once (products)


MONTH_DAYS = 365.25 / 12
DOMAINS = (
    Domain(
        "mobile",
        ("months_to_contract_end", MONTH_DAYS, (12.0, 24.0)),
        (
            "contract_renewal",
            (150.0, 300.0),
            (
                ("renewal", "Contract renewal"),
                ("renewal_discount", "Renewal with a discount"),
                ("renewal_handset", "Renewal with a new handset"),
            ),
        ),
        (
            (
                "bundle_activation",
                (20.0, 80.0),
                (
                    ("data_upsell", "A bigger data bundle"),
                    ("roaming_pack", "Roaming pack"),
                    ("streaming_addon", "Streaming add-on"),
                ),
            ),
            (
                "line_added",
                (60.0, 160.0),
                (("family_line", "An extra line"), ("sim_only", "SIM-only deal"), ("tablet_line", "A tablet data line")),
            ),
        ),
        (
            ("monthly_spend", "skewed", 30.0),
            ("data_usage_ratio", "rate", 0.0),
            ("app_sessions_30d", "count", 8.0),
            ("email_open_rate", "rate", 0.0),
            ("support_calls_90d", "count", 0.8),
            ("handset_age_months", "tenure", 18.0),
            ("age", "age", 42.0),
            ("dropped_calls_30d", "count", 1.5),
        ),
        (
            ("plan", ("small", "medium", "large", "unlimited")),
            ("device", ("ios", "android", "other")),
            ("region", ("north", "east", "south", "west")),
            ("has_app", ("yes", "no")),
        ),
        ("bundle_activation",),
    ),
    Domain(
        "insurance",
        ("months_to_policy_renewal", MONTH_DAYS, (12.0,)),
        (
            "policy_renewal",
            (100.0, 250.0),
            (
                ("renewal", "Policy renewal"),
                ("renewal_discount", "Renewal with a loyalty discount"),
                ("renewal_plus", "Renewal with extended cover"),
            ),
        ),
        (
            (
                "cross_sale",
                (80.0, 220.0),
                (
                    ("home_insurance", "Home insurance"),
                    ("travel_insurance", "Annual travel insurance"),
                    ("pet_insurance", "Pet insurance"),
                ),
            ),
            (
                "cover_upgrade",
                (20.0, 70.0),
                (("glass_cover", "Glass cover"), ("legal_cover", "Legal assistance"), ("roadside_cover", "Roadside assistance")),
            ),
        ),
        (
            ("annual_premium", "skewed", 600.0),
            ("claims_5y", "count", 0.7),
            ("age", "age", 48.0),
            ("portal_logins_90d", "count", 3.0),
            ("email_open_rate", "rate", 0.0),
            ("vehicle_age_years", "skewed", 7.0),
            ("no_claim_years", "count", 5.0),
        ),
        (
            ("product", ("car", "home", "life")),
            ("acquired_via", ("broker", "online", "agent")),
            ("region", ("north", "east", "south", "west", "central")),
            ("has_app", ("yes", "no")),
        ),
        (),
    ),
    Domain(
        "energy",
        ("months_to_contract_end", MONTH_DAYS, (12.0, 36.0)),
        (
            "contract_extension",
            (80.0, 200.0),
            (
                ("extension", "Contract extension"),
                ("extension_discount", "Extension with a discount"),
                ("fixed_price_extension", "Fixed-price extension"),
            ),
        ),
        (
            (
                "product_sale",
                (150.0, 400.0),
                (("solar_panels", "Solar panels"), ("heat_pump", "Heat pump"), ("home_battery", "Home battery")),
            ),
            (
                "service_signup",
                (15.0, 60.0),
                (
                    ("smart_thermostat", "Smart thermostat"),
                    ("green_upgrade", "Green energy upgrade"),
                    ("boiler_service", "Boiler service plan"),
                ),
            ),
        ),
        (
            ("monthly_usage_kwh", "skewed", 250.0),
            ("monthly_bill", "skewed", 90.0),
            ("online_readings_12m", "count", 4.0),
            ("house_age_years", "skewed", 35.0),
            ("email_open_rate", "rate", 0.0),
            ("late_payments_12m", "count", 0.5),
            ("age", "age", 50.0),
        ),
        (
            ("dwelling", ("apartment", "terraced", "detached")),
            ("tariff", ("fixed", "variable")),
            ("region", ("north", "east", "south", "west")),
            ("has_app", ("yes", "no")),
        ),
        (),
    ),
    Domain(
        "bank",
        ("months_to_deposit_maturity", MONTH_DAYS, (12.0, 24.0)),
        (
            "deposit_rollover",
            (50.0, 150.0),
            (
                ("rollover", "Deposit rollover"),
                ("rollover_bonus", "Rollover at a bonus rate"),
                ("long_deposit", "A longer-term deposit"),
            ),
        ),
        (
            (
                "loan_signed",
                (150.0, 450.0),
                (
                    ("personal_loan", "Personal loan"),
                    ("car_loan", "Car loan"),
                    ("home_improvement_loan", "Home improvement loan"),
                ),
            ),
            (
                "card_activation",
                (20.0, 80.0),
                (("credit_card", "Credit card"), ("premium_card", "Premium card"), ("travel_card", "Travel card")),
            ),
        ),
        (
            ("balance", "skewed", 2500.0),
            ("monthly_income", "skewed", 2800.0),
            ("card_transactions_30d", "count", 25.0),
            ("app_logins_30d", "count", 10.0),
            ("age", "age", 44.0),
            ("savings_ratio", "rate", 0.0),
            ("overdraft_days_90d", "count", 1.0),
        ),
        (
            ("segment", ("student", "mass", "affluent")),
            ("employment", ("employed", "self_employed", "retired")),
            ("region", ("north", "east", "south", "west")),
            ("has_app", ("yes", "no")),
        ),
        (),
    ),
    Domain(
        "streaming",
        ("days_to_subscription_end", 1.0, (6.0, 12.0)),
        (
            "subscription_renewal",
            (60.0, 150.0),
            (
                ("renewal", "Subscription renewal"),
                ("renewal_discount", "Renewal at a discount"),
                ("annual_plan", "Switch to an annual plan"),
            ),
        ),
        (
            (
                "addon_purchase",
                (5.0, 30.0),
                (("sports_pack", "Sports pack"), ("kids_pack", "Kids pack"), ("music_pack", "Music pack")),
            ),
            (
                "tier_upgrade",
                (20.0, 60.0),
                (("premium_tier", "Premium tier"), ("family_tier", "Family tier"), ("4k_tier", "4K tier")),
            ),
        ),
        (
            ("hours_watched_30d", "skewed", 25.0),
            ("sessions_30d", "count", 14.0),
            ("titles_rated", "count", 6.0),
            ("email_open_rate", "rate", 0.0),
            ("age", "age", 36.0),
            ("watchlist_size", "count", 12.0),
            ("completion_rate", "rate", 0.0),
        ),
        (
            ("plan", ("basic", "standard", "premium")),
            ("device", ("tv", "mobile", "web")),
            ("region", ("north", "east", "south", "west")),
            ("has_app", ("yes", "no")),
        ),
        ("addon_purchase",),
    ),
)


@dataclass(frozen=True, slots=True)
class ChannelWords:
    name: str
    weight: float  # how likely a world has it
    cost: Range
    complaint: Range
    deferred: bool
    unsubscribable: bool
    touchpoint: str | None = None  # inbound: shown at this touchpoint only


CHANNELS = (
    ChannelWords("email", 3.0, (0.01, 0.08), (0.5, 1.0), True, True),
    ChannelWords("sms", 2.0, (0.05, 0.15), (0.8, 1.3), True, True),
    ChannelWords("app_push", 1.5, (0.0, 0.02), (0.4, 0.8), True, True),
    ChannelWords("outbound_call", 1.0, (2.0, 6.0), (2.0, 3.0), True, False),
    ChannelWords("direct_mail", 0.7, (0.5, 1.5), (0.2, 0.5), True, False),
    ChannelWords("web_banner", 1.0, (0.0, 0.01), (0.05, 0.2), False, False, "web"),
    ChannelWords("in_app_message", 0.7, (0.0, 0.01), (0.1, 0.3), False, False, "app"),
)
SLOTS = (("morning", "09:00"), ("lunch", "12:30"), ("afternoon", "15:00"), ("evening", "19:30"))
TOUCHPOINTS = (("web", 0.30), ("app", 0.30), ("email_platform", 0.15), ("call_centre", 0.10), ("shop", 0.05), ("campaign", 0.10))
TIMEZONES = ("Europe/Amsterdam", "Europe/Berlin", "Europe/London", "Europe/Madrid")
PRIMARY_WINDOWS = (14.0, 21.0, 30.0, 45.0, 60.0)
SIDE_WINDOWS = (3.0, 7.0, 14.0, 21.0, 30.0)
COMPLAINT_WINDOWS = (1.0, 2.0, 3.0, 7.0, 14.0)
UNSUBSCRIBE_WINDOWS = (1.0, 2.0, 3.0, 7.0)
MAX_ACTIONS = 64  # a catalog a marketer would run: larger ones lose slots
QUANTILE_SAMPLE = 4000


def _uniform(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def sample_field(field: NumericField, rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` values of a numeric field at the world's start (not the clock: see ``Clock``)."""
    if field.kind in ("skewed", "tenure"):
        values = np.exp(rng.normal(field.a, field.b, n))
        if field.kind == "tenure":
            values = values.clip(0.5, 240.0)
    elif field.kind == "count":
        values = rng.poisson(rng.gamma(field.a, field.b, n)).astype(np.float64)
    elif field.kind == "rate":
        values = rng.beta(field.a, field.b, n)
    elif field.kind == "age":
        values = rng.normal(field.a, field.b, n).clip(18.0, 90.0)
    else:
        raise ValueError(f"field.kind: expected a field with a start distribution, got {field.kind!r}")
    return np.round(values, field.digits)


def _numeric_field(name: str, kind: NumericKind, size: float, rng: np.random.Generator) -> NumericField:
    if kind == "skewed":
        return NumericField(name, kind, math.log(size * _uniform(rng, (0.7, 1.4))), _uniform(rng, (0.3, 0.8)), 2)
    if kind == "count":
        shape = _uniform(rng, (0.8, 3.0))
        return NumericField(name, kind, shape, size * _uniform(rng, (0.7, 1.4)) / shape, 0)
    if kind == "rate":
        return NumericField(name, kind, _uniform(rng, (1.0, 5.0)), _uniform(rng, (1.5, 8.0)), 2)
    if kind == "age":
        return NumericField(name, kind, size + _uniform(rng, (-5.0, 5.0)), _uniform(rng, (11.0, 16.0)), 0)
    return NumericField(name, kind, math.log(size * _uniform(rng, (0.7, 1.5))), _uniform(rng, (0.6, 1.1)), 1)


class _TraitDrawer:
    """Draws traits over the driver fields: thresholds at random quantiles of a numeric field's
    start distribution, or a random proper subset of a categorical field's levels."""

    def __init__(
        self, rng: np.random.Generator, numeric: Sequence[NumericField], categorical: Sequence[CategoricalField]
    ) -> None:
        self._rng = rng
        self._numeric = list(numeric)
        self._categorical = list(categorical)
        sample_rng = np.random.default_rng([int(rng.integers(2**31)), 0x9A])
        self._samples = {f.name: sample_field(f, sample_rng, QUANTILE_SAMPLE) for f in numeric}

    def condition(self) -> Condition:
        rng = self._rng
        if self._categorical and rng.random() < 0.3:
            field = self._categorical[int(rng.integers(len(self._categorical)))]
            size = int(rng.integers(1, len(field.levels)))
            levels = tuple(sorted(rng.choice(field.levels, size=size, replace=False).tolist()))
            return Condition(field.name, levels=levels)
        numeric = self._numeric[int(rng.integers(len(self._numeric)))]
        threshold = float(np.quantile(self._samples[numeric.name], _uniform(rng, (0.25, 0.75))))
        return Condition(numeric.name, threshold=round(threshold, numeric.digits), below=bool(rng.random() < 0.5))

    def trait(self, inside: Range, outside: Range, *, conjunction: float = 0.5) -> Trait:
        rng = self._rng
        first = self.condition()
        conditions = [first]
        if rng.random() < conjunction:
            second = self.condition()
            if second.field != first.field:
                conditions.append(second)
        return Trait(tuple(conditions), _uniform(rng, inside), _uniform(rng, outside), _uniform(rng, (0.3, 1.0)))


def _delay(rng: np.random.Generator, window: float, margin: float, low: Range, high: Range) -> tuple[float, float, float, float]:
    """Delays inside the window: at least ``low`` days, at most a share of the room the window leaves."""
    minimum = _uniform(rng, low)
    room = window - margin
    maximum = max(minimum + 0.1, min(room * 0.95, _uniform(rng, high)))
    return (round(minimum, 3), round(maximum, 3), round(_uniform(rng, (1.0, 2.0)), 2), round(_uniform(rng, (1.5, 3.5)), 2))


def _window(rng: np.random.Generator, choices: tuple[float, ...], minimum: float) -> float:
    """A window from ``choices``, at least ``minimum`` days (the smallest choice above it)."""
    window = float(rng.choice(choices))
    return window if window >= minimum else float(math.ceil(minimum))


def draw_spec(seed: int, attempt: int = 0) -> WorldSpec:
    """The world definition of ``seed`` (``attempt``: the next draw when calibration rejects one).
    The same arguments give the same spec."""
    rng = np.random.default_rng([seed, attempt, 0x5BEC])
    domain = DOMAINS[int(rng.integers(len(DOMAINS)))]

    # Visible fields: the clock, tenure, some of the domain's numeric and categorical fields.
    picked = rng.choice(len(domain.numeric), size=int(rng.integers(3, 7)), replace=False)
    numeric = [_numeric_field(*domain.numeric[int(k)], rng) for k in sorted(picked.tolist())]
    numeric.insert(0, _numeric_field("tenure_months", "tenure", 40.0, rng))
    clock_field, clock_unit, terms = domain.clock
    clock_digits = 0 if clock_unit == 1.0 else 2
    picked = rng.choice(len(domain.categorical), size=int(rng.integers(2, 5)), replace=False)
    categorical = []
    for k in sorted(picked.tolist()):
        name, levels = domain.categorical[k]
        categorical.append(CategoricalField(name, levels, tuple(float(w) for w in rng.dirichlet(np.full(len(levels), 3.0)))))
    # One or two fields nothing depends on; the rest may drive traits and channel preferences.
    candidates = [f.name for f in numeric[1:]] + [f.name for f in categorical if f.name != "has_app"]
    irrelevant = tuple(sorted(rng.choice(candidates, size=int(rng.integers(1, 3)), replace=False).tolist()))
    drawer = _TraitDrawer(
        rng, [f for f in numeric if f.name not in irrelevant], [f for f in categorical if f.name not in irrelevant]
    )
    categorical_names = [f.name for f in categorical]
    non_personal = tuple(
        sorted(rng.choice(categorical_names, size=min(len(categorical_names), int(rng.integers(1, 3))), replace=False).tolist())
    )

    # Channels and send slots.
    weights = np.array([c.weight for c in CHANNELS])
    count = int(rng.integers(2, 6))
    chosen = [CHANNELS[int(k)] for k in sorted(rng.choice(len(CHANNELS), size=count, replace=False, p=weights / weights.sum()))]
    if not any(c.deferred for c in chosen):
        chosen[0] = CHANNELS[0]
    inbound = any(not c.deferred for c in chosen)
    if rng.random() < 0.15:
        named: list[tuple[str, str]] = []  # everything goes out at once
    else:
        picked = rng.choice(len(SLOTS), size=int(rng.integers(1, 4 if inbound else 5)), replace=False)
        named = [SLOTS[int(k)] for k in sorted(picked.tolist())]
    margin = DELIVERY_MARGIN_DAYS if named else 0.0

    # Outcome types: the primary one (the clock's), up to two side conversions, complaints, maybe unsubscribes.
    sides = [
        domain.side[int(k)]
        for k in sorted(rng.choice(len(domain.side), size=int(rng.choice(3, p=[0.2, 0.45, 0.35])), replace=False).tolist())
    ]
    outcomes: list[OutcomeSpec] = []
    term_months, far_months = float(rng.choice(terms)), _uniform(rng, (2.5, 5.0))

    def repeat_days(index: int, name: str) -> float:
        """The clock's type: not again within the term's months before its receptive ones; a side
        type: again after 1-4 months if customers buy it repeatedly, else once."""
        if index == 0:
            return (term_months - far_months) * MONTH_DAYS
        return _uniform(rng, (30.0, 120.0)) if name in domain.repeatable else math.inf

    drawer_inside, drawer_outside = (0.3, 0.7), (0.02, 0.12)
    for index, (name, value_range, _) in enumerate([domain.primary, *sides]):
        window = _window(rng, PRIMARY_WINDOWS if index == 0 else SIDE_WINDOWS, margin + 1.0)
        outcomes.append(
            OutcomeSpec(
                name,
                "conversion",
                round(_uniform(rng, value_range)),
                window,
                _delay(rng, window, margin, (0.02, 1.0), (window * 0.3, window * 0.8)),
                repeat_days=repeat_days(index, name),
                sure=drawer.trait(drawer_inside, drawer_outside),
            )
        )
    window = _window(rng, COMPLAINT_WINDOWS, margin + 0.5)
    outcomes.append(
        OutcomeSpec(
            "complaint",
            "complaint",
            -round(_uniform(rng, (20.0, 80.0))),
            window,
            _delay(rng, window, margin, (0.0, 0.2), (0.5, 3.0)),
            organic_rate=_uniform(rng, (0.002, 0.008)),
        )
    )
    if any(c.unsubscribable for c in chosen) and rng.random() < 0.65:
        window = _window(rng, UNSUBSCRIBE_WINDOWS, margin + 0.5)
        outcomes.append(
            OutcomeSpec(
                "unsubscribe",
                "unsubscribe",
                -round(_uniform(rng, (5.0, 40.0))),
                window,
                _delay(rng, window, margin, (0.0, 0.05), (0.3, 2.0)),
            )
        )
    primary = outcomes[0]

    # Offers: the primary's plain offer, maybe its discounted and premium variants, then side offers.
    wanted = min(int(rng.integers(3, 9)), 3 + 3 * len(sides))
    primary_count = int(rng.integers(max(1, wanted - 3 * len(sides)), min(3, wanted - len(sides)) + 1))
    plan: list[tuple[OutcomeWords, int]] = [(domain.primary, primary_count)]
    left = wanted - primary_count
    for k, side in enumerate(sides):
        plan.append((side, left // len(sides) + (1 if k < left % len(sides) else 0)))
    offers: list[OfferSpec] = []
    plain: OfferSpec | None = None
    for (type_name, _, offer_words), count in plan:
        value = next(o.value for o in outcomes if o.name == type_name)
        is_primary = type_name == primary.name
        for k in range(count):
            name, description = offer_words[k]
            if is_primary and k == 1 and plain is not None:
                offers.append(
                    OfferSpec(
                        name,
                        description,
                        type_name,
                        round(value * _uniform(rng, (0.1, 0.25)), 2),
                        plain.responder,
                        plain.p_responder,
                        plain.p_other,
                        True,
                        discount_of=plain.name,
                    )
                )
                continue
            cost_share = (0.0, 0.01) if is_primary and k == 0 else (0.05, 0.15) if is_primary else (0.0, 0.1)
            responder = drawer.trait((0.5, 0.9), (0.2, 0.5) if is_primary and k == 0 else (0.03, 0.2))
            offer = OfferSpec(
                name,
                description,
                type_name,
                round(value * _uniform(rng, cost_share), 2),
                responder,
                _uniform(rng, (0.25, 0.6) if is_primary else (0.15, 0.5)),
                _uniform(rng, (0.005, 0.04)),
                is_primary,
            )
            offers.append(offer)
            if is_primary and k == 0:
                plain = offer

    # Channels: who they reach, what they carry, in which slots.
    touchpoint_names = [name for name, _ in TOUCHPOINTS]
    picked = rng.choice(len(TOUCHPOINTS), size=int(rng.integers(2, 6)), replace=False)
    touchpoints = {touchpoint_names[int(k)] for k in picked.tolist()} | {c.touchpoint for c in chosen if c.touchpoint}
    has_app = "has_app" in categorical_names
    offer_names = [o.name for o in offers]
    carried = [[name for name in offer_names if rng.random() < 0.8] for _ in chosen]
    for name in offer_names:
        if not any(name in c for c in carried):
            carried[int(rng.integers(len(chosen)))].append(name)
    for c in carried:
        if not c:
            c.append(offer_names[int(rng.integers(len(offer_names)))])
    slot_sets: list[list[str]] = []
    for listed in chosen:
        if not listed.deferred or not named:
            slot_sets.append(["now"])
            continue
        size = int(rng.integers(1, min(3, len(named)) + 1))
        slot_sets.append(sorted(rng.choice([n for n, _ in named], size=size, replace=False).tolist()))
    while sum(len(o) * len(s) for o, s in zip(carried, slot_sets, strict=True)) > MAX_ACTIONS:
        widest = max(range(len(chosen)), key=lambda k: len(carried[k]) * len(slot_sets[k]) if len(slot_sets[k]) > 1 else -1)
        slot_sets[widest].pop()
    used_slots = {s for slots in slot_sets for s in slots}
    named = [(n, at) for n, at in named if n in used_slots]
    channels = []
    for listed, offers_on, slots_on in zip(chosen, carried, slot_sets, strict=True):
        signal = drawer.condition() if rng.random() < 0.7 else None
        channels.append(
            ChannelSpec(
                listed.name,
                round(_uniform(rng, listed.cost), 3),
                listed.deferred,
                tuple(slots_on),
                tuple(n for n in offer_names if n in offers_on),
                _uniform(rng, (0.4, 0.7) if listed.name == "outbound_call" else (0.2, 0.7)),
                _uniform(rng, listed.complaint),
                listed.unsubscribable,
                0.0 if listed.touchpoint else _uniform(rng, (0.0, 0.12)),
                float(rng.normal(0.0, 0.8)),
                signal,
                _uniform(rng, (1.0, 2.5)) if signal else 0.0,
                listed.touchpoint,
                ("has_app", "yes") if has_app and listed.name in ("app_push", "in_app_message") else None,
            )
        )
    ordered_touchpoints = tuple(name for name in touchpoint_names if name in touchpoints)
    touchpoint_weight = dict(TOUCHPOINTS)

    # Arrivals: several decisions per customer inside the longest window.
    longest = max(o.window_days for o in outcomes)
    per_window = _uniform(rng, (1.5, 5.0))
    visits_per_day = min(0.5, per_window / longest)
    return WorldSpec(
        seed=seed,
        attempt=attempt,
        domain=domain.name,
        timezone=str(rng.choice(TIMEZONES)),
        touchpoints=ordered_touchpoints,
        touchpoint_weights=tuple(touchpoint_weight[t] for t in ordered_touchpoints),
        numeric=(NumericField(clock_field, "clock", digits=clock_digits), *numeric),
        categorical=tuple(categorical),
        non_personal=non_personal,
        irrelevant=irrelevant,
        clock=Clock(
            field=clock_field,
            outcome=primary.name,
            unit_days=clock_unit,
            term_months=term_months,
            near_months=_uniform(rng, (0.5, 1.5)),
            far_months=far_months,
            floor=_uniform(rng, (0.05, 0.3)),
            early_days=_uniform(rng, (20.0, 50.0)),
            late_days=_uniform(rng, (5.0, 25.0)),
            lapsed_months=_uniform(rng, (0.0, 6.0)),
        ),
        outcomes=tuple(outcomes),
        offers=tuple(offers),
        channels=tuple(channels),
        slots=tuple(named),
        slot_weights=tuple(float(w) for w in rng.dirichlet(np.full(max(1, len(named)), 3.0))),
        lost=drawer.trait((0.15, 0.4), (0.02, 0.1)),
        price_sensitive=drawer.trait((0.3, 0.6), (0.03, 0.12)),
        complainer=drawer.trait((0.25, 0.5), (0.03, 0.1)),
        plain_for_price_sensitive=_uniform(rng, (0.1, 0.3)),
        discount_lift=_uniform(rng, (1.05, 1.2)),
        susceptibility_sd=_uniform(rng, (0.15, 0.4)),
        complaint_base=_uniform(rng, (0.001, 0.005)),
        complaint_prone=_uniform(rng, (0.015, 0.04)),
        complaint_per_7d=_uniform(rng, (0.6, 1.5)),
        complaint_per_30d=_uniform(rng, (0.1, 0.4)),
        unsubscribe_base=_uniform(rng, (0.001, 0.006)),
        fatigue=_uniform(rng, (0.6, 0.9)),
        annoyed=_uniform(rng, (0.2, 0.5)),
        annoyed_days=60.0,
        off_slot=_uniform(rng, (0.5, 0.9)),
        now_slot=_uniform(rng, (0.6, 1.0)),
        preferred_hours_share=(0.5, 0.85),
        personalisation=_uniform(rng, (0.65, 0.95)),
        needs_days=(_uniform(rng, (60.0, 365.0)), _uniform(rng, (365.0, 1095.0))),
        repeat_spread=_uniform(rng, (0.2, 0.5)),
        visits_per_day=visits_per_day,
        contact_cap=(int(rng.integers(1, 4)), 7.0),
        target_share=_uniform(rng, (0.25, 0.45)),
    )
