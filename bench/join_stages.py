"""Where a PostgreSQL join's time goes: `python -m bench.join_stages [--build D,O] LOG`.

bench.join builds its log for every run (minutes at 1,000,000 decisions). This keeps the log in a
database of its own (``LOG``, on the server of ``--server``; ``--build 1000000,300000`` makes it
with bench.join's builder and analyses it) and joins a fresh copy of it (``CREATE DATABASE ...
TEMPLATE``) each run, in this process, so that two checkouts can be compared on one log, one
after the other. It prints one JSON line: the join's wall seconds, this process's CPU and peak
RSS, the CPU the copy's database backends used (each backend's own figure, too), the seconds
spent in each JoinState call (``closing``: waiting for the run's stream of customers), the time
from each write's submission to its commit (``writes``), and an md5 of the joined examples, equal
for equal output.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import uuid
from collections import defaultdict
from collections.abc import Generator, Iterator
from concurrent.futures import Future
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from bandit.config import load_config
from bench.join import CONFIG, build
from bench.postgres import DEFAULT_URL, backends
from reward.joiner import Joiner
from store import open_store
from store.ports import JoinState

UNTIL = datetime(2026, 6, 1, tzinfo=UTC).timestamp()
"""bench.join's ``--until``: every decision of its log is closed."""
DIGEST = ("SELECT md5(string_agg(concat_ws('|', decision_id, customer_id, event_time, run, status, reward, cost, credit, "
          "outcomes, horizon), ',' ORDER BY decision_id)) FROM joined_examples")  # fmt: skip


class TimedJoinState:
    """A JoinState whose calls are timed (seconds per method, in ``spent``)."""

    def __init__(self, inner: JoinState) -> None:
        self._inner = inner
        self.spent: defaultdict[str, float] = defaultdict(float)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._inner, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                result = method(*args, **kwargs)
            finally:
                self.spent[name] += time.perf_counter() - started
            if isinstance(result, Future):
                result.add_done_callback(lambda _: self._add("writes", started))
            if isinstance(result, Iterator):
                return self._timed_stream(name, result)
            return result

        return timed

    def _add(self, name: str, started: float) -> None:
        self.spent[name] += time.perf_counter() - started

    def _timed_stream(self, name: str, items: Iterator[Any]) -> Generator[Any, None, None]:
        with closing(items):  # type: ignore[type-var]  # a generator
            while True:
                started = time.perf_counter()
                item = next(items, None)
                self._add(name, started)
                if item is None:
                    return
                yield item


@contextmanager
def copy_of(server: str, log: str) -> Iterator[str]:
    """The URL of a fresh copy of the database ``log``, dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(sql.Identifier(name), sql.Identifier(log)))
    try:
        yield _database_url(server, name)
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _database_url(server: str, name: str) -> str:
    return server.rsplit("/", 1)[0] + f"/{name}"


def build_log(server: str, log: str, decisions: int, outcomes: int) -> None:
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(log)))
    build(_database_url(server, log), decisions, outcomes, customers=decisions // 5)
    with psycopg.connect(_database_url(server, log), autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")  # as autovacuum would, given the time


def join_copy(server: str, log: str) -> dict[str, Any]:
    config = load_config(CONFIG)
    with copy_of(server, log) as url:
        database = url.rsplit("/", 1)[1]
        store = open_store(url)
        try:
            joins = TimedJoinState(store.joins)
            joiner = Joiner(config, joins)
            before, cpu_before = backends(database), resource.getrusage(resource.RUSAGE_SELF)
            started = time.perf_counter()
            report = joiner.run(UNTIL)
            wall = time.perf_counter() - started
            after, cpu_after = backends(database), resource.getrusage(resource.RUSAGE_SELF)
        finally:
            store.close()
        with psycopg.connect(url) as conn:
            digest = conn.execute(DIGEST).fetchone()
    per_backend = sorted((cpu - before.get(pid, (0.0, 0.0))[0] for pid, (cpu, _) in after.items()), reverse=True)
    return {
        "wall_s": round(wall, 1),
        "process_cpu_s": round(_cpu(cpu_after) - _cpu(cpu_before), 1),
        "peak_rss_mib": round(cpu_after.ru_maxrss / 1024),
        "database_cpu_s": round(sum(per_backend), 1),
        "database_cpu_per_backend_s": [round(b, 1) for b in per_backend],
        "joined": report.joined,
        "unactivated": report.unactivated,
        "seconds_in": {name: round(seconds, 1) for name, seconds in sorted(joins.spent.items())},
        "digest": digest[0] if digest else None,
        "load": round(os.getloadavg()[0], 1),
    }


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.join_stages", description=__doc__)
    parser.add_argument("log", help="the database holding the log (made by --build)")
    parser.add_argument("--server", default=DEFAULT_URL, help="a URL of the PostgreSQL server (any database on it)")
    parser.add_argument("--build", metavar="DECISIONS,OUTCOMES", help="first build the log (the database must not exist)")
    args = parser.parse_args(argv)
    if args.build:
        decisions, outcomes = (int(n) for n in args.build.split(","))
        build_log(args.server, args.log, decisions, outcomes)
    print(json.dumps(join_copy(args.server, args.log)))


if __name__ == "__main__":
    main()
