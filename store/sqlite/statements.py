"""Helpers the SQLite backend's modules share: multi-row INSERTs, bounded IN lists."""

from __future__ import annotations

import functools
import itertools
import sqlite3
from collections.abc import Collection, Sequence
from typing import Any

ROWS_PER_STATEMENT = (256, 128, 64, 32, 16, 8, 4, 2, 1)
"""Rows one INSERT takes, largest first: n rows in at most popcount(n % 256) + n // 256 statements
(a group commit's 7 decisions in 3, not 4), from nine statements prepared once."""
MAX_IDS = 500
"""Ids bound in one statement (SQLite allows 32766 variables)."""


def insert_rows(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in multi-row INSERT statements (``insert`` ends in 'VALUES '): the writer's thread gives
    up and takes back the GIL once per statement (each SQLite step), not once per row as executemany
    does, and so waits for it far less often while the event loop keeps the GIL busy."""
    start = 0
    for size in ROWS_PER_STATEMENT:
        while len(rows) - start >= size:
            part = rows[start : start + size]
            conn.execute(_values_sql(insert, len(part[0]), size), tuple(itertools.chain.from_iterable(part)))
            start += size


@functools.lru_cache(maxsize=32)
def _values_sql(insert: str, width: int, count: int) -> str:
    row = f"({', '.join('?' * width)})"
    return insert + ", ".join([row] * count)


@functools.lru_cache(maxsize=64)
def marks(count: int) -> str:
    """'?, ?, ...': ``count`` placeholders for an IN list."""
    return ", ".join("?" * count)


def slices(ids: Collection[str]) -> list[list[str]]:
    """Distinct ids, at most MAX_IDS a statement."""
    distinct = list(dict.fromkeys(ids))
    return [distinct[i : i + MAX_IDS] for i in range(0, len(distinct), MAX_IDS)]
