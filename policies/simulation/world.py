"""The simulated telecom world: customers who arrive at touchpoints, respond (or not) to what Brein
sends them days later, and whose true expected value of every action is known.

Time is event time in epoch seconds throughout. A harness drives the world in event-time order:

    world = World(config, customers=20_000, seed=7)
    for event in world.events(world.start, days=180):
        if isinstance(event, Arrival):
            ...                      # ask Brein to decide, with world.context / world.consent
            world.act(event.customer, event.event_time, action, rng, decision=decision_id)
        else:
            ...                      # report the Outcome to Brein

Value of a decision. An outcome is credited to a decision when it happens after the decision and
within its type's ``window_days`` (config ``[outcomes.*]``), whoever caused it — that is how Brein's
joiner credits. The *expected value* of an action is the expected money of all outcomes credited to
it, given the world's state at the decision and assuming no further contact in the window, minus
the action's cost. It includes outcomes already on their way (an organic renewal due in 12 days, a
renewal an earlier contact caused), which are the same whatever is chosen now. Every outcome an
action causes falls inside its window (delays are capped at the window), so the realised value
(``realised_value``) equals the expected value on average, as long as no later decision adds
outcomes to the same window. ``expected_gains`` is the expected value minus do-nothing's: summed
over decisions it counts each caused outcome once, where expected values would count an outcome on
its way again for every decision inside its window.

The oracle knows everything the world knows at the moment: the hidden traits, and which outcomes
are already on their way (so it never sends a renewal offer to a customer who is renewing).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.history import HISTORY_DAYS
from policies.simulation.population import (
    CALL,
    CHANNELS,
    DAY,
    DEVICES,
    DISCOUNT,
    HANDSET,
    MONTH,
    OFFERS,
    PLAN_BUNDLE_GB,
    PLAN_PRICE,
    PLANS,
    REGIONS,
    RENEWAL,
    SIM_ONLY,
    SLOT_HOURS,
    SLOTS,
    UPSELL,
    WorldParams,
    draw_population,
)
from store.records import Contact, CustomerHistory

DEFAULT_START = 1_736_121_600.0  # 2025-01-06T00:00:00Z, a Monday
RENEWAL_TYPE = "contract_renewal"
ACTIVATION_TYPE = "sim_activation"
COMPLAINT_TYPE = "complaint"
UNSUBSCRIBE_TYPE = "unsubscribe"
OUTCOME_TYPES = (RENEWAL_TYPE, ACTIVATION_TYPE, COMPLAINT_TYPE, UNSUBSCRIBE_TYPE)
RENEWING_OFFERS = frozenset({RENEWAL, DISCOUNT, HANDSET})

ANNOYED_DAYS = 60.0
SIM_COOLDOWN_DAYS = 180.0
# Complaint risk of one contact by channel, relative to the customer's base (an e-mail is 0.8).
COMPLAINT_FACTOR = {"email": 0.8, "sms": 1.0, "app_push": 0.6, "outbound_call": 2.5}
UNKNOWN_CHANNEL_COMPLAINT_FACTOR = 1.0
MAX_COMPLAINT, MAX_UNSUBSCRIBE = 0.9, 0.5
# Outcome delays after delivery, in days: (minimum, maximum, beta a, beta b); the maximum is capped
# so that delivery (up to a day after the decision) plus the delay stays inside the type's window.
DELAYS = {
    RENEWAL_TYPE: (1.0, 25.0, 1.3, 2.6),
    ACTIVATION_TYPE: (1.0, 10.0, 1.3, 2.0),
    COMPLAINT_TYPE: (0.1, 3.0, 1.2, 2.0),
    UNSUBSCRIBE_TYPE: (0.0, 2.0, 1.0, 3.0),
}
DELIVERY_MARGIN_DAYS = 1.05  # a slot delivers at most a day (25 hours over a DST change) later
NO_DECISION = -math.inf

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def customer_key(customer: int) -> str:
    """The customer id to send to Brein for a world customer index."""
    return f"c{customer:07d}"


@dataclass(frozen=True, slots=True)
class Arrival:
    """A customer showing up at a touchpoint: the moment a channel backend asks Brein to decide."""

    event_time: float
    customer: int
    touchpoint: str

    @property
    def customer_id(self) -> str:
        return customer_key(self.customer)


@dataclass(frozen=True, slots=True)
class Outcome:
    """A customer-level event with its money value. ``decision`` is the tag given to ``act`` for the
    contact that caused it, empty for an organic outcome (one that happens whatever Brein does)."""

    outcome_id: str
    customer: int
    type: str
    event_time: float
    value: float
    decision: str = ""
    offer: str = ""
    channel: str = ""

    @property
    def organic(self) -> bool:
        return not self.offer

    @property
    def customer_id(self) -> str:
        return customer_key(self.customer)


@dataclass(frozen=True, slots=True)
class Consent:
    """What the customer agreed to at a moment: personalisation, and contact per channel."""

    personalisation: bool
    contact: Mapping[str, bool]

    def request_fields(self) -> tuple[str, dict[str, str]]:
        """(personalisation, contact_consent) spelled as Brein's DecisionRequest takes them."""
        return (
            "granted" if self.personalisation else "denied",
            {channel: "granted" if allowed else "denied" for channel, allowed in self.contact.items()},
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    """Arrivals over a horizon in event-time order, as arrays; iterating gives ``Arrival`` objects."""

    times: FloatArray
    customers: IntArray
    touchpoint_index: IntArray
    touchpoint_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.times)

    def __iter__(self) -> Iterator[Arrival]:
        names = self.touchpoint_names
        for t, c, tp in zip(self.times.tolist(), self.customers.tolist(), self.touchpoint_index.tolist(), strict=True):
            yield Arrival(t, c, names[tp])


