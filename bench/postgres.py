"""PostgreSQL for the benchmarks: a scratch database of their own, and the CPU its backends use.

A database of its own, rather than a schema, so that the database's share of a benchmark's work
can be told apart from the other clients of a shared server: each backend's process title names
its database (``postgres: 15/main: postgres bench_1a2b... 127.0.0.1(5432) idle``).
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """The URL of a new database on ``url``'s server (named bench_...), dropped afterwards."""
    name = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(url)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def scratch_schema(url: str) -> Iterator[str]:
    """A store URL in a new schema of ``url``'s database, dropped afterwards."""
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        try:
            yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
        finally:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def maintain(url: str) -> None:
    """What autovacuum does for a database, done now: its dead rows cleared and its statistics
    gathered (a benchmark's log is minutes old; our machines' server runs without autovacuum)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")


def database_of(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return urlsplit(url).path.lstrip("/")


def stat_cpu_seconds(stat: str) -> float:
    """CPU seconds (user + system) from the text of a /proc/<pid>/stat or /proc/<pid>/task/<tid>/stat."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backends(database: str | None) -> dict[int, tuple[float, float]]:
    """Each PostgreSQL process's (CPU seconds, resident MiB): the backends serving ``database``, or
    every PostgreSQL process when None (then other clients of the server, and its background
    writers, too)."""
    page = os.sysconf("SC_PAGE_SIZE")
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone between two looks
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if name.startswith("postgres") and (database is None or f" {database} " in title):
            found[int(stat.parent.name)] = (stat_cpu_seconds(text), int(fields[21]) * page / 2**20)
    return found


def postgres_cpu(database: str | None = None) -> float:
    """CPU seconds (user + system) the PostgreSQL processes on this machine have used (/proc): the
    backends serving ``database``, or every one when None. A backend that has exited is no longer
    counted: read before and after a run while the pool keeps its connections (or use Sampler)."""
    return sum(cpu for cpu, _ in backends(database).values())


class Sampler:
    """The backends of one database watched from a thread, every ``every`` seconds, while a run
    opens and closes connections: the CPU they used (each backend's last reading; one that lived
    less than ``every`` may be missed) and the most resident memory they held together."""

    def __init__(self, database: str, every: float = 0.2) -> None:
        self._database, self._every = database, every
        self._cpu: dict[int, float] = {}
        self._before = set(backends(database))
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-postgres-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            self._look()

    def _look(self) -> None:
        seen = backends(self._database)
        for pid, (cpu, _) in seen.items():
            if pid not in self._before:
                self._cpu[pid] = cpu
        self.peak_mib = max(self.peak_mib, sum(mib for _, mib in seen.values()))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._look()
        self._stop.set()
        self._thread.join()

    @property
    def cpu(self) -> float:
        """CPU seconds of the backends that started while sampling."""
        return sum(self._cpu.values())
