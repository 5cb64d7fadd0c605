"""One SQLite database: its writer thread (group commit) and its readers.

Every write goes through one writer thread that commits whatever is queued in one transaction
(group commit: one fsync for many concurrent requests) and only then resolves each write's future,
so a caller that waits on its future holds a durable write. Each write runs in its own savepoint:
one bad write fails alone, the others in its group still commit. Neighbouring writes of one
mergeable kind (decisions) are written together, in multi-row statements, and one by one only if
that fails.

A file database (WAL) is read through one connection per thread, each seeing only committed data;
its WAL is checkpointed by a thread of its own (store/sqlite/checkpoints.py), never in a commit,
which also checks that the file is still at its path (store/sqlite/files.py): while not, writes fail.
An in-memory database has one connection: the writer holds it for a whole group commit and each
read takes it between commits, so a read also sees only committed data.

One kind of write is not the writer thread's: one that must be in the log's file and the worker's
or in neither (a policy's entry and its model snapshot), which ``submit_spanning`` writes in one
transaction over both on a connection of its own.
"""

from __future__ import annotations

import itertools
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from sqlite_utils import Database, Migrations

from store.errors import Conflict, StoreUnavailable, UnknownStore, reason
from store.ports import CommitListener
from store.settling import Settled, committed, failed, next_group
from store.sqlite.checkpoints import INTERVAL_SECONDS, Checkpointer
from store.sqlite.connections import LOG_SCHEMA, WORKER_SCHEMA, begin, connect, durable, unopenable
from store.sqlite.files import OpenedFiles
from store.sqlite.schema import migrations
from store.threads import Supervised, ThreadFailure

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]

MAX_GROUP = 2048


class Mergeable:
    """A write that the writer may merge with the neighbouring writes of its own class."""

    __slots__ = ()

    @classmethod
    def merged(cls, conn: sqlite3.Connection, writes: Sequence[Any]) -> None:
        """Write every one of ``writes`` (all instances of ``cls``) in as few statements as possible."""
        raise NotImplementedError

    def __call__(self, conn: sqlite3.Connection) -> Any:
        type(self).merged(conn, [self])


def _database_failed(error: Exception) -> bool:
    """The database itself failed (disk full, I/O, locked), not one write's rows: the whole group fails."""
    return isinstance(error, sqlite3.Error) and not isinstance(error, sqlite3.IntegrityError)


def _failed_alone(conn: sqlite3.Connection, error: Exception) -> Exception:
    """Undo the savepoint ``w`` of a write that failed on its own and say why as a store error;
    re-raise when the database itself failed: then the whole group fails."""
    if _database_failed(error):
        raise error
    conn.execute("ROLLBACK TO w")
    conn.execute("RELEASE w")
    if isinstance(error, sqlite3.IntegrityError):
        return Conflict(f"the store refused the write: {error}")
    return error


def _write_alone(
    conn: sqlite3.Connection, write: Write[Any], future: Future[Any]
) -> tuple[Future[Any], Any, BaseException | None]:
    """One write in its own savepoint: (its future, its result, its error)."""
    conn.execute("SAVEPOINT w")
    try:
        result = write(conn)
    except Exception as error:  # a refused row or the write's own failure (a Conflict, ...) fails it alone
        return future, None, _failed_alone(conn, error)
    conn.execute("RELEASE w")
    return future, result, None


def _write_together(conn: sqlite3.Connection, kind: type[Mergeable], writes: list[tuple[Write[Any], Future[Any]]]) -> bool:
    """Writes of one mergeable kind in one savepoint; False (and nothing written) when a row is
    refused, so that each write can be tried alone and fail alone."""
    conn.execute("SAVEPOINT w")
    try:
        kind.merged(conn, [write for write, _ in writes])
    except Exception as error:
        _failed_alone(conn, error)
        return False
    conn.execute("RELEASE w")
    return True


