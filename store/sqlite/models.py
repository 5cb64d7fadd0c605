"""Model snapshots on SQLite (store.ports.ModelSnapshots), in the worker's file (store/sqlite/worker_schema.py)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from concurrent.futures import Future

from store.records import ModelSnapshot
from store.rows import MODEL_COLUMNS, snapshot_from_row, snapshot_row
from store.sqlite.engine import Engine

NEWEST_FIRST = "ORDER BY created_at DESC, rowid DESC"


class SQLiteModelSnapshots:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def save(self, snapshot: ModelSnapshot) -> Future[None]:
        row = (*snapshot_row(snapshot), time.time())

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(f"INSERT OR IGNORE INTO models ({MODEL_COLUMNS}, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)", row)

        return self._engine.submit(write)

    def get(self, policy_id: str, version: str) -> ModelSnapshot | None:
        with self._engine.reading() as conn:
            row = conn.execute(f"SELECT {MODEL_COLUMNS} FROM models WHERE policy_id = ? AND version = ?",
                               (policy_id, version)).fetchone()  # fmt: skip
        return None if row is None else snapshot_from_row(row)

    def newest_version(self, policy_id: str) -> str | None:
        with self._engine.reading() as conn:
            row = conn.execute(f"SELECT version FROM models WHERE policy_id = ? {NEWEST_FIRST} LIMIT 1", (policy_id,)).fetchone()
        return None if row is None else str(row[0])

    def newest_first(self, policy_id: str) -> Iterator[ModelSnapshot]:
        """One snapshot read at a time: the versions first, then each model when it is asked for."""
        with self._engine.reading() as conn:
            versions = [
                v for (v,) in conn.execute(f"SELECT version FROM models WHERE policy_id = ? {NEWEST_FIRST}", (policy_id,))
            ]
        for version in versions:
            snapshot = self.get(policy_id, version)
            if snapshot is not None:  # gone meanwhile: passed over
                yield snapshot
