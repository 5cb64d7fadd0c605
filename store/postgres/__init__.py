"""The PostgreSQL store, for several serving replicas and one leased worker on one database:
psycopg 3 with a connection pool (psycopg-pool). Every PostgreSQL statement of Brein is in this
package; its one migration history is store/postgres/schema.py."""

from __future__ import annotations

from store.ports import CommitListener
from store.postgres.catalog import PostgresAuditTrail, PostgresModelSnapshots, PostgresRegistryStorage
from store.postgres.decisions import PostgresDecisionLog
from store.postgres.engine import Engine
from store.postgres.joins import PostgresJoinedExamples, PostgresJoinState
from store.postgres.lease import AdvisoryLease
from store.postgres.privacy import PostgresPrivacy
from store.threads import ThreadFailure

__all__ = ["PostgresStore"]


class PostgresStore:
    """Every port (store.ports.Store) on one PostgreSQL database."""

    def __init__(
        self,
        url: str,
        *,
        on_commit: CommitListener | None = None,
        on_thread_failure: ThreadFailure | None = None,
        customer_locks: bool = True,
        create: bool = True,
    ) -> None:
        """``on_thread_failure`` hears of the failures of the store's writer (store/threads.py);
        ``customer_locks`` False only to measure the per-customer lock (see store/postgres/engine.py);
        ``create`` False: UnknownStore when the database holds no store (nothing is created)."""
        self.engine = Engine(
            url, on_commit=on_commit, on_thread_failure=on_thread_failure, customer_locks=customer_locks, create=create
        )
        """The pool and the writer; for tests of this backend's own behaviour, never for consumers."""
        self.decisions = PostgresDecisionLog(self.engine)
        self.joins = PostgresJoinState(self.engine)
        self.examples = PostgresJoinedExamples(self.engine)
        self.models = PostgresModelSnapshots(self.engine)
        self.registry = PostgresRegistryStorage(self.engine)
        self.audit = PostgresAuditTrail(self.engine)
        self.privacy = PostgresPrivacy(self.engine)
        self.lease = AdvisoryLease(url, self.engine.store_id)
        self.engine.guard = self.lease.guard

    @property
    def url(self) -> str:
        return self.engine.url

    def close(self) -> None:
        self.engine.close()
        self.lease.release()
