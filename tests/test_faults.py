"""Fail-safe under real store faults: a full filesystem (a size-limited tmpfs), another process
holding the database's write lock, and a PostgreSQL server terminating the store's connections.
Decide answers UNAVAILABLE within the caller's deadline, nothing half-written remains, the metrics
show it, and service resumes by itself when the store recovers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import closing, contextmanager, suppress
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from psycopg import sql

from bandit.config import BreinConfig, parse_config
from brain.core import Brain
from serving import converters
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.server import follow_forever
from serving.supervision import ThreadHealth
from store import open_store
from store.errors import StoreUnavailable
from store.opening import sqlite_path
from store.sqlite.connections import WORKER_SCHEMA
from tests.conftest import T0, Clock, LiveServer, example_data, postgres_store_url, sqlite_files, worker_processes
from tests.test_background import background_config, until
from tests.test_online import simulate


def decide(request_id: str, customer: str = "c1") -> pb.DecideRequest:
    return pb.DecideRequest(
        request_id=request_id,
        customer_id=customer,
        channel="app",
        event_time=converters.timestamp(T0),
        context=pb.Context(numeric={"months_to_contract_end": 2.0}),
    )


def stored(brain: Brain, request_ids: list[str]) -> int:
    return len(brain.store.decisions.decisions_by_request(request_ids))


def intact(path: Path) -> None:
    """Both files whole; every queued decision logged; every logged decision queued (in the intake or
    the join queue) or joined."""
    with closing(sqlite_files(path)) as conn:
        assert conn.execute("PRAGMA main.integrity_check").fetchone()[0] == "ok"
        assert conn.execute(f"PRAGMA {WORKER_SCHEMA}.integrity_check").fetchone()[0] == "ok"
        queued = "SELECT decision_id FROM join_queue UNION ALL SELECT decision_id FROM join_intake"
        orphans = conn.execute(
            f"SELECT COUNT(*) FROM ({queued}) q LEFT JOIN decisions d USING (decision_id) WHERE d.decision_id IS NULL"
        )
        assert orphans.fetchone()[0] == 0
        unqueued = conn.execute(
            f"SELECT COUNT(*) FROM decisions d WHERE d.decision_id NOT IN ({queued}) "
            "AND d.decision_id NOT IN (SELECT decision_id FROM joined_examples)"
        )
        assert unqueued.fetchone()[0] == 0


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A real 4 MiB filesystem (tmpfs), so 'disk full' is the kernel's ENOSPC, not a simulation."""
    with tmpfs("4m") as directory:
        yield directory


@pytest.fixture
def disk_for_a_worker() -> Iterator[Path]:
    """A real 16 MiB filesystem: room for tests.test_online.simulate's store and its WAL."""
    with tmpfs("16m") as directory:
        yield directory


@contextmanager
def tmpfs(size: str) -> Iterator[Path]:
    if shutil.which("mount") is None:
        pytest.skip("no mount command in this sandbox")
    directory = Path(tempfile.mkdtemp(prefix="brein-small-disk-"))
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)]
    mounted = subprocess.run(mount, capture_output=True, text=True)
    if mounted.returncode != 0:
        directory.rmdir()
        pytest.skip(f"cannot mount a size-limited tmpfs here (needs root and mount rights): {mounted.stderr.strip()}")
    try:
        yield directory
    finally:
        subprocess.run(["umount", "-l", str(directory)], check=False)
        directory.rmdir()


