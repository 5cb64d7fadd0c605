"""The family of generated worlds: reproducible from a seed, inside the issue's ranges, calibrated,
with the config a new user would write, and with the hand-built telecom world as a member that
gives the same figures as before."""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

from bandit.config import load_config, parse_config
from policies.simulation.base import DAY, DELIVERY_MARGIN_DAYS
from policies.simulation.baselines import calibrate, decision_points, oracle_policy, uniform_policy
from policies.simulation.draw import draw_spec
from policies.simulation.eligibility import Eligibility
from policies.simulation.family import (
    CALIBRATION_CUSTOMERS,
    CALIBRATION_DAYS,
    CALIBRATION_DRAW,
    CALIBRATION_POINTS,
    CHOOSING_SEEDS,
    HELD_OUT_SEEDS,
    TEST_SEEDS,
    GeneratedMember,
    TelecomMember,
    customers_for,
    generate,
    member,
    with_overrides,
)
from policies.simulation.generated import GeneratedWorld
from policies.simulation.harness import run, run_references
from policies.simulation.user_config import user_config, write_config
from serving.simulate import brein_driver

# Draws to check the ranges on: never a held-out seed (nobody looks at those while choosing).
RANGE_SEEDS = [*range(1, 41), *CHOOSING_SEEDS]


@pytest.fixture(scope="module")
def members() -> dict[int, GeneratedMember]:
    return {seed: generate(seed) for seed in TEST_SEEDS}


def test_the_seed_sets_are_apart() -> None:
    assert not set(CHOOSING_SEEDS) & set(HELD_OUT_SEEDS)
    assert not set(TEST_SEEDS) & (set(CHOOSING_SEEDS) | set(HELD_OUT_SEEDS))
    assert len(HELD_OUT_SEEDS) == 20 and len(CHOOSING_SEEDS) >= 20


def test_the_same_seed_draws_the_same_world(members: dict[int, GeneratedMember]) -> None:
    seed = TEST_SEEDS[0]
    again = generate(seed)
    assert again.spec == members[seed].spec and again.calibration == members[seed].calibration
    assert draw_spec(seed) != draw_spec(seed + 1)
    config = parse_config(again.config_data())
    a, b = again.world(config, 400, 0), members[seed].world(config, 400, 0)
    other_draw = again.world(config, 400, 1)
    sa, sb = a.arrivals(a.start, 30), b.arrivals(b.start, 30)
    assert np.array_equal(sa.times, sb.times) and np.array_equal(sa.customers, sb.customers)
    t = a.start + 10 * DAY
    assert [a.context(i, t) for i in range(50)] == [b.context(i, t) for i in range(50)]
    assert [a.context(i, t) for i in range(50)] != [other_draw.context(i, t) for i in range(50)]
    assert [a.traits(i) for i in range(50)] == [b.traits(i) for i in range(50)]


@pytest.mark.parametrize("seed", RANGE_SEEDS)
def test_every_drawn_world_is_inside_the_ranges(seed: int) -> None:
    spec = draw_spec(seed)
    config = parse_config(user_config(spec))
    assert 3 <= len(spec.offers) <= 8
    assert 2 <= len(spec.channels) <= 5
    slots = {slot for combo in config.combinations for slot in combo.slots}
    assert 1 <= len(slots) <= 4
    margin = DELIVERY_MARGIN_DAYS if slots - {"now"} else 0.0
    for outcome in spec.outcomes:
        assert 1 <= outcome.window_days <= 60
        low, high, _, _ = outcome.delay
        assert 0 <= low < high and low < outcome.window_days - margin, outcome
    kinds = [o.kind for o in spec.outcomes]
    assert kinds.count("conversion") >= 1 and kinds.count("complaint") == 1
    assert {o.outcome for o in spec.offers} == {o.name for o in spec.outcomes if o.kind == "conversion"}
    assert spec.clock.outcome == spec.outcomes[0].name and spec.numeric[0].kind == "clock"
    assert spec.irrelevant and {f.kind for f in spec.numeric} >= {"clock", "tenure"}
    assert spec.visits_per_day * spec.longest_window > 1.0
    assert all(o.cost >= 0 for o in spec.offers) and all(c.cost >= 0 for c in spec.channels)
    assert 0 < len(config.offers) and all(c.offers for c in spec.channels)


