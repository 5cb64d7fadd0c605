"""Connections to a SQLite store's files, and how a writer takes the write lock."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

from store.errors import reason

LOCK_WAIT_SECONDS = 5.0
LOCK_POLL_SECONDS = 0.001
WORKER_SCHEMA = "worker"
"""The name a reader of the log's file gives the worker's file it attaches (store/sqlite/worker_schema.py)."""
LOG_SCHEMA = "log"
"""The name a write spanning both files gives the log's file it attaches (``Engine.submit_spanning``)."""


def worker_file(path: str) -> str:
    """The file beside the log's that holds what the worker writes: ``var/brein.db`` -> ``var/brein.worker.db``."""
    log = Path(path)
    return str(log.with_name(f"{log.stem}.{WORKER_SCHEMA}{log.suffix}"))


FileId = tuple[int, int] | None
"""A file's device and inode; None when its path names no file."""


def file_id(path: str) -> FileId:
    """What file ``path`` names now (store/sqlite/files.py, store/sqlite/lease.py)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_dev, found.st_ino


def unopenable(path: str, error: sqlite3.Error) -> str:
    """Why the database at ``path`` cannot be opened, as its operator can act on it. SQLite says
    "unable to open database file" for a folder it cannot write too: in WAL mode every connection,
    a reader's as well, needs the ``-wal`` and ``-shm`` files beside the database."""
    folder = os.path.dirname(os.path.abspath(path))
    if not os.access(folder, os.W_OK):
        name = os.path.basename(path)
        return (f"its folder {folder} cannot be written (a read-only mount, or its permissions): SQLite's WAL mode "
                f"needs {name}-wal and {name}-shm beside it, to read as well; give the store a writable folder")  # fmt: skip
    return reason(error)


def connect(target: str) -> sqlite3.Connection:
    conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_SECONDS)
    conn.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_SECONDS * 1000)}")
    return conn


def durable(conn: sqlite3.Connection) -> sqlite3.Connection:
    """A file's writer: WAL, every commit synced, no checkpoint inside a commit (store/sqlite/checkpoints.py)."""
    polling(conn, "PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    return conn


def begin(conn: sqlite3.Connection) -> None:
    """Take the write lock, trying every millisecond for up to LOCK_WAIT_SECONDS. SQLite's own busy
    handler sleeps longer and longer between tries (up to 100 ms), so another process writing back
    to back would keep this writer, and every Decide waiting on it, out for seconds; a short poll
    finds the gaps between its transactions."""
    polling(conn, "BEGIN IMMEDIATE")


def polling(conn: sqlite3.Connection, statement: str) -> None:
    """Run ``statement``, trying again every LOCK_POLL_SECONDS while the database is locked, for up
    to LOCK_WAIT_SECONDS. Also for what SQLite's busy handler does not wait on: switching a new file
    to WAL while another process opens it returns "locked" at once (SQLite's deadlock avoidance)."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            conn.execute(statement)
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_POLL_SECONDS)
