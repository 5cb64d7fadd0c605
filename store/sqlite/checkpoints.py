"""Checkpoints of a file database's WAL, off the commit path.

SQLite checkpoints by itself in the COMMIT of whichever write pushes the WAL past 1,000 pages: that
commit then copies the WAL's pages into the database file (and syncs it) before it returns, and
every Decide in its group waits for it; beside a join/learn worker, whose writes fill the WAL fast,
often (docs/benchmarks.md: Decide while the worker joins, p50 and p99 about a third lower without
it). So the store's writer connection does not checkpoint (``wal_autocheckpoint = 0``) and a
supervised thread of the store's own, with a connection of its own, checkpoints every ``interval``
seconds instead: a PASSIVE checkpoint copies what no reader still needs while writers go on committing.
Before each, it runs the engine's check that the store's files are still at their paths
(store/sqlite/files.py): a check that fails fails the thread.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable

from store.threads import Supervised, ThreadFailure

INTERVAL_SECONDS = 1.0
"""Seconds between checkpoints: at a few thousand decisions a second the WAL grows by megabytes
between two, then is written over from its start again."""


class Checkpointer:
    """Checkpoints the WAL of the database that ``connection`` opens, every ``interval`` seconds."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        *,
        interval: float = INTERVAL_SECONDS,
        on_thread_failure: ThreadFailure | None = None,
        check: Callable[[], None] = lambda: None,
    ) -> None:
        """``name``: its thread's (the engine's, store/sqlite/engine.py). ``check``: run before each
        checkpoint; what it raises fails the thread."""
        self._conn = conn
        self._check = check
        self._interval = interval
        self._stopped = threading.Event()
        self._thread = Supervised(name, self._loop, on_failure=on_thread_failure)

    def start(self) -> None:
        self._thread.start()

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint now: (1 if it could not run at all, WAL frames, frames copied)."""
        busy, frames, copied = self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(frames), int(copied)

    def _loop(self) -> None:
        while not self._stopped.wait(self._interval):
            self._check()
            self.checkpoint()

    def stop(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and close the connection."""
        self._stopped.set()
        self._thread.join()
        self._conn.close()
