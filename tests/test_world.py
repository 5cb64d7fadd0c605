"""The simulated telecom world: reproducible, delayed and ordered outcomes, true expected values
that acting realises on average, and a difficulty that leaves a personalised policy room."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pytest

from bandit.catalog import DO_NOTHING, Catalog
from bandit.config import BreinConfig, load_config
from policies.simulation import Arrival, Outcome, World, WorldParams
from policies.simulation.baselines import calibrate, decision_points, fixed_policy, oracle_policy, uniform_policy
from policies.simulation.calibrate import trait_cells
from policies.simulation.eligibility import Eligibility
from policies.simulation.population import DAY, MONTH

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "telecom.toml"


@pytest.fixture(scope="module")
def config() -> BreinConfig:
    return load_config(CONFIG)


@pytest.fixture(scope="module")
def world(config: BreinConfig) -> World:
    """A shared world nobody acts on: read-only tests only."""
    return World(config, 10_000, seed=3)


def test_same_seed_same_world(config: BreinConfig) -> None:
    a, b, other = World(config, 500, seed=9), World(config, 500, seed=9), World(config, 500, seed=10)
    sa, sb = a.arrivals(a.start, 30), b.arrivals(b.start, 30)
    assert np.array_equal(sa.times, sb.times) and np.array_equal(sa.customers, sb.customers)
    assert np.array_equal(sa.touchpoint_index, sb.touchpoint_index)
    t = a.start + 10 * DAY
    assert [a.context(i, t) for i in range(50)] == [b.context(i, t) for i in range(50)]
    assert [a.context(i, t) for i in range(50)] != [other.context(i, t) for i in range(50)]
    assert np.array_equal(a.expected_values(7, t), b.expected_values(7, t))
    action = a.catalog.by_id["renewal/email/evening"]
    for w in (a, b):
        rng = np.random.default_rng(1)
        for i in range(500):
            w.act(i, t, action, rng, decision=f"d{i}")
    assert [(o.type, o.event_time, o.customer) for o in a.due_outcomes(math.inf)] == [
        (o.type, o.event_time, o.customer) for o in b.due_outcomes(math.inf)
    ]


def test_arrivals_a_few_times_a_month_in_order(world: World, config: BreinConfig) -> None:
    schedule = world.arrivals(world.start, 60)
    assert np.all(np.diff(schedule.times) >= 0)
    assert schedule.times[0] >= world.start and schedule.times[-1] < world.start + 60 * DAY
    visits_per_month = len(schedule) / world.customers / 2
    assert 2.0 < visits_per_month < 4.0
    per_customer = np.bincount(schedule.customers, minlength=world.customers)
    assert (per_customer >= 2).mean() > 0.6  # most customers come back inside one 30-day window
    assert set(schedule.touchpoint_names) == set(config.touchpoints)
    # Only app users arrive through the app.
    app = schedule.touchpoint_names.index("app")
    assert world.population.has_app[schedule.customers[schedule.touchpoint_index == app]].all()
    # Overlapping windows agree on the arrivals they share.
    later = world.arrivals(world.start + 20 * DAY, 10)
    inside = (schedule.times >= world.start + 20 * DAY) & (schedule.times < world.start + 30 * DAY)
    assert np.array_equal(later.times, schedule.times[inside])
    assert np.array_equal(later.customers, schedule.customers[inside])
    first = next(iter(later))
    assert isinstance(first, Arrival) and first.customer_id.startswith("c")


def test_arrival_hours_reveal_the_preferred_slot(world: World, config: BreinConfig) -> None:
    schedule = world.arrivals(world.start, 30)
    local = [(t - world.start) % DAY / 3600 + 1 for t in schedule.times[:20_000]]  # Amsterdam in winter: UTC+1
    slot = world.population.pref_slot[schedule.customers[:20_000]]
    hours = np.array(local)
    assert hours[slot == 0].mean() < hours[slot == 1].mean() < hours[slot == 2].mean()


def test_six_month_schedule_for_20000_customers_is_quick(config: BreinConfig) -> None:
    began = time.perf_counter()
    big = World(config, 20_000, seed=1)
    schedule = big.arrivals(big.start, 180)
    assert time.perf_counter() - began < 3.0
    assert len(schedule) > 20_000 * 5


def test_context_carries_the_configured_features(world: World, config: BreinConfig) -> None:
    numeric, categorical = world.context(0, world.start)
    assert set(config.features.numeric) <= set(numeric)
    assert set(config.features.non_personal) <= set(categorical)
    # What the eligibility rules read.
    assert {"handset_age_months", "months_to_contract_end"} <= set(numeric)
    assert {"plan", "has_app"} <= set(categorical)
    assert all(isinstance(v, float) and math.isfinite(v) for v in numeric.values())
    assert all(isinstance(v, str) for v in categorical.values())


def test_context_evolves_with_time(world: World) -> None:
    customer = next(i for i in range(world.customers) if world.context(i, world.start)[0]["months_to_contract_end"] > 6)
    now, later = world.context(customer, world.start)[0], world.context(customer, world.start + 2 * MONTH)[0]
    assert later["months_to_contract_end"] == pytest.approx(now["months_to_contract_end"] - 2, abs=0.011)
    assert later["tenure_months"] == pytest.approx(now["tenure_months"] + 2, abs=0.11)
    assert later["handset_age_months"] == pytest.approx(now["handset_age_months"] + 2, abs=0.11)


def test_organic_renewal_restarts_the_contract(world: World) -> None:
    renewal = next(o for i in range(world.customers) for o in world.outcomes_of(i) if o.type == "contract_renewal")
    before = world.context(renewal.customer, renewal.event_time - DAY)[0]["months_to_contract_end"]
    after = world.context(renewal.customer, renewal.event_time + DAY)[0]["months_to_contract_end"]
    assert renewal.organic and before < 2.0 and after == pytest.approx(world.params.contract_months, abs=0.1)


def test_consent(world: World) -> None:
    consents = [world.consent(i, world.start) for i in range(world.customers)]
    granted = np.mean([c.personalisation for c in consents])
    assert 0.75 < granted < 0.95
    for channel in ("sms", "outbound_call"):
        denied = np.mean([not c.contact[channel] for c in consents])
        assert 0.02 < denied < 0.2
    assert np.mean([not c.contact["app_push"] for c in consents]) == 0
    personalisation, contact = consents[0].request_fields()
    assert personalisation in ("granted", "denied") and set(contact) == set(world.catalog.channels)


def test_do_nothing_is_worth_the_organic_outcomes(world: World) -> None:
    do_nothing = world.catalog.by_id[DO_NOTHING]
    windows = {name: o.window_days * DAY for name, o in world.config.outcomes.items()}
    organic_renewals = 0
    for customer in range(0, world.customers, 7):
        t = world.start + float(customer % 90) * DAY
        organic = sum(o.value for o in world.outcomes_of(customer) if t < o.event_time <= t + windows[o.type])
        assert world.expected_values(customer, t, [do_nothing])[0] == pytest.approx(organic)
        assert world.expected_gains(customer, t, [do_nothing])[0] == 0.0
        assert world.realised_value(customer, t, do_nothing) == pytest.approx(organic)
        if any(o.type == "contract_renewal" and t < o.event_time <= t + windows[o.type] for o in world.outcomes_of(customer)):
            organic_renewals += 1
            assert world.profile(customer)["sure"]
    assert organic_renewals > 20


def test_customers_who_renew_anyway_are_best_left_alone(world: World) -> None:
    """A customer who renews anyway gains nothing from a renewal offer: it only costs."""
    actions = [a for a in world.actions if a.offer in ("renewal", "renewal_discount", "new_handset")]
    checked = 0
    for customer in np.flatnonzero(world.population.sure)[:300].tolist():
        t = world.start + 5 * DAY
        values = world.expected_values(customer, t, actions)
        baseline = world.expected_values(customer, t, [world.catalog.by_id[DO_NOTHING]])[0]
        costs = np.array([a.cost for a in actions])
        assert np.all(values <= baseline - costs + 1e-9)
        checked += 1
    assert checked == 300


def test_discount_helps_only_the_price_sensitive(world: World) -> None:
    plain, discount = world.catalog.by_id["renewal/email/evening"], world.catalog.by_id["renewal_discount/email/evening"]
    lift: dict[bool, list[float]] = {True: [], False: []}
    for customer in range(world.customers):
        profile = world.profile(customer)
        if profile["sure"] or profile["lost"]:
            continue
        months = world.context(customer, world.start)[0]["months_to_contract_end"]
        if months > 1.0:
            continue
        values = world.expected_values(customer, world.start, [plain, discount]) + [plain.cost, discount.cost]
        lift[bool(profile["price_sensitive"])].append(values[1] - values[0])
    assert np.mean(lift[True]) > 3 * np.mean(lift[False]) > 0
    assert np.mean(lift[False]) < discount.cost - plain.cost  # not worth its cost for them


def test_expected_values_are_fast(world: World) -> None:
    customers = list(range(0, world.customers, 5))
    t = world.start + 3 * DAY
    world.expected_values(0, t, world.actions)
    best = math.inf
    for _ in range(3):
        began = time.perf_counter()
        for customer in customers:
            world.expected_values(customer, t, world.actions)
        best = min(best, (time.perf_counter() - began) / len(customers))
    assert len(world.actions) > 50
    assert best < 100e-6


def test_difficulty(world: World) -> None:
    """The marketer's one campaign captures a third to a half of what the oracle gains over doing
    nothing, uniform random loses money: a personalised policy has clear room above the campaign."""
    result = calibrate(world, decision_points(world, 3000, seed=3))
    assert result.oracle_gain > 10.0
    assert 1 / 3 < result.best_fixed_share < 0.6, result.summary()
    assert result.best_fixed_action.startswith("renewal/")
    assert result.uniform_random < result.do_nothing
    assert result.do_nothing > 0


def test_side_offer_traits_are_only_partly_visible(world: World) -> None:
    """In the visible cell where its hidden trait is commonest, a side offer is held by some of the
    customers only, and is worth less there (even on each one's best channel and slot) than where the
    oracle, which sees the trait, sends it; the upsell's driver (data use) is visible, with noise."""
    cells = {c.offer: c for c in trait_cells(world, decision_points(world, 8000, seed=4, days=180))}
    for offer in ("new_handset", "sim_only", "renewal_discount"):
        cell = cells[offer]
        assert cell.decisions > 100 and cell.oracle_picks > 100, cell
        assert 0.3 < cell.trait_share < 0.95, cell
        assert cell.mean_gain < cell.oracle_gain, cell
    assert cells["data_upsell"].mean_gain > 0.5 * cells["data_upsell"].oracle_gain


def test_outcomes_are_delayed_and_come_in_order(config: BreinConfig) -> None:
    world = World(config, 3000, seed=5)
    eligibility = Eligibility(config)
    rng = np.random.default_rng(2)
    caused: dict[str, tuple[float, str]] = {}
    seen: list[Outcome] = []
    contacts = 0
    for event in world.events(world.start, 45):
        if isinstance(event, Arrival):
            eligible = eligibility.eligible(world, event.customer, event.event_time, event.touchpoint)
            action = oracle_policy(world, event.customer, event.event_time, eligible, rng)
            decision = f"d{contacts}"
            contacts += 1
            for outcome in world.act(event.customer, event.event_time, action, rng, decision=decision):
                caused[outcome.outcome_id] = (event.event_time, action.channel)
        else:
            seen.append(event)
    times = [o.event_time for o in seen]
    assert times == sorted(times)
    assert len({o.outcome_id for o in seen}) == len(seen)
    delays: dict[str, list[float]] = {}
    for outcome in seen:
        if outcome.outcome_id in caused:
            decided, channel = caused[outcome.outcome_id]
            assert outcome.channel == channel and not outcome.organic
            delays.setdefault(outcome.type, []).append((outcome.event_time - decided) / DAY)
        else:
            assert outcome.organic
        assert outcome.value == config.outcomes[outcome.type].value
    assert {"contract_renewal", "sim_activation", "complaint"} <= set(delays)
    for outcome_type, days in delays.items():
        assert min(days) > 0
        assert max(days) < config.outcomes[outcome_type].window_days
    renewal = np.array(delays["contract_renewal"])
    assert renewal.min() >= 1.0 and renewal.max() <= 26.1 and renewal.mean() > 5
    assert max(delays["sim_activation"]) <= 11.1 and max(delays["complaint"]) <= 4.1


def test_complaint_risk_grows_with_contact_frequency(config: BreinConfig) -> None:
    world = World(config, 2000, seed=6)
    email = world.catalog.by_id["sim_only/email/morning"]
    rng = np.random.default_rng(3)
    t = world.start + DAY
    before = np.array([world.contact_risks(i, t)["email"][0] for i in range(world.customers)])
    for step in range(3):
        for i in range(world.customers):
            world.act(i, t + step * 2 * DAY, email, rng)
    later = t + 6 * DAY + 3600
    after = np.array([world.contact_risks(i, later)["email"][0] for i in range(world.customers)])
    month_later = np.array([world.contact_risks(i, t + 20 * DAY)["email"][0] for i in range(world.customers)])
    assert np.all(after >= before) and after.mean() > 3 * before.mean()
    assert before.mean() < month_later.mean() < after.mean()  # the 7-day pressure is gone, the 30-day one stays
    # Calls irritate more than e-mails.
    risks = world.contact_risks(0, t)
    assert risks["outbound_call"][0] > risks["email"][0]
    # And the complaints actually come.
    complaints = sum(1 for o in world.due_outcomes(math.inf) if o.type == "complaint" and not o.organic)
    assert complaints > 0.5 * (before.sum() + after.sum())


def test_unsubscribe_withdraws_contact_consent(config: BreinConfig) -> None:
    world = World(config, 400, seed=8, params=WorldParams(unsubscribe_base=0.2))
    sms = world.catalog.by_id["data_upsell/sms/evening"]
    rng = np.random.default_rng(4)
    t = world.start + DAY
    unsubscribed = [o for i in range(world.customers) for o in world.act(i, t, sms, rng) if o.type == "unsubscribe"]
    assert unsubscribed
    outcome = unsubscribed[0]
    assert world.consent(outcome.customer, outcome.event_time - 1).contact["sms"] == (
        not world.population.contact_denied[outcome.customer, 1]
    )
    assert not world.consent(outcome.customer, outcome.event_time).contact["sms"]
    assert (
        world.expected_values(outcome.customer, outcome.event_time + DAY, [sms])[0]
        <= -sms.cost
        + 1e-9
        + world.expected_values(outcome.customer, outcome.event_time + DAY, [world.catalog.by_id[DO_NOTHING]])[0]
    )


def test_conversions_change_what_brein_sees(config: BreinConfig) -> None:
    world = World(config, 3000, seed=12, params=WorldParams(gadget_chance=1.0, upsell_max=1.0, upsell_threshold=0.0))
    rng = np.random.default_rng(5)
    t = world.start + DAY
    handset = world.catalog.by_id["new_handset/email/evening"]
    upsell = world.catalog.by_id["data_upsell/email/evening"]
    renewed = upgraded = 0
    for customer in range(world.customers):
        numeric, categorical = world.context(customer, t)
        if numeric["handset_age_months"] >= 30 and not world.population.sure[customer] and not renewed:
            for outcome in world.act(customer, t, handset, rng):
                if outcome.type == "contract_renewal":
                    after = world.context(customer, outcome.event_time + 1)[0]
                    assert after["handset_age_months"] == 0.0
                    assert after["months_to_contract_end"] == pytest.approx(world.params.contract_months, abs=0.01)
                    renewed += 1
        elif categorical["plan"] == "small" and not upgraded:
            for outcome in world.act(customer, t, upsell, rng):
                if outcome.type == "sim_activation":
                    assert world.context(customer, outcome.event_time + 1)[1]["plan"] == "medium"
                    assert world.context(customer, outcome.event_time + 1)[0]["data_usage_ratio"] < numeric["data_usage_ratio"]
                    upgraded += 1
    assert renewed and upgraded


def test_acting_realises_the_expected_value(config: BreinConfig) -> None:
    """Monte Carlo: one decision per customer, then nothing; the realised values average to the
    expected values within their standard error, for the oracle's and for random choices."""
    world = World(config, 12_000, seed=4)
    eligibility = Eligibility(config)
    rng = np.random.default_rng(6)
    schedule = world.arrivals(world.start, 20)
    first = np.unique(schedule.customers, return_index=True)[1]
    differences: dict[str, list[float]] = {"oracle": [], "uniform": []}
    decided = []
    for k, index in enumerate(first.tolist()):
        customer, t = int(schedule.customers[index]), float(schedule.times[index])
        touchpoint = schedule.touchpoint_names[int(schedule.touchpoint_index[index])]
        eligible = eligibility.eligible(world, customer, t, touchpoint)
        name = "oracle" if k % 2 else "uniform"
        action = (oracle_policy if k % 2 else uniform_policy)(world, customer, t, eligible, rng)
        expected = float(world.expected_values(customer, t, [action])[0])
        world.act(customer, t, action, rng)
        decided.append((name, customer, t, action, expected))
    for name, customer, t, action, expected in decided:
        differences[name].append(world.realised_value(customer, t, action) - expected)
    for name, values in differences.items():
        diff = np.array(values)
        assert len(diff) > 4000
        assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff)), name


