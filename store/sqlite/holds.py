"""How long a writer beside another process holds SQLite's write lock: writes of many rows committed
in parts, each part sized to a time budget.

The server's writer waits for every transaction the worker's writer holds the lock in (it polls
for it every millisecond), so a Decide's latency includes up to one whole worker transaction. A
transaction's hold is mostly a fixed cost (the index pages a server commit made stale, read again;
the commit) plus a cost per row, both varying with the machine's load; a fixed number of rows a
transaction cannot bound it. So the writer measures each part's hold and sizes the next part to the
budget from the hold per row measured so far: the parts' holds settle at the budget whatever the
fixed cost is (a part of n rows that held h gives the next one n * budget / h rows).
"""

from __future__ import annotations

import sqlite3
import statistics
from abc import ABC, abstractmethod
from collections import deque

FIRST_PART_ROWS = 50
"""Rows in a writer's first part, before it has measured a hold."""
LEAST_PART_ROWS = 20
"""Never fewer rows a part, however slow the last ones were: the write still progresses."""
MEASURED_PARTS = 9
"""Parts whose hold per row the next part is sized from, by their median: a part held up by the
scheduler (descheduled with the lock held, many times its usual hold on a busy machine) does not
shrink the next ones; and the parts' median hold settles at the budget."""


class Divisible(ABC):
    """A write of many rows that the writer may commit in parts, in order, each part in one
    transaction of its own: everything a part writes (its rows and the progress they stand for)
    commits together, so what is exactly once about the whole write holds for each part."""

    __slots__ = ()

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def part(self, conn: sqlite3.Connection, start: int, stop: int) -> None:
        """Write rows ``start`` to ``stop`` (exclusive)."""

    def __call__(self, conn: sqlite3.Connection) -> None:
        self.part(conn, 0, len(self))


class PartSizer:
    """Rows for a writer's next part, so that its hold fits ``budget`` seconds."""

    def __init__(self, budget: float) -> None:
        if budget <= 0:
            raise ValueError(f"budget: expected seconds > 0, got {budget}")
        self.budget = budget
        self._per_row: deque[float] = deque(maxlen=MEASURED_PARTS)

    def rows(self) -> int:
        if not self._per_row:
            return FIRST_PART_ROWS
        return max(LEAST_PART_ROWS, int(self.budget / statistics.median(self._per_row)))

    def held(self, rows: int, seconds: float) -> None:
        """A part of ``rows`` rows held the lock ``seconds``."""
        self._per_row.append(seconds / rows)
