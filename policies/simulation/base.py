"""What every simulated world shares: customers arriving at touchpoints, outcomes that come days
later as events in event-time order, each customer's record of contacts and outcomes, and the true
expected value of an action from the components of a customer's response at a moment.

A world (``World``, the hand-built telecom world; ``GeneratedWorld``, one drawn from a seed) says
how its customers respond (``_components``), what Brein sees of them (``context``), when they arrive
(``arrivals``) and which outcomes happen whatever Brein does (scheduled when it is built); this base
does the rest the same way for all of them: acting, scheduling and reporting outcomes, the history
and consent Brein would know, expected values and gains, the oracle.

Value of a decision. An outcome is credited to a decision when it happens after the decision and
within its type's ``window_days`` (config ``[outcomes.*]``), whoever caused it — that is how Brein's
joiner credits. The *expected value* of an action is the expected money of all outcomes credited to
it, given the world's state at the decision and assuming no further contact in the window, minus
the action's cost. It includes outcomes already on their way, which are the same whatever is chosen
now. Every outcome an action causes falls inside its window (delays are capped at the window), so
the realised value equals the expected value on average, as long as no later decision adds outcomes
to the same window. ``expected_gains`` is the expected value minus do-nothing's: summed over
decisions it counts each caused outcome once.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import numpy.typing as npt

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.history import HISTORY_DAYS
from store.records import Contact, CustomerHistory

DAY = 86_400.0
MONTH = 365.25 / 12 * DAY
DEFAULT_START = 1_736_121_600.0  # 2025-01-06T00:00:00Z, a Monday
NO_DECISION = -math.inf
# A named slot delivers at most a day (25 hours over a DST change) after the decision.
DELIVERY_MARGIN_DAYS = 1.05

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Delay = tuple[float, float, float, float]
"""An outcome's delay after delivery, in days: (minimum, maximum, beta a, beta b)."""


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


@dataclass(frozen=True, slots=True)
class Visits:
    """Per customer: visits per day, the share of visits inside the preferred hours [low, high)
    (local hours; the rest fall uniformly in 8-22), and the cumulative touchpoint distribution."""

    rate: FloatArray
    preferred_share: FloatArray
    low: FloatArray
    high: FloatArray
    touchpoint_cdf: FloatArray  # (n, touchpoints)


def daily_arrivals(
    key: Sequence[int], zone: ZoneInfo, start: float, days: float, visits: Visits, touchpoints: tuple[str, ...]
) -> Schedule:
    """Every customer's visits in ``[start, start + days)``, in time order. Each local day is drawn
    from its own generator, seeded with ``key`` and the day, so overlapping windows agree on the
    arrivals they share."""
    customers = len(visits.rate)
    first = datetime.fromtimestamp(start, tz=UTC).astimezone(zone).date()
    last = datetime.fromtimestamp(start + days * DAY, tz=UTC).astimezone(zone).date()
    times, who_all, touchpoint_all = [], [], []
    day = first
    while day <= last:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=zone).timestamp()
        rng = np.random.default_rng([*key, 0xA771, day.toordinal()])
        counts = rng.poisson(visits.rate)
        who = np.repeat(np.arange(customers), counts)
        preferred = rng.random(len(who)) < visits.preferred_share[who]
        hour = np.where(preferred, rng.uniform(visits.low[who], visits.high[who]), rng.uniform(8.0, 22.0, len(who)))
        tp = (visits.touchpoint_cdf[who] < rng.random(len(who))[:, None]).sum(axis=1)
        times.append(noon + (hour - 12.0) * 3600.0)
        who_all.append(who)
        touchpoint_all.append(tp)
        day += timedelta(days=1)
    t = np.concatenate(times)
    c = np.concatenate(who_all)
    tp_all = np.concatenate(touchpoint_all).clip(0, len(touchpoints) - 1)
    keep = (t >= start) & (t < start + days * DAY)
    t, c, tp_all = t[keep], c[keep], tp_all[keep]
    order = np.lexsort((c, t))
    return Schedule(t[order], c[order].astype(np.int64), tp_all[order].astype(np.int64), touchpoints)


@dataclass(slots=True)
class Scheduled:
    decided_at: float  # when the act that caused it happened; -inf for organic outcomes
    outcome: Outcome