def test_expected_gain_given_history_is_what_the_contact_causes(config: BreinConfig) -> None:
    """Several contacts per customer: each one causes, on average, its expected value over
    do-nothing plus its cost, whatever came before (complaint pressure, pending renewals)."""
    world = World(config, 4000, seed=7)
    eligibility = Eligibility(config)
    rng = np.random.default_rng(8)
    do_nothing = world.catalog.by_id[DO_NOTHING]
    campaign = fixed_policy("renewal/email/evening")
    expected: dict[str, float] = {}
    reported: list[Outcome] = []
    for k, event in enumerate(world.events(world.start, 30)):
        if not isinstance(event, Arrival):
            reported.append(event)
            continue
        eligible = eligibility.eligible(world, event.customer, event.event_time, event.touchpoint)
        action = (oracle_policy if k % 3 else campaign)(world, event.customer, event.event_time, eligible, rng)
        if action.do_nothing:
            continue
        values = world.expected_values(event.customer, event.event_time, [action, do_nothing])
        expected[f"d{k}"] = float(values[0] - values[1] + action.cost)
        world.act(event.customer, event.event_time, action, rng, decision=f"d{k}")
    caused = dict.fromkeys(expected, 0.0)
    for outcome in reported + world.due_outcomes(math.inf):
        if outcome.decision:
            caused[outcome.decision] += outcome.value
    diff = np.array([caused[d] - expected[d] for d in expected])
    assert len(diff) > 2000
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))


