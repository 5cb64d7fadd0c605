"""Off-policy evaluation values every policy with the probability floor serving gives it
(``learner.min_probability``)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import LabelledExample, VWPolicy, train
from bandit.policies import DoNothingPolicy, RulePolicy, UniformPolicy
from bandit.sampling import floored
from policies.evaluation import LoggedData, distribution
from policies.loading import parse_rules

FLOOR = 0.01


@pytest.fixture
def logged(config: BreinConfig) -> LoggedData:
    actions = tuple(Catalog(config).actions)
    n = 3
    return LoggedData(
        decision_ids=[f"d{i}" for i in range(n)],
        event_times=np.arange(n, dtype=float),
        features=[{"n": {"touchpoint": "app"}}] * n,
        actions=[actions] * n,
        chosen=np.zeros(n, dtype=np.int64),
        propensity=np.full(n, 1.0 / len(actions)),
        reward=np.zeros(n),
    )


def greedy_vw(config: BreinConfig) -> VWPolicy:
    """A real VW policy whose pmf is one-hot (epsilon 0, one action learned better than the rest):
    every other action has probability 0."""
    args = ["--cb_explore_adf", "--quiet", "--epsilon", "0"]
    actions = tuple(Catalog(config).actions)
    shared = FeatureEncoder(config).shared_line({"n": {"touchpoint": "app"}})
    model, _ = train(args, None, [LabelledExample(shared, actions, 1, 1.0, -1.0)])
    assert model is not None
    return VWPolicy(args, model)


def test_a_learned_policy_is_evaluated_with_the_floor_serving_gives_it(config: BreinConfig, logged: LoggedData) -> None:
    policy = greedy_vw(config)
    encoder = FeatureEncoder(config)
    width = len(logged.actions[0])
    raw = distribution("candidate", policy, encoder, logged)
    assert (raw == 0.0).sum() == len(logged) * (width - 1)  # the learner's own pmf: one-hot
    served = distribution("candidate", policy, encoder, logged, min_probability=FLOOR)
    assert served.min() == pytest.approx(FLOOR)
    np.testing.assert_allclose(served.sum(axis=1), 1.0)
    np.testing.assert_allclose(served[0], floored(raw[0].tolist(), FLOOR))
    assert served[0].argmax() == raw[0].argmax()  # the ranking is kept


def test_every_policy_that_can_serve_is_evaluated_floored_and_logged_shadow_pmfs_are_not_floored_again(
    config: BreinConfig, logged: LoggedData
) -> None:
    """Serving floors whatever it serves or shadows, rules and do-nothing included: a one-hot rules
    policy judged unfloored was valued +26.3 over uniform while serving it floored was worth -15.7."""
    encoder = FeatureEncoder(config)
    width = len(logged.actions[0])
    rules = RulePolicy(parse_rules(json.dumps([{"action": logged.actions[0][1].id, "when": "true"}])), version="r")
    for policy in (rules, DoNothingPolicy()):
        raw = distribution("fixed", policy, encoder, logged)
        assert (raw == 0.0).sum() == len(logged) * (width - 1)  # one-hot as the policy gives it
        served = distribution("fixed", policy, encoder, logged, min_probability=FLOOR)
        np.testing.assert_allclose(served, [floored(row.tolist(), FLOOR) for row in raw])
        assert served.min() == pytest.approx(FLOOR)
    uniform = distribution("uniform", UniformPolicy(), encoder, logged, min_probability=FLOOR)
    np.testing.assert_allclose(uniform, 1.0 / width)
    shadow = [1.0] + [0.0] * (width - 1)  # a pmf as logged: serving floored it already (here: no floor then)
    logged.shadow = [{"candidate": shadow}] * len(logged)
    from_log = distribution("candidate", greedy_vw(config), encoder, logged, min_probability=FLOOR, logged_as="candidate")
    np.testing.assert_allclose(from_log, np.array([shadow] * len(logged)))
