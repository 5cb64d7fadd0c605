"""Several replicas on one PostgreSQL store. One customer, one brain: two Brains, each on a store
instance of its own (as two serving processes have), decide for one customer at the same instant;
the store serialises the customer (its advisory lock and head), so a contact cap holds across them.
And `brein serve --workers N`: N processes on one port, refused on SQLite."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path

import grpc
import pytest
import tomli_w
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bandit.catalog import DO_NOTHING
from bandit.config import BreinConfig
from brain.core import Brain
from serving.cli import main
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from store import Store, open_store
from store.errors import StaleHistory
from tests.conftest import EXAMPLE, T0, Clock, example_data, postgres_store_url, store_rows, worker_processes
from tests.test_decider import request

SMS = "sim_only/sms/morning"  # at most 1 sms a customer a day (examples/telecom.toml)
REQUESTS = 30


@pytest.fixture
def shared_url(postgres_database: str) -> Iterator[str]:
    with postgres_store_url(postgres_database) as url:
        yield url


@pytest.fixture
def replicas(shared_url: str, config: BreinConfig, clock: Clock) -> Iterator[list[Brain]]:
    stores: list[Store] = [open_store(shared_url) for _ in range(2)]
    yield [Brain(config, store, clock=clock) for store in stores]
    for store in stores:
        store.close()


def test_two_replicas_deciding_for_one_customer_at_once_make_one_contact_within_its_cap(replicas: list[Brain]) -> None:
    barrier = threading.Barrier(len(replicas))
    pending: list[list[Future[None]]] = [[] for _ in replicas]
    records = []
    arrivals, ordered = itertools.count(), threading.Lock()

    def decide(i: int) -> None:
        barrier.wait()
        for k in range(REQUESTS):  # each a contact or nothing, until the cap leaves only nothing
            # Event times in the order the calls arrive (a cap counts what happened before a decision's
            # time); decide() returns before its write commits, so the replicas still race to commit.
            with ordered:
                at = T0 + next(arrivals)
                made = replicas[i].decider.decide(request("c1", f"r{i}-{k}", at=at, candidate_actions=(SMS,)))
            pending[i].append(made.committed)
            records.append(made)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    refused = 0
    for committed in (c for mine in pending for c in mine):
        try:
            committed.result(timeout=30)
        except StaleHistory:  # made again MAX_TRIES times on a history the other replica kept changing
            refused += 1
    end = T0 + 2 * REQUESTS
    contacts = replicas[0].store.decisions.customer_logs(["c1"], end, end, 1.0)["c1"].at(end).contacts
    assert len(contacts) == 1 and contacts[0].channel == "sms"
    assert replicas[0].store.decisions.decision_count() == 2 * REQUESTS - refused
    assert refused < REQUESTS  # most calls are answered
    committed_contacts = [m.record for m in records if m.committed.exception() is None and m.record.action_id != DO_NOTHING]
    assert len(committed_contacts) == 1  # what the callers were told agrees with the store


# -- brein serve --workers N ------------------------------------------------------------------------


def _free_ports(count: int) -> int:
    """A port such that it and the ``count - 1`` after it are free now."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        try:
            with contextlib.ExitStack() as held:
                for port in range(first, first + count):
                    taken = held.enter_context(socket.socket())
                    taken.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue


