"""The embedded default store: one SQLite file in WAL mode, fsync on every group commit; or an
in-memory database for unit tests. Every SQL statement of Brein is in this package."""

from __future__ import annotations

from pathlib import Path

from store.ports import CommitListener, WorkerLease
from store.sqlite.decisions import SQLiteDecisionLog
from store.sqlite.engine import Engine
from store.sqlite.examples import SQLiteJoinedExamples
from store.sqlite.joins import SQLiteJoinState
from store.sqlite.lease import FileLease, PrivateLease
from store.sqlite.models import SQLiteModelSnapshots
from store.sqlite.privacy import SQLiteAuditTrail, SQLitePrivacy
from store.sqlite.registry import SQLiteRegistryStorage
from store.threads import ThreadFailure

__all__ = ["SQLiteStore"]


class SQLiteStore:
    """Every port (store.ports.Store) on one SQLite database: a file path, or None for in-memory."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        on_commit: CommitListener | None = None,
        commit_pause: float = 0.0,
        on_thread_failure: ThreadFailure | None = None,
    ) -> None:
        """``commit_pause``: seconds the writer waits after each commit, so that a writer in another
        process (the server's) gets the write lock between this one's transactions.
        ``on_thread_failure`` hears of the failures of the store's background threads."""
        self.path = None if path is None else str(path)
        if self.path is not None:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.engine = Engine(self.path, on_commit=on_commit, commit_pause=commit_pause, on_thread_failure=on_thread_failure)
        """The writer and readers; for tests of this backend's own behaviour, never for consumers."""
        self.decisions = SQLiteDecisionLog(self.engine)
        self.joins = SQLiteJoinState(self.engine)
        self.examples = SQLiteJoinedExamples(self.engine)
        self.models = SQLiteModelSnapshots(self.engine)
        self.registry = SQLiteRegistryStorage(self.engine)
        self.audit = SQLiteAuditTrail(self.engine)
        self.privacy = SQLitePrivacy(self.engine)
        self.lease: WorkerLease = FileLease(f"{self.path}.worker.lock") if self.path is not None else PrivateLease()

    @property
    def url(self) -> str:
        if self.path is None:
            return "sqlite://"
        return f"sqlite:///{self.path}"

    def close(self) -> None:
        self.engine.close()
        self.lease.release()
