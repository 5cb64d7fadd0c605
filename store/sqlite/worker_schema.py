"""The worker's file: what the join/learn worker writes, in a SQLite file of its own beside the log's.

SQLite has one write lock a file. When the worker's joined examples, its join queue and its model
snapshots were in the log's file, every transaction of the worker held the lock that each Decide's
commit needs, for 10-20 ms of a join's write. In a file of their own the worker's writes take a lock
no Decide waits for (docs/benchmarks.md, "Decide while the worker joins: the worker's own file").
The log's file keeps what the server writes (decisions, outcomes, activations, the registry, the
audit trail) and a decision's entry in the join intake (store/sqlite/schema.py, m014), which the
worker takes into its own join queue and then trims from the log's file by a range of its key.

The joiner's readers of the log's file attach this one (store/sqlite/engine.py); no table name is
in both, so every query names its tables unqualified. An in-memory store keeps both sets of tables
in one database. The worker's file has its own migration history, applied by m014 of the log's
(which moves the tables of a file made before this one) and by every store that opens it; both files
carry the store's id, and a log opens only beside its own worker's file (``check_pair``).
"""

from __future__ import annotations

import sqlite3
import uuid

from sqlite_utils import Database, Migrations

from store.errors import UnknownStore

worker_migrations = Migrations("brein.worker")

MOVED_TABLES = ("joined_examples", "late_outcomes", "join_runs", "models")
"""The tables that moved from the log's file to this one, in their layout as of the log's m013."""


@worker_migrations()
def m001_worker_tables(db: Database) -> None:
    """The moved tables as the log's history had made them (m006, m009, m010), the join queue and
    the store's id. IF NOT EXISTS: an in-memory store already has the moved tables in its one database."""
    db.execute(
        """CREATE TABLE IF NOT EXISTS joined_examples (
            decision_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            event_time REAL NOT NULL,
            run INTEGER NOT NULL,
            status TEXT NOT NULL,
            reward REAL NOT NULL,
            cost REAL NOT NULL,
            credit TEXT NOT NULL,
            outcomes TEXT NOT NULL,
            horizon INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS joined_examples_order ON joined_examples (run, event_time, decision_id)")
    db.execute("CREATE TABLE IF NOT EXISTS late_outcomes (outcome_id TEXT NOT NULL, decision_id TEXT NOT NULL, "
               "run INTEGER NOT NULL, PRIMARY KEY (outcome_id, decision_id))")  # fmt: skip
    db.execute(
        """CREATE TABLE IF NOT EXISTS join_runs (
            run INTEGER PRIMARY KEY,
            watermark REAL NOT NULL,
            cutoff REAL NOT NULL,
            horizon INTEGER NOT NULL,
            started_at REAL NOT NULL,
            finished_at REAL,
            joined INTEGER NOT NULL DEFAULT 0,
            unactivated INTEGER NOT NULL DEFAULT 0,
            late_outcomes INTEGER NOT NULL DEFAULT 0,
            late_checked INTEGER
        )"""
    )
    db.execute(
        """CREATE TABLE IF NOT EXISTS models (
            version TEXT NOT NULL,
            args TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL,
            policy_id TEXT NOT NULL DEFAULT '',
            learned TEXT,
            encoding TEXT,
            PRIMARY KEY (policy_id, version)
        )"""
    )
    db.execute("CREATE INDEX IF NOT EXISTS models_policy ON models (policy_id, created_at)")
    # The log's m013 layout: in time order, so the joiner dequeues from one B-tree.
    db.execute("CREATE TABLE join_queue (decision_id TEXT NOT NULL, event_time REAL NOT NULL, "
               "PRIMARY KEY (event_time, decision_id)) WITHOUT ROWID")  # fmt: skip
    # The log's store id (m014 of the log's history writes it): a worker's file is read only beside its own log.
    db.execute("CREATE TABLE worker_identity (one INTEGER PRIMARY KEY CHECK (one = 1), store_id TEXT NOT NULL)")


@worker_migrations()
def m002_provisional_examples(db: Database) -> None:
    """A decision's examples at the close of its shorter windows (reward/provisional.py)."""
    db.execute("CREATE TABLE IF NOT EXISTS provisional_examples (decision_id TEXT NOT NULL, stage INTEGER NOT NULL, "
               "customer_id TEXT NOT NULL, event_time REAL NOT NULL, run INTEGER NOT NULL, status TEXT NOT NULL, "
               "reward REAL NOT NULL, PRIMARY KEY (decision_id, stage)) WITHOUT ROWID")  # fmt: skip
    db.execute("CREATE INDEX IF NOT EXISTS provisional_examples_order ON provisional_examples (run, event_time)")
    db.execute("CREATE INDEX IF NOT EXISTS provisional_examples_customer ON provisional_examples (customer_id)")


@worker_migrations()
def m003_provisional_stages(db: Database) -> None:
    """Each provisional stage's key by its age, and how far it is staged (``JoinState.stages``). A file
    staged before has keys 0, 1, ... for its config's ages in order; its first joiner registers them so."""
    db.execute("CREATE TABLE IF NOT EXISTS provisional_stages (stage INTEGER PRIMARY KEY, age REAL NOT NULL UNIQUE, "
               "staged_until REAL)")  # fmt: skip


@worker_migrations()
def m004_claims_confirmed(db: Database) -> None:
    """Whether a log has opened beside the file since m014 claimed it (``claim``): files claimed
    before were, by the log that claimed them."""
    db.execute("ALTER TABLE worker_identity ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 1")


def claim(worker: Database, worker_path: str) -> str:
    """The store's id, marked in the worker's file by the log's m014 (store/sqlite/schema.py) and
    confirmed once the log has it too (``confirm``). A claim no log confirmed is a run of m014 killed
    before the log's transaction committed: its id is taken again, else no run would ever match it.
    UnknownStore for a file some log confirmed: another store's."""
    row = worker.execute("SELECT store_id, confirmed FROM worker_identity").fetchone()
    if row is not None and row[1]:
        raise UnknownStore(f"{worker_path} belongs to another store's log: restore the log and the worker's file "
                           "from one backup, or move the worker's file away to start a new store")  # fmt: skip
    if row is not None:
        return str(row[0])
    store_id = uuid.uuid4().hex
    worker.execute("INSERT INTO worker_identity (one, store_id, confirmed) VALUES (1, ?, 0)", (store_id,))
    return store_id


def confirm(worker: sqlite3.Connection) -> None:
    """The log has the id the worker's file was claimed with (``check_pair`` passed): the claim is the log's for good."""
    worker.execute("UPDATE worker_identity SET confirmed = 1 WHERE confirmed = 0")


def check_pair(conn: sqlite3.Connection, log_path: str, worker_path: str) -> bool:
    """UnknownStore unless the worker's file (attached to ``conn``) is the log's own: a log opened
    beside a worker's file that is not its own would join and learn from another store's state,
    and one whose worker's file is gone has lost decisions already taken from its join intake.
    True when its claim is still to be confirmed (``confirm``): the first open since m014."""
    ids = ("SELECT (SELECT store_id FROM store_identity), (SELECT store_id FROM worker_identity), "
           "(SELECT confirmed FROM worker_identity)")  # fmt: skip
    log_id, worker_id, confirmed = conn.execute(ids).fetchone()
    if log_id != worker_id:
        found = "is missing or new" if worker_id is None else "belongs to another store's log"
        raise UnknownStore(f"{worker_path} {found}, beside {log_path}: restore both files from one backup (README, Backups)")
    return not confirmed
