"""The worker beside a live server, in a process of its own: the server follows the snapshots it
stores through the store, refuses a snapshot that does not load, and replaces a worker that dies."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bandit.config import parse_config
from bandit.learner import COLD_START, LabelledExample, model_version, train
from brain.core import Brain
from brain.worker import Worker
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.server import follow_forever
from store import open_store
from store.records import ModelSnapshot
from tests.conftest import Clock, LiveServer, example_data, worker_processes
from tests.test_online import join_and_learn, simulate


def background_config(**joiner: Any) -> Any:
    data = example_data()
    data["learner"].update(snapshot_every=50)
    data["joiner"] = {**data.get("joiner", {}), "interval_seconds": 0.2, **joiner}
    data["server"].update(follow_seconds=0.2)
    return parse_config(data)


def until(condition: Callable[[], bool], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def workers() -> set[int]:
    return worker_processes(os.getpid())


def test_the_server_serves_the_snapshots_its_worker_learns(make_brain: Callable[..., Brain], metrics: Metrics, clock: Clock) -> None:
    brain = make_brain(background_config(), on_commit=metrics.on_commit)
    simulate(brain)
    assert brain.decider.policy.model.version == COLD_START
    live = LiveServer(brain, metrics, background=True)
    try:
        until(lambda: brain.decider.policy.model.version != COLD_START and live.sample("brein_learned_examples_total") > 0)
        assert len(workers()) == 1
        joined = brain.store.examples.count()

        def learned_whole() -> float:
            return live.sample("brein_learned_examples_total") - live.sample("brein_provisional_examples_total")

        until(lambda: learned_whole() == joined)  # learned in the worker, counted here
        newest = brain.store.models.newest_version(brain.decider.policy.policy_id)
        until(lambda: brain.decider.policy.model.version == newest)  # and followed through the store
        response = live.stub.Decide(pb.DecideRequest(customer_id="c1", channel="app"), timeout=5)
        assert response.model_version == newest
    finally:
        live.stop()
    assert not workers()  # stopping the server ends its worker


def test_a_snapshot_that_does_not_load_is_refused_and_the_old_model_keeps_serving(make_brain: Callable[..., Brain]) -> None:
    brain = make_brain(background_config())
    simulate(brain)
    join_and_learn(brain)
    serving = brain.decider.policy
    assert not serving.model.cold
    brain.store.models.save(ModelSnapshot("broken", serving.model.args, b"not a VW model", serving.policy_id, None)).result()
    assert brain.store.models.newest_version(serving.policy_id) == "broken"
    assert not brain.follow()  # the newest snapshot is refused, once
    assert not brain.serve_snapshot(serving.policy_id, "broken")
    assert not brain.serve_snapshot(serving.policy_id, "missing")
    assert brain.decider.policy is serving


def test_the_worker_stores_snapshots_that_its_servers_follow(make_brain: Callable[..., Brain]) -> None:
    """The worker learns for every server on the store: from another store instance (as from
    another process) it stores snapshots; a server serves one once it follows the store."""
    server = make_brain(background_config())
    simulate(server)
    server.registry.register("uniform", "uniform", actor="test", state="shadow")
    store = open_store(server.store.url)
    try:
        done = Worker(server.config, store, clock=server.clock).round()
        assert done.join.joined > 0 and done.learned == done.join.joined + done.join.provisional
        newest = store.models.newest_version(server.decider.policy.policy_id)
        assert newest is not None and server.decider.policy.model.cold  # stored, not served yet
        assert server.follow() and server.decider.policy.model.version == newest
        assert [s.policy_id for s in server.decider.shadows] == ["uniform"]
    finally:
        store.close()


def test_a_newer_snapshot_is_served_at_most_every_snapshot_seconds_and_a_new_champion_at_once(
    make_brain: Callable[..., Brain], metrics: Metrics
) -> None:
    brain = make_brain(background_config())
    policy_id = brain.decider.policy.policy_id

    def newest() -> str | None:
        return brain.store.models.newest_version(policy_id)

    async def until_served(version: str | None) -> None:
        for _ in range(500):
            if brain.decider.policy.model.version == version:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{version} not served; {brain.decider.policy.model.version} is")

    async def follow() -> None:
        following = asyncio.create_task(follow_forever(brain, metrics, 0.02, 3600.0))
        try:
            simulate(brain)
            Worker(brain.config, brain.store, clock=brain.clock).round()
            first = newest()
            await until_served(first)  # the first change is not paced
            stored = brain.store.models.get(policy_id, first or "")
            assert stored is not None
            example = LabelledExample("shared |u plan=basic", tuple(brain.catalog.actions[:2]), 1, 0.5, -1.0)
            data, _ = train(stored.args, stored.data, [example])
            assert data is not None
            brain.store.models.save(replace(stored, version=model_version(data), data=data)).result()
            assert newest() == model_version(data) != first
            await asyncio.sleep(0.3)  # 15 looks at the store
            assert brain.decider.policy.model.version == first
            assert not brain.follow(snapshot=False) and brain.decider.policy.model.version == first
            brain.registry.register("uniform", "uniform", actor="test", state="candidate")
            brain.registry.make_champion("uniform", replacing="champion", actor="test",
                                         reason="a new champion is served at the next look")
            await asyncio.sleep(0.3)
            assert brain.decider.policy.policy_id == "uniform"
        finally:
            following.cancel()

    asyncio.run(follow())
    assert metrics.registry.get_sample_value("brein_model_change_seconds_count") == 2  # the first snapshot, the champion


def scheduling_policy(pid: int, thread: int) -> int:
    """A thread's scheduling policy, from /proc (field 41 of its stat)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[38])