@dataclass(slots=True)
class _Scheduled:
    decided_at: float  # when the act that caused it happened; -inf for organic outcomes
    outcome: Outcome


@dataclass(slots=True)
class _Record:
    """What happened to one customer: contacts (decision time, channel index, offer) and outcomes."""

    contacts: list[tuple[float, int, str]]
    outcomes: list[_Scheduled]
    last_act: float = -math.inf


@dataclass(slots=True)
class _Components:
    """A customer's response at one moment, in catalog order (offers, channels, slots), each
    padded with a trailing entry for do-nothing: the expected value of action (o, c, s) is
    ``base + offer_value[o] * channel[c] * slot[s] - harm[c] - cost``."""

    base: float  # money of outcomes already on their way, credited to any decision now
    offer_p: list[float]  # conversion chance on the preferred channel and slot
    offer_value: list[float]  # money of that conversion
    channel: list[float]
    slot: list[float]
    complaint: list[float]
    unsubscribe: list[float]
    harm: list[float]  # expected (positive) money lost to complaints and unsubscribes per channel


def _renewal_factor(months_left: float) -> float:
    """How receptive to renewing: fully in the last month, a third at four months, little before."""
    if months_left <= 1.0:
        return 1.0
    if months_left <= 4.0:
        return 1.0 - 0.65 * (months_left - 1.0) / 3.0
    return 0.15


def _upsell_chance(ratio: float, maximum: float, threshold: float) -> float:
    return maximum / (1.0 + math.exp(-(ratio - threshold) / 0.1))