def test_a_store_in_a_read_only_folder_says_the_folder_cannot_be_written(small_disk: Path) -> None:
    """Every command, a reading one too, said only "unable to open database file": WAL mode needs the
    -wal and -shm files beside the database, which a read-only folder cannot take."""
    open_store(str(small_disk / "brein.db")).close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(StoreUnavailable, match=rf"brein.db: the store cannot be opened: its folder {small_disk} cannot be "
                                               r"written \(a read-only mount, or its permissions\): SQLite's WAL mode needs "
                                               "brein.db-wal and brein.db-shm beside it"):  # fmt: skip
        open_store(str(small_disk / "brein.db"), create=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    try:
        while True:
            os.write(fd, b"\0" * 512)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_full_disk_gives_unavailable_in_time_and_service_resumes(small_disk: Path, metrics: Metrics, config: BreinConfig) -> None:
    store = open_store(str(small_disk / "brein.db"), on_commit=metrics.on_commit)
    live = LiveServer(Brain(config, store, clock=lambda: T0 + 60), metrics)
    brain = live.running.brain
    try:
        first = live.stub.Decide(decide("before"), timeout=5)
        assert live.sample("brein_store_up") == 1
        filler = fill(small_disk)
        refused: list[str] = []
        for i in range(200):  # WAL space already allocated may still take a few writes
            started = time.monotonic()
            try:
                live.stub.Decide(decide(f"full-{i}", f"c{i}"), timeout=1.0)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
                assert "database or disk is full" in (error.details() or "")
                assert time.monotonic() - started < 1.0
                refused.append(f"full-{i}")
                if len(refused) == 3:
                    break
        assert len(refused) == 3, "the full disk never refused a write"
        with pytest.raises(grpc.RpcError) as outcome:
            live.stub.ReportOutcome(
                pb.ReportOutcomeRequest(
                    outcome_id="o-full", customer_id="c1", type="complaint", event_time=converters.timestamp(T0)
                ),
                timeout=1.0,
            )
        assert outcome.value.code() == grpc.StatusCode.UNAVAILABLE
        assert live.sample("brein_store_up") == 0
        # Each refused write either failed in its commit or, on a slow machine, was abandoned at the deadline first.
        assert live.sample("brein_store_commit_failures_total") >= 1
        assert live.sample("brein_store_commit_failures_total") + live.sample("brein_store_abandoned_writes_total") >= 4
        assert live.sample("brein_rpc_errors_total", {"method": "Decide", "code": "UNAVAILABLE"}) == 3
        assert stored(brain, refused) == 0  # nothing half-written
        filler.unlink()  # the operator frees space; nobody restarts anything
        again = live.stub.Decide(decide(refused[0], "c0"), timeout=5)
        assert not again.replayed and live.sample("brein_store_up") == 1
        assert live.stub.Decide(decide("before"), timeout=5).decision_id == first.decision_id
        assert stored(brain, refused) == 1
    finally:
        live.stop()
    intact(small_disk / "brein.db")


def test_a_full_disk_fails_the_workers_writer_loudly_and_joining_resumes_without_a_restart(
    disk_for_a_worker: Path, metrics: Metrics, clock: Clock, capfd: pytest.CaptureFixture[str]
) -> None:
    """The worker's writes fail on the full disk: each failed round is in the JSON log and counted
    by the server, and once space is freed the same worker process joins what had waited."""
    store = open_store(str(disk_for_a_worker / "brein.db"), on_commit=metrics.on_commit)
    brain = Brain(background_config(), store, clock=clock)
    simulate(brain)
    filler = fill(disk_for_a_worker)
    live = LiveServer(brain, metrics, background=True)
    try:
        until(lambda: live.sample("brein_background_failures_total", {"thread": "brein-worker"}) >= 1, 30)
        (worker,) = worker_processes(os.getpid())
        assert brain.store.examples.count() == 0
        filler.unlink()  # the operator frees space; nobody restarts anything
        until(lambda: live.sample("brein_joined_examples_total", {"status": "joined"}) > 0, 60)
        assert brain.store.examples.count() > 0 and worker_processes(os.getpid()) == {worker}
    finally:
        live.stop()
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    failures = [line for line in logged if line["message"].startswith("join/learn round failed")]
    assert failures and "database or disk is full" in failures[0]["error"]


def test_a_failed_writer_makes_the_server_not_serving_until_its_store_commits_again(
    small_disk: Path, metrics: Metrics, config: BreinConfig
) -> None:
    """A server whose writer rests after each commit (write_pause) checkpoints its WAL; on a full
    disk the checkpoint fails the writer thread: counted, health NOT_SERVING, and SERVING again by
    itself once space is freed and a commit succeeds."""
    thread_health = ThreadHealth(metrics)
    store = open_store(
        str(small_disk / "brein.db"), on_commit=thread_health.on_commit, write_pause=0.001, on_thread_failure=thread_health.failed
    )
    live = LiveServer(Brain(config, store, clock=lambda: T0 + 60), metrics, thread_health=thread_health)
    health = health_pb2_grpc.HealthStub(live.channel)

    def status() -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

    try:
        live.stub.Decide(decide("before"), timeout=5)
        assert status() == health_pb2.HealthCheckResponse.SERVING
        filler = fill(small_disk)
        for i in range(200):
            with suppress(grpc.RpcError):  # UNAVAILABLE while the disk is full
                live.stub.Decide(decide(f"full-{i}", f"c{i}"), timeout=1.0)
            if live.sample("brein_background_failures_total", {"thread": "brein-store-writer"}):
                break
        until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, 10)
        filler.unlink()
        until(lambda: _decided(live, "after"), 30)  # the writer runs again by itself
        until(lambda: status() == health_pb2.HealthCheckResponse.SERVING, 10)
    finally:
        live.stop()
    intact(small_disk / "brein.db")


