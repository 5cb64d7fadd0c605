"""What only the PostgreSQL backend does: opening a database that holds no store, the group
commit's one-round-trip path with its fallback (each write alone when the database refuses one),
and the fence of a worker that lost its lease without dying."""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from bandit.config import BreinConfig
from store import open_store
from store.errors import Conflict, LeaseLost, StaleHistory, StoreError, StoreReplaced, StoreUnavailable, UnknownStore, reason
from store.postgres import PostgresStore
from store.postgres.decisions import CUSTOMER_LOGS
from store.postgres.engine import MAX_LOCKED_CUSTOMERS
from store.postgres.schema import lock_key
from store.records import DAY, ActivationRecord, AuditEntry, ModelSnapshot
from tests.conftest import T0, postgres_store_url
from tests.test_store_contract import decision, outcome


@pytest.mark.parametrize(("change", "reason"), [({"path": "/no_such_database"}, 'database "no_such_database" does not exist'),
                                                 ({"netloc": "no_such_role@127.0.0.1"}, 'role "no_such_role" does not exist')])
def test_a_store_that_cannot_be_opened_says_why(postgres_database: str, change: dict[str, str], reason: str) -> None:
    """The pool only said "pool initialization incomplete after 5.0 sec"."""
    url = urlunsplit(urlsplit(postgres_database)._replace(**change))
    with pytest.raises(StoreUnavailable, match=re.escape(reason)):
        open_store(url)


@pytest.fixture
def empty_url(postgres_database: str) -> Iterator[str]:
    with postgres_store_url(postgres_database) as url:
        yield url


def _tables(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        return [name for (name,) in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]


def test_a_database_without_a_store_is_not_created_when_one_must_exist(empty_url: str) -> None:
    with pytest.raises(UnknownStore, match=r"no store in the PostgreSQL database '.*' \(schema 't_.*'\): give --store"):
        open_store(empty_url, create=False)
    assert _tables(empty_url) == []
    open_store(empty_url).close()  # created here, then it may be opened without creating
    store = open_store(empty_url, create=False)
    try:
        assert store.decisions.decision_count() == 0
    finally:
        store.close()
    assert "decisions" in _tables(empty_url)


def test_a_schema_of_another_application_gets_no_store_of_ours(empty_url: str) -> None:
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY)")
    with pytest.raises(UnknownStore, match=r"\(schema 't_.*'\) holds other tables \(customers\) and no Brein store"):
        open_store(empty_url)
    assert _tables(empty_url) == ["customers"]


@pytest.fixture
def held(empty_url: str) -> Iterator[tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event]]:
    """A store whose writer is held (busy with a write that waits for the event), so that the writes
    queued meanwhile are one group; and the commits it made: (seconds, writes, succeeded)."""
    commits: list[tuple[float, int, bool]] = []
    store = PostgresStore(empty_url, on_commit=lambda *commit: commits.append(commit))
    holding, release = threading.Event(), threading.Event()

    def hold(conn: object) -> bool:
        holding.set()
        return release.wait(10)

    held = store.engine.submit(hold)
    assert holding.wait(10)
    try:
        yield store, commits, release
        assert held.result(10)
    finally:
        release.set()
        store.close()


def _settled(future: Future[Any]) -> Any:
    try:
        return future.result(10)
    except Exception as error:
        return type(error)


