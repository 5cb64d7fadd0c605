"""`brein worker` processes on one store: only the lease holder works; when it is killed mid-run a
standby takes over within seconds, and what they joined together equals an uninterrupted run. The
worker `brein serve` starts beside itself imports nothing of the server."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import tomli_w

from bandit.config import BreinConfig
from brain.worker import work
from reward.joiner import Joiner
from store import open_store
from store.opening import is_postgres, sqlite_path
from tests.conftest import copy_sqlite_store, example_data, postgres_store_url, store_rows
from tests.test_joiner import _populate

pytestmark = pytest.mark.costly

TAKEOVER_SECONDS = 10.0


class WorkerProcess:
    """`brein worker` as a real process, its JSON log lines collected as they come."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "serving", "worker", "--config", str(config)], stderr=subprocess.PIPE, text=True
        )
        self.log: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            try:
                self.log.append(json.loads(line))
            except ValueError:
                self.log.append({"message": line.rstrip()})

    def said(self, start: str) -> bool:
        return any(str(entry.get("message", "")).startswith(start) for entry in list(self.log))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=10)


def until(condition: Callable[[], bool], seconds: float, what: str, every: float = 0.02) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds} s: {what}"
        time.sleep(every)
    return time.monotonic() - started


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for worker in started:
        worker.stop()


EXAMPLES = "SELECT decision_id, status, reward, cost, credit, outcomes FROM joined_examples ORDER BY decision_id"


def test_a_standby_takes_over_from_a_killed_worker_and_joins_what_an_uninterrupted_run_joins(
    tmp_path: Path, store_url: str, config: BreinConfig, workers: list[WorkerProcess]
) -> None:
    """On SQLite the lease is a flock, on PostgreSQL a session-level advisory lock; the uninterrupted
    run is on a SQLite copy of the same log either way (so both backends join alike, too)."""
    whole = tmp_path / "whole.db"
    _populate(whole, customers=8_000)
    if is_postgres(store_url):
        _populate(store_url, customers=8_000)
    else:
        copy_sqlite_store(whole, sqlite_path(store_url) or "")
    reference = open_store(str(whole))
    try:
        expected = Joiner(config, reference.joins).run()  # the watermark a worker takes: the latest event time seen
        assert expected.joined > 5_000
        want = store_rows(reference, EXAMPLES)
    finally:
        reference.close()
    data = example_data()
    data["server"]["store"] = store_url
    data["learner"]["online"] = False  # joining is what is compared here
    data["joiner"] = {**data["joiner"], "interval_seconds": 0.2}
    config_file = tmp_path / "brein.toml"
    config_file.write_text(tomli_w.dumps(data))

    store = open_store(store_url)
    try:
        workers.append(WorkerProcess(config_file))
        active = workers[0]
        until(lambda: active.said("holding the store's worker lease"), 30, "the first worker holds the lease")
        workers.append(WorkerProcess(config_file))
        standby = workers[1]
        until(lambda: standby.said("another worker holds the store's worker lease; standing by"), 30, "the second stands by")
        # Through the store's own (pooled) connections: a look every few milliseconds, so that the
        # kill falls inside the run also where a run takes under a second (PostgreSQL).
        until(lambda: store.examples.count() > 0, 60, "the first worker writes examples", every=0.002)
        active.process.send_signal(signal.SIGKILL)
        active.process.wait(timeout=10)
        written = len(store_rows(store, "SELECT decision_id FROM joined_examples"))
        # Killed once it had written: mostly inside its run; on a loaded machine a PostgreSQL run can
        # write all of its one batch before the kill lands, which leaves the run unfinished all the same.
        assert 0 < written <= len(want), "the worker was killed before it wrote"
        took = until(lambda: standby.said("holding the store's worker lease"), TAKEOVER_SECONDS, "the standby takes over")
        until(lambda: store.joins.pending_count() == expected.pending and len(store_rows(store, EXAMPLES)) == len(want), 120,
              "the standby joins the rest")  # fmt: skip
        assert store_rows(store, EXAMPLES) == want  # each example once, with the reward an uninterrupted run gives it
        assert took < TAKEOVER_SECONDS
        assert not standby.said("join/learn round failed")
    finally:
        store.close()


def test_the_worker_beside_a_server_imports_nothing_of_serving() -> None:
    check = "import sys, brain.worker_process; print(sorted(m for m in sys.modules if m.split('.')[0] in ('serving', 'grpc')))"
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_worker_that_takes_the_lease_says_where_autovacuum_does_not_run(
    config: BreinConfig, postgres_database: str, caplog: pytest.LogCaptureFixture
) -> None:
    with postgres_store_url(postgres_database) as url:
        store = open_store(url)
        try:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE join_queue SET (autovacuum_enabled = false)")
            with caplog.at_level(logging.WARNING, logger="brein.worker"):
                work(config, store, lambda event: None, lambda seconds: True)
        finally:
            store.close()
    assert [r.getMessage() for r in caplog.records if "table join_queue" in r.getMessage()] != []