@dataclass(slots=True)
class Record:
    """What happened to one customer: contacts (decision time, channel index, offer) and outcomes."""

    contacts: list[tuple[float, int, str]]
    outcomes: list[Scheduled]
    last_act: float = -math.inf

    def contact_counts(self, t: float, channels: int) -> tuple[int, int, list[int], list[int]]:
        """Contacts before ``t`` in the last 7 and 30 days: (7 days, 30 days, per channel of each)."""
        c7 = c30 = 0
        c7_by = [0] * channels
        c30_by = [0] * channels
        week, month = t - 7 * DAY, t - 30 * DAY
        for at, c, _ in self.contacts:
            if month <= at < t:
                c30 += 1
                c30_by[c] += 1
                if at >= week:
                    c7 += 1
                    c7_by[c] += 1
        return c7, c30, c7_by, c30_by


@dataclass(slots=True)
class Components:
    """A customer's response at one moment, in catalog order (offers, channels, slots), each
    padded with a trailing entry for do-nothing: the expected value of action (o, c, s) is
    ``base + offer_value[o] * offer_p[o] * channel[c] * slot[s] - harm[c] - cost``."""

    base: float  # money of outcomes already on their way, credited to any decision now
    offer_p: list[float]  # conversion chance on the preferred channel and slot
    offer_value: list[float]  # money of that conversion
    channel: list[float]
    slot: list[float]
    complaint: list[float]
    unsubscribe: list[float]
    harm: list[float]  # expected (positive) money lost to complaints and unsubscribes per channel

    @classmethod
    def of(
        cls,
        base: float,
        offer_p: list[float],
        offer_value: list[float],
        channel: list[float],
        slot: list[float],
        risks: tuple[list[float], list[float]],
        values: tuple[float, float],
    ) -> Components:
        """The components from per-channel lists without do-nothing's entry (appended here) and the
        complaint and unsubscribe risks per channel with the (negative) value of each."""
        complaint, unsubscribe = risks
        harm = [-(c * values[0] + u * values[1]) for c, u in zip(complaint, unsubscribe, strict=True)]
        return cls(base, offer_p, offer_value, [*channel, 0.0], slot, [*complaint, 0.0], [*unsubscribe, 0.0], [*harm, 0.0])


def slot_response(kinds: Sequence[int], preferred: int, now: float, off: float) -> list[float]:
    """Response per catalog slot: 1 in the customer's preferred one (its kind), ``now`` for the
    built-in "now" (kind -2), ``off`` elsewhere; do-nothing's 0 last."""
    return [1.0 if k == preferred else (now if k == -2 else off) for k in kinds] + [0.0]


