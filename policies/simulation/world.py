"""The hand-built telecom world: customers who arrive at touchpoints, respond (or not) to what Brein
sends them days later, and whose true expected value of every action is known.

Time is event time in epoch seconds throughout. A harness drives the world in event-time order:

    world = World(config, customers=20_000, seed=7)
    for event in world.events(world.start, days=180):
        if isinstance(event, Arrival):
            ...                      # ask Brein to decide, with world.context / world.consent
            world.act(event.customer, event.event_time, action, rng, decision=decision_id)
        else:
            ...                      # report the Outcome to Brein

How a decision is valued, and what the world shares with the generated ones: ``base``. The oracle
knows everything the world knows at the moment: the hidden traits, and which outcomes are already
on their way (so it never sends a renewal offer to a customer who is renewing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from bandit.config import BreinConfig
from policies.simulation.base import (
    DAY,
    DEFAULT_START,
    MONTH,
    Arrival,
    BaseWorld,
    Components,
    Consent,
    Outcome,
    Record,
    Schedule,
    Visits,
    customer_key,
    daily_arrivals,
    slot_response,
)
from policies.simulation.population import (
    CALL,
    CHANNELS,
    DEVICES,
    DISCOUNT,
    HANDSET,
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

__all__ = ["DEFAULT_START", "HIDDEN_TRAITS", "Arrival", "Consent", "Outcome", "Schedule", "World", "customer_key"]

RENEWAL_TYPE = "contract_renewal"
ACTIVATION_TYPE = "sim_activation"
COMPLAINT_TYPE = "complaint"
UNSUBSCRIBE_TYPE = "unsubscribe"
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
# The hidden traits, in the order ``World.traits`` gives them.
HIDDEN_TRAITS = ("sure", "price_sensitive", "lost", "complainer", "persuade", "gadget", "frugal", "pref_channel", "pref_slot")
CATEGORIES: Mapping[str, tuple[str, ...]] = {"plan": PLANS, "has_app": ("no", "yes"), "device": DEVICES, "region": REGIONS}


def _renewal_factor(months_left: float) -> float:
    """How receptive to renewing: fully in the last month, a third at four months, little before."""
    if months_left <= 1.0:
        return 1.0
    if months_left <= 4.0:
        return 1.0 - 0.65 * (months_left - 1.0) / 3.0
    return 0.15


def _upsell_chance(ratio: float, maximum: float, threshold: float) -> float:
    return maximum / (1.0 + math.exp(-(ratio - threshold) / 0.1))


class World(BaseWorld):
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
        self.params = params or WorldParams()
        self.seed = seed
        super().__init__(
            config,
            customers,
            start=start,
            horizon_days=horizon_days,
            conversions=dict(self.params.conversions),
            complaint_type=COMPLAINT_TYPE,
            unsubscribe_type=UNSUBSCRIBE_TYPE,
            delays=DELAYS,
            id_prefix=f"sim-{seed}",
        )
        # World index of each catalog offer / channel / slot (-1: unknown to the customers).
        self._offer_kind = [OFFERS.index(o) if o in OFFERS else -1 for o in self._offers]
        self._channel_kind = [CHANNELS.index(c) if c in CHANNELS else -1 for c in self._channels]
        self._slot_kind = [SLOTS.index(s) if s in SLOTS else (-2 if s == "now" else -1) for s in self._slots]
        self._complaint_factor = [COMPLAINT_FACTOR.get(c, UNKNOWN_CHANNEL_COMPLAINT_FACTOR) for c in self._channels]
        self._complaint_value = self._values[COMPLAINT_TYPE]
        self._unsubscribe_value = self._values[UNSUBSCRIBE_TYPE]

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
        self._visits = Visits(
            pop.visit_rate,
            pop.slot_hours_share,
            np.array([h[0] for h in SLOT_HOURS])[pop.pref_slot],
            np.array([h[1] for h in SLOT_HOURS])[pop.pref_slot],
            pop.touchpoint_cdf,
        )
        self._organic_outcomes()

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
        self._schedule_organic(organic)

    # ----------------------------------------------------------------------------- arrivals

    def arrivals(self, start: float, days: float) -> Schedule:
        """Every customer's visits to touchpoints in ``[start, start + days)``, in time order.

        Each customer visits a few times a month (their own rate), mostly at the touchpoints they
        use and, more often than not, in the hours of their preferred send-time slot. Each local day
        is drawn from its own seed, so overlapping windows agree on the arrivals they share.
        """
        self._check_window(start, days)
        return daily_arrivals((self.seed,), self._zone, start, days, self._visits, tuple(self.config.touchpoints))

    # ----------------------------------------------------------------------------- what Brein sees

    def _state(self, customer: int, t: float) -> tuple[float, float, int, Record | None]:
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

    def categories(self) -> Mapping[str, tuple[str, ...]]:
        """Every level each categorical context field can take."""
        return CATEGORIES

    def _contact_consent(self, customer: int) -> dict[str, bool]:
        denied = self._contact_denied[customer]
        return {c: not (k >= 0 and denied[k]) for c, k in zip(self._channels, self._channel_kind, strict=True)}

    def _personalised(self, customer: int) -> bool:
        return bool(self._personalisation[customer])

    # ----------------------------------------------------------------------------- true values

    def _components(self, customer: int, t: float) -> Components:
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
        c7_by = c30_by = [0] * len(self._channels)  # read only
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
            c7, c30, c7_by, c30_by = record.contact_counts(t, len(self._channels))

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
        channel: list[float] = []
        complaint: list[float] = []
        unsubscribe: list[float] = []
        for c, kind in enumerate(self._channel_kind):
            name = self._channels[c]
            gone = name in unsubscribed
            channel.append(0.0 if gone or kind < 0 else response[kind] * reach)
            complaint.append(min(MAX_COMPLAINT, complaint_base * self._complaint_factor[c] * pressure))
            unsubscribe.append(
                0.0 if gone or name == CALL else min(MAX_UNSUBSCRIBE, unsubscribe_base * (1.0 + 1.5 * c7_by[c] + 0.4 * c30_by[c]))
            )
        slot = slot_response(self._slot_kind, self._pref_slot[customer], params.now_slot, params.off_slot)
        values = (self._complaint_value, self._unsubscribe_value)
        return Components.of(base, offer_p, self._offer_value, channel, slot, (complaint, unsubscribe), values)

    # ----------------------------------------------------------------------------- diagnostics

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

    def traits(self, customer: int) -> dict[str, float]:
        """The hidden traits as numbers (``HIDDEN_TRAITS``), for a model shown them as a diagnostic."""
        self._check_customer(customer)
        return {name: float(getattr(self.population, name)[customer]) for name in HIDDEN_TRAITS}
