"""Brein learning in the simulated telecom world, as a channel backend sees it: a real `brein serve`
process decides every arrival over gRPC, every outcome is reported when it happens, and the server
joins and learns on its own (its background joiner, its online learner, its snapshots).

A small run, in CI's budget: fewer customers and days than the issue's figure, so the bound is
looser. The full figure (10,000 customers, 180 days, the last 30 of them) is `brein simulate`'s, in
docs/simulation.md with the set-ups it was chosen from.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bandit.config import parse_config
from policies.simulation.base import DAY
from policies.simulation.baselines import best_single_action
from policies.simulation.harness import RunResult, gain_share, run, run_references
from policies.simulation.world import World
from serving.simulate import brein_driver
from tests.conftest import example_data

pytestmark = pytest.mark.costly

CUSTOMERS, DAYS, SEED, LAST_DAYS = 2_000, 100.0, 1, 30.0


@pytest.fixture(scope="module")
def runs() -> tuple[RunResult, list[RunResult]]:
    data = example_data()
    config = parse_config(data)
    best = best_single_action(World(config, CUSTOMERS, SEED), SEED)
    references = run_references(lambda: World(config, CUSTOMERS, SEED), SEED, DAYS, best)
    with brein_driver(data, in_process=False) as driver:
        brein = run(World(config, CUSTOMERS, SEED), driver, DAYS, seed=SEED)
    return brein, references


def first_days(result: RunResult, days: float) -> float:
    """Mean gain per decision over the run's first ``days``."""
    times, values = np.asarray(result.times), np.asarray(result.values)
    return float(values[times < result.start + days * DAY].mean())


def recent_contacts(result: RunResult, days: float) -> int:
    """Contacts (decisions with a cost: every channel costs something) in the run's last ``days``."""
    times, costs = np.asarray(result.times), np.asarray(result.costs)
    return int(((times >= result.end - days * DAY) & (costs > 0.0)).sum())


def test_brein_learns_over_grpc_to_beat_the_references(runs: tuple[RunResult, list[RunResult]]) -> None:
    brein, (nothing, best, uniform, oracle) = runs
    assert len(brein.times) > 15_000
    share = gain_share(brein, oracle, LAST_DAYS)
    uniform_share = gain_share(uniform, oracle, LAST_DAYS)
    best_share = gain_share(best, oracle, LAST_DAYS)
    summary = f"Brein {share:.2f}, best single {best_share:.2f}, uniform {uniform_share:.2f} of the oracle's gain"
    # The first 30 days are the cold start (no window has closed): uniform exploration, which loses money.
    assert first_days(brein, 28.0) < 0.0, summary
    # Then the learned policy gains over do-nothing, far above uniform random, and a good part of the
    # oracle's gain: measured 0.53-0.62 at this size (0.75-0.87 at 10,000 customers and 180 days), with the
    # best single action at 0.48. A server's joins follow the wall clock, so runs differ a little.
    assert nothing.value_per_decision(LAST_DAYS) == 0.0
    assert brein.value_per_decision(LAST_DAYS) > 0.0, summary
    assert share > uniform_share + 1.0, summary
    assert share > 0.3, summary
    assert brein.value_per_decision(LAST_DAYS) > 0.6 * best.value_per_decision(LAST_DAYS), summary
    # With restraint: far fewer contacts than uniform random once it has learned. Measured 0.40-0.46 of
    # uniform's contacts, and once above 0.5 while the rest of the suite loaded the machine.
    contacts = recent_contacts(brein, LAST_DAYS) / recent_contacts(uniform, LAST_DAYS)
    assert contacts < 0.6, f"{summary}; contacts {contacts:.2f} of uniform random's"


def test_the_gain_splits_by_offer(runs: tuple[RunResult, list[RunResult]]) -> None:
    brein, (nothing, best, _, oracle) = runs
    for result in (brein, oracle):
        by_offer = result.gain_by_offer(LAST_DAYS)
        assert math.isclose(sum(by_offer.values()), result.value_per_decision(LAST_DAYS), abs_tol=1e-9)
        assert by_offer["do_nothing"] == 0.0  # the gain is over do-nothing
    assert nothing.gain_by_offer(LAST_DAYS) == {"do_nothing": 0.0}
    assert set(best.gain_by_offer(LAST_DAYS)) == {"do_nothing", "renewal"}
    assert oracle.gain_by_offer(LAST_DAYS)["renewal"] > 0.0


def test_the_world_is_hard_enough_for_the_figure_to_mean_something(runs: tuple[RunResult, list[RunResult]]) -> None:
    _, (nothing, best, uniform, oracle) = runs
    assert oracle.value_per_decision(LAST_DAYS) > 0.5
    # The best single action (the campaign a marketer runs today) already captures a third or more.
    assert gain_share(best, oracle, LAST_DAYS) > 1 / 3
    assert gain_share(uniform, oracle, LAST_DAYS) < 0.0
    assert nothing.contacts == 0


def test_the_example_config_is_the_measured_set_up() -> None:
    """The set-up docs/simulation.md chose: if it changes, measure again (brein simulate) and update the docs."""
    config = parse_config(example_data())
    learner, features = config.learner, config.features
    assert config.joiner.credit == "equal"
    assert set(config.outcomes["contract_renewal"].offers) == {"renewal", "renewal_discount", "new_handset", "do_nothing"}
    assert learner.exploration == "squarecb" and learner.reward_scale == 10.0
    assert {"--clip_p", "--elim"} <= set(learner.extra_args)
    assert all(f.encoding == "bins" for f in features.numeric.values())
    assert set(features.numeric) >= {"months_to_contract_end", "data_usage_ratio", "email_open_rate", "app_sessions_30d"}
