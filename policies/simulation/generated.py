"""A world drawn from a seed: a customer population of a ``WorldSpec`` and how it responds.

Customers are drawn from the spec and a ``draw`` number (the same world definition, another
population: the yardstick learns on other draws than the one it is judged on). Each has visible
fields, some of which drive hidden traits through noisy thresholds and conjunctions: who converts
anyway (per outcome type), who responds to which offer, who is lost, who needs a discount, who
complains, which channel and send slot they prefer, how susceptible they are. What they do:

* An offer converts with chance (responder ? p_responder : p_other) x susceptibility (x the clock's
  receptiveness for the clock's offers; price-sensitive customers take a plain offer that has a
  discounted variant only rarely, the variant fully) x the effect scale (capped), times the channel's
  response (1 on the preferred channel, its reach elsewhere; less after recent contacts and for a
  while after a complaint) and the slot's (1 in the preferred slot). Nobody converts to a type they
  convert to anyway, or while one is on its way; the lost convert to nothing. The clock's type
  converts once a term. For the other types a customer's need arises at a moment of their own
  (some before the start, most after it: needs keep coming, not only a backlog to harvest), and a
  one-off purchase is made once, a repeatable one again some months later.
* Every contact risks a complaint (more for complainers, on some channels, and with every contact of
  the last 7 and 30 days) and, on channels one can leave, an unsubscribe that withdraws the
  channel's contact consent.
* Customers who convert anyway do so on their own: around the end of each term for the clock's type
  (which restarts the term), when their need arises (and again, if repeatable) for the others.

How a decision is valued and what the world shares with the telecom world: ``base``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from bandit.config import BreinConfig
from policies.simulation.base import (
    DAY,
    DEFAULT_START,
    MONTH,
    BaseWorld,
    Components,
    Schedule,
    Visits,
    daily_arrivals,
    slot_response,
)
from policies.simulation.draw import sample_field
from policies.simulation.worldspec import Condition, Trait, WorldSpec

MAX_CONVERSION = 0.9
MAX_COMPLAINT, MAX_UNSUBSCRIBE = 0.9, 0.5
BoolArray = npt.NDArray[np.bool_]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


class GeneratedWorld(BaseWorld):
    """``customers`` customers of draw ``draw`` of the world ``spec``, for the actions of ``config``
    (the config ``user_config`` writes for the spec, possibly with overrides: offers, channels or
    slots the spec does not know bring nothing)."""

    def __init__(
        self,
        spec: WorldSpec,
        config: BreinConfig,
        customers: int,
        draw: int = 0,
        *,
        start: float = DEFAULT_START,
        horizon_days: float = 730.0,
    ) -> None:
        self.spec = spec
        self.seed = spec.seed
        self.draw = draw
        super().__init__(
            config,
            customers,
            start=start,
            horizon_days=horizon_days,
            conversions={o.name: o.outcome for o in spec.offers},
            complaint_type=next(o.name for o in spec.outcomes if o.kind == "complaint"),
            unsubscribe_type=next((o.name for o in spec.outcomes if o.kind == "unsubscribe"), None),
            delays={o.name: o.delay for o in spec.outcomes},
            id_prefix=f"{spec.name}-{draw}",
        )
        self._index_catalog()
        self._draw_population()
        self._organic_outcomes()

    # ----------------------------------------------------------------------------- set-up

    def _index_catalog(self) -> None:
        spec = self.spec
        self._types = [o.name for o in spec.outcomes if o.kind == "conversion"]
        self._type_index = {name: k for k, name in enumerate(self._types)}
        self._repeat = [spec.outcome(name).repeat_days * DAY for name in self._types]
        self._clock_type = self._type_index[spec.clock.outcome]
        spec_offers = {o.name: k for k, o in enumerate(spec.offers)}
        discounted = {o.discount_of for o in spec.offers if o.discount_of}
        # Per catalog offer: (spec offer, its type, its responder column, price factor if sensitive, if not).
        self._offer_rules: list[tuple[int, int, int, float, float] | None] = []
        for name in self._offers:
            k = spec_offers.get(name)
            if k is None:
                self._offer_rules.append(None)
                continue
            offer = spec.offers[k]
            column = spec_offers[offer.discount_of] if offer.discount_of else k
            if offer.discount_of:
                factors = (1.0, spec.discount_lift)
            elif name in discounted:
                factors = (spec.plain_for_price_sensitive, 1.0)
            else:
                factors = (1.0, 1.0)
            self._offer_rules.append((k, self._type_index[offer.outcome], column, *factors))
        spec_channels = {c.name: k for k, c in enumerate(spec.channels)}
        self._channel_spec = [spec_channels.get(name, -1) for name in self._channels]
        spec_slots = [name for name, _ in spec.slots]
        self._slot_kind = [spec_slots.index(s) if s in spec_slots else (-2 if s == "now" else -1) for s in self._slots]
        self._complaint_value = self._values[self._complaint_type]
        self._unsubscribe_value = self._values[self._unsubscribe_type] if self._unsubscribe_type else 0.0

    def _holds(self, condition: Condition, values: Mapping[str, np.ndarray]) -> BoolArray:
        value = values[condition.field]
        if condition.levels:
            levels = self._levels[condition.field]
            return np.isin(value, [levels.index(level) for level in condition.levels])
        return value < condition.threshold if condition.below else value >= condition.threshold

    def _trait(self, trait: Trait, values: Mapping[str, np.ndarray], rng: np.random.Generator) -> BoolArray:
        n = self.customers
        inside = np.ones(n, dtype=bool)
        for condition in trait.conditions:
            inside &= self._holds(condition, values)
        logit = np.where(inside, _logit(trait.inside), _logit(trait.outside)) + rng.normal(0.0, trait.noise, n)
        return np.asarray(rng.random(n) < _sigmoid(logit))

    def _draw_population(self) -> None:
        spec, n = self.spec, self.customers
        rng = np.random.default_rng([spec.seed, self.draw, n, 0x9E0])
        self._levels = {f.name: f.levels for f in spec.categorical}
        values: dict[str, np.ndarray] = {}
        for field in spec.numeric:
            if field.kind != "clock":
                values[field.name] = sample_field(field, rng, n)
        for categorical in spec.categorical:
            values[categorical.name] = rng.choice(len(categorical.levels), size=n, p=np.asarray(categorical.weights))

        self._lost = self._trait(spec.lost, values, rng)
        self._price_sensitive = self._trait(spec.price_sensitive, values, rng)
        self._complainer = self._trait(spec.complainer, values, rng)
        sure = [spec.outcome(name).sure for name in self._types]
        if any(trait is None for trait in sure):
            raise ValueError("spec.outcomes: expected a 'sure' trait for every conversion type")
        self._sure = np.column_stack([self._trait(trait, values, rng) for trait in sure if trait is not None])
        self._responder = np.column_stack([self._trait(o.responder, values, rng) for o in spec.offers])
        self._susceptibility = np.exp(rng.normal(0.0, spec.susceptibility_sd, n))
        # When each customer's need for each type arises (the clock's type: always there) and how
        # much sooner or later than others they buy a repeatable one again.
        before, after = spec.needs_days
        self._ready = self.start + rng.uniform(-before, after, (n, len(self._types))) * DAY
        self._ready[:, self._clock_type] = -math.inf
        self._repeat_factor = np.exp(rng.normal(0.0, spec.repeat_spread, (n, len(self._types))))

        # Channel preference: a noisy choice, likelier where the channel's signal holds; a gated
        # channel (the app) only for those who have it.
        logits = np.column_stack(
            [
                c.preference + (c.signal_boost * self._holds(c.signal, values) if c.signal else 0.0) + np.zeros(n)
                for c in spec.channels
            ]
        )
        logits += rng.gumbel(size=logits.shape)
        reachable = np.column_stack([self._gate(c.gate, values) for c in spec.channels])
        logits[~reachable] = -np.inf
        self._pref_channel = logits.argmax(axis=1)
        self._channel_fit = (
            np.where(
                np.arange(len(spec.channels))[None, :] == self._pref_channel[:, None],
                1.0,
                np.array([c.reach for c in spec.channels])[None, :],
            )
            * reachable
        )
        slots = len(spec.slots)
        self._pref_slot = rng.choice(slots, size=n, p=np.asarray(spec.slot_weights)) if slots else np.full(n, -1)

        # The clock: customers who convert anyway end their term some days after their first
        # organic conversion; the others anywhere in their term, some already past it.
        clock = spec.clock
        term = clock.term_months * MONTH
        cycles = int(self.horizon_days * DAY / term) + 2
        self._organic_offsets = rng.uniform(-clock.early_days, clock.late_days, (n, cycles))
        first_organic = self.start + rng.uniform(0.0, clock.term_months, n) * MONTH
        sure_clock = self._sure[:, self._clock_type]
        self._clock_end = np.where(
            sure_clock,
            first_organic - self._organic_offsets[:, 0] * DAY,
            self.start + rng.uniform(-clock.lapsed_months, clock.term_months, n) * MONTH,
        )

        self._personalisation = rng.random(n) < spec.personalisation
        self._denied = np.column_stack([rng.random(n) < c.contact_denied for c in spec.channels])

        hours = np.array([_hours(at) for _, at in spec.slots] or [0.0])
        pref = self._pref_slot.clip(0)
        share = rng.uniform(*spec.preferred_hours_share, n) * (self._pref_slot >= 0)
        weights = np.tile(np.array(spec.touchpoint_weights), (n, 1)) * rng.gamma(4.0, 0.25, (n, len(spec.touchpoints)))
        if "app" in spec.touchpoints and "has_app" in values:
            weights[values["has_app"] != self._levels["has_app"].index("yes"), spec.touchpoints.index("app")] = 0.0
        cdf = np.cumsum(weights, axis=1)
        cdf /= cdf[:, -1:]
        self._visits = Visits(
            rng.gamma(2.0, spec.visits_per_day / 2.0, n),
            share,
            (hours[pref] - 1.5).clip(7.0, 22.0),
            (hours[pref] + 2.5).clip(8.0, 23.0),
            cdf,
        )

        # Hot per-customer values as Python lists: indexing a list is cheaper than a numpy scalar.
        self._numeric_now = [
            (f.name, f.kind, f.digits, values[f.name].tolist() if f.kind != "clock" else None) for f in spec.numeric
        ]
        self._categorical_now = [(f.name, f.levels, values[f.name].tolist()) for f in spec.categorical]
        self._clock_end_list = self._clock_end.tolist()
        self._lost_list = self._lost.tolist()
        self._ps_list = self._price_sensitive.tolist()
        self._complainer_list = self._complainer.tolist()
        self._sure_list = self._sure.tolist()
        self._responder_list = self._responder.tolist()
        self._ready_list = self._ready.tolist()
        self._repeat_factor_list = self._repeat_factor.tolist()
        self._susceptibility_list = self._susceptibility.tolist()
        self._channel_fit_list = self._channel_fit.tolist()
        self._pref_slot_list = self._pref_slot.tolist()

    def _gate(self, gate: tuple[str, str] | None, values: Mapping[str, np.ndarray]) -> BoolArray:
        if gate is None:
            return np.ones(self.customers, dtype=bool)
        field, level = gate
        return np.asarray(values[field] == self._levels[field].index(level))

    def _organic_outcomes(self) -> None:
        spec = self.spec
        rng = np.random.default_rng([spec.seed, self.draw, self.customers, 0x0E6A])
        end = self.start + self.horizon_days * DAY
        term = spec.clock.term_months * MONTH
        months = self.horizon_days * DAY / MONTH
        organic: list[tuple[float, int, str]] = []
        for i in np.flatnonzero(self._sure[:, self._clock_type]).tolist():
            clock_end = self._clock_end_list[i]
            for cycle in range(self._organic_offsets.shape[1]):
                at = clock_end + float(self._organic_offsets[i, cycle]) * DAY
                if at > end:
                    break
                organic.append((at, i, spec.clock.outcome))
                clock_end = at + term
        for k, name in enumerate(self._types):
            if k == self._clock_type:
                continue
            repeat = self._repeat[k]
            for i in np.flatnonzero(self._sure[:, k]).tolist():
                at = self._ready_list[i][k]
                while at <= end:
                    if at >= self.start:
                        organic.append((at, i, name))
                    at += repeat * self._repeat_factor_list[i][k]
        complaint = spec.outcome(self._complaint_type)
        counts = rng.poisson(complaint.organic_rate * months, self.customers)
        who = np.repeat(np.arange(self.customers), counts)
        times = self.start + rng.uniform(0.0, self.horizon_days * DAY, len(who))
        organic.extend((t, i, complaint.name) for t, i in zip(times.tolist(), who.tolist(), strict=True))
        self._schedule_organic(organic)

    # ----------------------------------------------------------------------------- arrivals

    def arrivals(self, start: float, days: float) -> Schedule:
        """Every customer's visits in ``[start, start + days)``, in time order: each at their own
        rate, at the touchpoints they use, more often than not in the hours of their preferred slot."""
        self._check_window(start, days)
        return daily_arrivals((self.spec.seed, self.draw), self._zone, start, days, self._visits, self.spec.touchpoints)

    # ----------------------------------------------------------------------------- what Brein sees

    def _clock_end_at(self, customer: int, t: float) -> float:
        """The end of the customer's term at ``t``: restarted by every conversion of the clock's type."""
        end: float = self._clock_end_list[customer]
        record = self._records.get(customer)
        if record is not None:
            clock_type, term = self.spec.clock.outcome, self.spec.clock.term_months * MONTH
            for scheduled in record.outcomes:
                outcome = scheduled.outcome
                if outcome.type == clock_type and outcome.event_time <= t and scheduled.decided_at <= t:
                    end = max(end, outcome.event_time + term)
        return end

    def context(self, customer: int, t: float) -> tuple[dict[str, float], dict[str, str]]:
        """The request context at ``t``: every numeric and categorical field of the spec. The clock
        counts down to the end of the term (0 once past it), tenure grows; the rest stay as drawn."""
        self._check_customer(customer)
        numeric: dict[str, float] = {}
        for name, kind, digits, column in self._numeric_now:
            if column is None:
                left = max(0.0, self._clock_end_at(customer, t) - t) / (self.spec.clock.unit_days * DAY)
                numeric[name] = round(left, digits)
            elif kind == "tenure":
                numeric[name] = round(column[customer] + (t - self.start) / MONTH, digits)
            else:
                numeric[name] = column[customer]
        categorical = {name: levels[column[customer]] for name, levels, column in self._categorical_now}
        return numeric, categorical

    def categories(self) -> Mapping[str, tuple[str, ...]]:
        return self._levels

    def _contact_consent(self, customer: int) -> dict[str, bool]:
        return {
            name: not (k >= 0 and bool(self._denied[customer, k]))
            for name, k in zip(self._channels, self._channel_spec, strict=True)
        }

    def _personalised(self, customer: int) -> bool:
        return bool(self._personalisation[customer])

    # ----------------------------------------------------------------------------- true values

    def _components(self, customer: int, t: float) -> Components:
        return self.components(customer, t)

    def components(self, customer: int, t: float, *, scaled: bool = True) -> Components:
        """The customer's response at ``t``. ``scaled=False``: the offers' conversion chances before
        the effect scale and its cap (what ``family.generate`` calibrates the scale on)."""
        spec = self.spec
        record = self._records.get(customer)
        types = len(self._types)
        channels = len(self._channels)
        base = 0.0
        clock_end = self._clock_end_list[customer]
        pending = [False] * types
        last = [-math.inf] * types
        annoyed = False
        unsubscribed: set[str] = set()
        c7 = c30 = 0
        c7_by = c30_by = [0] * channels  # read only
        if record is not None:
            windows, type_index = self._windows, self._type_index
            term = spec.clock.term_months * MONTH
            for scheduled in record.outcomes:
                if scheduled.decided_at > t:
                    continue
                outcome = scheduled.outcome
                at = outcome.event_time
                k = type_index.get(outcome.type)
                if at > t:
                    # On its way: credited to a decision now if inside the type's window.
                    if at <= t + windows[outcome.type]:
                        base += outcome.value
                    if k is not None:
                        pending[k] = True
                elif k is not None:
                    last[k] = max(last[k], at)
                    if k == self._clock_type:
                        clock_end = max(clock_end, at + term)
                elif outcome.type == self._complaint_type:
                    annoyed = annoyed or t - at < spec.annoyed_days * DAY
                else:
                    unsubscribed.add(outcome.channel)
            c7, c30, c7_by, c30_by = record.contact_counts(t, channels)

        # Conversion chance of each offer on the customer's preferred channel and slot.
        clock = spec.clock
        months_left = max(0.0, (clock_end - t) / MONTH)
        if months_left <= clock.near_months:
            receptive = 1.0
        elif months_left >= clock.far_months:
            receptive = clock.floor
        else:
            receptive = 1.0 - (1.0 - clock.floor) * (months_left - clock.near_months) / (clock.far_months - clock.near_months)
        sure, responder = self._sure_list[customer], self._responder_list[customer]
        ready, repeat_factor = self._ready_list[customer], self._repeat_factor_list[customer]
        sensitive = self._ps_list[customer]
        susceptibility = self._susceptibility_list[customer]
        lost = self._lost_list[customer]
        offer_p = []
        for rule in self._offer_rules:
            if rule is None or lost:
                offer_p.append(0.0)
                continue
            k, kind, column, sensitive_factor, other_factor = rule
            if sure[kind] or pending[kind] or t < ready[kind] or t - last[kind] < self._repeat[kind] * repeat_factor[kind]:
                offer_p.append(0.0)
                continue
            offer = spec.offers[k]
            p = (offer.p_responder if responder[column] else offer.p_other) * susceptibility
            p *= (receptive if offer.timed else 1.0) * (sensitive_factor if sensitive else other_factor)
            offer_p.append(min(MAX_CONVERSION, spec.effect_scale * p) if scaled else p)
        offer_p.append(0.0)

        # Response per channel, complaint and unsubscribe risk per contact on it.
        reach = spec.fatigue**c7 * (spec.annoyed if annoyed else 1.0)
        complainer = self._complainer_list[customer]
        complaint_base = (spec.complaint_prone if complainer else spec.complaint_base) * (2.0 if annoyed else 1.0)
        pressure = 1.0 + spec.complaint_per_7d * c7 + spec.complaint_per_30d * c30
        unsubscribe_base = spec.unsubscribe_base * (3.0 if complainer else 1.0)
        response = self._channel_fit_list[customer]
        channel: list[float] = []
        complaint: list[float] = []
        unsubscribe: list[float] = []
        for c, k in enumerate(self._channel_spec):
            if k < 0:
                channel.append(0.0)
                complaint.append(min(MAX_COMPLAINT, complaint_base * pressure))
                unsubscribe.append(0.0)
            else:
                spec_channel = spec.channels[k]
                gone = self._channels[c] in unsubscribed
                channel.append(0.0 if gone else response[k] * reach)
                complaint.append(min(MAX_COMPLAINT, complaint_base * spec_channel.complaint_factor * pressure))
                leaves = spec_channel.unsubscribable and not gone and self._unsubscribe_type is not None
                unsubscribe.append(
                    min(MAX_UNSUBSCRIBE, unsubscribe_base * (1.0 + 1.5 * c7_by[c] + 0.4 * c30_by[c])) if leaves else 0.0
                )
        slot = slot_response(self._slot_kind, self._pref_slot_list[customer], spec.now_slot, spec.off_slot)
        values = (self._complaint_value, self._unsubscribe_value)
        return Components.of(base, offer_p, self._offer_value, channel, slot, (complaint, unsubscribe), values)

    # ----------------------------------------------------------------------------- diagnostics

    def traits(self, customer: int) -> dict[str, float]:
        """The hidden traits as numbers: lost, price-sensitive, complainer, susceptibility, the
        preferred channel and slot (indices into the spec's), who converts anyway to each type and
        who responds to each offer."""
        self._check_customer(customer)
        traits = {
            "lost": float(self._lost[customer]),
            "price_sensitive": float(self._price_sensitive[customer]),
            "complainer": float(self._complainer[customer]),
            "susceptibility": float(self._susceptibility[customer]),
            "pref_channel": float(self._pref_channel[customer]),
            "pref_slot": float(self._pref_slot[customer]),
        }
        traits.update({f"sure_{name}": float(self._sure[customer, k]) for k, name in enumerate(self._types)})
        traits.update({f"responds_{o.name}": float(self._responder[customer, k]) for k, o in enumerate(self.spec.offers)})
        return traits


def _hours(at: str) -> float:
    hour, minute = at.split(":")
    return int(hour) + int(minute) / 60.0
