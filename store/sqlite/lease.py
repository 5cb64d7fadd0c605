"""Locks held by one process of a SQLite store at a time: an exclusive ``flock`` on a file beside the
database. The worker lease (``<database>.worker.lock``) and the serving lock
(``<database>.serving.lock``: one `brein serve` writes a SQLite store). The kernel releases a flock
when the holder's process dies, however it dies.

A flock is on the file's inode, not its path: a lock file deleted (an operator "cleaning a stale
lock") or replaced leaves its holder locking a file no path names, and the next process to come
creates a new one and locks that too. So a holder checks, each time it asks (``try_acquire``), that
the path still names the file it locked, and when it does not, locks the path's file again, or, when
another process got there first, holds nothing. Until its next ask, two may hold.
"""

from __future__ import annotations

import fcntl
import os
import threading
from contextlib import suppress

from store.sqlite.connections import file_id


def _locked_at(path: str) -> int | None:
    """A descriptor of the file at ``path`` holding an exclusive flock on it, our pid written in it;
    None when another process holds it."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        found = os.fstat(fd)
        if file_id(path) == (found.st_dev, found.st_ino):
            with suppress(OSError):  # a note for whoever is refused (``holder``): a full disk keeps the lock without it
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # deleted or replaced between our open and our lock: lock the path's file


def holder(path: str) -> str:
    """Who holds the lock at ``path``, as its file says: 'pid N', or 'another process'."""
    try:
        with open(path, encoding="ascii") as file:
            pid = file.read().strip()
    except (OSError, ValueError):
        pid = ""
    return f"pid {pid}" if pid.isdigit() else "another process"


class FileLease:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        """True when this holds the lock at ``path`` now: held already (its file still at the path),
        or taken now."""
        with self._lock:
            if self._fd is not None:
                held = os.fstat(self._fd)
                if file_id(self.path) == (held.st_dev, held.st_ino):
                    return True
                os.close(self._fd)  # its file is gone from the path: the lock keeps no one out any more
                self._fd = None
            self._fd = _locked_at(self.path)
            return self._fd is not None

    def release(self) -> None:
        with self._lock:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)
                self._fd = None


class PrivateLease:
    """An in-memory database has no other process to share it with: its one store always holds the lease."""

    def try_acquire(self) -> bool:
        return True

    def release(self) -> None:
        pass
