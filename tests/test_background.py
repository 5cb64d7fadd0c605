"""The joiner and learner beside a live server, in a worker process of their own: the server serves
what the worker learns, refuses a snapshot that does not load, and replaces a worker that dies."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from bandit.config import parse_config
from bandit.learner import COLD_START
from bandit.store import ModelSnapshot
from reward.online import START
from serving.app import Brain
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from tests.conftest import Clock, LiveServer, example_data
from tests.test_online import simulate

WORKER = "brein-join-learn"


def background_config(**joiner: Any) -> Any:
    data = example_data()
    data["learner"].update(snapshot_every=50)
    data["joiner"] = {**data.get("joiner", {}), "interval_seconds": 0.2, **joiner}
    return parse_config(data)


def until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def workers() -> list[multiprocessing.Process]:
    return [p for p in multiprocessing.active_children() if p.name == WORKER]


def test_the_server_serves_the_snapshots_its_worker_learns(make_brain: Callable[..., Brain], metrics: Metrics, clock: Clock) -> None:
    brain = make_brain(background_config(), on_commit=metrics.on_commit)
    simulate(brain)
    assert brain.decider.policy.model.version == COLD_START
    live = LiveServer(brain, metrics, background=True)
    try:
        until(lambda: brain.decider.policy.model.version != COLD_START and live.sample("brein_learned_examples_total") > 0)
        assert len(workers()) == 1
        assert brain.learner is not None and brain.learner.position == START  # learned in the worker, only loaded here
        joined = brain.store.db.execute("SELECT COUNT(*) FROM joined_examples WHERE status = 'joined'").fetchone()[0]
        until(lambda: live.sample("brein_learned_examples_total") == joined)
        snapshot = brain.store.latest_model(brain.decider.policy.policy_id)
        until(lambda: brain.decider.policy.model.version == snapshot.version)
        response = live.stub.Decide(pb.DecideRequest(customer_id="c1", channel="app"), timeout=5)
        assert response.model_version == snapshot.version
    finally:
        live.stop()
    assert not workers()  # stopping the server ends its worker


def test_a_snapshot_that_does_not_load_is_refused_and_the_old_model_keeps_serving(make_brain: Callable[..., Brain]) -> None:
    brain = make_brain(background_config())
    simulate(brain)
    brain.join_and_learn()
    serving = brain.decider.policy
    assert not serving.model.cold
    brain.store.save_model(ModelSnapshot("broken", serving.model.args, b"not a VW model", serving.policy_id, None))
    assert not brain.follow_snapshot(serving.policy_id, "broken")
    assert not brain.follow_snapshot(serving.policy_id, "missing")
    assert brain.decider.policy is serving


def test_the_worker_hands_on_snapshots_without_serving_them_or_scoring_shadows(make_brain: Callable[..., Brain]) -> None:
    """The worker's Brain learns for its server: it neither loads its snapshots to serve nor loads shadows."""
    server = make_brain(background_config())
    simulate(server)
    server.registry.register("uniform", "uniform", actor="test", state="shadow")
    stored: list[ModelSnapshot] = []
    worker = Brain(server.config, server.store.path, clock=server.clock, on_snapshot=stored.append)
    try:
        report, learned = worker.join_and_learn()
        assert report.joined > 0 and learned == report.joined
        assert stored and stored[-1] == worker.store.latest_model(worker.decider.policy.policy_id)
        assert worker.decider.policy.model.cold and worker.decider.shadows == ()
        assert server.follow_snapshot(stored[-1].policy_id, stored[-1].version)  # what its server serves
    finally:
        worker.close()


def test_a_worker_that_dies_is_counted_and_replaced(make_brain: Callable[..., Brain], metrics: Metrics) -> None:
    brain = make_brain(background_config())
    live = LiveServer(brain, metrics, background=True)
    try:
        until(lambda: len(workers()) == 1 and live.sample("brein_join_pending") == 0 and live.sample("brein_joined_examples_total", {"status": "joined"}) == 0)
        (first,) = workers()
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)
        until(lambda: live.sample("brein_background_failures_total") >= 1 and [w.pid for w in workers()] not in ([], [first.pid]))
        simulate(brain, days=35)  # the new worker joins what is logged from now on
        until(lambda: live.sample("brein_joined_examples_total", {"status": "joined"}) > 0)
    finally:
        live.stop()


def test_a_restarted_server_passes_over_a_broken_newest_snapshot(make_brain: Callable[..., Brain], clock: Clock) -> None:
    config = background_config()
    brain = make_brain(config)
    simulate(brain)
    brain.join_and_learn()
    good = brain.decider.policy
    brain.store.save_model(ModelSnapshot("broken", good.model.args, b"not a VW model", good.policy_id, None))
    assert brain.store.latest_model(good.policy_id).version == "broken"
    again = Brain(config, brain.store.path, clock=clock)  # a restart on the same store
    try:
        assert again.decider.policy.model.version == good.model.version  # the newest snapshot that loads
        assert again.learner is not None and again.learner.step() == 0  # and how far that one had learned
    finally:
        again.close()