def test_a_group_of_hot_path_writes_is_one_statement_a_kind_with_each_write_settled_alone(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event],
) -> None:
    store, commits, release = held
    writes: list[Future[Any]] = [
        store.decisions.submit_decisions([decision("d1", "c1", T0)], {"c1": 0}),
        store.decisions.submit_decisions([decision("d2", "c2", T0)], {"c2": 5}),  # c2 has no decision: head 0
        store.decisions.submit_decisions([decision("d3", "c3", T0), decision("d1", "c3", T0, request_id="r-x")], {"c3": 0}),
        store.decisions.submit_decisions([decision("d4", "c4", T0)], None),
        store.decisions.submit_outcome(outcome("o1", "c1", T0 + 5)),
        store.decisions.submit_activation(ActivationRecord("d1", T0 + 1)),
    ]
    release.set()
    assert [_settled(w) for w in writes] == [None, StaleHistory, Conflict, None, False, False]
    assert (len(writes), True) in [(count, ok) for _, count, ok in commits]  # one group
    assert [d for d in ("d1", "d2", "d3", "d4") if store.decisions.decision(d)] == ["d1", "d4"]
    assert store.decisions.decision("d1").customer_id == "c1"  # type: ignore[union-attr]
    assert store.joins.pending_count() == 2
    logs = store.decisions.customer_logs(["c1", "c2"], T0, T0 + 10, 30)
    assert [logs[c].head for c in ("c1", "c2")] == [1, 0]


def test_a_value_the_database_refuses_fails_its_write_alone_in_a_group(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event],
) -> None:
    """The group's statements fail, so it is written again write by write: the refused ones fail
    with the driver's error (as the careful path always did), the others commit."""
    store, commits, release = held
    writes: list[Future[Any]] = [
        store.decisions.submit_decisions([decision("d1", "c1", T0)], {"c1": 0}),
        store.decisions.submit_decisions([decision("d2", "c2", T0, touchpoint="a\x00b")], {"c2": 0}),
        store.decisions.submit_outcome(outcome("o1", "c1", T0 + 5)),
        store.decisions.submit_outcome(outcome("o2", "c1\x00", T0 + 5)),
    ]
    release.set()
    settled = [_settled(w) for w in writes]
    assert settled[0] is None and settled[2] is False
    assert issubclass(settled[1], psycopg.DataError) and issubclass(settled[3], psycopg.DataError)  # text with NUL
    assert store.decisions.decision("d1") is not None and store.decisions.decision("d2") is None
    assert store.joins.outcome_horizon() == 1
    assert (len(writes), True) in [(count, ok) for _, count, ok in commits]


@pytest.mark.parametrize("careful", [False, True], ids=["one-statement", "each-write-alone"])
def test_a_write_with_a_stale_customer_writes_its_other_customers_decisions(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event], careful: bool
) -> None:
    """A DecideBatch chunk is one write: one customer another replica decided for meanwhile refused
    all of it. Only that customer's decisions are refused (StaleHistory names it), in a group written
    in one statement or, when the database refused another write's value, write by write."""
    store, _, release = held
    write = store.decisions.submit_decisions(
        [decision("d1", "c1", T0), decision("d2", "c2", T0), decision("d3", "c2", T0 + 1)], {"c1": 0, "c2": 5}
    )
    refused = store.decisions.submit_decisions([decision("d4", "c4", T0, touchpoint="a\x00b")], {"c4": 0}) if careful else None
    release.set()
    with pytest.raises(StaleHistory) as stale:
        write.result(10)
    assert stale.value.customers == {"c2"}
    assert refused is None or issubclass(_settled(refused), psycopg.DataError)
    assert [d for d in ("d1", "d2", "d3", "d4") if store.decisions.decision(d)] == ["d1"]
    logs = store.decisions.customer_logs(["c1", "c2"], T0, T0 + 10, 30)
    assert [logs[c].head for c in ("c1", "c2")] == [1, 0]
    assert store.joins.pending_count() == 1


def test_a_group_locking_more_customers_than_one_transaction_should_is_committed_in_parts(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event],
) -> None:
    store, commits, release = held
    per_write = MAX_LOCKED_CUSTOMERS // 2 + 1  # two writes would lock more than one transaction should
    writes = [
        store.decisions.submit_decisions([decision(f"d{w}-{i}", f"c{w}-{i}", T0) for i in range(per_write)], None)
        for w in range(3)
    ]
    release.set()
    assert [w.result(10) for w in writes] == [None, None, None]
    assert [count for _, count, _ in commits[1:]] == [1, 1, 1]
    assert store.decisions.decision_count() == 3 * per_write


SHARED_LOCKS = "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT fastpath"
"""The locks a backend holds (or waits for) in the server's shared lock table."""


def _hold_open(inside: threading.Event, go_on: threading.Event, pid: list[int]) -> Callable[[psycopg.Connection[Any]], bool]:
    """A write that waits in its group's transaction (after the group's locks and its other writes)
    until ``go_on``; ``pid``: its backend's."""

    def hold(conn: psycopg.Connection[Any]) -> bool:
        pid.append(conn.info.backend_pid)
        inside.set()
        return go_on.wait(10)

    return hold


def test_a_transactions_shared_locks_do_not_grow_with_its_customers(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event], empty_url: str
) -> None:
    """A transaction took an advisory lock a customer, each a slot of the server's shared lock table
    (max_locks_per_transaction × connections, for every database on the server): 1,000 a group."""
    store, _, release = held
    inside, go_on, pid = threading.Event(), threading.Event(), []
    customers = [f"c{i}" for i in range(MAX_LOCKED_CUSTOMERS)]
    write = store.decisions.submit_decisions([decision(f"d{i}", c, T0) for i, c in enumerate(customers)], {})
    holding = store.engine.submit(_hold_open(inside, go_on, pid))
    release.set()
    try:
        assert inside.wait(10)
        with psycopg.connect(empty_url, autocommit=True) as conn:
            shared = conn.execute(SHARED_LOCKS, pid).fetchone()
        assert shared is not None and shared[0] <= 16, shared
    finally:
        go_on.set()
    assert (write.result(10), holding.result(10), store.decisions.decision_count()) == (None, True, len(customers))


def test_a_write_of_more_customers_than_the_servers_lock_table_holds_is_committed(empty_url: str) -> None:
    """One DecideBatch chunk of that many customers (valid once limits.max_message_bytes is raised)
    failed whole, "out of shared memory", and so did other databases' sessions meanwhile."""
    with psycopg.connect(empty_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_setting('max_locks_per_transaction')::int * (current_setting('max_connections')::int "
                           "+ current_setting('max_prepared_transactions')::int)").fetchone()  # fmt: skip
    assert row is not None
    customers = 3 * row[0]  # the table's nominal size, thrice (it may grow into spare shared memory)
    if customers > 50_000:
        pytest.skip(f"this server's shared lock table holds {row[0]:,} locks: too many customers for a test to outnumber")
    store = PostgresStore(empty_url)
    try:
        store.decisions.submit_decisions([decision(f"d{i}", f"c{i}", T0) for i in range(customers)], {}).result(120)
        assert store.decisions.decision_count() == customers
    finally:
        store.close()


def test_a_new_customers_lock_is_the_row_its_first_writer_makes(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event], empty_url: str
) -> None:
    """Two replicas' first decisions for one customer: the customer has no row yet. The second waits
    for the first (whose transaction made the row) and its write, made on that customer's empty
    history (head 0), is then stale; the first's is stored, its head 1."""
    store, _, release = held
    inside, go_on, pid = threading.Event(), threading.Event(), []
    first = store.decisions.submit_decisions([decision("d1", "new", T0)], {"new": 0})
    holding = store.engine.submit(_hold_open(inside, go_on, pid))
    release.set()
    other = PostgresStore(empty_url)
    try:
        assert inside.wait(10)
        second = other.decisions.submit_decisions([decision("d2", "new", T0)], {"new": 0})
        time.sleep(0.5)
        assert not second.done()  # it waits for the first's transaction
        go_on.set()
        assert (first.result(10), holding.result(10), _settled(second)) == (None, True, StaleHistory)
        assert other.decisions.customer_logs(["new"], T0, T0, 30)["new"].head == 1
        assert other.decisions.decision("d2") is None
    finally:
        go_on.set()
        other.close()