def _decisions_served(metrics_port: int) -> float:
    """Decisions a serving process counted; 0 while its metrics are not up yet (it is still starting)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except urllib.error.URLError:
        return 0.0
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("brein_decisions_total{"))


def _serving(address: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
        except grpc.RpcError:
            pass
        assert time.monotonic() < deadline, f"nothing serving on {address} within {seconds} s"
        time.sleep(0.2)


def test_serve_with_two_processes_answers_on_one_port_from_both(tmp_path: Path, shared_url: str) -> None:
    port, metrics = _free_ports(1), _free_ports(2)
    data = example_data()
    data["server"] = {**data["server"], "address": f"127.0.0.1:{port}", "metrics_address": f"127.0.0.1:{metrics}"}
    (tmp_path / "brein.toml").write_text(tomli_w.dumps(data))
    serving = subprocess.Popen(
        [sys.executable, "-m", "serving", "serve", "--config", "brein.toml", "--store", shared_url, "--workers", "2"],
        cwd=tmp_path, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        _serving(f"127.0.0.1:{port}", 60)
        deadline, calls, served = time.monotonic() + 60, 0, [0.0, 0.0]
        while min(served) == 0:  # a connection a call: the kernel spreads them over the processes bound by now
            assert time.monotonic() < deadline, f"one process served every call: {served}"
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                stub.Decide(pb.DecideRequest(request_id=f"r{calls}", customer_id=f"c{calls}", channel="app"), timeout=10)
            calls += 1
            served = [_decisions_served(metrics), _decisions_served(metrics + 1)]
        assert sum(served) == calls, served
        store = open_store(shared_url)
        try:
            assert store.decisions.decision_count() == calls
        finally:
            store.close()
        serving.send_signal(signal.SIGTERM)
        assert serving.wait(timeout=30) == 0
    finally:
        if serving.poll() is None:
            serving.kill()
        serving.wait(timeout=10)


def test_serve_refuses_several_processes_on_sqlite(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["serve", "--config", str(EXAMPLE), "--store", f"sqlite:///{tmp_path / 'brein.db'}", "--workers", "2"]
    )
    assert result.exit_code != 0
    assert "--workers 2: several serving processes need a store they can all write, PostgreSQL" in result.output


# -- three replicas, workers killed and replicas killed under load ------------------------------------


class Replica:
    """`brein serve` on a port of its own and the shared store; its log lines (and its worker's) collected."""

    def __init__(self, tmp_path: Path, name: str, url: str) -> None:
        self.port, metrics = _free_ports(1), _free_ports(1)
        data = example_data()
        data["server"] = {**data["server"], "address": f"127.0.0.1:{self.port}", "metrics_address": f"127.0.0.1:{metrics}"}
        data["joiner"] = {**data["joiner"], "interval_seconds": 0.5}
        (tmp_path / f"{name}.toml").write_text(tomli_w.dumps(data))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve", "--config", f"{name}.toml", "--store", url],
            cwd=tmp_path, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)

    def leases(self) -> int:
        return sum("holding the store's worker lease" in line for line in list(self.log))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def _until(condition: Callable[[], bool], seconds: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s: {what}"
        time.sleep(0.05)
    return time.monotonic() - started


def test_three_replicas_lose_a_worker_and_a_replica_under_load_and_lose_no_acknowledged_write(
    tmp_path: Path, shared_url: str
) -> None:
    replicas = [Replica(tmp_path, f"r{i}", shared_url) for i in range(3)]
    acknowledged: list[str] = []
    outcomes: list[str] = []
    stop = threading.Event()

    def load(caller: int) -> None:
        target = "ipv4:" + ",".join(f"127.0.0.1:{r.port}" for r in replicas)
        with grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            i = 0
            while not stop.is_set():
                customer = f"k{(caller * 7 + i) % 12}"  # few customers, each asked for by every caller
                request = pb.DecideRequest(
                    request_id=f"{caller}-{i}", customer_id=customer, channel="app", candidate_actions=[SMS]
                )
                try:
                    stub.Decide(request, timeout=2)
                    acknowledged.append(request.request_id)
                    if i % 4 == 0:
                        stub.ReportOutcome(pb.ReportOutcomeRequest(outcome_id=f"o{caller}-{i}", customer_id=customer,
                                                                   type="sim_activation"), timeout=2)  # fmt: skip
                        outcomes.append(f"o{caller}-{i}")
                except grpc.RpcError as error:
                    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error
                i += 1

    callers = [threading.Thread(target=load, args=(c,)) for c in range(4)]
    try:
        for replica in replicas:
            _serving(f"127.0.0.1:{replica.port}", 60)
        _until(lambda: sum(r.leases() for r in replicas) == 1, 30, "one worker holds the lease")
        holder = next(r for r in replicas if r.leases())
        for caller in callers:
            caller.start()
        time.sleep(1.5)
        workers = worker_processes(holder.process.pid)
        assert len(workers) == 1
        os.kill(workers.pop(), signal.SIGKILL)  # the active worker
        took = _until(lambda: sum(r.leases() for r in replicas) == 2, 10, "a standby worker takes over")
        victim = next(r for r in replicas if r is not holder)
        victim.process.send_signal(signal.SIGKILL)  # and a replica
        time.sleep(2.0)
        stop.set()
        for caller in callers:
            caller.join(timeout=30)
        assert took < 10
        with contextlib.closing(open_store(shared_url)) as store:
            assert len(store.decisions.decisions_by_request(acknowledged)) == len(acknowledged) > 100
            stored_outcomes = {o for (o,) in store_rows(store, "SELECT outcome_id FROM outcomes")}
            assert stored_outcomes.issuperset(outcomes)
            contacts = store_rows(store, "SELECT customer_id, COUNT(*) FROM decisions WHERE action_id <> 'do_nothing' GROUP BY 1")
            assert contacts and all(count == 1 for _, count in contacts), contacts  # 1 sms a customer a day, across replicas
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()
