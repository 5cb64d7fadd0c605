"""Shared fixtures: the example config, stores (one parameter per backend), a Brain on a real SQLite
file, a live server on loopback."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import threading
import tomllib
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import grpc
import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql

from bandit.config import BreinConfig, parse_config
from brain.core import Brain
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.security import key_hash
from serving.server import RunningServer, create_server
from serving.supervision import ThreadHealth
from store import Store, open_store
from store.opening import is_postgres, sqlite_path
from store.sqlite.connections import WORKER_SCHEMA, worker_file

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "telecom.toml"
T0 = 1_780_000_000.0  # 2026-05-28T20:26:40Z: a fixed event time, so tests do not depend on the clock
API_KEY = "brein_every-role-key-for-tests-0123456789abcdef"
CREDENTIALS = (("authorization", f"Bearer {API_KEY}"),)
"""Call metadata of the one caller of ``secured_live``, which holds every role."""


def example_data() -> dict[str, Any]:
    return tomllib.loads(EXAMPLE.read_text())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files marked ``costly`` (a module's simulated run, worlds, processes) first, each in its order:
    `make test` hands whole files to a process per core in this order, and one handed out last would run
    on alone at the end while the others had nothing left (longest first)."""
    items.sort(key=lambda item: item.get_closest_marker("costly") is None)


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


# -- stores: every backend, one parameter each ------------------------------------------------------

SHARED_BACKENDS = ["sqlite", "postgres"]
"""Stores that several store instances, in this process or others, can open at once."""
POSTGRES_URL = os.environ.get("BREIN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
"""A PostgreSQL server's database to connect to; tests create (and drop) databases of their own there."""
REQUIRE_POSTGRES = os.environ.get("BREIN_REQUIRE_POSTGRES") == "1"
"""Set by `make test` (and so CI): no PostgreSQL is a failure, not a skip."""


def _sqlite_file(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'brein.db'}"


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A new PostgreSQL database on POSTGRES_URL's server for this test session: its URL; dropped at
    the end. Skips (fails with BREIN_REQUIRE_POSTGRES=1) when that server cannot be reached."""
    name = f"brein_test_{uuid.uuid4().hex[:16]}"
    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as error:
        reason = f"no PostgreSQL at {POSTGRES_URL} (set BREIN_TEST_POSTGRES_URL): {error}".strip()
        if REQUIRE_POSTGRES:
            pytest.fail(f"BREIN_REQUIRE_POSTGRES=1 and {reason}")
        pytest.skip(reason)
    with admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        try:
            yield urlunsplit(urlsplit(POSTGRES_URL)._replace(path=f"/{name}", query=""))
        finally:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def postgres_store_url(database: str) -> Iterator[str]:
    """A new, empty store in ``database``: a schema of its own (the URL sets its search_path), dropped
    afterwards. A schema costs a fifth of a database (0.15 s against 0.75 s to create, open and drop,
    measured): Brein's locks are keyed by schema, so stores in two schemas are apart."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield f"{database}?options=-csearch_path%3D{schema}"
    finally:  # on a connection of its own: a test may terminate the database's connections
        with psycopg.connect(database, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(params=SHARED_BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a new store that several store instances can open."""
    if request.param == "sqlite":
        yield _sqlite_file(tmp_path)
    elif request.param == "postgres":
        with postgres_store_url(request.getfixturevalue("postgres_database")) as url:
            yield url
    else:
        raise ValueError(f"expected a backend of {SHARED_BACKENDS}, got {request.param!r}")


@pytest.fixture(params=[*SHARED_BACKENDS, "sqlite-memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """A new, empty store of each backend; in-memory SQLite too."""
    with ExitStack() as stack:
        if request.param == "postgres":
            url = stack.enter_context(postgres_store_url(request.getfixturevalue("postgres_database")))
        else:
            url = "sqlite://" if request.param == "sqlite-memory" else _sqlite_file(tmp_path)
        opened = open_store(url)
        stack.callback(opened.close)
        yield opened


def sqlite_files(path: Path | str) -> sqlite3.Connection:
    """A connection to a SQLite store's file with the worker's file attached (store/sqlite/worker_schema.py),
    as the store's own readers see them: for tests that inspect the files on purpose."""
    conn = sqlite3.connect(path)
    conn.execute(f"ATTACH DATABASE ? AS {WORKER_SCHEMA}", (worker_file(str(path)),))
    return conn


def copy_sqlite_store(source: Path, target: Path | str) -> None:
    """A closed SQLite store's two files, the log's and the worker's, copied (a log opens only beside its own)."""
    shutil.copy(source, target)
    shutil.copy(worker_file(str(source)), worker_file(str(target)))


def sqlite_rows(store: Store, query: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """A query on a SQLite store's files, beside the store."""
    path = sqlite_path(store.url)
    assert path is not None, "an in-memory store has no file to inspect"
    with closing(sqlite_files(path)) as conn:
        return conn.execute(query, args).fetchall()


def store_rows(store: Store, query: str) -> list[tuple[Any, ...]]:
    """A query on a store's database beside the store (SQLite or PostgreSQL; no parameters, SQL both read)."""
    if not is_postgres(store.url):
        return sqlite_rows(store, query)
    with psycopg.connect(store.url) as conn:
        return conn.execute(query).fetchall()  # type: ignore[call-overload, no-any-return]


def sqlite_count(store: Store, table: str, where: str = "", args: tuple[Any, ...] = ()) -> int:
    count: int = sqlite_rows(store, f"SELECT COUNT(*) FROM {table} {where}", args)[0][0]
    return count


def worker_processes(parent: int) -> set[int]:
    """The running worker processes (python -m brain.worker_process) a process started."""
    found = set()
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text()
            command = (entry / "cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError):  # gone, also between two looks
            continue
        if f"\nPPid:\t{parent}\n" in status and "brain.worker_process" in command and "State:\tZ" not in status:
            found.add(int(entry.name))
    return found


@pytest.fixture
def make_brain(request: pytest.FixtureRequest, tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Brain]]:
    """Brains on SQLite files of their own: ``on_commit`` goes to the store, the rest to the Brain.
    With the parameter "postgres" (indirect), on PostgreSQL stores of their own."""
    stores: list[Store] = []
    with ExitStack() as stack:

        def make(config: BreinConfig, *, on_commit: Any = None, **kwargs: Any) -> Brain:
            if getattr(request, "param", "sqlite") == "postgres":
                url = stack.enter_context(postgres_store_url(request.getfixturevalue("postgres_database")))
            else:
                url = f"sqlite:///{tmp_path / f'brein-{len(stores)}.db'}"
            store = open_store(url, on_commit=on_commit)
            stores.append(store)
            return Brain(config, store, clock=clock, **kwargs)

        yield make
        for store in stores:
            store.close()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry())


@pytest.fixture
def brain(make_brain: Callable[..., Brain], config: BreinConfig, metrics: Metrics) -> Brain:
    return make_brain(config, on_commit=metrics.on_commit)


class LiveServer:
    """A real grpc.aio server on 127.0.0.1 and a free port, on its own event-loop thread."""

    def __init__(
        self, brain: Brain, metrics: Metrics, *, background: bool = False, thread_health: ThreadHealth | None = None
    ) -> None:
        self.metrics = metrics
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        serving = create_server(brain, self.metrics, "127.0.0.1:0", background=background, thread_health=thread_health)
        self.running: RunningServer = self._run(serving)
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
