"""`brein serve` as a real process: SIGKILL loses no acknowledged decision; SIGTERM drains."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from tests.conftest import EXAMPLE, worker_processes


class ServerProcess:
    def __init__(self, workdir: Path) -> None:
        text = EXAMPLE.read_text().replace("127.0.0.1:50051", "127.0.0.1:0").replace("127.0.0.1:9464", "127.0.0.1:0")
        (workdir / "brein.toml").write_text(text)
        self.store = workdir / "var" / "brein.db"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "serve", "--config", "brein.toml"],
            cwd=workdir, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.log: list[dict[str, object]] = []
        deadline = time.monotonic() + 30
        assert self.process.stderr is not None
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise AssertionError(f"server exited with {self.process.wait()}: {self.log}")
            entry = json.loads(line)
            self.log.append(entry)
            if str(entry["message"]).startswith("serving on"):
                self.port = int(entry["port"])  # type: ignore[call-overload]
                break
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _read_rest(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.log.append(json.loads(line))
            except ValueError:  # printed past the JSON logger (a traceback): kept, so a failure shows it
                self.log.append({"message": line.rstrip("\n"), "raw": True})

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path)
    yield process
    process.stop()


def _request(worker: int, i: int) -> pb.DecideRequest:
    return pb.DecideRequest(
        request_id=f"w{worker}-{i}", customer_id=f"c{worker}-{i % 50}", channel="app",
        context=pb.Context(numeric={"months_to_contract_end": 2.0}), consent=pb.Consent(personalisation=pb.CONSENT_STATE_GRANTED),
    )  # fmt: skip


def _hammer(
    port: int, worker: int, acknowledged: list[str], stop: threading.Event, errors: list[tuple[grpc.StatusCode, str]]
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.DecisionServiceStub(channel)
        i = 0
        while not stop.is_set():
            request = _request(worker, i)
            try:
                acknowledged.append(stub.Decide(request, timeout=5).decision_id)
            except grpc.RpcError as error:
                errors.append((error.code(), request.request_id))
                if error.code() == grpc.StatusCode.UNAVAILABLE:
                    return
            i += 1


def _load(
    server: ServerProcess, seconds: float, workers: int = 6
) -> tuple[list[str], list[tuple[grpc.StatusCode, str]], threading.Event, list[threading.Thread]]:
    acknowledged: list[str] = []
    errors: list[tuple[grpc.StatusCode, str]] = []
    stop = threading.Event()
    threads = [threading.Thread(target=_hammer, args=(server.port, w, acknowledged, stop, errors)) for w in range(workers)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    return acknowledged, errors, stop, threads


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting for its parent)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:  # gone, also between two looks
        return False


def _gone(pids: set[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def _stored(store: Path, column: str = "decision_id") -> set[str]:
    with sqlite3.connect(store) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        return {row[0] for row in conn.execute(f"SELECT {column} FROM decisions")}


@pytest.mark.parametrize("round_", range(3))
def test_sigkill_loses_no_acknowledged_decision(server: ServerProcess, round_: int) -> None:
    acknowledged, _, stop, threads = _load(server, 1.0 + 0.3 * round_)
    workers = worker_processes(server.process.pid)
    assert len(workers) == 1  # the joiner, learner and retention work in a process of their own
    server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    assert len(acknowledged) > 50
    missing = set(acknowledged) - _stored(server.store)
    assert not missing, f"{len(missing)} acknowledged decisions lost"
    assert _gone(workers, 30), "the join/learn worker outlived its server"


def test_sigterm_drains_in_flight_requests_and_exits_cleanly(server: ServerProcess) -> None:
    signalled = threading.Event()

    def chunks() -> Iterator[pb.DecideBatchRequest]:
        for i in range(30):  # a campaign stream that is still sending for a second after SIGTERM
            yield pb.DecideBatchRequest(items=[_request(99, 10 * i + j) for j in range(10)])
            if i == 10:
                server.process.send_signal(signal.SIGTERM)
                signalled.set()
            time.sleep(0.05)

    acknowledged, errors, stop, threads = _load(server, 0.5)
    workers = worker_processes(server.process.pid)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        results = [r for response in pb_grpc.DecisionServiceStub(channel).DecideBatch(chunks(), timeout=30) for r in response.results]
    assert signalled.is_set()
    assert len(results) == 300 and all(r.HasField("decision") for r in results)
    assert server.process.wait(timeout=30) == 0
    assert workers and _gone(workers, 5)
    stop.set()
    for thread in threads:
        thread.join(timeout=10)
    # Unary calls that arrive once shutdown has begun are refused, never half-done. One can also time
    # out unanswered: grpc.aio can drop a call its core matched just as the server stops, so it never
    # reaches Brein (which answers before a caller's deadline). Such a request was never decided.
    codes = {code for code, _ in errors}
    assert codes <= {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}
    timed_out = {request for code, request in errors if code == grpc.StatusCode.DEADLINE_EXCEEDED}
    assert not timed_out & _stored(server.store, "request_id")
    stored = _stored(server.store)
    assert set(acknowledged) <= stored and {r.decision.decision_id for r in results} <= stored
    messages = [str(e["message"]) for e in server.log]
    assert any(m.startswith("shutting down") for m in messages) and messages[-1] == "stopped", server.log[-6:]


def test_the_server_freezes_its_start_up_heap_once_it_serves(server: ServerProcess) -> None:
    """The objects start-up left alive are in the permanent generation (serving/heap.py), so a full
    garbage collection walks only what serving creates instead of stopping the event loop for tens of ms."""
    (serving,) = [entry for entry in server.log if str(entry["message"]).startswith("serving on")]
    assert int(serving["frozen_objects"]) > 10_000  # type: ignore[call-overload]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize(
    ("address", "metrics_address", "said"),
    [
        ("127.0.0.1:{taken}", "127.0.0.1:0", "server.address 127.0.0.1:{taken}: cannot serve gRPC there: Address already in use"),
        ("127.0.0.1:0", "127.0.0.1:{taken}",
         "server.metrics_address 127.0.0.1:{taken}: cannot serve metrics there: Address already in use"),  # fmt: skip
        ("127.0.0.1:0", "no.such.host.invalid:0", "server.metrics_address no.such.host.invalid:0: cannot serve metrics there: "),
    ],
    ids=["grpc-port-taken", "metrics-port-taken", "metrics-host-unknown"],
)
def test_an_address_serve_cannot_bind_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, taken_port: int, address: str, metrics_address: str, said: str
) -> None:
    """Each printed a Python traceback (RuntimeError: Failed to bind..., OSError, socket.gaierror)."""
    text = EXAMPLE.read_text().replace("127.0.0.1:50051", address.format(taken=taken_port))
    (tmp_path / "brein.toml").write_text(text.replace("127.0.0.1:9464", metrics_address.format(taken=taken_port)))
    done = subprocess.run([sys.executable, "-m", "serving", "serve", "--config", "brein.toml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and f"Error: {said.format(taken=taken_port)}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_server_on_a_served_sqlite_store_is_refused_naming_the_first_and_other_commands_still_run(
    server: ServerProcess,
) -> None:
    """Two servers on one SQLite file both served: each checked contact caps and request-id replays
    against its own writes only. The second is refused in one line naming the first's pid; the first
    goes on serving, its worker beside it, and a command that reads the store still runs."""
    workdir = server.store.parent.parent
    (workdir / "second.toml").write_text((workdir / "brein.toml").read_text())
    done = subprocess.run([sys.executable, "-m", "serving", "serve", "--config", "second.toml"], cwd=workdir,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    said = f"Error: var/brein.db is served already, by pid {server.process.pid}: one `brein serve` writes a SQLite store"
    assert done.returncode == 1 and said in done.stderr and "Traceback" not in done.stderr, done.stderr
    listed = subprocess.run([sys.executable, "-m", "serving", "policy", "list", "--config", "brein.toml"], cwd=workdir,
                            capture_output=True, text=True, timeout=60)  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        assert pb_grpc.DecisionServiceStub(channel).Decide(_request(0, 0), timeout=10).decision_id  # type: ignore[no-untyped-call]
    assert server.process.poll() is None
    assert not any("another worker holds" in str(entry["message"]) for entry in server.log)
