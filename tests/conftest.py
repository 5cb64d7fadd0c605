"""Shared fixtures: the example config, a Brain on a real SQLite file, a live server on loopback."""

from __future__ import annotations

import asyncio
import threading
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client import CollectorRegistry

from bandit.config import BreinConfig, parse_config
from serving.app import Brain
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.security import key_hash
from serving.server import RunningServer, create_server

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "telecom.toml"
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z: a fixed event time, so tests do not depend on the clock
API_KEY = "brein_every-role-key-for-tests-0123456789abcdef"
CREDENTIALS = (("authorization", f"Bearer {API_KEY}"),)
"""Call metadata of the one caller of ``secured_live``, which holds every role."""


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


@pytest.fixture
def config_data() -> dict[str, Any]:
    return example_data()


@pytest.fixture
def config(config_data: dict[str, Any]) -> BreinConfig:
    return parse_config(config_data)


class Clock:
    """A settable clock: tests move event time forward by hand."""

    def __init__(self, now: float = T0 + 365 * 86_400) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_brain(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Brain]]:
    brains: list[Brain] = []

    def make(config: BreinConfig, **kwargs: Any) -> Brain:
        brain = Brain(config, tmp_path / f"brein-{len(brains)}.db", clock=clock, **kwargs)
        brains.append(brain)
        return brain

    yield make
    for brain in brains:
        brain.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def brain(make_brain: Callable[..., Brain], config: BreinConfig, metrics: Metrics) -> Brain:
    return make_brain(config, on_commit=metrics.on_commit)


class LiveServer:
    """A real grpc.aio server on 127.0.0.1 and a free port, on its own event-loop thread."""

    def __init__(self, brain: Brain, metrics: Metrics, *, background: bool = False) -> None:
        self.metrics = metrics
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.running: RunningServer = self._run(create_server(brain, self.metrics, "127.0.0.1:0", background=background))
        self.address = f"127.0.0.1:{self.running.port}"
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb_grpc.DecisionServiceStub(self.channel)

    def _run(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def stop(self) -> None:
        self.channel.close()
        self._run(self.running.stop(grace=1.0))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=10)
        self.loop.close()


@pytest.fixture
def live(brain: Brain, metrics: Metrics) -> Iterator[LiveServer]:
    server = LiveServer(brain, metrics)
    yield server
    server.stop()


@pytest.fixture
def secured_live(make_brain: Callable[..., Brain]) -> Iterator[LiveServer]:
    """A live server with [security]: one caller with every role, its API key sent as ``CREDENTIALS``
    metadata (plaintext on loopback; tests/test_security.py covers TLS)."""
    data = example_data()
    data["security"] = {
        "callers": {"tester": {"roles": ["channel", "analyst", "admin"], "api_key_sha256": key_hash(API_KEY)}},
        "rate_per_second": 1e6,
        "burst": 1_000_000,
    }
    server = LiveServer(make_brain(parse_config(data)), Metrics(CollectorRegistry()))
    yield server
    server.stop()
