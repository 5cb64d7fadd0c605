"""The SQLite store's one migration history, applied when a store opens (store/sqlite/engine.py).

Files made before the store had one history carry three sets of their own in ``_sqlite_migrations``
('brein.decision_log' m001-m005, 'brein.joiner' m001, 'brein.registry' m001), each applied by
whichever object was built first. The first steps here are those, each skipped where its old set
says it was applied, so such a file migrates in place and a new file is built by the same steps.
"""

from __future__ import annotations

import uuid
from contextlib import closing

from sqlite_utils import Database, Migrations

from store.records import decision_id_for
from store.sqlite.connections import begin, connect, durable, worker_file
from store.sqlite.worker_schema import MOVED_TABLES, claim, worker_migrations

migrations = Migrations("brein.store")
CONTACT = "action_id != 'do_nothing'"
"""A decision that is a contact; the very condition of the index of contacts, so that a query's
condition implies it and SQLite uses that index."""

LEGACY_TABLE = "_sqlite_migrations"
QUEUED_TRIGGER = """CREATE TRIGGER decisions_queued AFTER INSERT ON decisions
    BEGIN
        SELECT RAISE(ABORT, 'UNIQUE constraint failed: decisions.request_id')
            WHERE NEW.derived = 1 AND EXISTS (SELECT 1 FROM decisions WHERE derived = 0 AND request_id = NEW.request_id);
        INSERT INTO join_queue (decision_id, event_time) VALUES (NEW.decision_id, NEW.event_time);
    END"""
"""m012's trigger; m013 makes it again after rebuilding the queue it writes to."""
INTAKE_TRIGGER = QUEUED_TRIGGER.replace("INSERT INTO join_queue", "INSERT INTO join_intake")
"""m014's: the same, writing to the join intake."""
COPY_ROWS = 10_000
"""Rows m014 copies to the worker's file at a time."""


def _applied_before(db: Database, migration_set: str, name: str) -> bool:
    """Whether the old per-object migration set applied this step to the file already."""
    if not db[LEGACY_TABLE].exists():
        return False
    query = f"SELECT 1 FROM {LEGACY_TABLE} WHERE migration_set = ? AND name = ?"
    return db.execute(query, (migration_set, name)).fetchone() is not None


