"""The worker lease on SQLite: an exclusive ``flock`` on a file beside the database,
``<database>.worker.lock``. The kernel releases it when the holder's process dies, however it dies."""

from __future__ import annotations

import fcntl
import os
import threading


class FileLease:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._fd is not None:
                return True
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            self._fd = fd
            return True

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
