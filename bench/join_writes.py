"""The worker's write transactions on SQLite: `python -m bench.join_writes [--log FILE] [--backlog N]`.

A backlog (bench/join.py's log: 50,000 decisions and 15,000 outcomes by default) is joined in
process the way the worker beside a server joins it (writes of BESIDE_A_SERVER_WRITE_ROWS examples,
brain/worker.py), while a second store on the same file, the server's, logs 300 decisions/s in
groups of three. For each of the worker's transactions in its own file (store/sqlite/worker_schema.py)
it records, on the writer thread: the time it held that file's write lock, its CPU (user and
system), and the WAL frames it wrote (the WAL is not
checkpointed during the join, so its growth counts them); and the latency of each of the server's
writes. ``--log FILE`` joins a copy of a log built before (by this module with ``--keep FILE``),
so that two trees are measured on the same file (a copy made by the other's schema is migrated in
place when the store opens; the join is timed after that). The figures are printed as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from bandit.config import load_config
from bench.join import CONFIG, build
from brain.worker import BESIDE_A_SERVER_WRITE_ROWS
from reward.joiner import Joiner
from store.records import DecisionRecord
from store.sqlite import SQLiteStore, connections
from store.sqlite import engine as sqlite_engine
from store.sqlite.connections import worker_file

RATE = 300.0
GROUP = 3
TICKS = os.sysconf("SC_CLK_TCK")


class Transactions:
    """Each transaction of one writer thread: (held seconds, CPU seconds, user ticks, system ticks, WAL frames)."""

    def __init__(self, wal: Path, page_size: int) -> None:
        self.rows: list[tuple[float, float, int, int, int]] = []
        self._wal = wal
        self._frame = page_size + 24
        self.writer: int | None = None
        self.locked_at = 0.0

    def _size(self) -> int:
        return self._wal.stat().st_size if self._wal.exists() else 0

    def measured(self, commit_group: Callable[..., None]) -> Callable[..., None]:
        def measuring(*args: Any) -> None:
            self.writer = threading.get_ident()
            size, cpu, (user, system) = self._size(), time.thread_time(), _ticks()
            commit_group(*args)
            now_user, now_system = _ticks()
            held = time.perf_counter() - self.locked_at
            frames = (self._size() - size) // self._frame
            self.rows.append((held, time.thread_time() - cpu, now_user - user, now_system - system, frames))

        return measuring


def _ticks() -> tuple[int, int]:
    """This thread's user and system CPU so far, in clock ticks."""
    fields = Path("/proc/thread-self/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


def _timed_begin(transactions: Transactions) -> Callable[[sqlite3.Connection], None]:
    def timed(conn: sqlite3.Connection) -> None:
        connections.begin(conn)
        if threading.get_ident() == transactions.writer:
            transactions.locked_at = time.perf_counter()

    return timed


def _latency(sent: float, latencies: list[float]) -> Callable[[Future[None]], None]:
    def done(_: Future[None]) -> None:
        latencies.append(time.perf_counter() - sent)

    return done


def _server_writes(store: SQLiteStore, stop: threading.Event, customers: int, latencies: list[float]) -> None:
    """Decisions at RATE a second, GROUP at a time, made now (after the backlog: never closed)."""
    rng = random.Random(11)
    period = GROUP / RATE
    due = time.perf_counter()
    count = 0
    while not stop.is_set():
        batch = []
        for _ in range(GROUP):
            at = time.time()
            batch.append(DecisionRecord(
                decision_id=f"live{count}", request_id=f"live-r{count}", customer_id=f"c{rng.randrange(customers)}",
                touchpoint="app", event_time=at, action_id="do_nothing", offer="do_nothing", channel="", slot="", send_at=at,
                probability=1.0, exploratory=False, policy_id="p", model_version="v", personalised=True,
                features={"n": {"touchpoint": "app"}}, eligible=("do_nothing",), pmf=(1.0,),
            ))  # fmt: skip
            count += 1
        store.decisions.submit_decisions(batch).add_done_callback(_latency(time.perf_counter(), latencies))
        due += period
        time.sleep(max(0.0, due - time.perf_counter()))


def _stop_checkpoints(store: SQLiteStore) -> None:
    for engine in (store.engine, store.worker_engine):
        if engine.checkpointer is not None:
            engine.checkpointer.stop()


def measure(path: Path, backlog: int) -> dict[str, float]:
    config = load_config(CONFIG)
    server = SQLiteStore(path)
    _stop_checkpoints(server)
    worker = SQLiteStore(path)
    _stop_checkpoints(worker)
    with worker.worker_engine.reading() as conn:
        page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
    transactions = Transactions(Path(f"{worker_file(str(path))}-wal"), page_size)
    sqlite_engine.begin = _timed_begin(transactions)  # type: ignore[attr-defined, assignment]  # the name the writer calls
    worker.worker_engine._commit_group = transactions.measured(worker.worker_engine._commit_group)  # type: ignore[method-assign]
    stop, latencies = threading.Event(), list[float]()
    load = threading.Thread(target=_server_writes, args=(server, stop, backlog // 5, latencies))
    load.start()
    try:
        time.sleep(1.0)
        started = time.perf_counter()
        report = Joiner(config, worker.joins, write_rows=BESIDE_A_SERVER_WRITE_ROWS).run(until=time.time() - 86_400)
        join_s = time.perf_counter() - started
        server_during = latencies[:]
    finally:
        stop.set()
        load.join()
        worker.close()
        server.close()
        sqlite_engine.begin = connections.begin  # type: ignore[attr-defined]
    rows = [row for row in transactions.rows if row[4] > 0]
    held, cpu, user, system, frames = (list(column) for column in zip(*rows, strict=True))
    server_during.sort()
    return {
        "joined": report.joined + report.unactivated,
        "join_s": join_s,
        "transactions": len(rows),
        "held_ms_p50": statistics.median(held) * 1e3,
        "held_ms_p90": statistics.quantiles(held, n=10)[-1] * 1e3,
        "cpu_ms_p50": statistics.median(cpu) * 1e3,
        "cpu_s_total": sum(cpu),
        "system_share": sum(system) / max(1, sum(user) + sum(system)),
        "frames_p50": statistics.median(frames),
        "frames_total": sum(frames),
        "server_write_ms_p50": server_during[len(server_during) // 2] * 1e3,
        "server_write_ms_p99": server_during[int(len(server_during) * 0.99)] * 1e3,
        "db_mib": (path.stat().st_size + Path(worker_file(str(path))).stat().st_size) / 2**20,
    }


def _copy(log: Path, to: Path) -> None:
    """A store's files (the worker's, where there is one: a log from before it has none)."""
    shutil.copyfile(log, to)
    if Path(worker_file(str(log))).exists():
        shutil.copyfile(worker_file(str(log)), worker_file(str(to)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.join_writes", description=__doc__)
    parser.add_argument("--backlog", type=int, default=50_000, help="decisions in the backlog (and 3/10 as many outcomes)")
    parser.add_argument("--log", type=Path, help="join a copy of this log instead of building one")
    parser.add_argument("--keep", type=Path, help="keep a copy of the log built, before the join, here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "join.db"
        if args.log is not None:
            _copy(args.log, path)
        else:
            build(path, args.backlog, args.backlog * 3 // 10, customers=args.backlog // 5)
            if args.keep is not None:
                _copy(path, args.keep)
        figures = measure(path, args.backlog)
    print(json.dumps({**figures, "load": os.getloadavg()[0]}))


if __name__ == "__main__":
    main()
