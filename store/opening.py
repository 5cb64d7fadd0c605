"""Opening a store from a URL: which backend, which database.

  sqlite:///var/brein.db    a SQLite file, relative to the working directory (three slashes, as
                            SQLAlchemy has it); sqlite:////srv/brein.db for an absolute path
  var/brein.db              a plain path is a SQLite file too (configs from before URLs)
  sqlite:// or sqlite:///:memory:
                            an in-memory SQLite database, gone when the store closes (unit tests)
  postgresql://user@host/db the PostgreSQL backend (postgres:// too): a database several serving
                            replicas and a worker share; any libpq connection URI
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from store.errors import UnknownStore
from store.ports import CommitListener, Store
from store.postgres import PostgresStore
from store.sqlite import SQLiteStore
from store.threads import ThreadFailure

POSTGRES_SCHEMES = ("postgresql", "postgres")

MEMORY = ("sqlite://", "sqlite:///:memory:")


def in_memory(url: str) -> bool:
    """An in-memory database: only the store that opened it sees it (no other process can share it)."""
    return url in MEMORY


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL store; UnknownStore for one no URL parser reads
    (``postgresql://[::1``: an unclosed IPv6 address)."""
    try:
        return urlsplit(url).scheme in POSTGRES_SCHEMES
    except ValueError as error:
        raise UnknownStore(f"store URL {url!r}: {error}") from None


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (or plain path); None for an in-memory database. UnknownStore for
    another backend's URL or a URL this cannot read."""
    if in_memory(url):
        return None
    if "://" not in url:
        if not url:
            raise UnknownStore("expected a store URL like sqlite:///var/brein.db, got ''")
        return Path(url)
    parts = urlsplit(url)
    if parts.scheme in POSTGRES_SCHEMES:
        raise UnknownStore(f"{url}: a PostgreSQL store has no file")
    if parts.scheme != "sqlite":
        raise UnknownStore(f"{url}: expected a URL starting sqlite:// (or postgresql://), got the scheme {parts.scheme!r}")
    if parts.netloc or parts.query or parts.fragment or not parts.path.startswith("/") or len(parts.path) < 2:
        raise UnknownStore(f"{url}: expected sqlite:///relative/path.db or sqlite:////absolute/path.db")
    return Path(parts.path[1:])


def open_store(
    url: str,
    *,
    on_commit: CommitListener | None = None,
    write_pause: float = 0.0,
    create: bool = True,
    on_thread_failure: ThreadFailure | None = None,
    serving: bool = False,
) -> Store:
    """The store at ``url`` (see the module's doc), its migrations applied.

    ``on_commit`` hears of every commit (for metrics), ``on_thread_failure`` of every failure of
    the store's background threads (store/threads.py). ``write_pause``: seconds the writer rests
    after each commit, so that another process sharing the database (the server, beside its
    worker) gets to write in between; PostgreSQL ignores it. ``create=False``: UnknownStore rather
    than a new, empty store when there is none at ``url`` (on PostgreSQL: no store's tables in the
    database, in the schema its URL's search_path names; a database is never created:
    StoreUnavailable when it cannot be reached). ``serving``: a server's store; on SQLite it holds
    the store's serving lock while open (StoreUnavailable while another server holds it: one server
    writes a SQLite store); PostgreSQL stores are served by several replicas."""
    if is_postgres(url):
        return PostgresStore(url, on_commit=on_commit, on_thread_failure=on_thread_failure, create=create)
    path = sqlite_path(url)
    if path is not None and not create and not path.is_file():
        raise UnknownStore(f"no store at {path}: give --store, or run the server once to create it")
    return SQLiteStore(path, on_commit=on_commit, commit_pause=write_pause, on_thread_failure=on_thread_failure, serving=serving,
                       create=create)  # fmt: skip
