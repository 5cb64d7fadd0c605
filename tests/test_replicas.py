"""Several replicas on one PostgreSQL store. One customer, one brain: two Brains, each on a store
instance of its own (as two serving processes have), decide for one customer at the same instant;
the store serialises the customer (the lock on its row of heads, and its head), so a contact cap
holds across them.
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
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, cast

import grpc
import psycopg
import pytest
import tomli_w
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry
from psycopg import sql

from bandit.catalog import DO_NOTHING
from bandit.config import BreinConfig, parse_config
from bandit.decider import MAX_TRIES, Decider, PendingDecision
from bandit.errors import BreinError
from brain.core import Brain
from reward.joiner import Joiner, JoinReport
from serving.cli import main
from serving.converters import decision_request
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.processes import RestartBudget, serve_processes
from store import Store, open_store
from store.errors import Conflict, StaleHistory
from store.ports import DecisionLog
from store.postgres.engine import LOCK_CUSTOMERS
from store.records import CustomerLog, DecisionRecord, Head
from tests.conftest import EXAMPLE, ROOT, T0, Clock, LiveServer, example_data, postgres_store_url, store_rows, worker_processes
from tests.test_decider import request
from tests.test_server import decide_request
from tests.test_worker import EXAMPLES

pytestmark = pytest.mark.costly

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


# -- one request id at two replicas at once -----------------------------------------------------------


@pytest.mark.parametrize(("change", "refused"), [({}, None), ({"touchpoint": "web"}, "channel")], ids=["same", "other-channel"])
def test_a_request_another_replica_logs_between_the_read_and_the_write_is_its_replay(
    replicas: list[Brain], change: dict[str, str], refused: str | None
) -> None:
    """A retry sent to another replica while the first is still writing: the second has read (not
    logged) and decided when the first commits; its write is refused, and the request is answered
    with the first's decision (replayed), or refused naming what differs. The chunk's other item is
    logged as ever."""
    first, second = replicas
    held = second.hold_decisions()  # the seam: read and decided now, written at release
    results = second.decide_many([request("c1", "r1", **change), request("c2", "r2")], held)
    theirs = first.decide(request("c1", "r1"))
    theirs.committed.result(timeout=30)
    held.release()
    replay, other = results
    assert isinstance(replay, PendingDecision) and isinstance(other, PendingDecision)
    replay.committed.result(timeout=30)
    if refused is None:
        assert replay.replayed and replay.refused is None and replay.record == theirs.record
    else:
        assert replay.refused is not None and f"already used for a decision with another {refused}:" in str(replay.refused)
    assert not other.replayed and other.refused is None
    logged = first.store.decisions.decisions_by_request(["r1", "r2"])
    assert logged == {"r1": theirs.record, "r2": other.record}  # one decision a request id
    assert first.store.decisions.decision_count() == 2
    (again,) = second.decide_many([request("c1", "r1", **change)])  # from now on, as any request logged before
    assert again.replayed if isinstance(again, PendingDecision) else refused is not None and isinstance(again, Conflict)


class DecidesFirst:
    """A replica's decision log before whose writes (the first, or every one) another replica decides
    for ``customer`` and commits: that customer's decisions are stale at that try. It keeps the
    customers of each read the decider makes."""

    def __init__(self, log: DecisionLog, other: Brain, customer: str, every_try: bool) -> None:
        self.log, self.other, self.customer, self.every_try = log, other, customer, every_try
        self.reads: list[set[str]] = []
        self.writes = self.theirs = 0

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        self.writes += 1
        if self.every_try or self.writes == 1:
            self.theirs += 1
            self.other.decide(request(self.customer, f"other-{self.writes}", at=T0 - self.writes)).committed.result(30)
        return self.log.submit_decisions(records, heads)

    def deciding_reads(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[dict[str, DecisionRecord], dict[str, CustomerLog]]:
        self.reads.append(set(customer_ids))
        return self.log.deciding_reads(request_ids, customer_ids, first, last, lookback_days)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.log, name)


@pytest.mark.parametrize("every_try", [False, True], ids=["once", "every-try"])
def test_a_chunk_is_not_held_up_by_a_customer_another_replica_decides_for_meanwhile(
    replicas: list[Brain], config: BreinConfig, clock: Clock, every_try: bool
) -> None:
    """A DecideBatch chunk's write was refused whole when one of its customers got a decision from
    another replica since the chunk read its history, and the whole chunk was decided again; with
    that customer busy at every try, every item failed (ABORTED). Only that customer's decision is
    made again, on its history read afresh; the others are written at the first try. Stale at every
    try, it alone is refused."""
    first, second = replicas
    shared = DecidesFirst(second.store.decisions, first, "c3", every_try)
    decider = Decider(config, cast(DecisionLog, shared), second.decider.policy, clock=clock)
    customers = [f"c{i}" for i in range(10)]
    results = decider.decide_many([request(c, f"r-{c}") for c in customers])
    pendings = [r for r in results if isinstance(r, PendingDecision)]
    assert len(pendings) == len(customers)
    pendings[0].committed.result(30)  # one commit for the chunk: resolved
    assert shared.reads == [set(customers)] + [{"c3"}] * (MAX_TRIES - 1 if every_try else 1)
    refused = {p.record.customer_id: type(p.refused) for p in pendings if p.refused is not None}
    assert refused == ({"c3": StaleHistory} if every_try else {})
    logged = first.store.decisions.decisions_by_request([f"r-{c}" for c in customers])
    assert logged == {p.record.request_id: p.record for p in pendings if p.refused is None}
    assert first.store.decisions.decision_count() == len(logged) + shared.theirs  # and the other replica's


WAITING = ("SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
           "WHERE NOT l.granted AND a.datname = current_database()")  # fmt: skip


def _waiting_for_locks(url: str, count: int) -> None:
    """Wait until ``count`` transactions wait for a lock (a customer's: its row of customer_heads)."""
    deadline = time.monotonic() + 30
    with psycopg.connect(url, autocommit=True) as conn:
        while conn.execute(WAITING).fetchone() != (count,):
            assert time.monotonic() < deadline, f"expected {count} writes waiting for a customer's lock"
            time.sleep(0.01)


@pytest.mark.parametrize(
    ("channel", "status"), [("app", None), ("web", grpc.StatusCode.ALREADY_EXISTS)], ids=["same", "other-channel"]
)
def test_a_decide_retried_at_another_replica_while_the_first_writes_answers_the_first_decision(
    shared_url: str, config: BreinConfig, clock: Clock, channel: str, status: grpc.StatusCode | None
) -> None:
    """Two replicas, one Decide each for one request id, both read before either commits (the test
    holds the customer's lock, so each write waits for it: the first replica's in the queue first).
    The serving replica, refused as stale, answers the first's decision as a replay; for a request
    that differs, ALREADY_EXISTS naming the field."""
    stores = [open_store(shared_url) for _ in range(2)]
    first = Brain(config, stores[0], clock=clock)
    server = LiveServer(Brain(config, stores[1], clock=clock), Metrics(CollectorRegistry()))
    try:
        with psycopg.connect(shared_url, autocommit=True) as maker:  # c1's row: its waiters queue in order
            maker.execute(LOCK_CUSTOMERS, (["c1"],))
        with psycopg.connect(shared_url) as holder:  # one transaction: the lock is held until it ends
            holder.execute(LOCK_CUSTOMERS, (["c1"],))
            theirs = first.decide(decision_request(decide_request("c1", "r1")))
            _waiting_for_locks(shared_url, 1)
            answer = server.stub.Decide.future(decide_request("c1", "r1", channel=channel), timeout=30)
            _waiting_for_locks(shared_url, 2)
        theirs.committed.result(timeout=30)
        if status is None:
            response = answer.result()
            assert response.replayed and response.decision_id == theirs.record.decision_id
            assert response.action.id == theirs.record.action_id
        else:
            with pytest.raises(grpc.RpcError) as error:
                answer.result()
            assert error.value.code() == status and "already used for a decision with another channel:" in error.value.details()
        assert first.store.decisions.decision_count() == 1
    finally:
        server.stop()
        for store in stores:
            store.close()


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


def _with_addresses(address: str, metrics_address: str) -> BreinConfig:
    data = example_data()
    data["server"] = {**data["server"], "address": address, "metrics_address": metrics_address}
    return parse_config(data)


@pytest.mark.parametrize(
    ("workers", "metrics_port", "said"),
    [
        (1000, "9464", "--workers: expected 1 to 64 serving processes, got 1000"),
        (3, "65534", "--workers 3: serving process i serves metrics on port 65534 + i, past 65535"),  # restarted forever
        (2, "{taken_before}", "--workers 2: serving process 1 cannot serve metrics on 127.0.0.1:{taken}: Address already in use"),
    ],
    ids=["too-many", "past-65535", "port-taken"],
)
def test_serve_refuses_processes_it_cannot_start_before_starting_any(workers: int, metrics_port: str, said: str) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        config = _with_addresses("127.0.0.1:0", f"127.0.0.1:{metrics_port.format(taken_before=taken - 1)}")
        with pytest.raises(BreinError) as refused:
            serve_processes(config.model_copy(update={"server": config.server.model_copy(update={"store": "postgresql://x/y"})}),
                            workers, "ERROR")  # fmt: skip
    assert said.format(taken=taken) in str(refused.value)


def test_serve_gives_up_on_a_process_that_cannot_start_again_and_again(shared_url: str) -> None:
    """Each serving process's gRPC port is taken by another program: they were restarted forever."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        config = _with_addresses(f"127.0.0.1:{holder.getsockname()[1]}", "127.0.0.1:0")
        config = config.model_copy(update={"server": config.server.model_copy(update={"store": shared_url})})
        started = time.monotonic()
        with pytest.raises(BreinError, match=r"serving process [01] exited 2 times within 60 s \(last exit code 1\); giving up"):
            serve_processes(config, 2, "ERROR", RestartBudget(restarts=1))
    assert time.monotonic() - started < 60


# -- three replicas, workers killed and replicas killed under load, again and again ----------------

START = T0 - 120 * 86_400.0
STEP = 2 * 3600.0
"""Event time advances two hours a call across all callers: windows (30 days + 1 of lateness) close
while the load runs, so the worker joins under the kills; three calls in a row are for one
customer, often in flight at once on different replicas and arriving out of event-time order."""
CUSTOMERS = 10
CAPS = ((2, 7 * 86_400.0), (1, 86_400.0))  # examples/telecom.toml: 2 contacts in 7 days, 1 sms a day


class Replica:
    """`brein serve` on a port of its own and the shared store; its log lines (and its worker's) collected."""

    def __init__(self, tmp_path: Path, name: str, url: str, port: int | None = None) -> None:
        self.port, metrics = port or _free_ports(1), _free_ports(1)
        data = example_data()
        data["server"] = {**data["server"], "address": f"127.0.0.1:{self.port}", "metrics_address": f"127.0.0.1:{metrics}"}
        data["joiner"] = {**data["joiner"], "interval_seconds": 0.5}
        data["learner"] = {**data["learner"], "online": False}  # joining is what is compared here
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


def _lease_taken(replicas: list[Replica], before: int) -> bool:
    return sum(r.leases() for r in replicas) > before


def _stamp(seconds: float) -> Any:
    stamp = pb.DecideRequest().event_time
    stamp.FromNanoseconds(int(seconds * 1e9))
    return stamp


def _caps_held(times: list[float]) -> bool:
    """No window of a cap's days holds more than its max of these contact times."""
    times = sorted(times)
    return all(later - earlier >= days for most, days in CAPS for earlier, later in zip(times, times[most:], strict=False))


def _uninterrupted_join(live_url: str, database: str) -> tuple[JoinReport, list[tuple[Any, ...]]]:
    """The same decisions and outcomes joined in one run on a store of their own."""
    live_schema = live_url.rsplit("search_path%3D", 1)[1]
    with postgres_store_url(database) as url, contextlib.closing(open_store(url)) as reference:
        with psycopg.connect(url, autocommit=True) as conn:
            for table in ("decisions", "outcomes", "activations"):
                conn.execute(sql.SQL("INSERT INTO {} OVERRIDING SYSTEM VALUE SELECT * FROM {}.{}").format(
                    sql.Identifier(table), sql.Identifier(live_schema), sql.Identifier(table)))  # fmt: skip
            conn.execute("INSERT INTO join_queue SELECT decision_id, event_time FROM decisions")
        report = Joiner(parse_config(example_data()), reference.joins).run()
        return report, store_rows(reference, EXAMPLES)


def test_three_replicas_lose_workers_and_replicas_again_and_again_and_join_as_an_uninterrupted_run(
    tmp_path: Path, shared_url: str, postgres_database: str
) -> None:
    replicas = [Replica(tmp_path, f"r{i}", shared_url) for i in range(3)]
    ports = [r.port for r in replicas]
    ticks = itertools.count()
    acknowledged: list[str] = []
    outcomes: list[str] = []
    stop = threading.Event()

    def load(caller: int) -> None:
        target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port in ports)
        with grpc.insecure_channel(target, options=[("grpc.lb_policy_name", "round_robin")]) as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            while not stop.is_set():
                tick = next(ticks)
                at, customer = START + tick * STEP, f"k{tick // 3 % CUSTOMERS}"
                request = pb.DecideRequest(request_id=f"d{tick}", customer_id=customer, channel="app",
                                           candidate_actions=[SMS], event_time=_stamp(at))  # fmt: skip
                try:
                    stub.Decide(request, timeout=2)
                    acknowledged.append(request.request_id)
                    if tick % 4 == 0:
                        stub.ReportOutcome(pb.ReportOutcomeRequest(outcome_id=f"o{tick}", customer_id=customer,
                                                                   type="contract_renewal", event_time=_stamp(at + 1800)),
                                           timeout=2)  # fmt: skip
                        outcomes.append(f"o{tick}")
                except grpc.RpcError as error:
                    assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), error

    callers = [threading.Thread(target=load, args=(c,)) for c in range(4)]
    takeovers: list[float] = []
    try:
        for replica in replicas:
            _serving(f"127.0.0.1:{replica.port}", 60)
        _until(lambda: sum(r.leases() for r in replicas) == 1, 30, "one worker holds the lease")
        holder = next(r for r in replicas if r.leases())
        for caller in callers:
            caller.start()
        for kill in range(1, 3):
            time.sleep(1.5)
            leases = [r.leases() for r in replicas]
            os.kill(next(iter(worker_processes(holder.process.pid))), signal.SIGKILL)  # the active worker
            takeovers.append(_until(partial(_lease_taken, replicas, sum(leases)), 10, "another worker takes the lease"))
            holder = next(r for r, held in zip(replicas, leases, strict=True) if r.leases() > held)
            index = next(i for i, r in enumerate(replicas) if r is not holder)
            replicas[index].stop()  # SIGKILL, and a replica that does not hold the lease
            replicas[index] = Replica(tmp_path, f"r{index}-{kill}", shared_url, port=ports[index])  # back, on its port
            _serving(f"127.0.0.1:{ports[index]}", 60)
        time.sleep(1.0)
        stop.set()
        for caller in callers:
            caller.join(timeout=30)
        assert len(takeovers) == 2 and max(takeovers) < 10, takeovers
        with contextlib.closing(open_store(shared_url)) as store:
            assert len(store.decisions.decisions_by_request(acknowledged)) == len(acknowledged) > 200
            assert {o for (o,) in store_rows(store, "SELECT outcome_id FROM outcomes")}.issuperset(outcomes)
            contacts: dict[str, list[float]] = {}
            for customer, at in store_rows(
                store, "SELECT customer_id, event_time FROM decisions WHERE action_id <> 'do_nothing'"
            ):
                contacts.setdefault(customer, []).append(at)
            assert contacts and all(_caps_held(times) for times in contacts.values()), contacts
            expected, want = _uninterrupted_join(shared_url, postgres_database)
            assert expected.joined > 100
            _until(lambda: store.joins.pending_count() == expected.pending and len(store_rows(store, EXAMPLES)) == len(want),
                   60, "the workers join what an uninterrupted run joins")  # fmt: skip
            assert store_rows(store, EXAMPLES) == want  # each example once, with the reward an uninterrupted run gives it
    finally:
        stop.set()
        for replica in replicas:
            replica.stop()


ORDER_OF_FEATURES = """
import sys
from serving.converters import decision_request
from serving.pb.brein.v1 import brein_pb2 as pb
request = decision_request(pb.DecideRequest.FromString(sys.stdin.buffer.read()))
print(",".join(request.numeric), ",".join(request.categorical))
"""


def test_replicas_take_a_requests_features_in_one_order() -> None:
    """Protobuf iterates a map in an order of its own in each process: the same request stored its
    features and VW line in another order on each replica (exports differing byte for byte, sums of a
    replay in the eighth digit). Four processes, four orders, before."""
    message = pb.DecideRequest(customer_id="c1", channel="web")
    for i in range(30):
        message.context.numeric[f"n{i}"] = float(i)
        message.context.categorical[f"c{i}"] = "x"
    orders = {
        subprocess.run([sys.executable, "-c", ORDER_OF_FEATURES], input=message.SerializeToString(), capture_output=True,
                       check=True, cwd=ROOT).stdout  # fmt: skip
        for _ in range(4)
    }
    numeric, categorical = sorted(f"n{i}" for i in range(30)), sorted(f"c{i}" for i in range(30))
    assert orders == {f"{','.join(numeric)} {','.join(categorical)}\n".encode()}
