"""A model that cannot take the service down: a snapshot with NaN weights (learned from an infinite
cost, as the joiner once let through) is refused before it serves and passed over on restart, and a
model that scores NaN at serving time is answered uniform over the eligible actions, never INTERNAL."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import pytest

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.decider import ServingPolicy
from bandit.learner import TextTrainer, VWPolicy, action_lines, model_version
from brain.core import Brain
from brain.probe import Prober
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from store import open_store
from store.records import ModelSnapshot
from tests.conftest import LiveServer
from tests.test_online import config_with, join_and_learn, simulate


def poisoned(config: BreinConfig, model: VWPolicy) -> bytes:
    """``model`` after learning from one example with cost 1e300: VW's weights become NaN."""
    lines = action_lines(tuple(Catalog(config).actions))
    with TextTrainer(model.args) as trainer:
        data, learned = trainer.learn(model.serialize(), [lines.text("shared |n touchpoint=app", 1, 1e300, 0.5)])
    assert data is not None and learned == 1
    return data


@pytest.fixture
def trained(make_brain: Callable[..., Brain], metrics: Metrics) -> Brain:
    brain = make_brain(config_with(snapshot_every=50), on_commit=metrics.on_commit, on_unusable=metrics.unusable)
    simulate(brain)
    join_and_learn(brain)
    assert not brain.decider.policy.model.cold
    return brain


def test_a_snapshot_with_nan_weights_is_refused_and_a_restart_serves_the_one_before(
    trained: Brain, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    good = trained.decider.policy
    assert isinstance(good.model, VWPolicy) and good.model.non_finite_weights() == 0
    bad = poisoned(trained.config, good.model)
    actions = Catalog(trained.config).actions
    assert math.isnan(VWPolicy(good.model.args, bad).pmf("shared |n touchpoint=app", actions)[0])
    trained.store.models.save(ModelSnapshot(model_version(bad), good.model.args, bad, good.policy_id, None)).result()
    assert trained.store.models.newest_version(good.policy_id) == model_version(bad)

    with caplog.at_level(logging.ERROR, logger="brein"):
        assert not trained.follow() and not trained.follow()  # refused, and not tried again
    assert [r.getMessage() for r in caplog.records if "weights are not finite" in r.getMessage()]
    assert trained.decider.policy is good
    assert metrics.registry.get_sample_value("brein_unusable_models_total", {"stage": "probe"}) == 1

    restarted = Brain(trained.config, open_store(trained.store.url))  # the newest snapshot that passes the probe
    try:
        assert restarted.decider.policy.model.version == good.model.version
    finally:
        restarted.store.close()


def test_a_model_scoring_nan_at_serving_time_answers_uniform(
    trained: Brain, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    good = trained.decider.policy
    assert isinstance(good.model, VWPolicy)
    broken = VWPolicy(good.model.args, poisoned(trained.config, good.model))
    trained.decider.swap_policy(ServingPolicy(good.policy_id, broken))  # as if it had passed the probe
    trained.decider.set_shadows((ServingPolicy("broken-shadow", broken), ServingPolicy("good-shadow", good.model)))
    live = LiveServer(trained, metrics)
    try:
        with caplog.at_level(logging.ERROR, logger="brein.decider"):
            for i in range(5):
                request = pb.DecideRequest(customer_id=f"c{i}", channel="app", request_id=f"nan-{i}")
                response = live.stub.Decide(request, timeout=5)
                probabilities = [r.probability for r in response.ranking]
                assert response.model_version == broken.version
                assert all(math.isclose(p, 1 / len(probabilities)) for p in probabilities)
        assert metrics.registry.get_sample_value("brein_unusable_models_total", {"stage": "serving"}) == 5
        logged = trained.store.decisions.decisions_by_request([f"nan-{i}" for i in range(5)])
        assert all(set(record.shadow) == {"good-shadow"} for record in logged.values())  # no NaN logged as a shadow's pmf
        assert len([r for r in caplog.records if "not finite" in r.getMessage()]) == 1  # once per model
    finally:
        live.stop()


def test_a_model_with_sparse_weights_is_probed_on_its_scores(trained: Brain) -> None:
    """VW shows sparse weights as no array: such a model is probed on the all-missing context only."""
    good = trained.decider.policy.model
    assert isinstance(good, VWPolicy)
    model = VWPolicy([*good.args, "--sparse_weights"], good.serialize())
    assert not model.cold and model.non_finite_weights() is None
    assert Prober(trained.config).check(model) is None


@pytest.mark.parametrize("several", [["--nn", "3", "--inpass"], ["--lrqfa", "uo2"]], ids=["nn", "lrqfa"])
def test_a_learner_keeping_several_weights_a_feature_is_probed_over_vws_own_table(
    make_brain: Callable[..., Brain], several: list[str]
) -> None:
    """vowpal-wabbit-next shows such a model's weights as an array larger than VW's table: read
    whole, it crashed the server and the worker at their first snapshot."""
    config = config_with(snapshot_every=50, extra_args=["--clip_p", "1.0", "--elim", *several])
    brain = make_brain(config)
    simulate(brain)
    join_and_learn(brain)
    model = brain.decider.policy.model
    assert isinstance(model, VWPolicy) and not model.cold and model.non_finite_weights() == 0
    assert VWPolicy(model.args, poisoned(config, model)).non_finite_weights()