def test_eligibility_follows_brein_rules(world: World, config: BreinConfig) -> None:
    eligibility = Eligibility(config)
    catalog = Catalog(config)
    checked = 0
    for customer in range(0, 3000, 3):
        t = world.start + DAY
        numeric, categorical = world.context(customer, t)
        for touchpoint in ("web", "call_centre"):
            ids = {a.id for a in eligibility.eligible(world, customer, t, touchpoint)}
            assert DO_NOTHING in ids and ids <= set(catalog.by_id)
            offers = {i.split("/")[0] for i in ids}
            channels = {i.split("/")[1] for i in ids if i != DO_NOTHING}
            if numeric["months_to_contract_end"] > 4:
                assert "renewal" not in offers and "renewal_discount" not in offers
            if categorical["has_app"] == "no":
                assert "app_push" not in channels
            if touchpoint == "web":
                assert "outbound_call" not in channels
            checked += 1
    assert checked == 2000


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda c: World(c, 0, seed=1), "customers: expected at least 1, got 0"),
        (lambda c: World(c, 10, seed=1, horizon_days=0), "horizon_days: expected a positive number"),
        (lambda c: World(c, 10, seed=1).arrivals(World(c, 10, seed=1).start, 0), "days: expected a positive number"),
        (lambda c: World(c, 10, seed=1).arrivals(0.0, 1), "expected a window inside the world's horizon"),
        (lambda c: World(c, 10, seed=1).context(10, 0.0), r"customer: expected an index in \[0, 10\), got 10"),
        (lambda c: World(c, 10, seed=1).oracle(0, 0.0, []), "eligible: expected at least one action"),
        (lambda c: WorldParams(off_slot=1.5), r"off_slot: expected a number in \[0, 1\], got 1.5"),
        (lambda c: WorldParams(visits_per_month=0), "visits_per_month: expected a positive number"),
        (lambda c: World(c, 10, seed=1, params=WorldParams(conversions=(("renewal", "nope"),))), "params.conversions"),
    ],
)
def test_bad_input(config: BreinConfig, call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call(config)  # type: ignore[operator]


def test_acts_must_come_in_order_and_from_the_catalog(config: BreinConfig) -> None:
    world = World(config, 10, seed=1)
    rng = np.random.default_rng(0)
    action = world.catalog.by_id["sim_only/email/morning"]
    world.act(0, world.start + DAY, action, rng)
    with pytest.raises(ValueError, match="expected acts in event-time order"):
        world.act(0, world.start, action, rng)
    foreign = type(action)("x/y/z", "x", "y", "z", 0.0)
    with pytest.raises(ValueError, match="expected an action of the world's catalog"):
        world.act(1, world.start, foreign, rng)
    with pytest.raises(ValueError, match="expected actions of the world's catalog"):
        world.expected_values(1, world.start, [foreign])
