"""The cross-fitted VW reward model: it learns (context x action) effects, never sees a decision's own reward."""

from __future__ import annotations

import math

import numpy as np
import pytest

from policies.estimators import DR, LoggedDecisions
from policies.reward_model import CrossFittedRewardModel

OFFERS = ["|o renewal |c email", "|o upgrade |c sms", "|o discount |c email", "|o do_nothing"]
# Expected reward by customer segment (rows) and offer (columns): the best offer depends on the segment.
TRUTH = np.array([[0.8, 0.1, 0.3, 0.5], [0.1, 0.7, 0.4, 0.5], [0.3, 0.3, 0.9, 0.5]])


def _log(n: int = 1500, seed: int = 0) -> tuple[list[str], list[list[str]], np.ndarray, np.ndarray, np.ndarray]:
    """Segments, and decisions offering the first 2 to 4 offers; rewards are TRUTH plus noise."""
    rng = np.random.default_rng(seed)
    segment = rng.integers(0, 3, size=n)
    offered = rng.integers(2, 5, size=n)
    chosen = rng.integers(0, offered)
    reward = TRUTH[segment, chosen] + rng.normal(0, 0.05, size=n)
    shared = [f"|u segment=s{s} tenure:{t:.2f} |n touchpoint=web" for s, t in zip(segment, rng.random(n), strict=True)]
    return shared, [OFFERS[:k] for k in offered], chosen, reward, segment


def test_predictions_recover_the_reward_of_every_offered_action_and_pad_with_zeros() -> None:
    shared, actions, chosen, reward, segment = _log()
    predictions = CrossFittedRewardModel().fit_predict(shared, actions, chosen, reward)
    offered = np.array([len(row) for row in actions])
    inside = np.arange(len(OFFERS))[None, :] < offered[:, None]
    assert predictions.shape == (len(shared), len(OFFERS))
    assert np.all(predictions[~inside] == 0.0)
    assert np.abs(predictions - TRUTH[segment])[inside].mean() < 0.05


def test_default_interactions_are_needed_to_learn_which_offer_suits_whom() -> None:
    shared, actions, chosen, reward, segment = _log()
    offered = np.array([len(row) for row in actions])
    inside = np.arange(len(OFFERS))[None, :] < offered[:, None]
    linear = CrossFittedRewardModel(interactions=()).fit_predict(shared, actions, chosen, reward)
    explicit = CrossFittedRewardModel(interactions=("uo", "uc", "no", "nc")).fit_predict(shared, actions, chosen, reward)
    default = CrossFittedRewardModel().fit_predict(shared, actions, chosen, reward)
    assert np.abs(linear - TRUTH[segment])[inside].mean() > 0.15
    np.testing.assert_array_equal(default, explicit)


def test_a_decisions_prediction_never_depends_on_its_own_reward() -> None:
    shared, actions, chosen, reward, _ = _log(n=400)
    model = CrossFittedRewardModel(folds=4, seed=3)
    before = model.fit_predict(shared, actions, chosen, reward)
    changed = reward.copy()
    changed[17] += 5.0
    after = model.fit_predict(shared, actions, chosen, changed)
    np.testing.assert_array_equal(after[17], before[17])
    assert not np.array_equal(after, before)  # other folds did learn from it


def test_shared_prefix_is_optional_and_results_are_reproducible() -> None:
    shared, actions, chosen, reward, _ = _log(n=300)
    model = CrossFittedRewardModel(folds=3, passes=2, vw_args=("--l2", "1e-7"))
    plain = model.fit_predict(shared, actions, chosen, reward)
    prefixed = model.fit_predict(["shared " + line for line in shared], actions, chosen, reward)
    np.testing.assert_array_equal(plain, prefixed)
    assert not np.array_equal(
        plain, CrossFittedRewardModel(folds=3, passes=2, seed=1).fit_predict(shared, actions, chosen, reward)
    )


