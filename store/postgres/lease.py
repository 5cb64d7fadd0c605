"""The worker lease on PostgreSQL: a session-level advisory lock held on a connection of its own.
When the holder dies, however it dies, its connection closes and the server lets the lock go."""

from __future__ import annotations

import threading
from contextlib import suppress
from typing import Any

import psycopg

from store.postgres.engine import CONNECT_SECONDS
from store.postgres.schema import lock_key

TAKE = f"SELECT pg_try_advisory_lock({lock_key('worker')})"
GIVE_BACK = f"SELECT pg_advisory_unlock({lock_key('worker')})"


class AdvisoryLease:
    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """True when held; a lease whose connection broke is lost (another worker may hold it now)
        and is asked for again. False also when the database cannot be reached."""
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.execute("SELECT 1")
                    return True
                except psycopg.Error:
                    self._let_go()
            try:
                conn = psycopg.connect(self.url, autocommit=True, connect_timeout=int(CONNECT_SECONDS))
            except psycopg.Error:
                return False
            row = conn.execute(TAKE).fetchone()
            if row is not None and row[0]:
                self._conn = conn
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
