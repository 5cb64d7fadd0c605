"""One PostgreSQL database: a connection pool (psycopg-pool), the writer thread and the reads.

Every write of a store goes through its writer thread, which commits whatever is queued in one
transaction (group commit) and only then resolves each write's future: a caller that waits on its
future holds a committed write. The hot path's writes (decisions, outcomes, activations) are
mergeable: all those of one kind in a group are written together, in one statement.

A group of mergeable writes only (the hot path's) costs two round trips: its BEGIN, its locks and
one statement a kind, sent together in pipeline mode; then its COMMIT. Any other group, or one
whose statement the database refused, is written the careful way: each write (each kind of
mergeable writes) in its own savepoint (psycopg's nested ``transaction()``), so that a refused
write fails alone while the others in its group still commit (a kind whose statement fails is
then written one by one).

The transaction begins with the locks its group needs, always in one order: the customers of its
decisions (their rows of customer_heads, sorted by id: LOCK_CUSTOMERS), then the outcome lock (an
advisory lock) when it stores an outcome. Two replicas' groups therefore never wait on each other in
a circle; a customer's decisions commit one replica at a time; and outcomes get their sequence
numbers in commit order (see JoinState.outcome_horizon). However many customers a group has, its
transaction takes a few heavyweight locks of the server's shared lock table, never one a customer.

Reads take a pooled connection in autocommit mode (each statement sees what was committed when it
began). A read whose connection turns out broken (the server restarted, the backend was
terminated) is tried once more on a fresh one, and so is a write group whose connection broke
before its COMMIT was sent (nothing of it was written); a group that fails otherwise fails as
StoreUnavailable and the next group takes a fresh connection: the store recovers by itself.
"""

from __future__ import annotations

import itertools
import logging
import queue
import time
from collections.abc import Callable, Collection, Generator, Iterator, Sequence
from concurrent.futures import Future
from typing import Any, NamedTuple, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from store.errors import Conflict, LeaseLost, StoreError, StoreReplaced, StoreUnavailable, reason
from store.ports import CommitListener
from store.postgres.schema import lock_key, migrate, same_store, store_id
from store.settling import Settled, committed, failed, next_group
from store.threads import Supervised, ThreadFailure

T = TypeVar("T")
Connection = psycopg.Connection[tuple[Any, ...]]
Write = Callable[[Connection], T]

MAX_GROUP = 2048
MAX_LOCKED_CUSTOMERS = 1000
"""The most customers one group commit locks (see _within_locks), a write with more alone."""
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
    "INSERT INTO customer_heads AS h (customer_id, head, writer, since) "
    "SELECT DISTINCT c, 0, '', 0 FROM unnest(%b::text[]) AS c ORDER BY 1 "
    "ON CONFLICT (customer_id) DO UPDATE SET head = h.head WHERE false"
)
"""The customers' locks: their rows of customer_heads (store/postgres/decisions.py), locked in id order
until the transaction ends. A customer without a row gets one at head 0 (what no row meant: a
concurrent transaction inserting the same id waits for this one, then locks the row it made);
ON CONFLICT DO UPDATE locks the row it finds even when its WHERE updates nothing.

Row locks, not an advisory lock a customer (which they were): a row lock is kept in the row itself,
where an advisory lock takes a slot of the server's shared lock table, sized for
max_locks_per_transaction (64 by default) × connections for the whole server, every database.
A DecideBatch chunk of 12,800 customers (valid with limits.max_message_bytes raised to 29 MiB), or
seven 1,797-customer chunks committing at once (the default 4 MiB), filled it: every item failed
("out of shared memory"), the server went NOT_SERVING, and other databases' sessions on that
server failed too. A transaction of Brein now takes a bounded number of heavyweight locks whatever
its customers: one a relation it writes (tables and indexes, most in the backend's fast-path
slots), the outcome lock, and, only while it waits for a row another transaction holds, that
row's tuple lock and the other transaction's id: a transaction writing 1,000 customers held one
entry of the shared table, where it held 1,001 (tests/test_postgres_store.py). Hashing customers into a bounded number of
advisory buckets was the other way to bound it; it would serialise unrelated customers whose ids
share a bucket, across replicas, where a row serialises one customer only. What a row lock costs
a decision write (the lock is written into the row: a WAL record a customer, and a new customer's
row is made here, then moved by the write) is in docs/benchmarks.md ("PostgreSQL: a customer's
lock in its row")."""
READ_COMMITTED = "SET default_transaction_isolation TO 'read committed'"
"""Run first on every connection Brein opens (the pool's, the migration's, the lease's): its transactions
are READ COMMITTED whatever the server's, the database's, the role's or the URL's default (an
operator's ``ALTER DATABASE ... SET default_transaction_isolation = 'serializable'``). Brein's
writes are serialised by its own locks and rely on each statement seeing what was committed before
it began, also when it began after waiting for a lock: the head check after the customers' locks,
the migration's look for its table after the migration lock, the outcomes' seqs after their lock.
Under REPEATABLE READ or SERIALIZABLE a transaction's snapshot is its first statement's, taken
before that wait (two processes opening a new store at once: the second did not see the tables the
first had made, and failed creating them), and SERIALIZABLE aborts transactions Brein would have to
try again (Decides and Forgets answered UNAVAILABLE)."""
log = logging.getLogger("brein.store")

