"""One PostgreSQL database: a connection pool (psycopg-pool), the writer thread and the reads.

Every write of a store goes through its writer thread, which commits whatever is queued in one
transaction (group commit) and only then resolves each write's future: a caller that waits on its
future holds a committed write. Each write runs in its own savepoint (psycopg's nested
``transaction()``): a refused write fails alone, the others in its group still commit. The hot
path's writes (decisions, outcomes, activations) are mergeable: between two other writes, all
those of one kind are written together, a statement or two for the lot, in one savepoint (and
one by one only when that fails).

The transaction begins with the advisory locks its group needs (in the round trip of its BEGIN),
always in one order:
the per-customer locks of its decisions (sorted by key), then the outcome lock when it stores an
outcome. Two replicas' groups therefore never wait on each other in a circle; a customer's
decisions commit one replica at a time; and outcomes get their sequence numbers in commit order
(see JoinState.outcome_horizon).

Reads take a pooled connection in autocommit mode (each statement sees what was committed when it
began). A read whose connection turns out broken (the server restarted, the backend was
terminated) is tried once more on a fresh one; a write group on a broken connection fails as
StoreUnavailable and the next group takes a fresh connection: the store recovers by itself.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from store.errors import Conflict, StoreUnavailable, UnknownStore
from store.ports import CommitListener
from store.postgres.schema import lock_key, migrate
from store.settling import Settled, committed, failed, next_group
from store.threads import Supervised, ThreadFailure

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]
Write = Callable[[Connection], T]

MAX_GROUP = 2048
MAX_CONNECTIONS = 8
"""A store's pooled connections: its writer's and its concurrent reads'."""
CONNECT_SECONDS = 5.0
"""How long opening a store waits for its first connections, and a new connection for its server."""
WAIT_SECONDS = 1.0
"""How long a read or a group commit waits for a pooled connection before StoreUnavailable: when
the database has gone away, within the deadline a channel usually gives a call."""
LOCK_OUTCOMES = f"SELECT pg_advisory_xact_lock({lock_key('outcomes')})"
"""The transaction-level advisory lock every write of outcomes holds: their seqs in commit order."""
LOCK_CUSTOMERS = (
    "SELECT pg_advisory_xact_lock(k) FROM (SELECT DISTINCT hashtextextended(c || COALESCE(current_schema(), ''), 0) AS k "
    "FROM unnest(%s::text[]) AS c ORDER BY k) AS keys"
)
"""The transaction-level advisory locks of customers, in key order (also when two ids share a key)."""
BROKEN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
"""What says the database or the connection to it failed, not the write."""


Outcome = tuple[Any, BaseException | None]
"""What became of one write: (its result, None) or (None, the error it failed with alone)."""


class Mergeable:
    """A write that the writer may merge with the other writes of its class between two other
    writes: their order among themselves is kept, their order against other mergeable kinds is not
    (each kind is independent of the others)."""

    __slots__ = ()

    @classmethod
    def merged(cls, conn: Connection, writes: Sequence[Any]) -> list[Outcome]:
        """Write every one of ``writes`` (all instances of ``cls``) in as few statements as possible:
        what became of each (one that failed alone left nothing written)."""
        raise NotImplementedError

    def __call__(self, conn: Connection) -> Any:
        result, error = type(self).merged(conn, [self])[0]
        if error is not None:
            raise error
        return result


class _Queued(NamedTuple):
    write: Write[Any]
    future: Future[Any]
    customers: Collection[str]
    sequenced: bool


def _mergeable(queued: _Queued) -> bool:
    return isinstance(queued.write, Mergeable)


def alone(conn: Connection, write: Write[T]) -> tuple[T | None, BaseException | None]:
    """One write in its own savepoint: (its result, None) or (None, the error it failed with).
    Raises when the database itself failed: then the whole group fails."""
    try:
        with conn.transaction():
            return write(conn), None
    except BROKEN:
        raise
    except psycopg.IntegrityError as error:
        return None, Conflict(f"the store refused the write: {error.diag.message_primary or error}")
    except Exception as error:  # the write's own failure (a Conflict, a StaleHistory, a refused value) fails it alone
        return None, error


def _merged(conn: Connection, run: list[_Queued]) -> list[Settled]:
    """Mergeable writes, each kind's together in a savepoint; each alone when that one fails."""
    by_kind: dict[type[Mergeable], list[_Queued]] = {}
    for queued in run:
        assert isinstance(queued.write, Mergeable)
        by_kind.setdefault(type(queued.write), []).append(queued)
    results: list[Settled] = []
    for kind, mine in by_kind.items():
        try:
            with conn.transaction():
                outcomes = kind.merged(conn, [q.write for q in mine])
        except BROKEN:
            raise
        except psycopg.Error:  # a value the database refused: find whose
            outcomes = [alone(conn, q.write) for q in mine]
        results.extend((q.future, *outcome) for q, outcome in zip(mine, outcomes, strict=True))
    return results


