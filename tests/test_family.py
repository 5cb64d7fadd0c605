"""Brein across a small family of generated worlds (``TEST_SEEDS``), in-process with the configs the
generator writes and today's learner defaults: in each world, in the last 30 days, Brein should take
more of the oracle's gain than the best single action (the campaign a marketer already runs).

A small run for the suite's budget (8,000 decisions over 100 days a world). The full measure, with
the yardstick and 20 held-out worlds, is ``python -m bench.learning``."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bandit.config import parse_config
from policies.simulation.baselines import best_single_action, fixed_policy, oracle_policy
from policies.simulation.family import TEST_SEEDS, customers_for, generate
from policies.simulation.harness import ReferenceDriver, RunResult, gain_share, run
from serving.simulate import brein_driver

pytestmark = pytest.mark.costly

DAYS, DECISIONS, LAST_DAYS = 100.0, 8_000, 30.0


def shares(seed: int) -> dict[str, Any]:
    generated = generate(seed)
    data = generated.config_data()
    config = parse_config(data)
    customers = customers_for(generated, DECISIONS, DAYS)

    def reference(name: str, policy: Any) -> RunResult:
        world = generated.world(config, customers, generated.evaluated_draw)
        return run(world, ReferenceDriver(name, world, policy, config, seed), DAYS, seed=seed)

    best = best_single_action(generated.world(config, customers, generated.evaluated_draw), seed)
    single, oracle = reference("best single action", fixed_policy(best)), reference("oracle", oracle_policy)
    with brein_driver(data, in_process=True) as driver:
        brein = run(generated.world(config, customers, generated.evaluated_draw), driver, DAYS, seed=seed)
    return {
        "world": generated.name,
        "decisions": len(brein.times),
        "brein": gain_share(brein, oracle, LAST_DAYS),
        "best_single": gain_share(single, oracle, LAST_DAYS),
    }


@pytest.fixture(scope="module")
def family() -> list[dict[str, Any]]:
    return [shares(seed) for seed in TEST_SEEDS]


def test_the_worlds_are_the_size_asked(family: list[dict[str, Any]]) -> None:
    for world in family:
        assert DECISIONS <= world["decisions"] <= 1.3 * DECISIONS, world


def test_brein_beats_the_best_single_action_in_every_world(family: list[dict[str, Any]]) -> None:
    assert all(world["brein"] > world["best_single"] for world in family), family


def in_unit(data: dict[str, Any], factor: float) -> dict[str, Any]:
    """A config with its money counted in a unit ``factor`` times smaller (cents for euros: 100)."""
    data = copy.deepcopy(data)
    for kind in data["outcomes"].values():
        kind["value"] *= factor
    for table in ("offers", "channels"):
        for item in data[table].values():
            item["cost"] = item.get("cost", 0.0) * factor
    return data


def test_a_world_counted_in_cents_is_learned_as_in_euros() -> None:
    """The unit money is counted in changes no world, so it must not change what Brein learns: with a
    fixed reward scale a world counted in cents looked 100 times as sure of every cost gap to SquareCB,
    and Brein stopped contacting (docs/simulation.md, "The unit of money")."""
    seed = TEST_SEEDS[0]
    generated = generate(seed)
    customers = customers_for(generated, DECISIONS, DAYS)
    runs = []
    for factor in (1.0, 100.0):
        data = in_unit(generated.config_data(), factor)
        config = parse_config(data)
        oracle_world = generated.world(config, customers, generated.evaluated_draw)
        oracle = run(oracle_world, ReferenceDriver("oracle", oracle_world, oracle_policy, config, seed), DAYS, seed=seed)
        with brein_driver(data, in_process=True) as driver:
            brein = run(generated.world(config, customers, generated.evaluated_draw), driver, DAYS, seed=seed)
        runs.append((gain_share(brein, oracle, LAST_DAYS), brein.contacts))
    (euros, euro_contacts), (cents, cent_contacts) = runs
    assert euro_contacts > 0 and abs(cent_contacts - euro_contacts) <= 0.02 * euro_contacts, runs
    assert cents == pytest.approx(euros, abs=0.02), runs