def _write_only(conn: sqlite3.Connection, kind: type[Mergeable], writes: list[tuple[Write[Any], Future[Any]]]) -> bool:
    """The writes of a group that is one run of one mergeable kind (a busy server's Decides), with
    no savepoint: two statements fewer a commit. False when a row is refused: then the transaction
    is rolled back and begun again, empty, for each write to be tried alone."""
    try:
        kind.merged(conn, [write for write, _ in writes])
    except Exception as error:
        if _database_failed(error):
            raise
        conn.execute("ROLLBACK")
        begin(conn)
        return False
    return True


def _tables(conn: sqlite3.Connection) -> list[str]:
    listing = "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
    return [name for (name,) in conn.execute(listing)]


def _refuse_foreign(conn: sqlite3.Connection, path: str | None) -> None:
    """UnknownStore for a database of another application: one with tables and no record of Brein's
    migrations (every Brein file has one, ``brein.*`` sets in sqlite-utils' table), which Brein would
    otherwise fill with its own tables. A new, empty file is a store still to be made."""
    tables = _tables(conn)
    if not tables:
        return
    if Migrations.migrations_table in tables:
        table = Migrations.migrations_table
        if conn.execute(f"SELECT 1 FROM [{table}] WHERE migration_set LIKE 'brein.%' LIMIT 1").fetchone():
            return
    listed = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
    raise UnknownStore(f"{path}: not a Brein store: it holds other tables ({listed}) and no record of Brein's migrations")


def _refuse_newer(db: Database, path: str | None, histories: Sequence[Migrations]) -> None:
    """UnknownStore for a database a newer Brein migrated: applied migrations this one does not
    know. It would read and write a layout it does not know (a column gone, a constraint added)."""
    for history in histories:
        known = {migration.name for migration in history.pending(Database(memory=True))}  # every one it has
        unknown = [applied.name for applied in history.applied(db) if applied.name not in known]
        if unknown:
            raise UnknownStore(f"{path}: migrated by a newer Brein: {history.name} has {', '.join(unknown)}, which this "
                               "Brein does not know: run that version or a newer one")  # fmt: skip