class BaseWorld:
    """The machinery every world shares; see the module docstring. A subclass calls ``__init__``
    first, then schedules its organic outcomes, and implements ``_components``, ``context``,
    ``_contact_consent``, ``arrivals``, ``categories`` and ``traits``.

    Same arguments give the same world: the same customers, the same arrivals and, given the same
    sequence of ``act`` calls with equally seeded generators, the same outcomes."""

    def __init__(
        self,
        config: BreinConfig,
        customers: int,
        *,
        start: float,
        horizon_days: float,
        conversions: Mapping[str, str],
        complaint_type: str,
        unsubscribe_type: str | None,
        delays: Mapping[str, Delay],
        id_prefix: str,
    ) -> None:
        if customers < 1:
            raise ValueError(f"customers: expected at least 1, got {customers}")
        if not math.isfinite(start):
            raise ValueError(f"start: expected a finite epoch time, got {start}")
        if not horizon_days > 0:
            raise ValueError(f"horizon_days: expected a positive number, got {horizon_days}")
        for offer, outcome_type in conversions.items():
            if outcome_type not in config.outcomes:
                raise ValueError(f"params.conversions[{offer!r}]: unknown outcome type {outcome_type!r}")
        missing = sorted(set(delays) - set(config.outcomes))
        if missing:
            raise ValueError(f"config.outcomes: expected the world's outcome types, missing {', '.join(missing)}")
        self.config = config
        self.catalog = Catalog(config)
        self.start = start
        self.horizon_days = horizon_days
        self.customers = customers
        self._zone = config.zone
        self._values = {name: o.value for name, o in config.outcomes.items()}
        self._windows = {name: o.window_days * DAY for name, o in config.outcomes.items()}
        self._conversion = dict(conversions)
        self._complaint_type = complaint_type
        self._unsubscribe_type = unsubscribe_type
        self._delays = self._capped_delays(config, delays)
        self._id_prefix = id_prefix
        self._setup_catalog()
        self._records: dict[int, Record] = {}
        # The last response computed: a decision asks for it several times (its value, the
        # oracle's choice, acting) while nothing changes.
        self._last_response: tuple[int, float, Components] | None = None
        self._queue: list[tuple[float, int, Outcome]] = []
        self._sequence = 0
        self._pushed = 0

    # ----------------------------------------------------------------------------- set-up

    def _delivery_margin(self, config: BreinConfig) -> float:
        """How long after a decision an action can be delivered, in days: a day when any
        combination uses a named slot, none when everything is sent at once."""
        named = any(slot != "now" for combo in config.combinations for slot in combo.slots)
        return DELIVERY_MARGIN_DAYS if named else 0.0

    def _capped_delays(self, config: BreinConfig, delays: Mapping[str, Delay]) -> dict[str, Delay]:
        """The delays with each maximum capped so that delivery plus the delay stays inside the
        type's window."""
        margin = self._delivery_margin(config)
        capped = {}
        for name, (low, high, a, b) in delays.items():
            room = config.outcomes[name].window_days - margin
            if room <= low:
                raise ValueError(
                    f"outcomes.{name}.window_days: expected more than {low + margin:g} days, got "
                    f"{config.outcomes[name].window_days:g}"
                )
            capped[name] = (low, min(high, room), a, b)
        return capped

    def _setup_catalog(self) -> None:
        catalog = self.catalog
        self.actions: tuple[Action, ...] = catalog.actions
        self._position = {a.id: k for k, a in enumerate(catalog.actions)}
        offers = list(catalog.offers)
        channels = list(catalog.channels)
        slots = list(self.config.slots) + ["now"]
        self._offers, self._channels, self._slots = offers, channels, slots
        no_o, no_c, no_s = len(offers), len(channels), len(slots)
        self._a_offer = np.array([no_o if a.do_nothing else offers.index(a.offer) for a in catalog.actions], dtype=np.intp)
        self._a_channel = np.array([no_c if a.do_nothing else channels.index(a.channel) for a in catalog.actions], dtype=np.intp)
        self._a_slot = np.array([no_s if a.do_nothing else slots.index(a.slot) for a in catalog.actions], dtype=np.intp)
        self._a_cost = np.array([a.cost for a in catalog.actions])
        self._offer_value = [self._values[self._conversion[o]] if o in self._conversion else 0.0 for o in offers] + [0.0]

    def action_parts(self) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.intp], FloatArray]:
        """Each catalog action's offer, channel and slot as indices into ``Components``' lists (the
        trailing entry for do-nothing), and its cost."""
        return self._a_offer, self._a_channel, self._a_slot, self._a_cost

    def _next_id(self) -> str:
        self._sequence += 1
        return f"{self._id_prefix}-{self._sequence}"

    def _record(self, customer: int) -> Record:
        record = self._records.get(customer)
        if record is None:
            record = self._records[customer] = Record([], [])
        return record

    def _schedule(self, customer: int, decided_at: float, outcome: Outcome) -> None:
        self._last_response = None
        self._record(customer).outcomes.append(Scheduled(decided_at, outcome))
        self._pushed += 1
        heapq.heappush(self._queue, (outcome.event_time, self._pushed, outcome))

    def _schedule_organic(self, organic: list[tuple[float, int, str]]) -> None:
        """Schedule outcomes that happen whatever Brein does: (event time, customer, type)."""
        organic.sort()
        for at, i, outcome_type in organic:
            self._schedule(i, NO_DECISION, Outcome(self._next_id(), i, outcome_type, at, self._values[outcome_type]))

    def _check_customer(self, customer: int) -> None:
        if not 0 <= customer < self.customers:
            raise ValueError(f"customer: expected an index in [0, {self.customers}), got {customer}")

    def _check_window(self, start: float, days: float) -> None:
        if not days > 0:
            raise ValueError(f"days: expected a positive number, got {days}")
        if start < self.start or start + days * DAY > self.start + self.horizon_days * DAY + 1.0:
            raise ValueError(
                f"start, days: expected a window inside the world's horizon "
                f"[{self.start:.0f}, +{self.horizon_days:g} days], got [{start:.0f}, +{days:g} days]"
            )

    # ----------------------------------------------------------------------------- what a world says

    def _components(self, customer: int, t: float) -> Components:
        raise NotImplementedError

    def _response(self, customer: int, t: float) -> Components:
        """``_components``, computed once while the world stays as it is."""
        last = self._last_response
        if last is not None and last[0] == customer and last[1] == t:
            return last[2]
        response = self._components(customer, t)
        self._last_response = (customer, t, response)
        return response

    def _contact_consent(self, customer: int) -> dict[str, bool]:
        """Contact consent per catalog channel as the customer gave it (before any unsubscribe)."""
        raise NotImplementedError

    def arrivals(self, start: float, days: float) -> Schedule:
        raise NotImplementedError

    # ----------------------------------------------------------------------------- events

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

    # ----------------------------------------------------------------------------- what Brein knows

    def consent(self, customer: int, t: float) -> Consent:
        """Personalisation consent, and contact consent per catalog channel (withdrawn by an unsubscribe)."""
        self._check_customer(customer)
        contact = self._contact_consent(customer)
        record = self._records.get(customer)
        if record is not None and self._unsubscribe_type is not None:
            for scheduled in record.outcomes:
                outcome = scheduled.outcome
                if outcome.type == self._unsubscribe_type and outcome.event_time <= t and scheduled.decided_at <= t:
                    contact[outcome.channel] = False
        return Consent(self._personalised(customer), contact)

    def _personalised(self, customer: int) -> bool:
        raise NotImplementedError

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

    def _indices(self, actions: Sequence[Action] | None) -> npt.NDArray[np.intp] | slice:
        if actions is None:
            return slice(None)
        position = self._position
        try:
            return np.fromiter((position[a.id] for a in actions), dtype=np.intp, count=len(actions))
        except KeyError as error:
            raise ValueError(f"actions: expected actions of the world's catalog, got {error.args[0]!r}") from None

    def _gains(self, k: Components, actions: Sequence[Action] | None) -> FloatArray:
        index = self._indices(actions)
        value: FloatArray = np.multiply(k.offer_p, k.offer_value)[self._a_offer[index]]
        value *= np.asarray(k.channel)[self._a_channel[index]]
        value *= np.asarray(k.slot)[self._a_slot[index]]
        value -= np.asarray(k.harm)[self._a_channel[index]]
        value -= self._a_cost[index]
        return value

    def expected_values(self, customer: int, t: float, actions: Sequence[Action] | None = None) -> FloatArray:
        """True expected value of each action (default: the whole catalog, in catalog order) for the
        customer at ``t``, given everything that happened before: the expected money of outcomes
        credited to a decision now (each type's window, no further contact assumed) minus the cost."""
        self._check_customer(customer)
        k = self._response(customer, t)
        return self._gains(k, actions) + k.base

    def expected_gains(self, customer: int, t: float, actions: Sequence[Action] | None = None) -> FloatArray:
        """``expected_values`` minus do-nothing's: what choosing each action adds at ``t``. Outcomes
        already on their way (which every decision in their window is credited with) cancel out, so
        summing gains over decisions counts each caused outcome once."""
        self._check_customer(customer)
        return self._gains(self._response(customer, t), actions)

    def contact_risks(self, customer: int, t: float) -> dict[str, tuple[float, float]]:
        """Per catalog channel, the chance that one more contact at ``t`` brings a complaint and an
        unsubscribe. Both grow with the contacts of the last 7 and 30 days."""
        self._check_customer(customer)
        k = self._response(customer, t)
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
        k = self._response(customer, t)
        o, c, s = int(self._a_offer[position]), int(self._a_channel[position]), int(self._a_slot[position])
        convert = k.offer_p[o] * k.channel[c] * k.slot[s]
        draws = rng.random(3)
        send = self.catalog.send_at(action, t)
        delivered = t if send is None else send
        caused = []
        if draws[0] < convert and k.offer_value[o] != 0.0:
            caused.append(self._conversion[action.offer])
        if draws[1] < k.complaint[c]:
            caused.append(self._complaint_type)
        if draws[2] < k.unsubscribe[c] and self._unsubscribe_type is not None:
            caused.append(self._unsubscribe_type)
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
        self._last_response = None
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