class Engine:
    """The pool, the writer thread and the reads of one database."""

    def __init__(
        self,
        url: str,
        *,
        on_commit: CommitListener | None = None,
        on_thread_failure: ThreadFailure | None = None,
        customer_locks: bool = True,
        create: bool = True,
    ) -> None:
        """The writer is a supervised thread (store/threads.py): ``on_thread_failure`` hears of its
        failures. ``customer_locks`` False: decisions are written without the per-customer lock (only
        to measure what the lock costs; replicas could then both pass a contact cap). ``create``
        False: UnknownStore when the database holds no store (see migrate)."""
        self.url = url
        self.customer_locks = customer_locks
        self.pool: ConnectionPool[Connection] = ConnectionPool(
            url, min_size=2, max_size=MAX_CONNECTIONS, kwargs={"autocommit": True, "connect_timeout": int(CONNECT_SECONDS)},
            timeout=CONNECT_SECONDS, open=False, name="brein-store",
        )  # fmt: skip
        try:
            self.pool.open(wait=True, timeout=CONNECT_SECONDS)
            with self.pool.connection() as conn:
                migrate(conn, create=create)
        except BROKEN as error:
            self.pool.close()
            raise StoreUnavailable(f"could not open the PostgreSQL store: {error}") from error
        except UnknownStore:
            self.pool.close()
            raise
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._closed = False
        self._writer = Supervised("brein-store-writer", self._write_loop, on_failure=on_thread_failure)
        self._writer.start()

    # -- reads --------------------------------------------------------------------------------------

    def read(self, read: Callable[[Connection], T]) -> T:
        """``read`` on a pooled connection; once more on a fresh one when that one was broken.
        StoreUnavailable when the database cannot be reached."""
        for attempt in (1, 2):
            try:
                with self.pool.connection(timeout=WAIT_SECONDS) as conn:
                    return read(conn)
            except BROKEN as error:
                if attempt == 2 or isinstance(error, PoolTimeout):
                    raise StoreUnavailable(f"the store could not be read: {error}") from error
        raise AssertionError("unreachable")

    def rows(self, query: str, args: Sequence[Any] | dict[str, Any] = ()) -> list[tuple[Any, ...]]:
        return self.read(lambda conn: conn.execute(query, args).fetchall())

    def value(self, query: str, args: Sequence[Any] = ()) -> Any:
        """The first column of the one row ``query`` gives."""
        row = self.read(lambda conn: conn.execute(query, args).fetchone())
        assert row is not None, query
        return row[0]

    # -- writes -------------------------------------------------------------------------------------

    def submit(self, write: Write[T], *, customers: Collection[str] = (), sequenced: bool = False) -> Future[T]:
        """Queue a write; its future resolves once the group it joined is committed. ``customers``:
        whose decisions it writes (their locks are taken first); ``sequenced``: it stores outcomes."""
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(StoreUnavailable("the store is closed"))
        else:
            self._queue.put(_Queued(write, future, customers, sequenced))
        return future

    def _write_loop(self) -> None:
        while (group := next_group(self._queue, MAX_GROUP)) is not None:
            self._commit_group(group)

    def _begin(self, conn: Connection, group: list[_Queued]) -> None:
        """BEGIN and the group's locks in one round trip: one simple query of several statements
        (bound on the client), each statement still with a snapshot of its own."""
        statements, args = ["BEGIN"], []
        customers = {customer for queued in group for customer in queued.customers}
        if customers and self.customer_locks:
            statements.append(LOCK_CUSTOMERS)
            args.append(list(customers))
        if any(queued.sequenced for queued in group):
            statements.append(LOCK_OUTCOMES)
        psycopg.ClientCursor(conn).execute("; ".join(statements), args)

    @contextmanager
    def _connection_begun(self, group: list[_Queued]) -> Iterator[tuple[Connection, list[_Queued]]]:
        """A pooled connection with the group's transaction begun, and the writes of ``group`` whose
        callers have not given up (a write cancelled before it began, also while this waited for a
        connection, is never written). A connection that turns out broken at BEGIN (the database
        restarted, the backend was terminated) is swapped for a fresh one, once: nothing was written."""
        for attempt in (1, 2):
            with self.pool.connection(timeout=WAIT_SECONDS) as conn:
                if attempt == 1:
                    group = [queued for queued in group if queued.future.set_running_or_notify_cancel()]
                if not group:
                    yield conn, group
                    return
                try:
                    self._begin(conn, group)
                except BROKEN:
                    if attempt == 2 or not conn.broken:
                        raise
                    continue
                yield conn, group
                return

    def _commit_group(self, group: list[_Queued]) -> None:
        started = time.perf_counter()
        results: list[Settled] = []
        try:
            with self._connection_begun(group) as (conn, group):
                if not group:
                    return
                try:
                    for mergeable, run in itertools.groupby(group, key=_mergeable):
                        if mergeable:
                            results.extend(_merged(conn, list(run)))
                        else:
                            results.extend((q.future, *alone(conn, q.write)) for q in run)
                    conn.execute("COMMIT")
                except BaseException:
                    if not conn.broken:
                        conn.execute("ROLLBACK")
                    raise
        except (psycopg.Error, PoolTimeout) as error:  # the database failed (or the group's locks deadlocked)
            failed([q.future for q in group], len(group), error, started, self._on_commit)
            return
        committed(results, started, self._on_commit)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self.pool.close()