class World:
    """A seeded population of ``customers`` with hidden traits, for the actions of ``config``.

    Same config, customers, seed, params and start give the same customers, the same arrivals and,
    given the same sequence of ``act`` calls with equally seeded generators, the same outcomes.
    Organic outcomes exist from ``start`` to ``start + horizon_days``.
    """

    def __init__(
        self,
        config: BreinConfig,
        customers: int,
        seed: int,
        *,
        start: float = DEFAULT_START,
        horizon_days: float = 730.0,
        params: WorldParams | None = None,
    ) -> None:
        if customers < 1:
            raise ValueError(f"customers: expected at least 1, got {customers}")
        if not math.isfinite(start):
            raise ValueError(f"start: expected a finite epoch time, got {start}")
        if not horizon_days > 0:
            raise ValueError(f"horizon_days: expected a positive number, got {horizon_days}")
        missing = [t for t in OUTCOME_TYPES if t not in config.outcomes]
        if missing:
            raise ValueError(f"config.outcomes: expected the telecom outcome types, missing {', '.join(missing)}")
        self.config = config
        self.catalog = Catalog(config)
        self.params = params or WorldParams()
        self.seed = seed
        self.start = start
        self.horizon_days = horizon_days
        self.customers = customers
        self._zone = config.zone
        self._values = {name: o.value for name, o in config.outcomes.items()}
        self._windows = {name: o.window_days * DAY for name, o in config.outcomes.items()}
        self._delays = self._capped_delays(config)
        self._conversion = dict(self.params.conversions)
        for offer, outcome_type in self._conversion.items():
            if outcome_type not in config.outcomes:
                raise ValueError(f"params.conversions[{offer!r}]: unknown outcome type {outcome_type!r}")
        self._setup_catalog()

        cycles = int(horizon_days / (self.params.contract_months * MONTH / DAY)) + 2
        pop = draw_population(customers, seed, start, self.params, tuple(config.touchpoints), cycles)
        self.population = pop
        # Hot per-customer fields as Python lists: indexing a list is cheaper than a numpy scalar.
        self._since = pop.since.tolist()
        self._plan = pop.plan.tolist()
        self._extra_spend = pop.extra_spend.tolist()
        self._usage = pop.usage_gb.tolist()
        self._usage_noise = pop.usage_noise.tolist()
        self._email_open_rate = pop.email_open_rate.tolist()
        self._app_sessions = pop.app_sessions.tolist()
        self._has_app = pop.has_app.tolist()
        self._device = pop.device.tolist()
        self._region = pop.region.tolist()
        self._handset_since = pop.handset_since.tolist()
        self._contract_end = pop.contract_end.tolist()
        self._sure = pop.sure.tolist()
        self._price_sensitive = pop.price_sensitive.tolist()
        self._persuade = pop.persuade.tolist()
        self._channel_response = pop.channel_response.tolist()
        self._pref_slot = pop.pref_slot.tolist()
        self._complaint_base = pop.complaint_base.tolist()
        self._unsubscribe_base = pop.unsubscribe_base.tolist()
        self._gadget = pop.gadget.tolist()
        self._frugal = pop.frugal.tolist()
        self._personalisation = pop.personalisation.tolist()
        self._contact_denied = pop.contact_denied.tolist()

        self._records: dict[int, _Record] = {}
        self._queue: list[tuple[float, int, Outcome]] = []
        self._sequence = 0
        self._pushed = 0
        self._organic_outcomes()

    # ----------------------------------------------------------------------------- set-up

    def _capped_delays(self, config: BreinConfig) -> dict[str, tuple[float, float, float, float]]:
        delays = {}
        for name, (low, high, a, b) in DELAYS.items():
            room = config.outcomes[name].window_days - DELIVERY_MARGIN_DAYS
            if room <= low:
                raise ValueError(
                    f"outcomes.{name}.window_days: expected more than {low + DELIVERY_MARGIN_DAYS:g} days, got "
                    f"{config.outcomes[name].window_days:g}"
                )
            delays[name] = (low, min(high, room), a, b)
        return delays

    def _setup_catalog(self) -> None:
        catalog = self.catalog
        self.actions: tuple[Action, ...] = catalog.actions
        self._position = {a.id: k for k, a in enumerate(catalog.actions)}
        offers = list(catalog.offers)
        channels = list(catalog.channels)
        slots = list(self.config.slots) + ["now"]
        self._offers, self._channels, self._slots = offers, channels, slots
        # World index of each catalog offer / channel / slot (-1: unknown to the customers).
        self._offer_kind = [OFFERS.index(o) if o in OFFERS else -1 for o in offers]
        self._channel_kind = [CHANNELS.index(c) if c in CHANNELS else -1 for c in channels]
        self._slot_kind = [SLOTS.index(s) if s in SLOTS else (-2 if s == "now" else -1) for s in slots]
        self._complaint_factor = [COMPLAINT_FACTOR.get(c, UNKNOWN_CHANNEL_COMPLAINT_FACTOR) for c in channels]
        no_o, no_c, no_s = len(offers), len(channels), len(slots)
        self._a_offer = np.array([no_o if a.do_nothing else offers.index(a.offer) for a in catalog.actions], dtype=np.intp)
        self._a_channel = np.array([no_c if a.do_nothing else channels.index(a.channel) for a in catalog.actions], dtype=np.intp)
        self._a_slot = np.array([no_s if a.do_nothing else slots.index(a.slot) for a in catalog.actions], dtype=np.intp)
        self._a_cost = np.array([a.cost for a in catalog.actions])
        self._offer_value = [
            self._values[self._conversion[o]] if o in self._conversion and o in OFFERS else 0.0 for o in offers
        ] + [0.0]
        self._complaint_value = self._values[COMPLAINT_TYPE]
        self._unsubscribe_value = self._values[UNSUBSCRIBE_TYPE]

    def _organic_outcomes(self) -> None:
        """Outcomes that happen whatever Brein does: sure customers' renewals around each contract
        end, and a trickle of service complaints and extra SIM activations."""
        p = self.population
        rng = np.random.default_rng([self.seed, 0x0E6A, self.customers])
        end = self.start + self.horizon_days * DAY
        term = self.params.contract_months * MONTH
        organic: list[tuple[float, int, str]] = []
        for i in np.flatnonzero(p.sure).tolist():
            contract_end = self._contract_end[i]
            for cycle in range(p.organic_offsets.shape[1]):
                at = contract_end + float(p.organic_offsets[i, cycle]) * DAY
                if at > end:
                    break
                organic.append((at, i, RENEWAL_TYPE))
                contract_end = at + term
        months = self.horizon_days * DAY / MONTH
        for outcome_type, rate in (
            (COMPLAINT_TYPE, self.params.organic_complaints),
            (ACTIVATION_TYPE, self.params.organic_activations),
        ):
            counts = rng.poisson(rate * months, self.customers)
            who = np.repeat(np.arange(self.customers), counts)
            times = self.start + rng.uniform(0.0, self.horizon_days * DAY, len(who))
            organic.extend((t, i, outcome_type) for t, i in zip(times.tolist(), who.tolist(), strict=True))
        organic.sort()
        for at, i, outcome_type in organic:
            self._schedule(i, NO_DECISION, Outcome(self._next_id(), i, outcome_type, at, self._values[outcome_type]))

    def _next_id(self) -> str:
        self._sequence += 1
        return f"sim-{self.seed}-{self._sequence}"

    def _record(self, customer: int) -> _Record:
        record = self._records.get(customer)
        if record is None:
            record = self._records[customer] = _Record([], [])
        return record

    def _schedule(self, customer: int, decided_at: float, outcome: Outcome) -> None:
        self._record(customer).outcomes.append(_Scheduled(decided_at, outcome))
        self._pushed += 1
        heapq.heappush(self._queue, (outcome.event_time, self._pushed, outcome))

    def _check_customer(self, customer: int) -> None:
        if not 0 <= customer < self.customers:
            raise ValueError(f"customer: expected an index in [0, {self.customers}), got {customer}")

    # ----------------------------------------------------------------------------- arrivals

    def arrivals(self, start: float, days: float) -> Schedule:
        """Every customer's visits to touchpoints in ``[start, start + days)``, in time order.

        Each customer visits a few times a month (their own rate), mostly at the touchpoints they
        use and, more often than not, in the hours of their preferred send-time slot. Each local day
        is drawn from its own seed, so overlapping windows agree on the arrivals they share.
        """
        if not days > 0:
            raise ValueError(f"days: expected a positive number, got {days}")
        if start < self.start or start + days * DAY > self.start + self.horizon_days * DAY + 1.0:
            raise ValueError(
                f"start, days: expected a window inside the world's horizon "
                f"[{self.start:.0f}, +{self.horizon_days:g} days], got [{start:.0f}, +{days:g} days]"
            )
        pop = self.population
        first = datetime.fromtimestamp(start, tz=UTC).astimezone(self._zone).date()
        last = datetime.fromtimestamp(start + days * DAY, tz=UTC).astimezone(self._zone).date()
        times, customers, touchpoints = [], [], []
        low = np.array([h[0] for h in SLOT_HOURS])[pop.pref_slot]
        high = np.array([h[1] for h in SLOT_HOURS])[pop.pref_slot]
        day = first
        while day <= last:
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=self._zone).timestamp()
            rng = np.random.default_rng([self.seed, 0xA771, day.toordinal()])
            counts = rng.poisson(pop.visit_rate)
            who = np.repeat(np.arange(self.customers), counts)
            in_slot = rng.random(len(who)) < pop.slot_hours_share[who]
            hour = np.where(in_slot, rng.uniform(low[who], high[who]), rng.uniform(8.0, 22.0, len(who)))
            tp = (pop.touchpoint_cdf[who] < rng.random(len(who))[:, None]).sum(axis=1)
            times.append(noon + (hour - 12.0) * 3600.0)
            customers.append(who)
            touchpoints.append(tp)
            day += timedelta(days=1)
        t = np.concatenate(times)
        c = np.concatenate(customers)
        tp_all = np.concatenate(touchpoints).clip(0, len(self.config.touchpoints) - 1)
        keep = (t >= start) & (t < start + days * DAY)
        t, c, tp_all = t[keep], c[keep], tp_all[keep]
        order = np.lexsort((c, t))
        return Schedule(t[order], c[order].astype(np.int64), tp_all[order].astype(np.int64), tuple(self.config.touchpoints))

    def due_outcomes(self, until: float) -> list[Outcome]:
        """Pop every outcome (caused or organic) with ``event_time <= until``, in event-time order.
        Each outcome is returned once; report these to Brein."""
        due = []
        queue = self._queue
        while queue and queue[0][0] <= until:
            due.append(heapq.heappop(queue)[2])
        return due

    def events(self, start: float, days: float) -> Iterator[Arrival | Outcome]:
        """Arrivals and outcomes merged in event-time order (an outcome before an arrival at the same
        moment). Outcomes that ``act`` causes while iterating appear in their turn."""
        for arrival in self.arrivals(start, days):
            yield from self.due_outcomes(arrival.event_time)
            yield arrival
        yield from self.due_outcomes(start + days * DAY)

    # ----------------------------------------------------------------------------- what Brein sees

    def _state(self, customer: int, t: float) -> tuple[float, float, int, _Record | None]:
        """(contract end, handset since, plan) at ``t`` after the outcomes realised by then."""
        contract_end = self._contract_end[customer]
        handset_since = self._handset_since[customer]
        plan = self._plan[customer]
        record = self._records.get(customer)
        if record is not None:
            term = self.params.contract_months * MONTH
            for scheduled in record.outcomes:
                outcome = scheduled.outcome
                if outcome.event_time > t or scheduled.decided_at > t:
                    continue
                if outcome.type == RENEWAL_TYPE and (outcome.organic or outcome.offer in RENEWING_OFFERS):
                    contract_end = outcome.event_time + term
                    if outcome.offer == HANDSET:
                        handset_since = outcome.event_time
                elif outcome.offer == UPSELL:
                    plan = min(plan + 1, len(PLANS) - 1)
        return contract_end, handset_since, plan, record

    def context(self, customer: int, t: float) -> tuple[dict[str, float], dict[str, str]]:
        """The request context at ``t``: (numeric, categorical) features, named as in the config.

        numeric: months_to_contract_end (0 when out of contract), tenure_months, monthly_spend,
        handset_age_months, data_usage_ratio (last month's use over the bundle, noisy),
        email_open_rate (share of the operator's e-mails opened), app_sessions_30d;
        categorical: plan, has_app ("yes"/"no"), device and region (the config's non-personal ones).
        """
        self._check_customer(customer)
        contract_end, handset_since, plan, _ = self._state(customer, t)
        numeric = {
            "months_to_contract_end": round(max(0.0, (contract_end - t) / MONTH), 2),
            "tenure_months": round((t - self._since[customer]) / MONTH, 1),
            "monthly_spend": round(PLAN_PRICE[plan] + self._extra_spend[customer], 2),
            "handset_age_months": round(max(0.0, (t - handset_since) / MONTH), 1),
            "data_usage_ratio": round(self._usage[customer] / PLAN_BUNDLE_GB[plan] * self._usage_noise[customer], 2),
            "email_open_rate": round(self._email_open_rate[customer], 2),
            "app_sessions_30d": self._app_sessions[customer],
        }
        categorical = {
            "plan": PLANS[plan],
            "has_app": "yes" if self._has_app[customer] else "no",
            "device": DEVICES[self._device[customer]],
            "region": REGIONS[self._region[customer]],
        }
        return numeric, categorical

    def consent(self, customer: int, t: float) -> Consent:
        """Personalisation consent, and contact consent per catalog channel (withdrawn by an unsubscribe)."""
        self._check_customer(customer)
        denied = self._contact_denied[customer]
        contact = {c: not (k >= 0 and denied[k]) for c, k in zip(self._channels, self._channel_kind, strict=True)}
        record = self._records.get(customer)
        if record is not None:
            for scheduled in record.outcomes:
                outcome = scheduled.outcome
                if outcome.type == UNSUBSCRIBE_TYPE and outcome.event_time <= t and scheduled.decided_at <= t:
                    contact[outcome.channel] = False
        return Consent(bool(self._personalisation[customer]), contact)

    def history(self, customer: int, t: float, lookback_days: float = HISTORY_DAYS) -> CustomerHistory:
        """The customer's history as Brein's log would know it at ``t`` if every contact went through
        Brein and every outcome was reported: contacts in the lookback, the last outcome of each type."""
        self._check_customer(customer)
        record = self._records.get(customer)
        if record is None:
            return CustomerHistory()
        since = t - lookback_days * DAY
        contacts = tuple(Contact("", at, self._channels[c], offer) for at, c, offer in record.contacts if since <= at < t)
        earlier = [at for at, _, _ in record.contacts if at < t]
        last: dict[str, float] = {}
        for scheduled in record.outcomes:
            outcome = scheduled.outcome
            if outcome.event_time <= t and outcome.event_time > last.get(outcome.type, -math.inf):
                last[outcome.type] = outcome.event_time
        return CustomerHistory(contacts, max(earlier) if earlier else None, last)

    # ----------------------------------------------------------------------------- true values

    def _components(self, customer: int, t: float) -> _Components:
        params = self.params
        contract_end, handset_since, plan, record = self._state(customer, t)
        sure = self._sure[customer]
        renewing = sure
        upselling = False
        sim_blocked = False
        annoyed = False
        unsubscribed: set[str] = set()
        base = 0.0
        c7 = c30 = 0
        c7_by = [0] * len(self._channels)
        c30_by = [0] * len(self._channels)
        if record is not None:
            windows = self._windows
            for scheduled in record.outcomes:
                outcome = scheduled.outcome
                if scheduled.decided_at > t:
                    continue
                at = outcome.event_time
                if at > t:
                    # On its way: credited to a decision now if inside the type's window.
                    if at <= t + windows[outcome.type]:
                        base += outcome.value
                    if outcome.type == RENEWAL_TYPE and (outcome.organic or outcome.offer in RENEWING_OFFERS):
                        renewing = True
                    elif outcome.offer == UPSELL:
                        upselling = True
                    elif outcome.offer == SIM_ONLY:
                        sim_blocked = True
                elif outcome.type == COMPLAINT_TYPE:
                    annoyed = annoyed or t - at < ANNOYED_DAYS * DAY
                elif outcome.type == UNSUBSCRIBE_TYPE:
                    unsubscribed.add(outcome.channel)
                elif outcome.type == ACTIVATION_TYPE and outcome.offer != UPSELL:
                    sim_blocked = sim_blocked or t - at < SIM_COOLDOWN_DAYS * DAY
            week, month = t - 7 * DAY, t - 30 * DAY
            for at, c, _ in record.contacts:
                if month <= at < t:
                    c30 += 1
                    c30_by[c] += 1
                    if at >= week:
                        c7 += 1
                        c7_by[c] += 1

        # Conversion chance of each offer on the customer's preferred channel and slot.
        receptive = _renewal_factor(max(0.0, (contract_end - t) / MONTH))
        persuade = self._persuade[customer]
        price_sensitive = self._price_sensitive[customer]
        chances = [0.0] * len(OFFERS)
        if not renewing:
            chances[0] = persuade * receptive * (params.plain_for_price_sensitive if price_sensitive else 1.0)
            chances[1] = min(
                0.95, persuade * receptive * (params.discount_for_price_sensitive if price_sensitive else params.discount_lift)
            )
            age = (t - handset_since) / MONTH
            chances[4] = self._gadget[customer] * min(1.0, max(0.0, (age - 12.0) / 18.0)) * (0.4 + 0.6 * receptive)
        if plan < len(PLANS) - 1 and not upselling:
            chances[2] = _upsell_chance(self._usage[customer] / PLAN_BUNDLE_GB[plan], params.upsell_max, params.upsell_threshold)
        if not sim_blocked:
            chances[3] = self._frugal[customer]
        offer_p = [chances[k] if k >= 0 else 0.0 for k in self._offer_kind] + [0.0]

        # Response per channel, complaint and unsubscribe risk per contact on it.
        reach = params.fatigue**c7 * (params.annoyed if annoyed else 1.0)
        response = self._channel_response[customer]
        complaint_base = self._complaint_base[customer] * (2.0 if annoyed else 1.0)
        pressure = 1.0 + params.complaint_per_7d * c7 + params.complaint_per_30d * c30
        unsubscribe_base = self._unsubscribe_base[customer]
        channel, complaint, unsubscribe, harm = [], [], [], []
        for c, kind in enumerate(self._channel_kind):
            name = self._channels[c]
            gone = name in unsubscribed
            channel.append(0.0 if gone or kind < 0 else response[kind] * reach)
            p_complaint = min(MAX_COMPLAINT, complaint_base * self._complaint_factor[c] * pressure)
            p_unsubscribe = (
                0.0 if gone or name == CALL else min(MAX_UNSUBSCRIBE, unsubscribe_base * (1.0 + 1.5 * c7_by[c] + 0.4 * c30_by[c]))
            )
            complaint.append(p_complaint)
            unsubscribe.append(p_unsubscribe)
            harm.append(-(p_complaint * self._complaint_value + p_unsubscribe * self._unsubscribe_value))
        channel.append(0.0)
        complaint.append(0.0)
        unsubscribe.append(0.0)
        harm.append(0.0)
        preferred = self._pref_slot[customer]
        slot = [1.0 if k == preferred else (params.now_slot if k == -2 else params.off_slot) for k in self._slot_kind] + [0.0]
        return _Components(base, offer_p, self._offer_value, channel, slot, complaint, unsubscribe, harm)

    def _indices(self, actions: Sequence[Action] | None) -> npt.NDArray[np.intp] | slice:
        if actions is None:
            return slice(None)
        position = self._position
        try:
            return np.fromiter((position[a.id] for a in actions), dtype=np.intp, count=len(actions))
        except KeyError as error:
            raise ValueError(f"actions: expected actions of the world's catalog, got {error.args[0]!r}") from None

    def expected_values(self, customer: int, t: float, actions: Sequence[Action] | None = None) -> FloatArray:
        """True expected value of each action (default: the whole catalog, in catalog order) for the
        customer at ``t``, given everything that happened before: the expected money of outcomes
        credited to a decision now (each type's window, no further contact assumed) minus the cost."""
        self._check_customer(customer)
        k = self._components(customer, t)
        return self._gains(k, actions) + k.base

    def _gains(self, k: _Components, actions: Sequence[Action] | None) -> FloatArray:
        index = self._indices(actions)
        value: FloatArray = np.multiply(k.offer_p, k.offer_value)[self._a_offer[index]]
        value *= np.asarray(k.channel)[self._a_channel[index]]
        value *= np.asarray(k.slot)[self._a_slot[index]]
        value -= np.asarray(k.harm)[self._a_channel[index]]
        value -= self._a_cost[index]
        return value

    def expected_gains(self, customer: int, t: float, actions: Sequence[Action] | None = None) -> FloatArray:
        """``expected_values`` minus do-nothing's: what choosing each action adds at ``t``. Outcomes
        already on their way (which every decision in their window is credited with) cancel out, so
        summing gains over decisions counts each caused outcome once."""
        self._check_customer(customer)
        return self._gains(self._components(customer, t), actions)

    def contact_risks(self, customer: int, t: float) -> dict[str, tuple[float, float]]:
        """Per catalog channel, the chance that one more contact at ``t`` brings a complaint and an
        unsubscribe. Both grow with the contacts of the last 7 and 30 days."""
        self._check_customer(customer)
        k = self._components(customer, t)
        return {name: (k.complaint[c], k.unsubscribe[c]) for c, name in enumerate(self._channels)}

    def oracle(self, customer: int, t: float, eligible: Sequence[Action]) -> Action:
        """The eligible action of highest true expected value (the first one on a tie)."""
        if not eligible:
            raise ValueError("eligible: expected at least one action, got none")
        return eligible[int(np.argmax(self.expected_values(customer, t, eligible)))]

    # ----------------------------------------------------------------------------- acting

    def act(self, customer: int, t: float, action: Action, rng: np.random.Generator, decision: str = "") -> list[Outcome]:
        """Carry out ``action`` decided at ``t``: draw what it causes with ``rng``, record the contact
        (so complaint risk and responses later see it) and schedule the outcomes.

        Returns the outcomes this contact caused, in event-time order. They are also queued: report
        outcomes from ``due_outcomes``/``events`` (which include the organic ones), not from here.
        Acts for one customer must come in event-time order. Consent is not enforced: contacting a
        customer on a channel they denied happens as any other contact.
        """
        self._check_customer(customer)
        position = self._position.get(action.id)
        if position is None:
            raise ValueError(f"action: expected an action of the world's catalog, got {action.id!r}")
        record = self._records.get(customer)
        if record is not None and t < record.last_act:
            raise ValueError(f"t: expected acts in event-time order for customer {customer}, got {t} after {record.last_act}")
        if action.do_nothing:
            if record is not None:
                record.last_act = t
            return []
        k = self._components(customer, t)
        o, c, s = int(self._a_offer[position]), int(self._a_channel[position]), int(self._a_slot[position])
        convert = k.offer_p[o] * k.channel[c] * k.slot[s]
        draws = rng.random(3)
        send = self.catalog.send_at(action, t)
        delivered = t if send is None else send
        caused = []
        if draws[0] < convert and k.offer_value[o] != 0.0:
            caused.append(self._conversion[action.offer])
        if draws[1] < k.complaint[c]:
            caused.append(COMPLAINT_TYPE)
        if draws[2] < k.unsubscribe[c]:
            caused.append(UNSUBSCRIBE_TYPE)
        outcomes = []
        for outcome_type in caused:
            low, high, a, b = self._delays[outcome_type]
            at = delivered + (low + (high - low) * float(rng.beta(a, b))) * DAY
            outcomes.append(
                Outcome(
                    self._next_id(),
                    customer,
                    outcome_type,
                    at,
                    self._values[outcome_type],
                    decision,
                    action.offer,
                    action.channel,
                )
            )
        record = self._record(customer)
        record.last_act = t
        record.contacts.append((t, c, action.offer))
        outcomes.sort(key=lambda x: x.event_time)
        for outcome in outcomes:
            self._schedule(customer, t, outcome)
        return outcomes

    def realised_value(self, customer: int, t: float, action: Action) -> float:
        """Money of the outcomes so far scheduled that are credited to a decision at ``t`` (after it,
        inside their type's window), minus the action's cost. Final once the windows have passed."""
        self._check_customer(customer)
        record = self._records.get(customer)
        total = -action.cost
        if record is not None:
            for scheduled in record.outcomes:
                outcome = scheduled.outcome
                if t < outcome.event_time <= t + self._windows[outcome.type]:
                    total += outcome.value
        return total

    def outcomes_of(self, customer: int) -> list[Outcome]:
        """Every outcome scheduled for the customer so far (past and on their way), in time order."""
        self._check_customer(customer)
        record = self._records.get(customer)
        if record is None:
            return []
        return sorted((s.outcome for s in record.outcomes), key=lambda o: o.event_time)

    def profile(self, customer: int) -> dict[str, object]:
        """The customer's hidden traits, for diagnostics and tests (never send these to Brein)."""
        self._check_customer(customer)
        pop = self.population
        return {
            "sure": bool(pop.sure[customer]),
            "price_sensitive": bool(pop.price_sensitive[customer]),
            "lost": bool(pop.lost[customer]),
            "persuade": float(pop.persuade[customer]),
            "preferred_channel": CHANNELS[int(pop.pref_channel[customer])],
            "preferred_slot": SLOTS[int(pop.pref_slot[customer])],
            "complainer": bool(pop.complainer[customer]),
            "gadget": float(pop.gadget[customer]),
            "frugal": float(pop.frugal[customer]),
        }
