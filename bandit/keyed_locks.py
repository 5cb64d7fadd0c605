"""Locks by key, striped: work about different keys runs at once, work about one key one call after
another. The decider holds the stripes of a call's customers and request ids while it reads the
log, decides and queues the write, so a store read for one customer (a round trip on PostgreSQL)
overlaps the decisions for others, and two calls about one customer still see each other."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from types import TracebackType

STRIPES = 256
"""Distinct keys sharing a stripe wait for each other needlessly: rare among the few calls in flight."""


class _Held:
    """The stripes of some keys, taken in one order (so two holders never wait on each other in a
    circle) on entering and given back on leaving. A class, not a generator and an ExitStack: every
    Decide takes one, and this costs half as much."""

    __slots__ = ("_locks",)

    def __init__(self, locks: list[threading.Lock]) -> None:
        self._locks = locks

    def __enter__(self) -> None:
        taken = 0
        try:
            for lock in self._locks:
                lock.acquire()
                taken += 1
        except BaseException:  # interrupted half-way: give back what was taken
            for lock in reversed(self._locks[:taken]):
                lock.release()
            raise

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None) -> None:
        for lock in reversed(self._locks):
            lock.release()


class KeyedLocks:
    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = tuple(threading.Lock() for _ in range(stripes))

    def holding(self, keys: Iterable[str]) -> _Held:
        """``with locks.holding(keys):`` hold the stripes of ``keys`` for the block."""
        locks = self._locks
        return _Held([locks[stripe] for stripe in sorted({hash(key) % len(locks) for key in keys})])
