"""The worker lease on PostgreSQL: a session-level advisory lock held on a connection of its own.
When the holder dies, however it dies, its connection closes and the server lets the lock go.

A holder that does not die but loses its connection (a network cut, a terminated backend) may still
be mid-round while a standby takes the lease. So a store that has held the lease fences its writes:
every write transaction first checks that the lease's connection still holds the lock (``guard``,
run by the engine after BEGIN); when it does not, the transaction's writes are refused (LeaseLost)
and nothing of them is written. A store that never held the lease (a server, a CLI) is not fenced."""

from __future__ import annotations

import threading
from contextlib import suppress
from typing import Any

import psycopg

from store.errors import LeaseLost, StoreReplaced
from store.postgres.engine import Connection, connect
from store.postgres.schema import lock_key, same_store

TAKE = f"SELECT pg_try_advisory_lock({lock_key('worker')})"
GIVE_BACK = f"SELECT pg_advisory_unlock({lock_key('worker')})"
HELD = f"""SELECT EXISTS (
    SELECT 1 FROM pg_locks, (SELECT {lock_key('worker')} AS k) AS lease
    WHERE locktype = 'advisory' AND granted AND pid = %s AND objsubid = 1
        AND classid = ((lease.k >> 32) & 4294967295)::oid AND objid = (lease.k & 4294967295)::oid
        AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
)"""
"""Whether the backend ``pid`` holds the worker lock now (a bigint advisory key is its high and low
32 bits in classid and objid, objsubid 1)."""


class AdvisoryLease:
    def __init__(self, url: str, store_id: str) -> None:
        """``store_id``: the identity of the store opened (schema.same_store), checked on each new
        connection before the lease is taken on it."""
        self.url = url
        self.store_id = store_id
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._holder: int | None = None
        """The backend that took the lease last (kept once the lease is lost or given back): the fence."""

    def try_acquire(self) -> bool:
        """True when held; a lease whose connection broke is lost (another worker may hold it now)
        and is asked for again. False also when the database cannot be reached; StoreReplaced when it
        holds another store than the one opened (then the lease is never taken on it)."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    self._let_go()
            try:
                conn = connect(self.url)
            except psycopg.Error:
                return False
            try:
                same_store(conn, self.store_id)
            except StoreReplaced:
                conn.close()
                raise
            row = conn.execute(TAKE).fetchone()
            if row is not None and row[0]:
                self._conn = conn
                self._holder = conn.info.backend_pid
                return True
            conn.close()
            return False

    def release(self) -> None:
        with self._lock:
            self._let_go()

    def _let_go(self) -> None:
        """Unlock before closing: the server lets a closed session's locks go only once it notices
        the connection closed, soon but not at once; an unlock is done when it returns."""
        if self._conn is not None:
            with suppress(psycopg.Error):  # a broken connection: its lock is gone (or going) anyway
                self._conn.execute(GIVE_BACK)
            self._conn.close()
            self._conn = None

    def guard(self, conn: Connection) -> None:
        """The fence (see the module's docstring), on the write transaction's connection ``conn``."""
        holder = self._holder
        if holder is None:
            return
        row = conn.execute(HELD, (holder,)).fetchone()
        if not (row and row[0]):
            raise LeaseLost("this worker's store lease was lost (another worker may hold it now): its write was refused")
