"""Whether the files a SQLite store opened are still the files its paths name.

SQLite reads and writes through the descriptors it opened. A store file deleted while open (an
operator cleaning a folder, a restore copied in under a new inode) goes on taking every write,
acknowledged as durable, into an inode that no path names and that is gone when the process ends;
the next start finds the files of another store, or none. So every INTERVAL_SECONDS the store's
checkpointers (store/sqlite/checkpoints.py) compare each path with the file opened there (device
and inode), and while one differs every write of the store fails as StoreUnavailable: the failed
check fails its thread (the server reports NOT_SERVING, store/threads.py) and Decide answers
UNAVAILABLE. A write acknowledged between the deletion and the next check (at most
INTERVAL_SECONDS) is in the deleted file. The file put back at its path (the same inode) lets
writes commit again. A serving process checks its serving lock alike (store/sqlite/lease.py): while
another server holds it, this one's writes fail.
"""

from __future__ import annotations

from store.errors import StoreUnavailable
from store.sqlite.connections import FileId, file_id
from store.sqlite.lease import FileLease, holder


class OpenedFiles:
    """The files of one store (the log's and the worker's), each as it was when opened."""

    def __init__(self) -> None:
        self._opened: dict[str, FileId] = {}
        self._held: FileLease | None = None
        self.lost: StoreUnavailable | None = None
        """Why the store's writes fail now (set by ``check``), or None."""

    def opened(self, path: str) -> None:
        """``path`` names the file the store has just opened."""
        self._opened = {**self._opened, path: file_id(path)}  # replaced whole: a checkpointer may be iterating it

    def hold(self, lock: FileLease) -> None:
        """The store holds ``lock`` (taken): each check asks for it again."""
        self._held = lock

    def check(self) -> None:
        """StoreUnavailable (and every write of the store fails until they are back) when a path no
        longer names the file opened there, or another process holds the lock this store held."""
        moved = [path for path, opened in self._opened.items() if file_id(path) != opened]
        self.lost = None
        if moved:
            self.lost = StoreUnavailable(
                f"{', '.join(moved)}: deleted or replaced while open; writes are refused, not written into a file no path "
                "names: restart the server on the store's files (README, Backups)"
            )
        elif self._held is not None and not self._held.try_acquire():
            self.lost = StoreUnavailable(f"{self._held.path}: {holder(self._held.path)} took this lock: it writes the store now, "
                                         "and this process's writes are refused")  # fmt: skip
        if self.lost is not None:
            raise self.lost
