"""Several replicas on one PostgreSQL store. One customer, one brain: two Brains, each on a store
instance of its own (as two serving processes have), decide for one customer at the same instant;
the store serialises the customer (its advisory lock and head), so a contact cap holds across them.
And `brein serve --workers N`: N processes on one port, refused on SQLite."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
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
from tests.conftest import EXAMPLE, T0, Clock, example_data, postgres_store_url
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

    def decide(i: int) -> None:
        barrier.wait()
        for k in range(REQUESTS):  # each a contact or nothing, until the cap leaves only nothing
            made = replicas[i].decider.decide(request("c1", f"r{i}-{k}", at=T0 + k, candidate_actions=(SMS,)))
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
    logs = replicas[0].store.decisions.customer_logs(["c1"], T0 + REQUESTS, T0 + REQUESTS, 1.0)
    contacts = logs["c1"].at(T0 + REQUESTS).contacts
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
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
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
        for i in range(40):  # a connection each: the kernel spreads connections over the processes
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.DecisionServiceStub(channel)
                stub.Decide(pb.DecideRequest(request_id=f"r{i}", customer_id=f"c{i}", channel="app"), timeout=10)
        served = [_decisions_served(metrics), _decisions_served(metrics + 1)]
        assert sum(served) == 40 and min(served) > 0, served
        store = open_store(shared_url)
        try:
            assert store.decisions.decision_count() == 40
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