@migrations()
def m001_decision_log(db: Database) -> None:
    if _applied_before(db, "brein.decision_log", "m001_decision_log"):
        return
    db.execute(
        """CREATE TABLE decisions (
            decision_id TEXT PRIMARY KEY,
            request_id TEXT NOT NULL UNIQUE,
            customer_id TEXT NOT NULL,
            touchpoint TEXT NOT NULL,
            event_time REAL NOT NULL,
            received_at REAL NOT NULL,
            action_id TEXT NOT NULL,
            offer TEXT NOT NULL,
            channel TEXT NOT NULL,
            slot TEXT NOT NULL,
            send_at REAL,
            probability REAL NOT NULL,
            exploratory INTEGER NOT NULL,
            policy_id TEXT NOT NULL,
            model_version TEXT NOT NULL,
            personalised INTEGER NOT NULL,
            features TEXT NOT NULL,
            eligible TEXT NOT NULL,
            pmf TEXT NOT NULL,
            exclusions TEXT NOT NULL,
            contact_consent TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX decisions_customer_time ON decisions (customer_id, event_time)")
    db.execute("CREATE INDEX decisions_event_time ON decisions (event_time)")
    db.execute(
        """CREATE TABLE outcomes (
            outcome_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            type TEXT NOT NULL,
            value REAL NOT NULL,
            event_time REAL NOT NULL,
            decision_id TEXT NOT NULL,
            received_at REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX outcomes_customer_time ON outcomes (customer_id, event_time)")
    db.execute("CREATE TABLE activations (decision_id TEXT PRIMARY KEY, event_time REAL NOT NULL, received_at REAL NOT NULL)")
    db.execute("CREATE TABLE models (version TEXT PRIMARY KEY, args TEXT NOT NULL, data BLOB NOT NULL, created_at REAL NOT NULL)")


@migrations()
def m002_join_queue_and_audit(db: Database) -> None:
    """Every decision enters the join queue in the transaction that logs it; the joiner takes it
    out in the transaction that writes its joined example: exactly once, whatever gets killed."""
    if _applied_before(db, "brein.decision_log", "m002_join_queue_and_audit"):
        return
    db.execute("CREATE TABLE join_queue (decision_id TEXT PRIMARY KEY, event_time REAL NOT NULL) WITHOUT ROWID")
    db.execute("CREATE INDEX join_queue_event_time ON join_queue (event_time)")
    db.execute("INSERT INTO join_queue SELECT decision_id, event_time FROM decisions")
    db.execute(
        """CREATE TABLE audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT NOT NULL,
            detail TEXT NOT NULL
        )"""
    )


@migrations()
def m003_model_lineage(db: Database) -> None:
    """Which policy a model snapshot belongs to and how far into the joined examples it has learned."""
    if _applied_before(db, "brein.decision_log", "m003_model_lineage"):
        return
    db.execute("ALTER TABLE models ADD COLUMN policy_id TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE models ADD COLUMN learned TEXT")
    db.execute("CREATE INDEX models_policy ON models (policy_id, created_at)")


@migrations()
def m004_shadow_pmfs(db: Database) -> None:
    if _applied_before(db, "brein.decision_log", "m004_shadow_pmfs"):
        return
    db.execute("ALTER TABLE decisions ADD COLUMN shadow TEXT NOT NULL DEFAULT '{}'")


@migrations()
def m005_shared_line(db: Database) -> None:
    """The shared features exactly as the model saw them, so online learning reads, not re-encodes."""
    if _applied_before(db, "brein.decision_log", "m005_shared_line"):
        return
    db.execute("ALTER TABLE decisions ADD COLUMN shared_line TEXT NOT NULL DEFAULT ''")


@migrations()
def m006_joined_examples(db: Database) -> None:
    if _applied_before(db, "brein.joiner", "m001_joined_examples"):
        return
    db.execute(
        """CREATE TABLE joined_examples (
            decision_id TEXT PRIMARY KEY,
            customer_id TEXT NOT NULL,
            event_time REAL NOT NULL,
            run INTEGER NOT NULL,
            status TEXT NOT NULL,
            reward REAL NOT NULL,
            cost REAL NOT NULL,
            credit TEXT NOT NULL,
            outcomes TEXT NOT NULL,
            outcome_rowid INTEGER NOT NULL
        )"""
    )
    db.execute("CREATE INDEX joined_examples_order ON joined_examples (run, event_time, decision_id)")
    db.execute("CREATE TABLE late_outcomes (outcome_id TEXT NOT NULL, decision_id TEXT NOT NULL, run INTEGER NOT NULL, "
               "PRIMARY KEY (outcome_id, decision_id))")  # fmt: skip
    db.execute(
        """CREATE TABLE join_runs (
            run INTEGER PRIMARY KEY,
            watermark REAL NOT NULL,
            cutoff REAL NOT NULL,
            finished_at REAL NOT NULL,
            joined INTEGER NOT NULL,
            unactivated INTEGER NOT NULL,
            late_outcomes INTEGER NOT NULL,
            late_checked_rowid INTEGER NOT NULL
        )"""
    )


@migrations()
def m007_registry(db: Database) -> None:
    if _applied_before(db, "brein.registry", "m001_registry"):
        return
    db.execute(
        """CREATE TABLE policies (
            id TEXT PRIMARY KEY,
            kind TEXT NOT NULL,
            artifact BLOB,
            artifact_hash TEXT NOT NULL,
            args TEXT NOT NULL,
            features TEXT NOT NULL,
            parent TEXT NOT NULL,
            created REAL NOT NULL,
            state TEXT NOT NULL,
            note TEXT NOT NULL
        )"""
    )
    db.execute("CREATE UNIQUE INDEX one_champion ON policies (state) WHERE state = 'champion'")
    db.execute(
        """CREATE TABLE policy_events (
            id INTEGER PRIMARY KEY,
            policy_id TEXT NOT NULL,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            from_state TEXT NOT NULL,
            to_state TEXT NOT NULL,
            reason TEXT NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE evaluations (
            id INTEGER PRIMARY KEY,
            policy_id TEXT NOT NULL,
            against TEXT NOT NULL,
            at REAL NOT NULL,
            since REAL NOT NULL,
            until REAL NOT NULL,
            decisions INTEGER NOT NULL,
            estimator TEXT NOT NULL,
            lift REAL NOT NULL,
            lift_lower REAL NOT NULL,
            lift_upper REAL NOT NULL,
            ess REAL NOT NULL,
            report TEXT NOT NULL
        )"""
    )
    db.execute("CREATE INDEX evaluations_policy ON evaluations (policy_id, at)")


@migrations()
def m008_outcome_sequence(db: Database) -> None:
    """Outcomes in the order the store took them: ``seq``, never reused (AUTOINCREMENT), where a
    rowid could come back after the newest outcome was deleted. Existing outcomes keep their rowid
    as their seq, so the positions joined examples recorded stay right. And what the client sent:
    a value and an event time it left out are filled in, and a retry must not count them."""
    db.execute(
        """CREATE TABLE outcomes_by_seq (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            outcome_id TEXT NOT NULL UNIQUE,
            customer_id TEXT NOT NULL,
            type TEXT NOT NULL,
            value REAL NOT NULL,
            event_time REAL NOT NULL,
            decision_id TEXT NOT NULL,
            received_at REAL NOT NULL,
            value_sent INTEGER NOT NULL DEFAULT 1,
            event_time_sent INTEGER NOT NULL DEFAULT 1
        )"""
    )
    columns = "outcome_id, customer_id, type, value, event_time, decision_id, received_at"
    db.execute(f"INSERT INTO outcomes_by_seq (seq, {columns}) SELECT rowid, {columns} FROM outcomes ORDER BY rowid")
    db.execute("DROP TABLE outcomes")
    db.execute("ALTER TABLE outcomes_by_seq RENAME TO outcomes")
    db.execute("CREATE INDEX outcomes_customer_time ON outcomes (customer_id, event_time)")


@migrations()
def m009_join_horizons(db: Database) -> None:
    """Joined examples and runs record the outcome horizon (a seq) they used; a run's row is written
    when it starts (its number issued in that write) and completed when it finishes."""
    db.execute("ALTER TABLE joined_examples RENAME COLUMN outcome_rowid TO horizon")
    db.execute(
        """CREATE TABLE join_runs_started (
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
    db.execute("INSERT INTO join_runs_started SELECT run, watermark, cutoff, late_checked_rowid, finished_at, finished_at, "
               "joined, unactivated, late_outcomes, late_checked_rowid FROM join_runs")  # fmt: skip
    db.execute("DROP TABLE join_runs")
    db.execute("ALTER TABLE join_runs_started RENAME TO join_runs")


@migrations()
def m010_model_encoding_and_keys(db: Database) -> None:
    """A snapshot keeps the numeric encoding of its lineage (NULL for the rows before: the data-free
    ``auto``), and is keyed by (policy, version): two policies whose models have the same bytes
    each keep their own snapshot, where the version alone let the second one's be ignored."""
    db.execute(
        """CREATE TABLE models_by_policy (
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
    db.execute("INSERT INTO models_by_policy (version, args, data, created_at, policy_id, learned) "
               "SELECT version, args, data, created_at, policy_id, learned FROM models ORDER BY rowid")  # fmt: skip
    db.execute("DROP TABLE models")
    db.execute("ALTER TABLE models_by_policy RENAME TO models")
    db.execute("CREATE INDEX models_policy ON models (policy_id, created_at)")


@migrations()
def m011_decisions_without_request_index(db: Database) -> None:
    """A decision made by the Decider has ``decision_id = decision_id_for(request_id)`` (``derived``
    = 1): its primary key already makes its request id unique, and a request's decision is found by
    that key. The ``request_id UNIQUE`` index repeated it and cost every insert a page write at a
    random place; it goes (a table rebuild: SQLite drops no constraint in place). Request ids of the
    other decisions (records made by tests and benchmarks, ``derived`` = 0) stay unique through a
    partial index that holds only them, and the two kinds through m012's trigger and the write
    (store/sqlite/decisions.py). Rowids are kept: the joiner reads them."""
    db.conn.create_function("decision_id_for", 1, decision_id_for, deterministic=True)
    columns = [row[1] for row in db.execute("SELECT * FROM pragma_table_info('decisions')").fetchall()]
    create = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'decisions'").fetchone()[0]
    rebuilt = create.replace("request_id TEXT NOT NULL UNIQUE", "request_id TEXT NOT NULL", 1)
    if rebuilt == create:
        raise RuntimeError(f"expected decisions.request_id UNIQUE, got {create}")
    rebuilt = rebuilt.replace("CREATE TABLE decisions", "CREATE TABLE decisions_rebuilt", 1).rstrip()
    db.execute(rebuilt[:-1] + ", derived INTEGER NOT NULL DEFAULT 1)")
    listed = ", ".join(columns)
    db.execute(f"INSERT INTO decisions_rebuilt (rowid, {listed}, derived) "
               f"SELECT rowid, {listed}, decision_id = decision_id_for(request_id) FROM decisions ORDER BY rowid")  # fmt: skip
    db.execute("DROP TABLE decisions")
    db.execute("ALTER TABLE decisions_rebuilt RENAME TO decisions")
    db.execute("CREATE INDEX decisions_customer_time ON decisions (customer_id, event_time)")
    db.execute("CREATE INDEX decisions_event_time ON decisions (event_time)")
    db.execute("CREATE UNIQUE INDEX decisions_request_not_derived ON decisions (request_id) WHERE derived = 0")


@migrations()
def m012_decisions_queued_by_trigger(db: Database) -> None:
    """A decision enters the join queue by a trigger in the statement that logs it: the writer runs
    one statement for a group's decisions and their queue entries, not one for each table. The same
    trigger (one program a row) refuses a decision whose id is its request id's (``derived``) when
    a decision whose id is not (written only by tests and benchmarks) already has that request id."""
    db.execute(QUEUED_TRIGGER)


@migrations()
def m013_join_queue_in_time_order(db: Database) -> None:
    """The join queue is kept in the order it is read, WITHOUT ROWID keyed by (event time, decision
    id), in place of a random key (the decision id) plus an event-time index: a decision enters it
    at its right edge, and each decision the joiner dequeues changes one B-tree, not two
    (docs/benchmarks.md, "The worker's join tables"). The trigger that fills it is made again: a
    table that a trigger writes to cannot be renamed into place under it."""
    db.execute("DROP TRIGGER decisions_queued")
    db.execute("CREATE TABLE join_queue_by_time (decision_id TEXT NOT NULL, event_time REAL NOT NULL, "
               "PRIMARY KEY (event_time, decision_id)) WITHOUT ROWID")  # fmt: skip
    db.execute("INSERT INTO join_queue_by_time SELECT decision_id, event_time FROM join_queue ORDER BY event_time, decision_id")
    db.execute("DROP TABLE join_queue")
    db.execute("ALTER TABLE join_queue_by_time RENAME TO join_queue")
    db.execute(QUEUED_TRIGGER)


@migrations()
def m014_worker_file(db: Database) -> None:
    """What the worker writes moves to a file of its own (store/sqlite/worker_schema.py), so that its
    transactions no longer hold the write lock every Decide's commit needs. A decision now enters the
    join intake, keyed by a sequence that only grows (AUTOINCREMENT: never reused after a trim), from
    which the worker takes it into the join queue in its own file and then deletes a range of keys.
    The decisions queued so far go to the intake. The moved tables' rows are copied to the worker's
    file and committed there before this migration drops them here: a process killed in between
    copies them again (the copy ignores rows it finds). Both files get the store's id: a log opens
    only beside its own worker's file (worker_schema.check_pair). A new one, or the one a killed run
    committed in the worker's file before the log's transaction could: a new id each run would
    never match it, and the store would never open again."""
    db.execute("DROP TRIGGER decisions_queued")
    db.execute("CREATE TABLE join_intake (seq INTEGER PRIMARY KEY AUTOINCREMENT, decision_id TEXT NOT NULL, "
               "event_time REAL NOT NULL)")  # fmt: skip
    db.execute("INSERT INTO join_intake (decision_id, event_time) "
               "SELECT decision_id, event_time FROM join_queue ORDER BY event_time, decision_id")  # fmt: skip
    db.execute("DROP TABLE join_queue")
    db.execute(INTAKE_TRIGGER)
    db.execute("CREATE TABLE store_identity (one INTEGER PRIMARY KEY CHECK (one = 1), store_id TEXT NOT NULL)")
    path = db.execute("SELECT file FROM pragma_database_list WHERE name = 'main'").fetchone()[0]
    if not path:  # in memory: one database holds both sets of tables
        db.execute("INSERT INTO store_identity VALUES (1, ?)", (uuid.uuid4().hex,))
        worker_migrations.apply(db)
        return
    with closing(durable(connect(worker_file(path)))) as conn:
        begin(conn)
        worker = Database(conn)
        worker_migrations.apply(worker)
        store_id = claim(worker, worker_file(path))
        for table in MOVED_TABLES:
            _copy(db, worker, table)
        conn.execute("COMMIT")
    db.execute("INSERT INTO store_identity VALUES (1, ?)", (store_id,))
    for table in MOVED_TABLES:
        db.execute(f"DROP TABLE {table}")


@migrations()
def m015_customer_logs_bounded(db: Database) -> None:
    """Two indexes for a Decide's read of a customer's log (store/sqlite/decisions.py): its contacts
    (its decisions other than do-nothing) by time, for its latest ones, and its outcomes by type and
    time, for the last one of each type. A customer decided for, or whose outcomes were reported, in
    a loop no longer makes that read walk everything logged for it."""
    db.execute(f"CREATE INDEX decisions_customer_contacts ON decisions (customer_id, event_time) WHERE {CONTACT}")
    db.execute("CREATE INDEX outcomes_customer_type_time ON outcomes (customer_id, type, event_time)")



@migrations()
def m016_gate_windows(db: Database) -> None:
    """What the promotion gate needs to fix its window: the end of the range a trained policy learned
    from, and whether an evaluation was made on the gate's window (those made before: not)."""
    db.execute("ALTER TABLE policies ADD COLUMN trained_until REAL")
    db.execute("ALTER TABLE evaluations ADD COLUMN gate_window INTEGER NOT NULL DEFAULT 0")


@migrations()
def m017_selected_among(db: Database) -> None:
    """How many set-ups a tuned candidate was picked among: every look at it shares the gate's alpha
    among them (policies/gate.py, look_alpha)."""
    db.execute("ALTER TABLE policies ADD COLUMN selected_among INTEGER NOT NULL DEFAULT 1")

def _copy(log: Database, worker: Database, table: str) -> None:
    """``table``'s rows, rowids kept (model snapshots are ordered by theirs), a page at a time."""
    columns = ", ".join(["rowid", *(row[1] for row in log.execute(f"SELECT * FROM pragma_table_info('{table}')").fetchall())])
    last = -(2**63)
    page = f"SELECT {columns} FROM {table} WHERE rowid > ? ORDER BY rowid LIMIT ?"
    while rows := log.execute(page, (last, COPY_ROWS)).fetchall():
        marks = ", ".join("?" * len(rows[0]))
        worker.conn.executemany(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES ({marks})", rows)
        last = rows[-1][0]
