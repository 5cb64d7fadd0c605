"""Locks by key, striped: work about different keys runs at once, work about one key one call after
another. The decider holds the stripes of a call's customers and request ids while it reads the
log, decides and queues the write, so a store read for one customer (a round trip on PostgreSQL)
overlaps the decisions for others, and two calls about one customer still see each other."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import ExitStack, contextmanager

STRIPES = 256
"""Distinct keys sharing a stripe wait for each other needlessly: rare among the few calls in flight."""


class KeyedLocks:
    def __init__(self, stripes: int = STRIPES) -> None:
        self._locks = tuple(threading.Lock() for _ in range(stripes))

    @contextmanager
    def holding(self, keys: Iterable[str]) -> Iterator[None]:
        """Hold the stripes of ``keys``, taken in one order (so two holders never wait on each other in a circle)."""
        stripes = sorted({hash(key) % len(self._locks) for key in keys})
        with ExitStack() as held:
            for stripe in stripes:
                held.enter_context(self._locks[stripe])
            yield