def test_the_worker_and_its_own_files_threads_run_on_the_cpu_the_server_leaves(
    make_brain: Callable[..., Brain], metrics: Metrics
) -> None:
    """The log's writer and checkpointer keep the server's priority (the server's Decide writes
    wait for the log's writer whenever it holds the log's write lock); the worker's main thread and
    its own file's writer and checkpointer, which hold no lock a Decide waits for, do not."""
    brain = make_brain(background_config())
    live = LiveServer(brain, metrics, background=True)
    try:
        until(lambda: len(workers()) == 1 and live.sample("brein_joined_examples_total", {"status": "joined"}) == 0)
        (worker,) = workers()
        ours = scheduling_policy(os.getpid(), threading.get_native_id())
        until(lambda: scheduling_policy(worker, worker) == os.SCHED_IDLE)  # once its store is open
        threads = {int(task.name): scheduling_policy(worker, int(task.name)) for task in Path(f"/proc/{worker}/task").iterdir()}
        assert threads.pop(worker) == os.SCHED_IDLE != ours  # the main thread joins, learns and tunes
        assert len([p for p in threads.values() if p == ours]) >= 2  # the log's writer and checkpointer
        assert len([p for p in threads.values() if p == os.SCHED_IDLE]) == 2, threads  # the worker's file's
    finally:
        live.stop()


def test_a_worker_that_dies_is_counted_and_replaced(make_brain: Callable[..., Brain], metrics: Metrics) -> None:
    brain = make_brain(background_config())
    live = LiveServer(brain, metrics, background=True)
    try:
        until(lambda: len(workers()) == 1 and live.sample("brein_join_pending") == 0 and live.sample("brein_joined_examples_total", {"status": "joined"}) == 0)
        (first,) = workers()
        os.kill(first, signal.SIGKILL)
        died = {"thread": "brein-worker-process"}
        until(lambda: live.sample("brein_background_failures_total", died) >= 1 and workers() not in (set(), {first}))
        simulate(brain, days=35)  # the new worker joins what is logged from now on
        until(lambda: live.sample("brein_joined_examples_total", {"status": "joined"}) > 0)
    finally:
        live.stop()


def test_a_restarted_server_passes_over_a_broken_newest_snapshot(make_brain: Callable[..., Brain], clock: Clock) -> None:
    config = background_config()
    brain = make_brain(config)
    simulate(brain)
    join_and_learn(brain)
    good = brain.decider.policy
    brain.store.models.save(ModelSnapshot("broken", good.model.args, b"not a VW model", good.policy_id, None)).result()
    assert brain.store.models.newest_version(good.policy_id) == "broken"
    store = open_store(brain.store.url)  # a restart on the same store
    try:
        again = Brain(config, store, clock=clock)
        assert again.decider.policy.model.version == good.model.version  # the newest snapshot that loads
        learner = Worker(config, store, clock=clock).learner()
        assert learner is not None and learner.step().learned == 0  # and how far that one had learned
    finally:
        store.close()