def test_predictions_feed_the_doubly_robust_estimator() -> None:
    shared, actions, chosen, reward, segment = _log(n=2000, seed=1)
    offered = np.array([len(row) for row in actions])
    predictions = CrossFittedRewardModel().fit_predict(shared, actions, chosen, reward)
    # Logged uniformly over the offered actions; the target always takes the first offer.
    log = LoggedDecisions(reward=reward, propensity=1 / offered, action=chosen, reward_hat=predictions)
    target = np.zeros(predictions.shape)
    target[:, 0] = 1.0
    estimate = DR(reward_range=(-1.0, 2.0)).estimate(log, target)
    truth = TRUTH[segment, 0].mean()
    assert estimate.analytic.low <= truth <= estimate.analytic.high
    assert abs(estimate.value - truth) < 0.02


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"folds": 1}, r"folds: expected an integer >= 2, got 1"),
        ({"folds": 2.0}, r"folds: expected an integer >= 2, got 2.0"),
        ({"passes": 0}, r"passes: expected an integer >= 1, got 0"),
        ({"seed": -3}, r"seed: expected a non-negative integer, got -3"),
        ({"interactions": ["uo"]}, r"interactions: expected a tuple of two-letter namespace pairs .*got \['uo'\]"),
        ({"interactions": ("uoc",)}, r"interactions: expected .*got \('uoc',\)"),
        ({"vw_args": "--l2 1"}, r"vw_args: expected a tuple of strings, got '--l2 1'"),
    ],
)
def test_invalid_hyper_parameters(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrossFittedRewardModel(**kwargs)  # type: ignore[arg-type]


_SHARED = ["|u a", "|u b", "|u c"]
_ACTIONS = [OFFERS[:2], OFFERS[:3], OFFERS[:2]]
_CHOSEN = [0, 2, 1]
_REWARD = [1.0, 0.0, 0.5]


@pytest.mark.parametrize(
    ("shared", "actions", "chosen", "reward", "message"),
    [
        ([], [], [], [], r"shared: expected a non-empty sequence of VW-text strings, got list of length 0"),
        ("|u a", _ACTIONS, _CHOSEN, _REWARD, r"shared: expected a non-empty sequence of VW-text strings, got '\|u a'"),
        (
            ["|u a", "1 |u b", "|u c"],
            _ACTIONS,
            _CHOSEN,
            _REWARD,
            r"shared\[1\]: expected VW namespaces starting with '\|', got '1 \|u b'",
        ),
        (["|u a", None, "|u c"], _ACTIONS, _CHOSEN, _REWARD, r"shared\[1\]: expected VW namespaces starting with '\|', got None"),
        (
            _SHARED,
            _ACTIONS[:2],
            _CHOSEN,
            _REWARD,
            r"actions: expected 3 sequences of VW-text strings, one per decision, got list of length 2",
        ),
        (
            _SHARED,
            [OFFERS[:2], [], OFFERS[:2]],
            _CHOSEN,
            _REWARD,
            r"actions\[1\]: expected a non-empty sequence of VW-text strings, got \[\]",
        ),
        (
            _SHARED,
            [OFFERS[:2], ["o renewal"], OFFERS[:2]],
            _CHOSEN,
            _REWARD,
            r"actions\[1\]\[0\]: expected VW namespaces starting with '\|', got 'o renewal'",
        ),
        (
            _SHARED,
            _ACTIONS,
            [0, 3, 1],
            _REWARD,
            r"chosen: expected an index into each decision's actions, got 3 for decision 1 with 3 actions",
        ),
        (_SHARED, _ACTIONS, [0.0, 2.0, 1.0], _REWARD, r"chosen: expected 3 integer indices, got list of length 3"),
        (_SHARED, _ACTIONS, _CHOSEN, [1.0, math.nan, 0.0], r"reward: expected 3 finite numbers, got list of length 3"),
        (_SHARED, _ACTIONS, _CHOSEN, ["x", "y", "z"], r"reward: expected 3 finite numbers, got list of length 3"),
        (_SHARED, _ACTIONS, _CHOSEN, _REWARD, r"folds: expected at most one fold per decision \(3\), got 5"),
    ],
)
def test_invalid_inputs(shared: object, actions: object, chosen: object, reward: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CrossFittedRewardModel().fit_predict(shared, actions, chosen, reward)  # type: ignore[arg-type]