BROKEN = (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout)
"""What says the database or the connection to it failed, not the write."""


Outcome = tuple[Any, BaseException | None]
"""What became of one write: (its result, None) or (None, the error it failed with alone)."""


class Mergeable:
    """A write that the writer may merge with the other writes of its class in a group: their order
    among themselves is kept, their order against other mergeable kinds is not (each kind is
    independent of the others). The writes of a kind are one statement (``statement``), sent with
    the group's BEGIN without waiting; ``settle`` reads what became of each from its rows."""

    __slots__ = ()

    @classmethod
    def statement(cls, writes: Sequence[Any]) -> tuple[str, Sequence[Any]]:
        """The one statement (query, arguments) that writes all of ``writes`` (instances of ``cls``)."""
        raise NotImplementedError

    @classmethod
    def settle(cls, conn: Connection, writes: Sequence[Any], rows: list[tuple[Any, ...]]) -> list[Outcome]:
        """What became of each of ``writes`` from the rows of their statement (one that failed alone
        left nothing written: undone here on ``conn``, in the group's transaction, when it must be)."""
        raise NotImplementedError

    @classmethod
    def merged(cls, conn: Connection, writes: Sequence[Any]) -> list[Outcome]:
        """Write every one of ``writes`` on ``conn`` now: what became of each."""
        query, args = cls.statement(writes)
        return cls.settle(conn, writes, conn.execute(query, args).fetchall())

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
    Raises when the database itself failed: then the whole group fails. A mergeable write's own
    failure keeps what its ``settle`` kept (the other customers' decisions of a write with stale
    ones): not raised through the savepoint, which would undo them."""
    try:
        with conn.transaction():
            if isinstance(write, Mergeable):
                outcome: tuple[T | None, BaseException | None] = type(write).merged(conn, [write])[0]
                return outcome
            return write(conn), None
    except BROKEN:
        raise
    except psycopg.errors.UniqueViolation as error:  # a key written already: the caller's to sort out
        return None, Conflict(f"the store refused the write: {error.diag.message_primary or error}")
    except psycopg.IntegrityError as error:  # a NOT NULL, check or foreign key: Brein's own fault, not the caller's
        log.error("the store refused a write: %s", reason(error))
        refused = StoreError(f"the store refused the write: {reason(error)}")
        refused.__cause__ = error
        return None, refused
    except Exception as error:  # the write's own failure (a Conflict, a StaleHistory, a refused value) fails it alone
        return None, error


def _by_kind(run: Sequence[_Queued]) -> dict[type[Mergeable], list[_Queued]]:
    kinds: dict[type[Mergeable], list[_Queued]] = {}
    for queued in run:
        assert isinstance(queued.write, Mergeable)
        kinds.setdefault(type(queued.write), []).append(queued)
    return kinds


def _merged(conn: Connection, run: list[_Queued]) -> list[Settled]:
    """Mergeable writes, each kind's together in a savepoint; each alone when that one fails."""
    results: list[Settled] = []
    for kind, mine in _by_kind(run).items():
        try:
            with conn.transaction():
                outcomes = kind.merged(conn, [q.write for q in mine])
        except BROKEN:
            raise
        except psycopg.Error:  # a value the database refused: find whose
            outcomes = [alone(conn, q.write) for q in mine]
        results.extend((q.future, *outcome) for q, outcome in zip(mine, outcomes, strict=True))
    return results