def test_a_store_file_deleted_while_serving_makes_the_server_not_serving_and_decide_unavailable(
    tmp_path: Path, metrics: Metrics, config: BreinConfig
) -> None:
    """The worker's file deleted under a running server: within the checkpointer's period (1 s) health
    is NOT_SERVING and Decide answers UNAVAILABLE, rather than acknowledging decisions into a file no
    path names."""
    thread_health = ThreadHealth(metrics)
    log = tmp_path / "brein.db"
    store = open_store(str(log), on_commit=thread_health.on_commit, on_thread_failure=thread_health.failed)
    live = LiveServer(Brain(config, store, clock=lambda: T0 + 60), metrics, thread_health=thread_health)
    health = health_pb2_grpc.HealthStub(live.channel)

    def status() -> int:
        return health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status

    try:
        assert _decided(live, "before") and status() == health_pb2.HealthCheckResponse.SERVING
        (tmp_path / "brein.worker.db").unlink()
        until(lambda: status() == health_pb2.HealthCheckResponse.NOT_SERVING, 10)
        with pytest.raises(grpc.RpcError) as refused:
            live.stub.Decide(decide("after", "c2"), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert live.sample("brein_background_failures_total", {"thread": "brein-worker-file-checkpointer"})
    finally:
        live.stop()


def _decided(live: LiveServer, request_id: str) -> bool:
    try:
        return bool(live.stub.Decide(decide(request_id), timeout=2).decision_id)
    except grpc.RpcError:
        return False


LOCKER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
"""


def lock(brain: Brain) -> subprocess.Popen[str]:
    """Another process holding the store's write lock until it reads a line."""
    path = str(sqlite_path(brain.store.url))
    locker = subprocess.Popen([sys.executable, "-c", LOCKER, path], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert locker.stdout is not None and locker.stdout.readline().strip() == "locked"
    return locker


@pytest.fixture
def locked_brain(make_brain: Callable[..., Brain], metrics: Metrics) -> Brain:
    config = parse_config({**example_data(), "limits": {"store_wait_seconds": 0.3}})
    return make_brain(config, on_commit=metrics.on_commit)


def test_a_locked_store_gives_unavailable_within_the_deadline_and_abandons_the_write(
    locked_brain: Brain, metrics: Metrics
) -> None:
    live = LiveServer(locked_brain, metrics)
    locker = lock(locked_brain)
    try:
        abandoned = []
        for i, timeout in enumerate((0.5, 0.25)):
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as error:
                live.stub.Decide(decide(f"locked-{i}", f"c{i}"), timeout=timeout)
            elapsed = time.monotonic() - started
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE, error.value.details()  # not DEADLINE_EXCEEDED: in time
            assert "did not commit in time; nothing was written" in (error.value.details() or "")
            assert elapsed < timeout
            abandoned.append(f"locked-{i}")
        # Without a deadline, limits.store_wait_seconds bounds the wait.
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as no_deadline:
            live.stub.Decide(decide("locked-2", "c2"))
        assert no_deadline.value.code() == grpc.StatusCode.UNAVAILABLE and 0.25 < time.monotonic() - started < 2.0
        abandoned.append("locked-2")
        # A campaign chunk: every item answered UNAVAILABLE together, not one wait per item.
        started = time.monotonic()
        chunk = pb.DecideBatchRequest(items=[decide(f"locked-b{i}", f"b{i}") for i in range(20)])
        (response,) = list(live.stub.DecideBatch(iter([chunk]), timeout=1.0))
        assert time.monotonic() - started < 1.0
        assert {r.error.code for r in response.results} == {grpc.StatusCode.UNAVAILABLE.value[0]}
        abandoned += [f"locked-b{i}" for i in range(20)]
        assert live.sample("brein_store_abandoned_writes_total") == len(abandoned)
        assert live.sample("brein_rpc_errors_total", {"method": "Decide", "code": "UNAVAILABLE"}) == 3
    finally:
        locker.communicate("release\n", timeout=10)  # the other process lets go
    try:
        # Service resumes by itself; the abandoned writes were never begun, so never written.
        recovered = live.stub.Decide(decide("after", "c9"), timeout=10)
        assert recovered.decision_id and not recovered.replayed
        assert stored(locked_brain, abandoned) == 0
        retried = live.stub.Decide(decide("locked-0", "c0"), timeout=5)
        assert not retried.replayed  # the channel's retry gets a fresh decision, logged once
        assert stored(locked_brain, abandoned) == 1
    finally:
        live.stop()
    intact(Path(str(sqlite_path(locked_brain.store.url))))


def test_store_up_drops_with_the_first_write_that_does_not_commit(locked_brain: Brain, metrics: Metrics) -> None:
    """brein_store_up says 0 as soon as a caller is answered UNAVAILABLE, not once the writer gives
    up waiting for the lock (LOCK_WAIT_SECONDS later), and 1 again with the next commit."""
    live = LiveServer(locked_brain, metrics)
    try:
        live.stub.Decide(decide("up"), timeout=5)
        assert live.sample("brein_store_up") == 1
        locker = lock(locked_brain)
        try:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as error:
                live.stub.Decide(decide("locked", "c1"), timeout=0.5)
            assert error.value.code() == grpc.StatusCode.UNAVAILABLE
            assert live.sample("brein_store_up") == 0 and time.monotonic() - started < 1.0
        finally:
            locker.communicate("release\n", timeout=10)
        assert live.stub.Decide(decide("after", "c2"), timeout=10).decision_id
        assert live.sample("brein_store_up") == 1
    finally:
        live.stop()


def test_work_for_an_expired_deadline_is_not_done(live: LiveServer) -> None:
    """The server is busy past the caller's deadline: the caller gets DEADLINE_EXCEEDED and the
    decision is neither made nor logged, not even later."""
    live.loop.call_soon_threadsafe(time.sleep, 0.6)  # the server's event loop is stuck for a while
    with pytest.raises(grpc.RpcError) as error:
        live.stub.Decide(decide("too-late"), timeout=0.2)
    assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(0.5)
    assert live.stub.Decide(decide("in-time", "c2"), timeout=5).decision_id  # after the late one, in queue order
    assert stored(live.running.brain, ["too-late"]) == 0


TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def test_postgresql_connections_terminated_mid_load_give_unavailable_in_time_and_service_resumes(
    postgres_database: str, metrics: Metrics, config: BreinConfig
) -> None:
    """Every server connection of the database is terminated (pg_terminate_backend) twice while six
    callers decide with a 1 s deadline: a failed call is UNAVAILABLE and answered within its
    deadline, in one line (libpq's messages ran on: "...while busy\\nPQsendQuery..."), every
    acknowledged decision is stored, and calls succeed again without anyone's help."""
    with postgres_store_url(postgres_database) as url:
        live = LiveServer(Brain(config, open_store(url, on_commit=metrics.on_commit), clock=lambda: T0 + 60), metrics)
        acknowledged: list[str] = []
        failures: list[tuple[grpc.StatusCode, float]] = []
        said: list[str] = []
        stop = threading.Event()

        def call(caller: int) -> None:
            i = 0
            while not stop.is_set():
                started = time.monotonic()
                try:
                    live.stub.Decide(decide(f"{caller}-{i}", f"c{caller}-{i % 20}"), timeout=1.0)
                    acknowledged.append(f"{caller}-{i}")
                except grpc.RpcError as error:
                    failures.append((error.code(), time.monotonic() - started))
                    said.append(error.details() or "")
                i += 1

        callers = [threading.Thread(target=call, args=(c,)) for c in range(6)]
        try:
            for caller in callers:
                caller.start()
            with psycopg.connect(url, autocommit=True) as admin:
                for _ in range(2):
                    time.sleep(1.0)
                    assert admin.execute(TERMINATE).fetchall(), "no connection of the store's to terminate"
            time.sleep(1.0)
            before = len(acknowledged)
            time.sleep(1.0)
            stop.set()
            for caller in callers:
                caller.join(timeout=30)
            assert len(acknowledged) > before  # it recovered by itself
            assert all(code == grpc.StatusCode.UNAVAILABLE and took < 1.0 for code, took in failures), failures
            assert all("\n" not in message and len(message) < 300 for message in said), said
            assert stored(live.running.brain, acknowledged) == len(acknowledged)
            recovered = live.stub.Decide(decide("after", "c9"), timeout=5)
            assert recovered.decision_id and not recovered.replayed
        finally:
            stop.set()
            live.stop()
            live.running.brain.store.close()


@contextmanager
def own_database(postgres_database: str) -> Iterator[tuple[str, Callable[[bool], None]]]:
    """A database of its own on ``postgres_database``'s server: its URL, and a switch that stops its
    connections (refused, those open terminated) and lets them in again, as its server going away
    and coming back does."""
    name = f"brein_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

        def connections(allowed: bool) -> None:
            admin.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(sql.Identifier(name), sql.Literal(allowed)))
            if not allowed:
                admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))

        try:
            yield urlunsplit(urlsplit(postgres_database)._replace(path=f"/{name}")), connections
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def test_postgresql_gone_makes_the_server_not_serving_until_the_store_is_read_again(
    postgres_database: str, metrics: Metrics, config: BreinConfig
) -> None:
    """Every Decide failed UNAVAILABLE while health said SERVING and brein_store_up 1: only the
    writer's commits reached them, and a read that fails commits nothing. A call that cannot reach
    the store, or the follow loop, now makes it NOT_SERVING and brein_store_up 0; a commit, or the
    follow loop's next read while no calls come (the load balancer sends none), SERVING again."""
    with own_database(postgres_database) as (url, connections):
        thread_health = ThreadHealth(metrics)
        store = open_store(url, on_commit=thread_health.on_commit, on_thread_failure=thread_health.failed)
        live = LiveServer(Brain(config, store, clock=lambda: T0 + 60), metrics, thread_health=thread_health)
        health = health_pb2_grpc.HealthStub(live.channel)

        def serving() -> bool:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            return status == health_pb2.HealthCheckResponse.SERVING and live.sample("brein_store_up") == 1

        def not_serving() -> bool:
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
            return status == health_pb2.HealthCheckResponse.NOT_SERVING and live.sample("brein_store_up") == 0

        following: Future[None] | None = None
        try:
            live.stub.Decide(decide("before"), timeout=5)
            assert serving()
            connections(False)
            for i in range(3):
                with pytest.raises(grpc.RpcError) as failed:
                    live.stub.Decide(decide(f"gone-{i}", f"c{i}"), timeout=5)
                assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
            until(not_serving, 5)
            connections(True)
            until(lambda: _decided(live, "back"), 10)  # committed: SERVING again
            assert serving()
            follow = follow_forever(live.running.brain, metrics, 0.1, 3600.0, thread_health)
            following = asyncio.run_coroutine_threadsafe(follow, live.loop)
            connections(False)
            until(not_serving, 10)  # no calls: the follow loop found it gone
            connections(True)
            until(serving, 10)  # and read it again
        finally:
            if following is not None:
                following.cancel()
            live.stop()
            store.close()
