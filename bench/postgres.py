"""PostgreSQL for the benchmarks: a scratch database of their own, and the CPU its backends use.

A database of its own, rather than a schema, so that the database's share of a benchmark's work
can be told apart from the other clients of a shared server: each backend's process title names
its database (``postgres: 15/main: postgres bench_1a2b... 127.0.0.1(5432) idle``).
"""

from __future__ import annotations

import os
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


def database_of(url: str) -> str:
    """The database a PostgreSQL URL names."""
    return urlsplit(url).path.lstrip("/")


def postgres_cpu(database: str | None = None) -> float:
    """CPU seconds (user + system) the PostgreSQL processes on this machine have used (/proc): the
    backends serving ``database``, or every PostgreSQL process when None (then other clients of
    the server, and its background writers, are counted too). A backend that has exited is no
    longer counted: read before and after a run while the pool keeps its connections."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
            title = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone between two looks
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if not name.startswith("postgres") or (database is not None and f" {database} " not in title):
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks
