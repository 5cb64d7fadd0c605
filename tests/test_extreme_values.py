"""Rewards entering the learner are finite and bounded by construction: outcomes written straight
into a real store (past the API's bounds, as one stored before the bounds existed) are clamped by
the joiner, the model learns, and Decide on a live server answers with finite probabilities."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from bandit.config import parse_config
from bandit.features import FeatureEncoder
from bandit.learner import VWPolicy
from brain.core import Brain
from brain.probe import Prober
from brain.worker import Worker
from serving import converters
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from store.records import OutcomeRecord
from tests.conftest import T0, Clock, LiveServer, example_data, sqlite_rows
from tests.test_online import join_and_learn, simulate, spend, spend_config

DAY = 86_400.0
EXTREMES = (1e308, 1e308, math.inf, -1e308)  # SQLite refuses NaN (stored as NULL)


def test_a_stream_with_extreme_stored_values_is_learned_and_decide_stays_finite(
    make_brain: Callable[..., Brain], metrics: Metrics, clock: Clock
) -> None:
    data = example_data()
    data["learner"].update(snapshot_every=50)
    brain = make_brain(parse_config(data), on_commit=metrics.on_commit)
    simulate(brain)
    decisions = sqlite_rows(brain.store, "SELECT customer_id, event_time FROM decisions ORDER BY event_time LIMIT 40")
    for i, (customer, at) in enumerate(decisions):
        kind = "complaint" if EXTREMES[i % len(EXTREMES)] < 0 else "sim_activation"
        outcome = OutcomeRecord(f"poison-{i}", customer, kind, EXTREMES[i % len(EXTREMES)], at + 60.0, received_at=at + 60.0)
        brain.store.decisions.submit_outcome(outcome).result()  # straight into the store, past the API's bounds

    report, learned = join_and_learn(brain)
    assert learned == report.joined + report.provisional and report.joined > 0
    assert report.clamped >= len(decisions) // 2  # every extreme value bounded, none credited as it was
    bound = max(t.value_bound for t in brain.config.outcomes.values())
    rewards = [reward for (reward,) in sqlite_rows(brain.store, "SELECT reward FROM joined_examples")]
    assert all(math.isfinite(r) and abs(r) <= 2 * len(EXTREMES) * bound for r in rewards)
    assert max(rewards) > 1000.0  # the clamped values were credited, at their bound
    assert not brain.decider.policy.model.cold

    live = LiveServer(brain, metrics)
    try:
        for c in range(20):
            response = live.stub.Decide(
                pb.DecideRequest(
                    customer_id=f"c{c}", channel="app", request_id=f"after-{c}", event_time=converters.timestamp(clock.now),
                    consent=pb.Consent(personalisation=pb.CONSENT_STATE_GRANTED),
                    context=pb.Context(numeric={"months_to_contract_end": float(c % 6), "tenure_months": float(c)}),
                ),
                timeout=5,
            )  # fmt: skip
            assert response.model_version == brain.decider.policy.model.version
            assert all(math.isfinite(r.probability) for r in response.ranking)
            assert math.isclose(sum(r.probability for r in response.ranking), 1.0, rel_tol=1e-6)
    finally:
        live.stop()


@pytest.mark.parametrize(("interactions", "bound"), [((), 1e12), (("uu",), 1e6), (("uu", "uuu"), 1e4), (("uh",), 1e6)])
def test_a_numeric_feature_at_the_apis_bound_is_learned_finitely_whatever_the_interactions(
    make_brain: Callable[..., Brain], clock: Clock, interactions: tuple[str, ...], bound: float
) -> None:
    """VW's adaptive, normalised update sums g²x² in float32 for each product x an interaction makes:
    with "uu", three decisions at lifetime_spend 1e12 (within the API's bound) left every later
    snapshot with weights that are not finite. A raw value enters VW bounded by the interactions' order."""
    config = spend_config(*interactions)
    encoder = FeatureEncoder(config)
    assert encoder.encode({"u": {"lifetime_spend": -1e12}}) == {"u": [("lifetime_spend", pytest.approx(-bound))]}
    assert encoder.encode({"u": {"lifetime_spend": 6000.0}}) == {"u": [("lifetime_spend", 6000.0)]}  # within it: as it was
    brain = make_brain(config)
    simulate(brain)
    join_and_learn(brain)
    spend(brain, 5, 1e12)
    done = Worker(config, brain.store, clock=clock).round(until=T0 + 80 * DAY)
    brain.follow()
    assert done.learned > 0 and done.set_aside == 0
    prober = Prober(config)
    snapshots = list(brain.store.models.newest_first(config.learner.policy_id))
    assert all(prober.check(VWPolicy(s.args, s.data)) is None for s in snapshots)
    assert brain.decider.policy.model.version == snapshots[0].version