def test_a_worker_that_lost_its_lease_without_dying_writes_nothing(empty_url: str) -> None:
    """The lease's connection is cut (its backend terminated, as a network cut would end it) while
    the worker's process lives on mid-round; a standby takes the lease. The old worker's next
    writes, a snapshot and a join run, are refused and leave nothing; the standby's are stored; a
    store that never held the lease (a server, a CLI) writes as before; the old one, once it holds
    the lease again, writes again."""
    zombie, standby, server = open_store(empty_url), open_store(empty_url), open_store(empty_url)
    snapshot = ModelSnapshot("v1", ["--cb_explore_adf"], b"one", "champion", None)
    try:
        assert zombie.lease.try_acquire()
        zombie.models.save(snapshot).result(timeout=10)
        with psycopg.connect(empty_url, autocommit=True) as admin:
            admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND pid <> pg_backend_pid() "
                "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            )  # this database's: the server's other clients (another suite, a server) are not this test's
        for _ in range(100):  # the server lets the lock go once it has seen the backend end
            if standby.lease.try_acquire():
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the standby never got the lease")
        stale = ModelSnapshot("v2", ["--cb_explore_adf"], b"two", "champion", None)
        with pytest.raises(LeaseLost, match="lease was lost"):
            zombie.models.save(stale).result(timeout=10)
        with pytest.raises(LeaseLost):
            zombie.joins.start_run(T0, T0 + 1, 0).result(timeout=10)
        assert zombie.models.get("champion", "v2") is None
        assert zombie.joins.runs() == []
        standby.models.save(ModelSnapshot("v3", ["--cb_explore_adf"], b"three", "champion", None)).result(timeout=10)
        server.models.save(ModelSnapshot("v4", ["--cb_explore_adf"], b"four", "champion", None)).result(timeout=10)
        assert zombie.models.newest_version("champion") in {"v3", "v4"}
        standby.lease.release()
        assert zombie.lease.try_acquire()
        zombie.models.save(stale).result(timeout=10)
        assert zombie.models.get("champion", "v2") == stale
    finally:
        for store in (zombie, standby, server):
            store.close()


READ_INDEXES = {"decisions_customer_contacts", "decisions_request_id_key", "outcomes_customer_type_time", "customer_heads_pkey"}


def test_a_decides_read_is_one_statement_whose_one_plan_uses_only_the_customers_indexes(empty_url: str) -> None:
    """The read's plan is made once a connection and kept while the tables grow: made on empty
    tables, on empty tables analysed and on small ones, it reads by the customers' and request ids'
    indexes only (one made on an empty table once scanned every recent decision by
    ``decisions_event_time``: 44 ms a read at 20,000 decisions)."""
    store = PostgresStore(empty_url)
    args = {"since": T0 - 7 * DAY, "until": T0 + 7 * DAY, "first": T0, "last": T0, "ids": ["c1"], "requests": ["r-d1", "r-none"]}
    try:
        with psycopg.connect(empty_url, autocommit=True) as conn:
            plans: list[str] = []
            conn.add_notice_handler(lambda notice: plans.append(notice.message_primary or ""))
            conn.execute("LOAD 'auto_explain'")
            for setting in ("log_min_duration = 0", "log_nested_statements = on", "log_level = notice"):
                conn.execute(f"SET auto_explain.{setting}")

            def plan_of_the_read() -> str:
                plans.clear()
                conn.execute("DISCARD PLANS")
                conn.execute(CUSTOMER_LOGS, args).fetchall()
                (plan,) = [p for p in plans if "FROM unnest(ids)" in p]
                return plan

            made = {"empty": plan_of_the_read()}
            conn.execute("ANALYZE")
            made["empty, analysed"] = plan_of_the_read()
            store.decisions.submit_decisions([decision(f"d{i}", f"c{i % 3}", T0 - i * DAY) for i in range(1, 30)]).result()
            store.decisions.submit_outcome(outcome("o1", "c1", T0 - DAY)).result()
            conn.execute("ANALYZE")
            made["small, analysed"] = plan_of_the_read()
            for start in range(0, 2000, 500):  # many outcomes reported ahead of the read's time
                ahead = [outcome(f"a{i}", "c1", T0 + DAY + i) for i in range(start, start + 500)]
                for future in [store.decisions.submit_outcome(o) for o in ahead]:
                    future.result()
            conn.execute("ANALYZE")
            made["outcomes ahead, analysed"] = plan_of_the_read()
            for state, plan in made.items():
                assert "Seq Scan" not in plan, (state, plan)
                used = set(re.findall(r"Index (?:Only )?Scan(?: Backward)? (?:using|on) (\w+)", plan))
                assert used == READ_INDEXES, (state, plan)
            rows = conn.execute(CUSTOMER_LOGS, args).fetchall()
        assert [5, "c1", None, "r-d1", None, None] in map(list, rows) and {row[0] for row in rows} >= {0, 1, 2, 4, 5}
    finally:
        store.close()


