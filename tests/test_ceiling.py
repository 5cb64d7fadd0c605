"""The full-information yardstick: it sees what Brein sees and no more, and it learns from it."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from bandit.config import BreinConfig, load_config, parse_config
from bandit.history import history_feature_names, history_features
from policies.simulation.ceiling import FeatureView, YardstickSettings, evaluate, fit, full_information, greedy_policy, train
from policies.simulation.family import generate
from policies.simulation.world import HIDDEN_TRAITS, World
from store.records import Contact, CustomerHistory

CONFIG = Path(__file__).resolve().parent.parent / "examples" / "telecom.toml"


@pytest.fixture(scope="module")
def config() -> BreinConfig:
    return load_config(CONFIG)


def test_the_view_hides_personal_features_without_consent(config: BreinConfig) -> None:
    world = World(config, 400, seed=4)
    t = world.start + 3600.0
    consented = [c for c in range(400) if world.consent(c, t).personalisation]
    refused = [c for c in range(400) if not world.consent(c, t).personalisation]
    assert consented and refused
    view = FeatureView(config, world.categories())
    numeric, categorical = world.context(refused[0], t)
    names = [*numeric, *categorical]
    row = view.customer(world, refused[0], t)
    for name, value in zip(names, row, strict=False):
        assert math.isnan(value) == (name not in config.features.non_personal), name
    assert not any(math.isnan(v) for v in view.customer(world, consented[0], t)[: len(names)])
    hidden = FeatureView(config, world.categories(), hidden=True)
    assert len(hidden.customer(world, consented[0], t)) == len(row) + len(HIDDEN_TRAITS)


def test_the_history_columns_are_every_history_feature(config: BreinConfig) -> None:
    """The view's history columns come from history_feature_names: a history with every kind of
    contact and outcome gives exactly those names, so no column is silently always empty."""
    channels, types = tuple(config.channels), tuple(config.outcomes)
    now = 100 * 86_400.0
    contacts = tuple(Contact(f"d{i}", now - 86_400.0, channel, "renewal") for i, channel in enumerate(channels))
    history = CustomerHistory(contacts, now - 86_400.0, {t: now - 2 * 86_400.0 for t in types})
    assert set(history_features(history, now, channels, types)) == set(history_feature_names(channels, types))


def test_full_information_reads_the_features_and_the_traits_add_to_them(config: BreinConfig) -> None:
    shares = {}
    for hidden in (False, True):
        view = FeatureView(config, World(config, 1, 5).categories(), hidden=hidden)
        rows, gains = full_information(lambda: World(config, 1500, 5), view, 5, 60.0, sample=0.3, random_share=0.2)
        assert rows.shape[0] == gains.shape[0] > 10_000 and not np.isnan(gains).any()
        policy = greedy_policy(fit(rows, gains, rounds=100, leaves=31), view)
        shares[hidden] = evaluate(lambda: World(config, 1500, 6), policy, 6, 60.0).share
    # Measured: 0.53 on the features, 0.70 with the hidden traits too.
    assert 0.35 < shares[False] < 0.7
    assert shares[True] > shares[False] + 0.08


def test_the_yardstick_runs_on_a_generated_world() -> None:
    """Trained on other populations of the same generated world, judged on its evaluated one: it
    gains over do-nothing (measured: 0.47 of the oracle's gain at this size)."""
    member = generate(11)
    config = parse_config(member.config_data())
    assert member.evaluated_draw not in member.training_draws
    settings = YardstickSettings(sample=0.3, rounds=80, leaves=31, learning_rate=0.1)
    policy = train(member, config, 1500, 60.0, member.training_draws, settings)
    result = evaluate(lambda: member.world(config, 1500, member.evaluated_draw), policy, member.seed, 60.0)
    assert result.oracle_gain > 0 and result.share > 0.2, result