class _Reads:
    """``with engine.reading() as conn``: this thread's connection to a file database (with
    ``attached`` attached as WORKER_SCHEMA)."""

    def __init__(self, engine: Engine, attached: str | None = None) -> None:
        self._engine = engine
        self._attached = attached
        self._local = threading.local()

    def __enter__(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._engine.new_reader(self._attached)
        return conn

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        if isinstance(error, sqlite3.Error):
            raise StoreUnavailable(f"the store could not be read: {reason(error)}") from error


class _SharedReads(_Reads):
    """``with engine.reading() as conn``: the in-memory database's one connection, between commits."""

    def __init__(self, engine: Engine, conn: sqlite3.Connection, lock: threading.Lock) -> None:
        super().__init__(engine)
        self._conn = conn
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        return self._conn

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        self._lock.release()
        super().__exit__(kind, error, traceback)


class Engine:
    """The writer thread and the readers of one database: a file path, or None for in-memory."""

    def __init__(
        self,
        path: str | None,
        *,
        on_commit: CommitListener | None = None,
        commit_pause: float = 0.0,
        on_thread_failure: ThreadFailure | None = None,
        checkpoint_seconds: float = INTERVAL_SECONDS,
        histories: Sequence[Migrations] = (migrations,),
        attached: str | None = None,
        threads: str = "brein-store",
        files: OpenedFiles | None = None,
        create: bool = True,
    ) -> None:
        """``commit_pause``: seconds the writer waits after each commit, so that a writer in another
        process (the server's) gets the write lock between this one's transactions. The writer and
        the checkpointer (a file database's, every ``checkpoint_seconds``) are supervised threads
        (store/threads.py): ``on_thread_failure`` hears of their failures. ``histories``: the
        migration histories applied, in turn. ``attached``: a file the readers of
        ``reading(with_worker=True)`` attach (the worker's, store/sqlite/worker_schema.py); the
        writer never does, so that its transactions take this file's write lock only, nor do the
        other readers, so that the hot path's reads check one file's schema and WAL, not two.
        ``threads``: the start of its threads' names (``-writer``, ``-checkpointer``). ``files``: the
        store's files, shared by its engines: this one's is added once opened, its checkpointer checks
        them all, and while one is lost its writer fails every write. ``create=False``: UnknownStore
        for a database with no tables rather than a new store in it."""
        self.path = path
        self._attached = attached
        self._files = files if files is not None else OpenedFiles()
        self._histories = histories
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._shared: threading.Lock | None = None
        self.checkpointer: Checkpointer | None = None
        try:
            self._writer_conn = connect(path or ":memory:")
            if path is None:
                self._shared = threading.Lock()
                self._reads: _Reads = _SharedReads(self, self._writer_conn, self._shared)
                self._reads_with_worker: _Reads = self._reads
            else:
                if not create and not _tables(self._writer_conn):  # before WAL mode writes the file's header
                    raise UnknownStore(f"no store at {path}: the file holds no tables: give --store, or run the "
                                       "server once to create it")  # fmt: skip
                durable(self._writer_conn)
                self._reads = _Reads(self)
                self._reads_with_worker = _Reads(self, attached) if attached is not None else self._reads
                self.checkpointer = Checkpointer(
                    connect(path), f"{threads}-checkpointer", interval=checkpoint_seconds,
                    on_thread_failure=on_thread_failure, check=self._files.check,
                )  # fmt: skip
            self._migrate()
            if path is not None:
                self._files.opened(path)
        except sqlite3.OperationalError as error:  # locked past the wait, a file that cannot be opened
            raise StoreUnavailable(f"{path}: the store cannot be opened: {unopenable(path or ':memory:', error)}") from None
        except sqlite3.DatabaseError as error:  # not an SQLite file, or a damaged one: a traceback before
            raise UnknownStore(f"{path}: not a Brein store: {error}") from None
        self._writer_conn.execute("PRAGMA busy_timeout = 0")  # begin() waits for the write lock instead
        self._commit_pause = commit_pause
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[tuple[Write[Any], Future[Any]] | None] = queue.SimpleQueue()
        self._writer = Supervised(f"{threads}-writer", self._write_loop, on_failure=on_thread_failure)
        self._closed = False
        self._writer.start()
        if self.checkpointer is not None:
            self.checkpointer.start()

    def _migrate(self) -> None:
        """The database's migration histories, applied in one transaction holding the write lock:
        processes opening a store together apply them once, in turn."""
        conn = self._writer_conn
        begin(conn)
        try:
            _refuse_foreign(conn, self.path)
            _refuse_newer(Database(conn), self.path, self._histories)
            for history in self._histories:
                history.apply(Database(conn))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def new_reader(self, attached: str | None = None) -> sqlite3.Connection:
        if self.path is None:
            raise RuntimeError("an in-memory database has one connection")
        conn = connect(self.path)
        if attached is not None:
            conn.execute(f"ATTACH DATABASE ? AS {WORKER_SCHEMA}", (attached,))
        with self._readers_lock:
            self._readers.append(conn)
        return conn

    def reading(self, *, with_worker: bool = False) -> _Reads:
        """``with engine.reading() as conn:`` a connection that sees committed data; a database error
        in the block comes out as StoreUnavailable. ``with_worker``: one that sees the attached
        worker's file too."""
        return self._reads_with_worker if with_worker else self._reads

    # -- writes -------------------------------------------------------------------------------

    def submit(self, write: Write[T]) -> Future[T]:
        """Queue a write; its future resolves once the group it joined is durably committed."""
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(StoreUnavailable("the store is closed"))
        else:
            self._queue.put((write, future))
        return future

    def submit_spanning(self, write: Write[T]) -> Future[T]:
        """``write`` in one transaction over this file and the one its readers attach (the worker's), in
        the calling thread, on a connection of its own: the writer's never attaches the worker's file
        (store/sqlite/worker_schema.py: its transactions, the hot path's, take this file's write lock
        only), so this one takes both files' write locks, in the order every such write takes them.
        The worker's file is that connection's main database and this one is attached (LOG_SCHEMA):
        SQLite commits WAL databases one at a time, the main one first, so a process killed between
        the two commits leaves rows in the worker's file without theirs in the log's (a snapshot of no
        entry, which the next registration of its id removes), never the reverse. Tables are named
        unqualified (no name is in both files). Resolved before it returns; an IntegrityError fails it
        as Conflict, with nothing written. A database with nothing attached (an in-memory one, which
        holds both files' tables) takes it as any other write."""
        if self.path is None or self._attached is None:
            return self.submit(write)
        future: Future[T] = Future()
        future.set_running_or_notify_cancel()
        if self._closed:
            future.set_exception(StoreUnavailable("the store is closed"))
            return future
        if (lost := self._files.lost) is not None:  # a file deleted: not one write into it (store/sqlite/files.py)
            future.set_exception(lost)
            return future
        started = time.perf_counter()
        try:
            conn = connect(self._attached)
        except sqlite3.Error as error:
            failed([future], 1, error, started, self._on_commit)
            return future
        try:
            conn.execute(f"ATTACH DATABASE ? AS {LOG_SCHEMA}", (self.path,))
            for schema in ("main", LOG_SCHEMA):
                conn.execute(f"PRAGMA {schema}.synchronous = FULL")  # as durable() sets the writers' own
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # the checkpointers checkpoint, never a commit
            begin(conn)
            try:
                result = write(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except sqlite3.IntegrityError as error:  # a refused row: this write's own, the store is fine
            committed([(future, None, Conflict(f"the store refused the write: {error}"))], started, self._on_commit)
        except sqlite3.Error as error:
            failed([future], 1, error, started, self._on_commit)
        except Exception as error:  # the write's own failure (a Conflict, ...), rolled back
            committed([(future, None, error)], started, self._on_commit)
        else:
            committed([(future, result, None)], started, self._on_commit)
        finally:
            conn.close()
        return future

    def _write_loop(self) -> None:
        conn = self._writer_conn
        if conn.in_transaction:  # run again after a failure (store/threads.py) that left one open
            conn.execute("ROLLBACK")
        while (group := next_group(self._queue, MAX_GROUP)) is not None:
            if self._shared is None:
                self._commit_group(conn, group)
            else:
                with self._shared:
                    self._commit_group(conn, group)
            if self._commit_pause:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                time.sleep(self._commit_pause)

    def _commit_group(self, conn: sqlite3.Connection, group: list[tuple[Write[Any], Future[Any]]]) -> None:
        started = time.perf_counter()
        if (lost := self._files.lost) is not None:  # a file deleted: not one write into it (store/sqlite/files.py)
            failed([future for _, future in group], len(group), lost, started, self._on_commit)
            return
        results: list[Settled] = []
        try:
            begin(conn)
            # Runs of neighbouring writes: mergeable writes of one class together, any other write on its own.
            runs = itertools.groupby(group, key=lambda item: type(item[0]) if isinstance(item[0], Mergeable) else None)
            # A write whose caller gave up (deadline) before it began is never written.
            begun = [(kind, [(w, future) for w, future in run if future.set_running_or_notify_cancel()]) for kind, run in runs]
            if len(begun) == 1 and (kind := begun[0][0]) is not None and _write_only(conn, kind, begun[0][1]):
                results.extend((future, None, None) for _, future in begun[0][1])
            else:
                for kind, writes in begun:
                    if kind is not None and len(writes) > 1 and _write_together(conn, kind, writes):
                        results.extend((future, None, None) for _, future in writes)
                    else:
                        results.extend(_write_alone(conn, write, future) for write, future in writes)
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolls back by itself when the connection next commits or closes
            failed([future for _, future in group], len(group), error, started, self._on_commit)
            return
        committed(results, started, self._on_commit)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self._writer_conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