def test_the_family_is_varied() -> None:
    """Across seeds the worlds differ in the things that make learning hard."""
    specs = [draw_spec(seed) for seed in RANGE_SEEDS]
    assert len({s.domain for s in specs}) >= 4
    assert len({len(s.offers) for s in specs}) >= 5 and len({len(s.channels) for s in specs}) == 4
    assert any(any(o.discount_of for o in s.offers) for s in specs)
    assert any(len({o.outcome for o in s.offers}) == 1 for s in specs)  # several offers share one type
    assert any(len({o.outcome for o in s.offers}) == 3 for s in specs)
    assert any(any(not c.deferred for c in s.channels) for s in specs)
    assert any(any(o.kind == "unsubscribe" for o in s.outcomes) for s in specs)
    assert any(len(t.conditions) == 2 for s in specs for t in (s.lost, s.price_sensitive, s.complainer))  # conjunctions
    assert len({o.window_days for s in specs for o in s.outcomes}) >= 8


@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_the_best_single_action_takes_20_to_50_percent_on_the_calibration_sample(
    seed: int, members: dict[int, GeneratedMember]
) -> None:
    generated = members[seed]
    assert 0.2 <= generated.calibration.best_fixed_share <= 0.5, generated.calibration.summary()
    assert generated.calibration.oracle_gain > 0
    # The same sample, valued again through the world's own expected values: the same figures.
    config = parse_config(generated.config_data())
    world = GeneratedWorld(generated.spec, config, CALIBRATION_CUSTOMERS, CALIBRATION_DRAW)
    again = calibrate(world, decision_points(world, CALIBRATION_POINTS, seed, days=CALIBRATION_DAYS))
    assert again == generated.calibration


@pytest.mark.parametrize("seed", TEST_SEEDS)
def test_several_decisions_per_customer_inside_the_longest_window(seed: int, members: dict[int, GeneratedMember]) -> None:
    spec = members[seed].spec
    world = members[seed].world(parse_config(user_config(spec)), 3000, 0)
    arrivals = world.arrivals(world.start, spec.longest_window)
    assert len(arrivals) / world.customers > 1.0


def test_the_config_is_what_a_new_user_would_write(tmp_path: Path, members: dict[int, GeneratedMember]) -> None:
    for seed, generated in members.items():
        data = generated.config_data()
        assert "learner" not in data and "joiner" not in data
        assert all("offers" not in o for o in data["outcomes"].values())  # no credit restrictions
        assert "numeric" not in data["features"]  # no bin edges, no encodings from the world
        path = tmp_path / f"{seed}.toml"
        write_config(generated.spec, path)
        config = load_config(path)
        assert config.learner == parse_config({**data}).learner
        assert set(config.offers) == {o.name for o in generated.spec.offers}
        assert tomllib.loads(path.read_text())["outcomes"] == data["outcomes"]
        text = path.read_text()
        for field in generated.spec.numeric:
            assert field.name not in text  # no field, let alone a threshold on it, is named


def test_hidden_traits_are_only_partly_visible(members: dict[int, GeneratedMember]) -> None:
    """Customers who look the same to Brein (the same values of every condition field) still differ
    in their traits: a trait is a noisy function of what Brein sees."""
    generated = members[TEST_SEEDS[0]]
    config = parse_config(generated.config_data())
    world = generated.world(config, 4000, 0)
    spec = generated.spec
    offer = spec.offers[0]
    t = world.start
    inside: list[float] = []
    outside: list[float] = []
    for customer in range(world.customers):
        numeric, categorical = world.context(customer, t)
        holds = all(
            (categorical[c.field] in c.levels) if c.levels else ((numeric[c.field] < c.threshold) == c.below)
            for c in offer.responder.conditions
        )
        (inside if holds else outside).append(world.traits(customer)[f"responds_{offer.name}"])
    assert len(inside) > 100 and len(outside) > 100
    assert 0.1 < np.mean(inside) < 0.97 and 0.01 < np.mean(outside) < np.mean(inside)


def test_acting_realises_the_expected_value(members: dict[int, GeneratedMember]) -> None:
    """Monte Carlo, one decision per customer: realised values average to the world's expected
    values within their standard error, for the oracle's and for random choices."""
    generated = members[TEST_SEEDS[2]]
    config = parse_config(generated.config_data())
    world = generated.world(config, 12_000, 0)
    eligibility = Eligibility(config)
    rng = np.random.default_rng(6)
    schedule = world.arrivals(world.start, 20)
    first = np.unique(schedule.customers, return_index=True)[1]
    decided = []
    for k, index in enumerate(first.tolist()):
        customer, t = int(schedule.customers[index]), float(schedule.times[index])
        touchpoint = schedule.touchpoint_names[int(schedule.touchpoint_index[index])]
        eligible = eligibility.eligible(world, customer, t, touchpoint)
        action = (oracle_policy if k % 2 else uniform_policy)(world, customer, t, eligible, rng)
        decided.append((customer, t, action, float(world.expected_values(customer, t, [action])[0])))
        world.act(customer, t, action, rng)
    diff = np.array([world.realised_value(c, t, a) - expected for c, t, a, expected in decided])
    assert len(diff) > 3000 and sum(1 for _, _, a, _ in decided if not a.do_nothing) > 1000
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))


