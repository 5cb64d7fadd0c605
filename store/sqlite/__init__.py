"""The embedded default store: two SQLite files in WAL mode, fsync on every group commit (the log's,
and beside it the worker's: store/sqlite/worker_schema.py); or one in-memory database for unit
tests. Every SQL statement of Brein is in this package."""

from __future__ import annotations

from pathlib import Path

from store.errors import StoreError, StoreUnavailable
from store.ports import CommitListener, WorkerLease
from store.sqlite.connections import worker_file
from store.sqlite.decisions import SQLiteDecisionLog
from store.sqlite.engine import Engine
from store.sqlite.examples import SQLiteJoinedExamples
from store.sqlite.files import OpenedFiles
from store.sqlite.forgets import Forgets
from store.sqlite.joins import SQLiteJoinState
from store.sqlite.lease import FileLease, PrivateLease, holder
from store.sqlite.models import SQLiteModelSnapshots
from store.sqlite.privacy import SQLiteAuditTrail, SQLitePrivacy
from store.sqlite.registry import SQLiteRegistryStorage
from store.sqlite.schema import migrations
from store.sqlite.worker_schema import check_pair, confirm, worker_migrations
from store.threads import IDLE_SAFE_THREADS, ThreadFailure

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
        serving: bool = False,
        create: bool = True,
    ) -> None:
        """``commit_pause``: seconds the log's writer waits after each commit, so that a writer in
        another process (the server's) gets the write lock between this one's transactions (the
        worker's file has no writer to make room for). ``on_thread_failure`` hears of the failures
        of the store's background threads. ``serving``: a server's store, which holds the store's
        serving lock (``<database>.serving.lock``, store/sqlite/lease.py) while open: one server
        writes a SQLite store (its contact caps and request-id replays read its own writes only);
        StoreUnavailable, naming the holder, while another holds it. ``create=False``: UnknownStore
        for a log's file that holds no store yet, rather than a new store in it."""
        self.path = None if path is None else str(path)
        self._serving: WorkerLease = PrivateLease()
        if self.path is None:
            self.engine = Engine(None, histories=(migrations, worker_migrations), on_commit=on_commit,
                                 on_thread_failure=on_thread_failure)  # fmt: skip
            self.worker_engine = self.engine
        else:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            worker = worker_file(self.path)
            files = OpenedFiles()  # either file lost: both refuse writes (store/sqlite/files.py)
            if serving:
                self._serving = FileLease(f"{self.path}.serving.lock")
                if not self._serving.try_acquire():
                    raise StoreUnavailable(f"{self.path} is served already, by {holder(self._serving.path)}: one `brein serve` "
                                           "writes a SQLite store (several serving replicas need PostgreSQL)")  # fmt: skip
                files.hold(self._serving)
            try:
                self._open_files(worker, files, on_commit, commit_pause, on_thread_failure, create)
            except BaseException:
                self._serving.release()
                raise
        """The writers and readers of the log's file and the worker's; for tests of this backend's own
        behaviour, never for consumers. The log's readers see the worker's tables too."""
        forgets = Forgets()  # customers' heads, which only Forgets move (store/sqlite/forgets.py)
        self.decisions = SQLiteDecisionLog(self.engine, forgets)
        self.joins = SQLiteJoinState(self.engine, self.worker_engine)
        self.examples = SQLiteJoinedExamples(self.engine)
        self.models = SQLiteModelSnapshots(self.worker_engine)
        self.registry = SQLiteRegistryStorage(self.engine)
        self.audit = SQLiteAuditTrail(self.engine)
        self.privacy = SQLitePrivacy(self.engine, self.worker_engine, forgets)
        self.lease: WorkerLease = FileLease(f"{self.path}.worker.lock") if self.path is not None else PrivateLease()

    def _open_files(
        self, worker: str, files: OpenedFiles, on_commit: CommitListener | None, commit_pause: float,
        on_thread_failure: ThreadFailure | None, create: bool,
    ) -> None:  # fmt: skip
        """The engines of the log's file (``self.path``) and the worker's, checked to be one store's."""
        assert self.path is not None
        self.engine = Engine(self.path, attached=worker, on_commit=on_commit, commit_pause=commit_pause,
                             on_thread_failure=on_thread_failure, files=files, create=create)  # fmt: skip
        try:
            self.worker_engine = Engine(worker, histories=(worker_migrations,), on_commit=on_commit, files=files,
                                        on_thread_failure=on_thread_failure, threads=IDLE_SAFE_THREADS)  # fmt: skip
        except StoreError:
            self.engine.close()
            raise
        try:
            with self.engine.reading(with_worker=True) as conn:
                unconfirmed = check_pair(conn, self.path, worker)
            if unconfirmed:  # once: opening a store writes nothing (a full disk, a reading command)
                self.worker_engine.submit(confirm).result()
        except StoreError:
            self.engine.close()
            self.worker_engine.close()
            raise

    @property
    def url(self) -> str:
        if self.path is None:
            return "sqlite://"
        return f"sqlite:///{self.path}"

    def close(self) -> None:
        self.engine.close()
        self.worker_engine.close()
        self.lease.release()
        self._serving.release()
