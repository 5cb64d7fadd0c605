"""The simulated customers: hidden traits, and the noisy, partial view Brein gets of them.

Everything is drawn once, vectorised, from one seeded generator. The visible features are derived
from the hidden traits with noise and thresholds (or the traits from the features), so the context
a request carries tells a learner a good deal, but never everything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from policies.simulation.base import DAY, MONTH

# The vocabulary of the telecom world. A config may name other offers, channels or slots: the
# customers do not respond to those (they only cost), see World.
RENEWAL, DISCOUNT, UPSELL, SIM_ONLY, HANDSET = "renewal", "renewal_discount", "data_upsell", "sim_only", "new_handset"
OFFERS = (RENEWAL, DISCOUNT, UPSELL, SIM_ONLY, HANDSET)
EMAIL, SMS, APP, CALL = "email", "sms", "app_push", "outbound_call"
CHANNELS = (EMAIL, SMS, APP, CALL)
SLOTS = ("morning", "afternoon", "evening")
# Local hours (start, end) in which a customer who prefers a slot tends to show up.
SLOT_HOURS = ((7.0, 11.5), (11.5, 17.5), (17.5, 22.5))
PLANS = ("small", "medium", "large", "unlimited")
PLAN_PRICE = (15.0, 22.0, 30.0, 42.0)
PLAN_BUNDLE_GB = (3.0, 10.0, 25.0, 40.0)  # "unlimited" reports usage against 40 GB
DEVICES = ("ios", "android", "feature_phone")
REGIONS = ("noord", "oost", "zuid", "west", "randstad")
# Relative weight of each calling touchpoint; "app" only for customers with the app.
TOUCHPOINT_WEIGHT = {"web": 0.30, "app": 0.30, "email_platform": 0.15, "call_centre": 0.10, "shop": 0.05, "campaign": 0.10}
OTHER_TOUCHPOINT_WEIGHT = 0.05


@dataclass(frozen=True, slots=True)
class WorldParams:
    """The knobs of the hidden structure. The defaults are the calibrated telecom world
    (see tests/test_world.py::test_difficulty and ``python -m policies.simulation.calibrate``)."""

    contract_months: float = 24.0
    visits_per_month: float = 3.0
    # Share of customers granting personalisation consent, and denying contact per channel.
    personalisation_consent: float = 0.85
    contact_denied: tuple[tuple[str, float], ...] = ((EMAIL, 0.03), (SMS, 0.08), (CALL, 0.10))
    # Response multipliers: the preferred channel and slot respond fully, others less. Everyone
    # reads some e-mail; an app push reaches few who do not live in the app; a call reaches many.
    off_channel: tuple[tuple[str, float], ...] = ((EMAIL, 0.6), (SMS, 0.4), (APP, 0.3), (CALL, 0.45))
    call_only_other: float = 0.06  # how well anything but a call reaches call-only people
    off_slot: float = 0.75
    now_slot: float = 0.6  # a "now" slot, if a config has one: neither preferred nor off
    fatigue: float = 0.8  # response multiplier per contact in the last 7 days
    annoyed: float = 0.3  # response multiplier for 60 days after a complaint
    # Renewal: share of price-sensitive customers that a plain renewal still convinces.
    plain_for_price_sensitive: float = 0.15
    discount_lift: float = 1.1  # a discount's lift for the not price-sensitive
    discount_for_price_sensitive: float = 1.0  # and for the price-sensitive (who are shopping around)
    # Side offers: the chance a heavy data user takes a bigger bundle, a frugal customer a SIM-only deal.
    upsell_max: float = 0.25
    upsell_threshold: float = 1.05  # usage over bundle where the upsell chance is half its maximum
    frugal_chance: float = 0.15
    gadget_chance: float = 0.35  # a gadget lover's chance to take a new handset once theirs is old
    # Complaint and unsubscribe risk per contact, growing with recent contacts.
    complaint_per_7d: float = 1.2
    complaint_per_30d: float = 0.25
    unsubscribe_base: float = 0.004
    # Organic, unprompted events per customer per month (service complaints, extra SIMs).
    organic_complaints: float = 0.004
    organic_activations: float = 0.003
    # What a converted offer produces. The config has no upsell outcome: a bigger bundle is
    # activated on the SIM, so it reports as a sim_activation.
    conversions: tuple[tuple[str, str], ...] = (
        (RENEWAL, "contract_renewal"),
        (DISCOUNT, "contract_renewal"),
        (HANDSET, "contract_renewal"),
        (SIM_ONLY, "sim_activation"),
        (UPSELL, "sim_activation"),
    )

    def __post_init__(self) -> None:
        unit = [
            (name, getattr(self, name))
            for name in (
                "personalisation_consent",
                "call_only_other",
                "off_slot",
                "now_slot",
                "fatigue",
                "annoyed",
                "plain_for_price_sensitive",
                "upsell_max",
                "frugal_chance",
                "gadget_chance",
            )
        ]
        unit += [(f"off_channel[{c!r}]", v) for c, v in self.off_channel]
        unit += [(f"contact_denied[{c!r}]", v) for c, v in self.contact_denied]
        for name, value in unit:
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}: expected a number in [0, 1], got {value}")
        for name in ("contract_months", "visits_per_month"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: expected a positive number, got {getattr(self, name)}")


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(1.0 / (1.0 + np.exp(-x)), dtype=np.float64)


@dataclass(slots=True)
class Population:
    """Per-customer arrays (index = customer). Times are epoch seconds, durations months."""

    # Visible at the start (evolving with time and events in World).
    since: FloatArray  # customer since
    plan: IntArray  # index into PLANS
    extra_spend: FloatArray  # monthly spend on top of the plan price (handset instalments, extras)
    usage_gb: FloatArray  # true monthly data use
    usage_noise: FloatArray  # multiplicative noise on the reported usage ratio
    email_open_rate: FloatArray  # share of the operator's e-mails opened lately
    app_sessions: FloatArray  # app sessions in the last 30 days
    has_app: BoolArray
    device: IntArray
    region: IntArray
    handset_since: FloatArray
    contract_end: FloatArray  # end of the contract running at the start
    # Hidden.
    sure: BoolArray  # renews on their own, around the contract end, whatever we do
    price_sensitive: BoolArray  # renews (if at all) only with a discount
    persuade: FloatArray  # chance a renewal offer on the right channel and slot convinces them
    channel_response: FloatArray  # (n, len(CHANNELS)) response multiplier per channel
    pref_channel: IntArray
    pref_slot: IntArray
    complaint_base: FloatArray  # complaint chance of one e-mail-like contact, before frequency
    unsubscribe_base: FloatArray
    gadget: FloatArray  # chance a new-handset offer convinces them once the handset is old
    frugal: FloatArray  # chance a SIM-only offer convinces them
    organic_offsets: FloatArray  # (n, cycles) days from contract end to the organic renewal
    # Consent.
    personalisation: BoolArray
    contact_denied: BoolArray  # (n, len(CHANNELS))
    # Arrivals.
    visit_rate: FloatArray  # visits per day
    slot_hours_share: FloatArray  # share of visits inside the preferred slot's hours
    touchpoint_cdf: FloatArray  # (n, touchpoints) cumulative touchpoint distribution
    # For diagnostics only.
    lost: BoolArray
    complainer: BoolArray

    def __len__(self) -> int:
        return len(self.since)


def draw_population(
    n: int, seed: int, start: float, params: WorldParams, touchpoints: tuple[str, ...], cycles: int
) -> Population:
    """Draw ``n`` customers from ``seed``. The same arguments give the same population."""
    rng = np.random.default_rng([seed, 0x5EED, n])
    months = params.contract_months

    device = rng.choice(len(DEVICES), size=n, p=[0.38, 0.52, 0.10])
    has_app = rng.random(n) < np.array([0.70, 0.60, 0.0])[device]
    region = rng.integers(0, len(REGIONS), size=n)
    tenure_kind = rng.choice(3, size=n, p=[0.25, 0.45, 0.30])
    tenure = np.where(
        tenure_kind == 0, rng.uniform(1, 24, n), np.where(tenure_kind == 1, rng.uniform(24, 84, n), rng.uniform(84, 180, n))
    )
    since = start - tenure * MONTH
    plan = rng.choice(len(PLANS), size=n, p=[0.25, 0.35, 0.25, 0.15])
    extra_spend = rng.gamma(2.0, 4.0, n) + rng.normal(0.0, 2.0, n)
    spend = np.array(PLAN_PRICE)[plan] + extra_spend
    bundle = np.array(PLAN_BUNDLE_GB)[plan]
    usage_gb = bundle * np.exp(rng.normal(np.log(0.75), 0.45, n))
    usage_noise = np.exp(rng.normal(0.0, 0.15, n))
    handset_since = start - rng.uniform(0, 42, n) * MONTH

    # Renewal disposition. Loyal long-tenure, higher-spend customers tend to renew on their own.
    sure = rng.random(n) < _sigmoid(-1.3 + 1.4 * (tenure >= 60) + 0.7 * (spend >= 35) + rng.normal(0, 0.7, n))
    low_spend, short = spend < 28, tenure < 36
    price_sensitive = ~sure & (
        rng.random(n) < _sigmoid(-2.6 + 2.2 * low_spend + 1.2 * short + 1.2 * (low_spend & short) + rng.normal(0, 0.5, n))
    )
    lost = ~sure & (rng.random(n) < 0.2 + 0.1 * (tenure < 12))
    persuade = np.where(lost, 0.03, 0.35 + 0.3 * rng.beta(2, 2, n))
    persuade = np.where(sure, 0.0, persuade)

    # Channels: the app for app users, SMS and calls for feature phones, calls for the long-tenured.
    probs = np.where(
        has_app[:, None],
        np.array([0.25, 0.08, 0.60, 0.07]),
        np.where((device == 2)[:, None], np.array([0.05, 0.55, 0.0, 0.40]), np.array([0.70, 0.15, 0.0, 0.15])),
    )
    long_tenure = tenure >= 84
    probs[long_tenure] *= 0.9
    probs[long_tenure, 3] += 0.1
    pref_channel = (probs.cumsum(axis=1) < rng.random(n)[:, None]).sum(axis=1).clip(0, len(CHANNELS) - 1)
    off = dict(params.off_channel)
    channel_response = np.tile(np.array([off.get(c, 0.0) for c in CHANNELS]), (n, 1))
    call_only = pref_channel == 3
    channel_response[call_only, :3] = params.call_only_other
    channel_response[np.arange(n), pref_channel] = 1.0
    pref_slot = rng.choice(len(SLOTS), size=n, p=[0.3, 0.3, 0.4])
    # Behaviour the operator sees: e-mail opens and app sessions, louder for those who prefer them.
    email_pref, app_pref = pref_channel == 0, pref_channel == 2
    email_open_rate = np.where(email_pref, rng.beta(5, 4, n), rng.beta(2, 7, n))
    app_sessions = np.where(has_app, rng.poisson(np.where(app_pref, 22.0, 6.0)), 0).astype(np.float64)

    complainer = rng.random(n) < 0.15
    complaint_base = np.where(complainer, 0.05, 0.006) * np.exp(rng.normal(0, 0.3, n))
    unsubscribe_base = params.unsubscribe_base * np.where(complainer, 3.0, 1.0)
    gadget_lover = rng.random(n) < _sigmoid(-2.6 + 2.0 * (device == 0) + 1.3 * (spend >= 35) + rng.normal(0, 0.4, n))
    gadget = np.where(sure, 0.0, np.where(gadget_lover, params.gadget_chance, 0.03))
    frugal_kind = rng.random(n) < _sigmoid(-3.2 + 2.0 * (spend < 25) + 1.5 * (tenure >= 60) + rng.normal(0, 0.4, n))
    frugal = np.where(frugal_kind, params.frugal_chance, 0.01)

    # Contracts. Sure customers renew organically some days around their contract end; the others
    # are anywhere in their term, some already out of contract (month to month).
    organic_offsets = rng.uniform(-45.0, 20.0, (n, cycles))
    first_organic = start + rng.uniform(0.0, months, n) * MONTH
    contract_end = np.where(sure, first_organic - organic_offsets[:, 0] * DAY, start + rng.uniform(-6.0, months, n) * MONTH)

    personalisation = rng.random(n) < params.personalisation_consent
    denied = dict(params.contact_denied)
    contact_denied = np.column_stack([rng.random(n) < denied.get(c, 0.0) for c in CHANNELS])

    visit_rate = rng.gamma(2.0, params.visits_per_month / 2.0, n) / (MONTH / DAY)
    slot_hours_share = rng.uniform(0.55, 0.9, n)
    weights = np.array([TOUCHPOINT_WEIGHT.get(tp, OTHER_TOUCHPOINT_WEIGHT) for tp in touchpoints])
    tp_weights = np.tile(weights, (n, 1)) * rng.gamma(4.0, 0.25, (n, len(touchpoints)))
    if "app" in touchpoints:
        tp_weights[~has_app, touchpoints.index("app")] = 0.0
    tp_cdf = np.cumsum(tp_weights, axis=1)
    tp_cdf /= tp_cdf[:, -1:]

    return Population(
        since=since,
        plan=plan,
        extra_spend=extra_spend,
        usage_gb=usage_gb,
        usage_noise=usage_noise,
        email_open_rate=email_open_rate,
        app_sessions=app_sessions,
        has_app=has_app,
        device=device,
        region=region,
        handset_since=handset_since,
        contract_end=contract_end,
        sure=sure,
        price_sensitive=price_sensitive,
        persuade=persuade,
        channel_response=channel_response,
        pref_channel=pref_channel,
        pref_slot=pref_slot,
        complaint_base=complaint_base,
        unsubscribe_base=unsubscribe_base,
        gadget=gadget,
        frugal=frugal,
        organic_offsets=organic_offsets,
        personalisation=personalisation,
        contact_denied=contact_denied,
        visit_rate=visit_rate,
        slot_hours_share=slot_hours_share,
        touchpoint_cdf=tp_cdf,
        lost=lost,
        complainer=complainer,
    )
