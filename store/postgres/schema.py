"""The PostgreSQL store's one migration history: a versioned list of steps, applied when a store
opens, in one transaction holding an advisory lock (processes opening a store together apply it
once, in turn), each step recorded in ``brein_migrations``.

Minimal on purpose: the well-kept libraries (Alembic, yoyo-migrations) bring SQLAlchemy or a
handful of dependencies and a lock table of their own, for what here is a list of statements.

Identifiers are ``COLLATE "C"``: text sorts by code point, as Python's strings do, so learning
order and cursors ((run, event time, decision id)) are the same on every backend and machine.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg

from store.errors import StoreReplaced, StoreUnavailable, UnknownStore, reason
from store.records import HISTORY_CONTACTS


def lock_key(name: str) -> str:
    """The SQL of an advisory lock's key: ``name`` in this store's schema (current_schema(), as
    the URL's search_path sets it), so that stores in two schemas of one database are apart."""
    return f"hashtextextended('brein.{name}.' || COALESCE(current_schema(), ''), 0)"


ID = 'text COLLATE "C" NOT NULL'
TIME = "double precision NOT NULL"

CUSTOMER_LOGS_FUNCTION = f"""CREATE OR REPLACE FUNCTION customer_logs(
    ids text[], requests text[], since float8, until float8, first float8, last float8)
RETURNS TABLE (part int, customer_id text, at float8, name text, channel text, offer text)
LANGUAGE plpgsql STABLE SET plan_cache_mode = force_generic_plan SET enable_seqscan = off SET enable_bitmapscan = off
AS $body$ BEGIN RETURN QUERY
WITH RECURSIVE kinds(customer, type) AS (  -- each customer's outcome types, a search of the index of types each
    SELECT w.id, (SELECT MIN(o.type) FROM outcomes o WHERE o.customer_id = w.id) FROM unnest(ids) w(id)
    UNION ALL
    SELECT k.customer, (SELECT MIN(o.type) FROM outcomes o WHERE o.customer_id = k.customer AND o.type > k.type)
    FROM kinds k WHERE k.type IS NOT NULL)
SELECT 0, d.customer_id, d.event_time, d.decision_id, d.channel, d.offer FROM unnest(ids) w(id) CROSS JOIN LATERAL (
    SELECT x.customer_id, x.event_time, x.decision_id, x.channel, x.offer FROM decisions x
    WHERE (x.customer_id, x.event_time) >= (w.id, since) AND (x.customer_id, x.event_time) < (w.id, until)
        AND x.action_id <> 'do_nothing' ORDER BY x.customer_id DESC, x.event_time DESC LIMIT {HISTORY_CONTACTS}) d
UNION ALL
SELECT 1, w.id, (SELECT x.event_time FROM decisions x
                 WHERE x.customer_id = w.id AND (x.customer_id, x.event_time) < (w.id, since) AND x.action_id <> 'do_nothing'
                 ORDER BY x.customer_id DESC, x.event_time DESC LIMIT 1), NULL, NULL, NULL FROM unnest(ids) w(id)
UNION ALL
SELECT 2, k.customer, b.event_time, k.type, NULL, NULL FROM kinds k CROSS JOIN LATERAL (
    SELECT x.customer_id, x.type, x.event_time FROM outcomes x
    WHERE (x.customer_id, x.type, x.event_time) < (k.customer, k.type, first)
    ORDER BY x.customer_id DESC, x.type DESC, x.event_time DESC LIMIT 1) b
    WHERE k.type IS NOT NULL AND b.customer_id = k.customer AND b.type = k.type
UNION ALL
SELECT 3, k.customer, o.event_time, k.type, NULL, NULL FROM kinds k CROSS JOIN LATERAL (
    SELECT x.event_time FROM outcomes x
    WHERE x.customer_id = k.customer AND x.type = k.type AND x.event_time >= first AND x.event_time <= last OFFSET 0) o
    WHERE k.type IS NOT NULL
UNION ALL
SELECT 3, k.customer, a.event_time, k.type, NULL, NULL FROM kinds k CROSS JOIN LATERAL (
    SELECT x.customer_id, x.type, x.event_time FROM outcomes x
    WHERE (x.customer_id, x.type, x.event_time) > (k.customer, k.type, last)
    ORDER BY x.customer_id, x.type, x.event_time LIMIT 1) a
    WHERE k.type IS NOT NULL AND a.customer_id = k.customer AND a.type = k.type
UNION ALL
SELECT 4, h.customer_id, h.head::float8, NULL, NULL, NULL FROM customer_heads h WHERE h.customer_id = ANY(ids)
UNION ALL
SELECT 5, x.customer_id, NULL, x.request_id, NULL, NULL FROM unnest(requests) r(id) JOIN decisions x ON x.request_id = r.id;
END $body$"""
"""A Decide's read (store/postgres/decisions.py, CUSTOMER_LOGS): every part of the customers' logs,
their heads and which of the asked request ids are logged (part 5), in one statement. A function, so
that its plan is made once a connection (generic) rather than every call: planning the statement
cost more of the database's CPU than running it (a one-customer read: 300-337 µs of the database's
CPU planned every call, 137-143 µs as a function; docs/benchmarks.md). A generic plan is made on the
statistics of the moment, which on a new store are those of empty tables, and it is kept while the
tables grow; so its form leaves the planner no plan that gets worse as they do: no sequential scans
(``enable_seqscan``), and conditions only the customers' and request ids' indexes can serve (row
comparisons on ``(customer_id, event_time)``; ``decisions_event_time`` serves none of them). No
bitmap scans either: a customer's latest contacts are then read backwards along the index of
contacts and the read stops at the limit, where a bitmap scan read every contact of the customer
and sorted them (20,000 contacts: 13.9 ms against 0.4). The last outcome of each type before
``first`` and the first after ``last`` are one search a type along the index of types (its types
found by a skip scan: ``kinds``), where a GROUP BY walked every outcome of the customer before
``first``; a row comparison ordered as that index is, so that no plan walks the index of outcomes
by time past another type's (one made on 2,000 outcomes of a customer did). Its outcomes in
[first, last] are a range a type, kept a subquery (``OFFSET 0``): joined, the planner read every
customer's outcomes in that time range by the index of outcomes by time (1 ms at 20,000).
tests/test_postgres_store.py checks the plans made on empty, empty analysed and small tables, and
on a customer's many outcomes ahead of the read. A customer's contacts are its latest
HISTORY_CONTACTS. m006 replaced m005's function, which read every contact and walked every outcome
of the customer; m007 m006's, which read every outcome from ``first`` on (outcomes reported ahead
of a Decide's time)."""

MIGRATIONS: list[tuple[str, list[str]]] = [
    ("m001_store", [
        f"""CREATE TABLE decisions (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            decision_id {ID} PRIMARY KEY,
            request_id {ID} UNIQUE,
            customer_id {ID},
            touchpoint text NOT NULL,
            event_time {TIME},
            received_at {TIME},
            action_id text NOT NULL,
            offer text NOT NULL,
            channel text NOT NULL,
            slot text NOT NULL,
            send_at double precision,
            probability {TIME},
            exploratory integer NOT NULL,
            policy_id text NOT NULL,
            model_version text NOT NULL,
            personalised integer NOT NULL,
            features text NOT NULL,
            eligible text NOT NULL,
            pmf text NOT NULL,
            exclusions text NOT NULL,
            contact_consent text NOT NULL,
            shadow text NOT NULL,
            shared_line text NOT NULL
        )""",
        "CREATE INDEX decisions_customer_time ON decisions (customer_id, event_time)",
        "CREATE INDEX decisions_event_time ON decisions (event_time)",
        # Each customer's head (DecisionLog.submit_decisions): bumped by every write of its decisions;
        # ``writer`` the store instance that wrote last, ``since`` the head its run of writes began at.
        f"CREATE TABLE customer_heads (customer_id {ID} PRIMARY KEY, head bigint NOT NULL, writer text NOT NULL, "
        "since bigint NOT NULL)",
        f"CREATE TABLE join_queue (decision_id {ID} PRIMARY KEY, event_time {TIME})",
        "CREATE INDEX join_queue_event_time ON join_queue (event_time)",
        f"""CREATE TABLE outcomes (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            outcome_id {ID} UNIQUE,
            customer_id {ID},
            type text NOT NULL,
            value {TIME},
            event_time {TIME},
            decision_id {ID},
            received_at {TIME},
            value_sent integer NOT NULL,
            event_time_sent integer NOT NULL
        )""",
        "CREATE INDEX outcomes_customer_time ON outcomes (customer_id, event_time)",
        f"CREATE TABLE activations (decision_id {ID} PRIMARY KEY, event_time {TIME}, received_at {TIME})",
        f"""CREATE TABLE joined_examples (
            decision_id {ID} PRIMARY KEY,
            customer_id {ID},
            event_time {TIME},
            run bigint NOT NULL,
            status text NOT NULL,
            reward {TIME},
            cost {TIME},
            credit text NOT NULL,
            outcomes text NOT NULL,
            horizon bigint NOT NULL
        )""",
        "CREATE INDEX joined_examples_order ON joined_examples (run, event_time, decision_id)",
        f"CREATE TABLE late_outcomes (outcome_id {ID}, decision_id {ID}, run bigint NOT NULL, "
        "PRIMARY KEY (outcome_id, decision_id))",
        "CREATE INDEX late_outcomes_decision ON late_outcomes (decision_id)",
        f"""CREATE TABLE join_runs (
            run bigint PRIMARY KEY,
            watermark {TIME},
            cutoff {TIME},
            horizon bigint NOT NULL,
            started_at {TIME},
            finished_at double precision,
            joined bigint NOT NULL DEFAULT 0,
            unactivated bigint NOT NULL DEFAULT 0,
            late_outcomes bigint NOT NULL DEFAULT 0,
            late_checked bigint
        )""",
        f"""CREATE TABLE models (
            seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
            version {ID} PRIMARY KEY,
            args text NOT NULL,
            data bytea NOT NULL,
            policy_id {ID},
            learned text,
            created_at {TIME}
        )""",
        "CREATE INDEX models_policy ON models (policy_id, created_at)",
        f"""CREATE TABLE policies (
            id {ID} PRIMARY KEY,
            kind text NOT NULL,
            artifact bytea,
            artifact_hash text NOT NULL,
            args text NOT NULL,
            features text NOT NULL,
            parent text NOT NULL,
            created {TIME},
            state text NOT NULL,
            note text NOT NULL
        )""",
        "CREATE UNIQUE INDEX one_champion ON policies (state) WHERE state = 'champion'",
        f"""CREATE TABLE policy_events (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            policy_id {ID},
            at {TIME},
            actor text NOT NULL,
            from_state text NOT NULL,
            to_state text NOT NULL,
            reason text NOT NULL
        )""",
        f"""CREATE TABLE evaluations (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            policy_id {ID},
            against text NOT NULL,
            at {TIME},
            since {TIME},
            until {TIME},
            decisions bigint NOT NULL,
            estimator text NOT NULL,
            lift {TIME},
            lift_lower {TIME},
            lift_upper {TIME},
            ess {TIME},
            report text NOT NULL
        )""",
        "CREATE INDEX evaluations_policy ON evaluations (policy_id, at)",
        f"""CREATE TABLE audit (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at {TIME},
            actor text NOT NULL,
            action text NOT NULL,
            subject text NOT NULL,
            detail text NOT NULL
        )""",
    ]),
    # A snapshot keeps its lineage's numeric encoding (NULL before: the data-free ``auto``) and is
    # keyed by (policy, version): two policies whose models have the same bytes keep one each.
    ("m002_model_encoding_and_keys", [
        "ALTER TABLE models ADD COLUMN encoding text",
        "ALTER TABLE models DROP CONSTRAINT models_pkey",
        "ALTER TABLE models ADD PRIMARY KEY (policy_id, version)",
    ]),
    # A decision's examples at the close of its shorter windows (reward/provisional.py).
    ("m003_provisional_examples", [
        f"""CREATE TABLE provisional_examples (
            decision_id {ID},
            stage integer NOT NULL,
            customer_id {ID},
            event_time {TIME},
            run bigint NOT NULL,
            status text NOT NULL,
            reward {TIME},
            PRIMARY KEY (decision_id, stage)
        )""",
        "CREATE INDEX provisional_examples_order ON provisional_examples (run, event_time)",
    ]),
    # Each provisional stage's key by its age, and how far it is staged (JoinState.stages); a store
    # staged before has keys 0, 1, ... for its config's ages in order, and its first joiner registers them so.
    ("m004_provisional_stages", [
        "CREATE TABLE provisional_stages (stage integer PRIMARY KEY, age double precision NOT NULL UNIQUE, "
        "staged_until double precision)",
    ]),
    ("m005_customer_logs", [CUSTOMER_LOGS_FUNCTION]),
    ("m006_customer_logs_bounded", [
        "CREATE INDEX decisions_customer_contacts ON decisions (customer_id, event_time) WHERE action_id <> 'do_nothing'",
        "CREATE INDEX outcomes_customer_type_time ON outcomes (customer_id, type, event_time)",
        CUSTOMER_LOGS_FUNCTION,
    ]),
    ("m007_customer_logs_until_last", [
        "DROP FUNCTION IF EXISTS customer_logs(text[], text[], float8, float8, float8)",
        CUSTOMER_LOGS_FUNCTION,
    ]),
    # What the promotion gate needs to fix its window: the end of the range a trained policy learned from,
    # and whether an evaluation was made on the gate's window (those made before: not).
    ("m008_gate_windows", [
        "ALTER TABLE policies ADD COLUMN trained_until double precision",
        "ALTER TABLE evaluations ADD COLUMN gate_window boolean NOT NULL DEFAULT false",
    ]),
    # How many set-ups a tuned candidate was picked among: every look at it shares the gate's alpha among them.
    ("m009_selected_among", ["ALTER TABLE policies ADD COLUMN selected_among integer NOT NULL DEFAULT 1"]),
    # The store's identity, made with it: a process that reconnects checks it still talks to the store it
    # opened (same_store), not to one made anew at its URL (a database dropped and created again).
    ("m010_store_identity", [
        "CREATE TABLE brein_store (one integer PRIMARY KEY CHECK (one = 1), store_id text NOT NULL)",
        "INSERT INTO brein_store VALUES (1, gen_random_uuid()::text)",
    ]),
]  # fmt: skip


def _refuse_to_create(conn: psycopg.Connection[Any], create: bool) -> None:
    """UnknownStore where no store is to be made in a schema without one: ``create`` False, or a schema
    holding another application's tables, which Brein would otherwise mix its own in with."""
    database, schema = conn.execute("SELECT current_database(), COALESCE(current_schema(), '')").fetchone() or ("", "")
    where = f"the PostgreSQL database {database!r} (schema {schema!r})"
    if not create:
        raise UnknownStore(f"no store in {where}: give --store, or run the server once to create it")
    tables = [name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY 1")]
    if tables:
        listed = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise UnknownStore(
            f"{where} holds other tables ({listed}) and no Brein store: give Brein a schema of its own "
            "(CREATE SCHEMA brein, and ?options=-csearch_path%3Dbrein in the URL)"
        )


def migrate(conn: psycopg.Connection[Any], *, create: bool = True) -> None:
    """Apply the steps not applied yet, in one transaction under the migration lock. ``create``
    False: UnknownStore, and nothing created, when the database (the URL's schema) holds no store.
    UnknownStore too when a newer Brein migrated it: its tables may have columns this version does
    not write (its inserts then fail), or rows it would misread.

    A store that is up to date is only read: a role with no CREATE on the store's schema (one granted
    reads and writes on its tables) opens it, and one that would have to create or migrate it is told
    so in one line (StoreUnavailable)."""
    with conn.transaction():
        conn.execute(f"SELECT pg_advisory_xact_lock({lock_key('migrations')})")
        exists = conn.execute("SELECT to_regclass('brein_migrations')").fetchone() != (None,)
        if not exists:
            _refuse_to_create(conn, create)
        applied = {name for (name,) in conn.execute("SELECT name FROM brein_migrations")} if exists else set()
        newer = sorted(applied - {name for name, _ in MIGRATIONS})
        if newer:
            raise UnknownStore(
                f"the store was migrated by a newer Brein (migrations {', '.join(newer)} are not this version's): "
                "run that version, or a newer one"
            )
        pending = [(name, statements) for name, statements in MIGRATIONS if name not in applied]
        if not pending:
            return
        try:
            if not exists:
                conn.execute("CREATE TABLE brein_migrations (name text PRIMARY KEY, applied_at double precision NOT NULL)")
            for name, statements in pending:
                for statement in statements:
                    conn.execute(statement)
                conn.execute("INSERT INTO brein_migrations VALUES (%s, %s)", (name, time.time()))
        except psycopg.errors.InsufficientPrivilege as error:
            missing = f"{len(pending)} of its {len(MIGRATIONS)} migrations" if exists else "the store"
            raise StoreUnavailable(
                f"{reason(error)}: the role needs CREATE on the store's schema to create or migrate it ({missing} to apply)"
            ) from error


def store_id(conn: psycopg.Connection[Any]) -> str | None:
    """The identity of the store on ``conn`` (made by m010_store_identity); None where there is none."""
    try:
        row = conn.execute("SELECT store_id FROM brein_store").fetchone()
    except psycopg.errors.UndefinedTable:
        return None
    return None if row is None else str(row[0])


def same_store(conn: psycopg.Connection[Any], opened: str) -> None:
    """StoreReplaced unless ``conn`` reaches the store whose identity is ``opened``; checked on each new
    connection (never per statement), so a database dropped and created anew while a process served
    is found at the process's first reconnection to it."""
    found = store_id(conn)
    if found != opened:
        database = conn.info.dbname
        now = "no store" if found is None else f"another store ({found})"
        raise StoreReplaced(
            f"the PostgreSQL database {database!r} holds {now}, not the store this process opened ({opened}): "
            "it was dropped or restored; restart the process to serve what is there now"
        )