def test_maintenance_warnings_say_where_autovacuum_does_not_run(empty_url: str) -> None:
    # The server's own setting decides the first answer (our machines run with autovacuum off); a
    # table with autovacuum switched off is named whatever the server does.
    store = open_store(empty_url)
    try:
        with psycopg.connect(empty_url, autocommit=True) as conn:
            settings = "SELECT current_setting('autovacuum') = 'on' AND current_setting('track_counts') = 'on'"
            server_on = conn.execute(settings).fetchone()
            assert server_on is not None
            assert (store.joins.maintenance_warnings() == []) is server_on[0]
            conn.execute("ALTER TABLE join_queue SET (autovacuum_enabled = false)")
            [warning] = store.joins.maintenance_warnings()
            assert "table join_queue" in warning and "VACUUM ANALYZE" in warning and "decisions" not in warning
    finally:
        store.close()


@pytest.fixture
def dml_role_url(empty_url: str) -> Iterator[str]:
    """``empty_url`` as a role that may use the store's schema and read and write its tables (those
    there now and those made later), but not create anything in it."""
    role = f"t_dml_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(empty_url)
    schema = parts.query.rsplit("%3D", 1)[1]
    with psycopg.connect(empty_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        for grant in ("GRANT USAGE ON SCHEMA {s} TO {r}",
                      "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
                      "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT ON SEQUENCES TO {r}"):  # fmt: skip
            admin.execute(sql.SQL(grant).format(s=sql.Identifier(schema), r=sql.Identifier(role)))
    try:
        yield urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))
    finally:
        with psycopg.connect(empty_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_a_role_without_create_opens_a_store_that_is_up_to_date(empty_url: str, dml_role_url: str) -> None:
    """Opening ran CREATE TABLE IF NOT EXISTS brein_migrations on every store: such a role's every
    command died with a traceback, on a store it could read and write."""
    with pytest.raises(StoreUnavailable, match=r"^permission denied for schema t_\w+: the role needs CREATE on the store's "
                                               r"schema to create or migrate it \(the store to apply\)$"):  # fmt: skip
        open_store(dml_role_url)
    open_store(empty_url).close()
    store = open_store(dml_role_url, create=False)
    try:
        store.decisions.submit_decisions([decision("d1", "c1", T0)]).result()
        assert store.decisions.decision_count() == 1
    finally:
        store.close()
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute("DELETE FROM brein_migrations WHERE name = 'm009_selected_among'")
    pending = r"^must be owner of table policies: the role needs CREATE on the store's schema to create or migrate it"
    with pytest.raises(StoreUnavailable, match=pending + r" \(1 of its \d+ migrations to apply\)$"):
        open_store(dml_role_url)


def test_a_store_a_newer_brein_migrated_is_refused(empty_url: str) -> None:
    """It was opened, and its Decides failed as ALREADY_EXISTS (a column this version does not write)."""
    open_store(empty_url).close()
    with psycopg.connect(empty_url, autocommit=True) as conn:
        conn.execute("INSERT INTO brein_migrations VALUES ('m999_from_the_future', 0)")
    with pytest.raises(UnknownStore, match=r"migrated by a newer Brein \(migrations m999_from_the_future are not this"):
        open_store(empty_url)


def test_only_a_key_written_already_is_a_conflict(empty_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Every integrity error was a Conflict (ALREADY_EXISTS to a caller): a NOT NULL the write breaks
    is the store's or Brein's fault, an internal error, logged."""
    store = open_store(empty_url)
    try:
        store.decisions.submit_decisions([decision("d1", "c1", T0)]).result()
        with pytest.raises(Conflict, match="already"):
            store.decisions.submit_decisions([decision("d1", "c1", T0)]).result()
        with psycopg.connect(empty_url, autocommit=True) as conn:
            conn.execute("ALTER TABLE decisions ADD COLUMN region text NOT NULL DEFAULT 'x'")
            conn.execute("ALTER TABLE decisions ALTER COLUMN region DROP DEFAULT")
            conn.execute("ALTER TABLE audit ADD CHECK (actor <> 'nobody')")
        with pytest.raises(StoreError, match='null value in column "region"') as refused:
            store.decisions.submit_decisions([decision("d2", "c2", T0)]).result()
        with pytest.raises(StoreError, match="violates check constraint") as checked:
            store.audit.record(AuditEntry(T0, "nobody", "test", "", "")).result()
        assert not isinstance(refused.value, Conflict) and not isinstance(checked.value, Conflict)
        causes = [error.value.__cause__ for error in (refused, checked)]
        logged = [r.message for r in caplog.records if r.name == "brein.store"]
        assert logged == [f"the store refused a write: {reason(cause)}" for cause in causes if cause is not None]
    finally:
        store.close()


def _terminate_others(url: str) -> None:
    """End every other connection to ``url``'s database, as dropping it WITH (FORCE) does."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")


def test_a_store_made_anew_at_the_url_is_not_served(empty_url: str) -> None:
    """A database dropped and created again while a server ran: its worker built a new, empty store
    there and the server decided on it (contact caps and quiet periods forgotten), saying nothing.
    Each new connection now checks the store's identity: reads, writes and the lease are refused."""
    store = open_store(empty_url)
    assert isinstance(store, PostgresStore)
    try:
        store.decisions.submit_decisions([decision("d1", "c1", T0)]).result()
        schema = urlsplit(empty_url).query.rsplit("%3D", 1)[1]
        with psycopg.connect(empty_url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {s} CASCADE; CREATE SCHEMA {s}").format(s=sql.Identifier(schema)))
        open_store(empty_url).close()  # another store, made where the first was
        _terminate_others(empty_url)
        deadline = time.monotonic() + 30
        while True:  # the pooled connections fail first (terminated); each new one finds the other store
            try:
                store.decisions.decision_count()
                pytest.fail("a store made anew at the URL was read")
            except StoreReplaced as error:
                assert re.search(r"holds another store \(\S+\), not the store this process opened", str(error))
                break
            except StoreUnavailable:
                assert time.monotonic() < deadline
        with pytest.raises(StoreReplaced):
            store.decisions.submit_decisions([decision("d2", "c2", T0)]).result()
        with pytest.raises(StoreReplaced):
            store.lease.try_acquire()
    finally:
        store.close()


def test_the_worker_beside_a_server_creates_no_store(empty_url: str, config: BreinConfig) -> None:
    """It opened the store to create it: after the database was created anew, a new empty store."""
    command = [sys.executable, "-m", "brain.worker_process", empty_url, "INFO"]
    given = config.model_dump_json() + "\n"
    child = subprocess.run(command, input=given, capture_output=True, text=True, timeout=60, check=False)
    assert child.returncode == 1 and len(child.stderr.splitlines()) == 1, child.stderr
    assert "the worker cannot work on the store: no store in the PostgreSQL database" in child.stderr
    assert _tables(empty_url) == []


@pytest.fixture
def serializable_url(postgres_database: str) -> Iterator[str]:
    """A new database whose default isolation an operator set to SERIALIZABLE (ALTER DATABASE ... SET)."""
    name = f"brein_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_database, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        serializable = sql.SQL("ALTER DATABASE {} SET default_transaction_isolation = 'serializable'")
        admin.execute(serializable.format(sql.Identifier(name)))
    try:
        yield urlunsplit(urlsplit(postgres_database)._replace(path=f"/{name}"))
    finally:
        with psycopg.connect(postgres_database, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


ISOLATION = "SELECT current_setting('transaction_isolation')"


def test_every_connection_is_read_committed_whatever_the_databases_default(serializable_url: str) -> None:
    """Brein's reads, its writes and its lease ran at the database's default: serializable, whose
    aborts failed Decides, Forgets and outcomes as UNAVAILABLE (nothing tries them again)."""
    with psycopg.connect(serializable_url, autocommit=True) as conn:
        assert conn.execute(ISOLATION).fetchone() == ("serializable",)
    store = PostgresStore(serializable_url)
    try:
        assert store.engine.value(ISOLATION) == "read committed"
        assert store.engine.submit(lambda conn: conn.execute(ISOLATION).fetchone()).result(10) == ("read committed",)
        assert store.lease.try_acquire()
        assert store.lease._conn is not None and store.lease._conn.execute(ISOLATION).fetchone() == ("read committed",)
    finally:
        store.close()


def test_replicas_opening_a_new_store_at_once_both_open_it_whatever_the_databases_default(serializable_url: str) -> None:
    """Both wait for the migration lock; the first creates the store. The second's transaction took
    its snapshot before that wait, and under the database's default (serializable) it did not see the
    store made meanwhile and failed creating it again: "relation ... already exists"."""
    with psycopg.connect(serializable_url, autocommit=True) as holder:
        holder.execute(f"SELECT pg_advisory_lock({lock_key('migrations')})")
        opened: list[PostgresStore | BaseException] = []

        def open_one() -> None:
            try:
                opened.append(PostgresStore(serializable_url))
            except BaseException as error:  # noqa: BLE001 - the test reports it
                opened.append(error)

        openers = [threading.Thread(target=open_one) for _ in range(2)]
        for opener in openers:
            opener.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted AND database = " \
                  "(SELECT oid FROM pg_database WHERE datname = current_database())"  # fmt: skip
        deadline = time.monotonic() + 30
        while holder.execute(waiting).fetchone() != (2,):
            assert time.monotonic() < deadline, "the two openers never waited for the migration lock"
            time.sleep(0.02)
        holder.execute(f"SELECT pg_advisory_unlock({lock_key('migrations')})")
        for opener in openers:
            opener.join(60)
    try:
        assert [type(store) for store in opened] == [PostgresStore, PostgresStore], opened
    finally:
        for store in opened:
            if isinstance(store, PostgresStore):
                store.close()


def test_two_joiners_starting_runs_at_once_number_them_apart(
    held: tuple[PostgresStore, list[tuple[float, int, bool]], threading.Event], empty_url: str
) -> None:
    """A run was numbered MAX(run) + 1 and inserted, with nothing between two processes doing so: the
    second read the same MAX while the first's row was not committed, then failed on join_runs' key
    (`brein join` beside a server's worker)."""
    store, _, release = held
    inside, go_on = threading.Event(), threading.Event()

    def hold_open(conn: object) -> bool:  # after the first's start_run, in its transaction
        inside.set()
        return go_on.wait(10)

    first = store.joins.start_run(T0, T0 - 1, 0)
    holding = store.engine.submit(hold_open)
    release.set()
    assert inside.wait(10)
    other = PostgresStore(empty_url)
    try:
        second = other.joins.start_run(T0, T0 - 1, 0)
        time.sleep(0.5)  # the second waits (for the first's lock, or its key) until the first commits
        go_on.set()
        assert (first.result(10), holding.result(10), _settled(second)) == (1, True, 2)
        assert [run.run for run in other.joins.runs()] == [1, 2]
    finally:
        go_on.set()
        other.close()