def _within_locks(group: list[_Queued]) -> Iterator[list[_Queued]]:
    """``group`` in consecutive parts of at most MAX_LOCKED_CUSTOMERS customers each (a write with
    more is a part of its own): a transaction holds its customers' rows locked until it commits,
    and another replica's decisions for any of them wait for all of it."""
    part: list[_Queued] = []
    customers = 0
    for queued in group:
        if part and customers + len(queued.customers) > MAX_LOCKED_CUSTOMERS:
            yield part
            part, customers = [], 0
        part.append(queued)
        customers += len(queued.customers)
    if part:
        yield part


def connect(url: str) -> Connection:
    """A new autocommit connection to ``url``, READ COMMITTED (READ_COMMITTED)."""
    conn = psycopg.connect(url, autocommit=True, connect_timeout=int(CONNECT_SECONDS))
    try:
        conn.execute(READ_COMMITTED)
    except BaseException:
        conn.close()
        raise
    return conn


class _Unsent(Exception):
    """The connection broke before the group's COMMIT was sent: nothing of the group was written."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


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
            timeout=CONNECT_SECONDS, open=False, name="brein-store", configure=self._configure,
        )  # fmt: skip
        self.replaced: StoreReplaced | None = None
        """Set once a new connection found another store at the URL than the one opened here."""
        try:
            # The first connection is made directly: its failure says why (no such database, refused),
            # where the pool's only says that it timed out.
            with connect(url) as conn:
                migrate(conn, create=create)
                opened = store_id(conn)
            assert opened is not None, "m010_store_identity gives every store its identity"
            self.store_id = opened
            self.pool.open(wait=True, timeout=CONNECT_SECONDS)
        except (psycopg.Error, PoolTimeout) as error:  # unreachable, or refused (a privilege the role lacks): one line
            self.pool.close()
            raise StoreUnavailable(f"could not open the PostgreSQL store: {reason(error)}") from error
        except StoreError:
            self.pool.close()
            raise
        self._on_commit = on_commit
        self.guard: Callable[[Connection], None] | None = None
        """Run first in every write transaction (the worker lease's fence, store/postgres/lease.py):
        it raises LeaseLost to refuse the transaction's writes."""
        self._queue: queue.SimpleQueue[_Queued | None] = queue.SimpleQueue()
        self._closed = False
        self._writer = Supervised("brein-store-writer", self._write_loop, on_failure=on_thread_failure)
        self._writer.start()

    def _configure(self, conn: Connection) -> None:
        """The pool's set-up and check of each connection it makes (at opening and at every
        reconnection): READ COMMITTED (READ_COMMITTED), and the store at the URL is still the one
        opened here (schema.same_store). A connection that finds another is not pooled; the pool
        keeps trying, and reads and writes fail as ``replaced``."""
        conn.execute(READ_COMMITTED)
        try:
            same_store(conn, self.store_id)
        except StoreReplaced as replaced:
            if self.replaced is None:
                log.error("%s", replaced)
            self.replaced = replaced
            raise

    def _unavailable(self, error: Exception, what: str) -> StoreUnavailable:
        """What a read or write that could not reach the store fails with: why, when the store at the
        URL was replaced (the pool then only timed out)."""
        return self.replaced or StoreUnavailable(f"{what}: {reason(error)}")

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
                    raise self._unavailable(error, "the store could not be read") from error
        raise AssertionError("unreachable")

    def streamed(
        self, query: str, args: Sequence[Any] | dict[str, Any], *, settings: Sequence[str] = (), per_fetch: int = 20_000
    ) -> Generator[tuple[Any, ...], None, None]:
        """The rows of ``query`` as the caller goes, through a server-side cursor in one transaction
        (one snapshot) on a pooled connection that is held until the rows are read or the generator
        is closed; ``settings``: statements run first in that transaction (``SET LOCAL ...``).
        StoreUnavailable when the database cannot be reached or fails on the way (not retried: rows
        were already given out)."""
        try:
            with self.pool.connection(timeout=WAIT_SECONDS) as conn, conn.transaction(), conn.cursor(name="streamed") as cursor:
                for setting in settings:
                    conn.execute(setting)
                cursor.itersize = per_fetch
                cursor.execute(query, args)
                yield from cursor
        except BROKEN as error:
            raise self._unavailable(error, "the store could not be read") from error

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
            for part in _within_locks(group):
                self._commit_group(part)

    def _begin(self, conn: Connection, group: list[_Queued]) -> None:
        """Queue BEGIN and the group's locks on ``conn``, which is in pipeline mode: the caller
        decides when they are sent (with the group's statements, or alone)."""
        conn.execute("BEGIN")
        if self.guard is not None:
            self.guard(conn)
        customers = {customer for queued in group for customer in queued.customers}
        if customers and self.customer_locks:
            conn.execute(LOCK_CUSTOMERS, (list(customers),))
        if any(queued.sequenced for queued in group):
            conn.execute(LOCK_OUTCOMES)

    def _pipelined(self, conn: Connection, group: list[_Queued]) -> list[Settled]:
        """A group of mergeable writes in one round trip (BEGIN, locks, a statement a kind), not
        committed yet. psycopg.Error when the database refused a statement (nothing written)."""
        kinds = _by_kind(group)
        with conn.pipeline():
            self._begin(conn, group)
            sent = [(kind, mine, conn.execute(*kind.statement([q.write for q in mine]))) for kind, mine in kinds.items()]
            results: list[Settled] = []
            for kind, mine, cursor in sent:
                outcomes = kind.settle(conn, [q.write for q in mine], cursor.fetchall())
                results.extend((q.future, *outcome) for q, outcome in zip(mine, outcomes, strict=True))
        return results

    def _one_by_one(self, conn: Connection, group: list[_Queued]) -> list[Settled]:
        """A group in its transaction, each write (each kind of mergeable ones) in a savepoint: a
        write that fails fails alone. Not committed yet."""
        with conn.pipeline():
            self._begin(conn, group)
        results: list[Settled] = []
        for mergeable, run in itertools.groupby(group, key=_mergeable):
            if mergeable:
                results.extend(_merged(conn, list(run)))
            else:
                results.extend((q.future, *alone(conn, q.write)) for q in run)
        return results

    def _write(self, conn: Connection, group: list[_Queued]) -> list[Settled]:
        """The group written and committed on ``conn``: _Unsent when the connection broke before
        its COMMIT was sent."""
        try:
            try:
                if all(_mergeable(q) for q in group):
                    try:
                        results = self._pipelined(conn, group)
                    except BROKEN:
                        raise
                    except psycopg.Error:  # a value the database refused: find whose, the careful way
                        conn.execute("ROLLBACK")
                        results = self._one_by_one(conn, group)
                else:
                    results = self._one_by_one(conn, group)
            except BROKEN as error:
                if conn.broken:
                    raise _Unsent(error) from error
                raise
            conn.execute("COMMIT")
            return results
        except BaseException:
            if not conn.broken and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            raise

    def _commit_group(self, group: list[_Queued]) -> None:
        """Commit ``group`` and tell its callers; a write cancelled before it began (also while this
        waited for a connection) is never written. A connection that broke before the COMMIT was
        sent (the database restarted, the backend was terminated) is swapped for a fresh one, once."""
        started = time.perf_counter()
        results: list[Settled] = []
        try:
            for attempt in (1, 2):
                with self.pool.connection(timeout=WAIT_SECONDS) as conn:
                    if attempt == 1:
                        group = [queued for queued in group if queued.future.set_running_or_notify_cancel()]
                    if not group:
                        return
                    try:
                        results = self._write(conn, group)
                        break
                    except _Unsent as unsent:
                        if attempt == 2:
                            raise unsent.error from None
        except (psycopg.Error, PoolTimeout, LeaseLost) as error:  # the database failed (or the group's locks deadlocked)
            failed([q.future for q in group], len(group), self.replaced or error, started, self._on_commit)
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