def test_people_who_convert_anyway_only_cost_money(members: dict[int, GeneratedMember]) -> None:
    generated = members[TEST_SEEDS[1]]
    config = parse_config(generated.config_data())
    world = generated.world(config, 3000, 0)
    spec = generated.spec
    primary = spec.clock.outcome
    sure = [c for c in range(world.customers) if world.traits(c)[f"sure_{primary}"]]
    assert sure and any(o.organic and o.type == primary for c in sure for o in world.outcomes_of(c))
    converts_to = {o.name: o.outcome for o in spec.offers}
    actions = [a for a in world.actions if not a.do_nothing and converts_to[a.offer] == primary]
    for customer in sure[:200]:
        gains = world.expected_gains(customer, world.start + DAY, actions)
        assert np.all(gains <= -np.array([a.cost for a in actions]) + 1e-9)


def test_the_clock_moves_with_time_and_restarts(members: dict[int, GeneratedMember]) -> None:
    generated = members[TEST_SEEDS[0]]
    config = parse_config(generated.config_data())
    world = generated.world(config, 2000, 0)
    clock = generated.spec.clock
    renewal = next(o for c in range(world.customers) for o in world.outcomes_of(c) if o.type == clock.outcome)
    before = world.context(renewal.customer, renewal.event_time - DAY)[0][clock.field]
    after = world.context(renewal.customer, renewal.event_time + DAY)[0][clock.field]
    assert after > before
    now, later = world.context(0, world.start)[0], world.context(0, world.start + 30 * DAY)[0]
    assert later["tenure_months"] > now["tenure_months"]


def test_the_telecom_world_is_a_member_with_the_same_figures_as_before() -> None:
    """Through the family and the shared interface the hand-built world gives exactly what it gave
    before the interface existed (measured on the commit before it: 800 customers, 50 days, seed 3).
    Brein's own figure changes with every learning default, so it is held to what it must do there:
    every decision answered, and more money than uniform random."""
    telecom = member("telecom:3")
    assert isinstance(telecom, TelecomMember)
    data = telecom.config_data()
    config = parse_config(data)
    references = run_references(lambda: telecom.world(config, 800, 3), 3, 50.0, "renewal/email/evening")
    figures = [(len(r.times), r.contacts, sum(r.values), r.outcomes) for r in references]
    assert figures == [
        (4100, 0, 0.0, {"contract_renewal": 29, "complaint": 6, "sim_activation": 5}),
        (4100, 705, 13197.976443415695, {"contract_renewal": 76, "complaint": 19, "unsubscribe": 13, "sim_activation": 5}),
        (4100, 2945, -23659.166657005102, {"contract_renewal": 78, "complaint": 62, "unsubscribe": 27, "sim_activation": 48}),
        (4100, 1181, 24492.817734253556, {"contract_renewal": 127, "complaint": 29, "sim_activation": 103, "unsubscribe": 9}),
    ]
    with brein_driver(data, in_process=True) as driver:
        brein = run(telecom.world(config, 800, 3), driver, 50.0, seed=3)
    assert len(brein.times) == 4100 and sum(brein.values) > figures[2][2]


def test_sizes_and_overrides() -> None:
    telecom = TelecomMember()
    assert customers_for(telecom, 50_000, 180) == pytest.approx(50_000 * 1.05 / (3.0 / (365.25 / 12)) / 180, abs=1)
    merged = with_overrides(
        {"learner": {"reward_scale": 100.0, "interactions": ["uo"]}, "a": 1}, {"learner": {"reward_scale": 10.0}}
    )
    assert merged == {"learner": {"reward_scale": 10.0, "interactions": ["uo"]}, "a": 1}


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: member("nope"), "member: expected 'telecom'"),
        (lambda: member("g12x"), "member: expected 'telecom'"),
        (
            lambda: GeneratedWorld(draw_spec(11), parse_config(user_config(draw_spec(12))), 10),
            "expected the world's outcome types|unknown outcome type",
        ),
        (lambda: GeneratedWorld(draw_spec(11), parse_config(user_config(draw_spec(11))), 0), "customers: expected at least 1"),
    ],
)
def test_bad_input(call: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()  # type: ignore[operator]
