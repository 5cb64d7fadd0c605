"""The SQLite backend's own behaviour: group commit, durability across reopening, the in-memory
database, store URLs, one migration history (a file from before it migrates in place), processes
opening a new store together. What every backend promises is in tests/test_store_contract.py."""

from __future__ import annotations

import functools
import gzip
import itertools
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bandit.config import BreinConfig
from reward.joiner import Joiner
from store import open_store
from store.errors import Conflict, StoreUnavailable, UnknownStore
from store.opening import sqlite_path
from store.records import START, DecisionRecord, JoinRun, OutcomeRecord, decision_id_for
from store.rows import EVALUATION_COLUMNS, POLICY_COLUMNS
from store.sqlite import SQLiteStore
from store.sqlite.connections import worker_file
from store.sqlite.decisions import SQLiteDecisionLog
from store.sqlite.engine import Engine
from store.sqlite.forgets import Forgets
from store.sqlite.joins import _queue_intake
from store.sqlite.lease import FileLease, holder
from store.sqlite.worker_schema import MOVED_TABLES
from tests.conftest import T0, sqlite_count, sqlite_files, sqlite_rows
from tests.test_store_contract import entry, event

DAY = 86_400.0
BEFORE = Path(__file__).parent / "data" / "store-before-h1.db.gz"
BEFORE_H3 = Path(__file__).parent / "data" / "store-before-h3.db.gz"
"""Main's layout before decisions lost their request_id index (tests/data/make_store_before_h3.py)."""
BEFORE_H9 = Path(__file__).parent / "data" / "store-before-h9.db.gz"
"""Main's layout before the join queue was keyed by event time (tests/data/make_store_before_h3.py run at 08016d9)."""


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    opened = SQLiteStore(tmp_path / "log.db")
    yield opened
    opened.close()


def _decision(decision_id: str, customer: str, at: float) -> DecisionRecord:
    return DecisionRecord(
        decision_id=decision_id, request_id=f"r-{decision_id}", customer_id=customer, touchpoint="app", event_time=at,
        action_id="renewal/email/morning", offer="renewal", channel="email", slot="morning", send_at=at, probability=0.5,
        exploratory=False, policy_id="p", model_version="v", personalised=True, features={"n": {"touchpoint": "app"}},
        eligible=("do_nothing", "renewal/email/morning"), pmf=(0.5, 0.5),
    )  # fmt: skip


def test_a_failing_write_fails_alone_in_its_group(store: SQLiteStore) -> None:
    gate = threading.Event()
    blocker = store.engine.submit(lambda conn: gate.wait(5))  # holds the writer so the next writes queue up as one group
    good = store.decisions.submit_outcome(OutcomeRecord("o1", "c1", "complaint", -50.0, 1.0))

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO outcomes (outcome_id, customer_id, type, value, event_time, decision_id, received_at) "
                     "VALUES ('o2', 'c1', 'complaint', -50, 1, '', 0)")  # fmt: skip
        raise Conflict("half-way")

    bad = store.engine.submit(broken)
    also_good = store.decisions.submit_outcome(OutcomeRecord("o3", "c1", "complaint", -50.0, 2.0))
    gate.set()
    assert blocker.result() is True
    assert good.result() is False and also_good.result() is False
    with pytest.raises(Conflict):
        bad.result()
    assert {r[0] for r in sqlite_rows(store, "SELECT outcome_id FROM outcomes")} == {
        "o1",
        "o3",
    }  # o2 rolled back with its savepoint


def test_close_commits_what_is_queued_and_reopening_keeps_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'log.db'}"
    store = open_store(url)
    futures = [store.decisions.submit_outcome(OutcomeRecord(f"o{i}", "c", "complaint", -1.0, float(i))) for i in range(500)]
    store.close()
    assert all(f.result() is False for f in futures)
    with pytest.raises(StoreUnavailable, match="the store is closed"):
        store.decisions.submit_outcome(OutcomeRecord("late", "c", "complaint", -1.0, 1.0)).result()
    reopened = open_store(url)
    try:
        assert sqlite_count(reopened, "outcomes") == 500 and reopened.joins.outcome_horizon() == 500
        assert sqlite_rows(reopened, "PRAGMA journal_mode")[0][0] == "wal"
    finally:
        reopened.close()


def test_neighbouring_decision_writes_commit_together_and_a_refused_one_fails_alone(store: SQLiteStore) -> None:
    log = store.decisions
    log.submit_decisions([_decision("d0", "c0", 1.0)]).result()
    gate = threading.Event()
    blocker = store.engine.submit(lambda conn: gate.wait(5))  # the next writes queue up as one group
    first = log.submit_decisions([_decision("d1", "c1", 2.0), _decision("d2", "c1", 3.0)])
    again = log.submit_decisions([_decision("d0", "c0", 1.0)])  # already logged: refused
    last = log.submit_decisions([_decision("d3", "c2", 4.0)])
    outcome = log.submit_outcome(OutcomeRecord("o1", "c1", "complaint", -50.0, 5.0))  # not a decision: on its own
    after = log.submit_decisions([_decision("d4", "c3", 6.0)])
    gate.set()
    assert blocker.result() is True
    assert first.result() is None and last.result() is None and after.result() is None and outcome.result() is False
    with pytest.raises(Conflict, match="UNIQUE constraint failed"):
        again.result()
    for table in ("decisions", "join_intake"):  # each decision enters the join intake in the write that logs it
        assert [r[0] for r in sqlite_rows(store, f"SELECT decision_id FROM {table} ORDER BY decision_id")] == [
            "d0",
            "d1",
            "d2",
            "d3",
            "d4",
        ]


def test_a_group_of_decisions_alone_is_one_insert_with_no_savepoint_and_a_refused_one_still_fails_alone(
    store: SQLiteStore,
) -> None:
    log = store.decisions
    logged = _decision("d0", "c0", 1.0)
    log.submit_decisions([logged]).result()
    statements: list[str] = []
    for refused in (None, 1):
        gate, inside = threading.Event(), threading.Event()

        def hold(conn: sqlite3.Connection, gate: threading.Event = gate, inside: threading.Event = inside) -> bool:
            inside.set()
            return gate.wait(5)

        blocker = store.engine.submit(hold)  # the next writes queue up as one group
        assert inside.wait(5)
        ids = [f"r{refused}-{i}" for i in range(4)]
        records = [replace(_decision(decision_id_for(r), f"c{i}", 2.0 + i), request_id=r) for i, r in enumerate(ids)]
        if refused is not None:
            records[refused] = logged
        writes = [log.submit_decisions(records[:2]), log.submit_decisions(records[2:3]), log.submit_decisions(records[3:])]
        store.engine._writer_conn.set_trace_callback(statements.append)
        gate.set()
        if refused is None:
            assert [w.result() for w in writes] == [None, None, None]
        else:
            with pytest.raises(Conflict, match="UNIQUE constraint failed"):
                writes[0].result()
            assert writes[1].result() is None and writes[2].result() is None
        store.engine._writer_conn.set_trace_callback(None)
        assert blocker.result() is True
        if refused is None:  # the blocker's group ends, then this group: four rows in one statement (traced once a trigger)
            run = [text.split(" (")[0] for text, _ in itertools.groupby(statements)]
            assert run == ["RELEASE w", "COMMIT", "BEGIN IMMEDIATE", "INSERT INTO decisions", "COMMIT"]
    assert sqlite_count(store, "join_intake") == sqlite_count(store, "decisions") == 1 + 4 + 2  # the refused write is all or none


def test_an_in_memory_store_reads_what_its_writer_committed_from_any_thread() -> None:
    """One connection, taken by the writer for a whole group commit and by each read between
    commits: every write, once its future resolved, is read back whole by every thread."""
    store = open_store("sqlite:///:memory:")
    assert store.url == "sqlite://" and store.lease.try_acquire()

    def writer(thread: int) -> int:
        seen = 0
        for i in range(60):
            decision = _decision(f"t{thread}-{i}", f"c{thread}", T0 + i)
            store.decisions.submit_decisions([decision]).result()
            assert store.decisions.decision(decision.decision_id) == decision
            seen = len(store.decisions.customer_logs([f"c{thread}"], T0 + 60, T0 + 60, 30.0)[f"c{thread}"].contacts)
            assert seen == i + 1
        return seen

    try:
        with ThreadPoolExecutor(8) as pool:
            assert list(pool.map(writer, range(8))) == [60] * 8
        assert store.decisions.decision_count() == 480 and store.joins.pending_count() == 480
    finally:
        store.close()
    with pytest.raises(StoreUnavailable):
        store.decisions.submit_decisions([_decision("after", "c", T0)]).result()


@pytest.mark.parametrize(("url", "path"), [
    ("sqlite:///var/brein.db", Path("var/brein.db")),
    ("sqlite:////srv/brein/brein.db", Path("/srv/brein/brein.db")),
    ("var/brein.db", Path("var/brein.db")),
    ("/srv/brein.db", Path("/srv/brein.db")),
    ("sqlite://", None),
    ("sqlite:///:memory:", None),
])  # fmt: skip
def test_store_urls_name_their_database(url: str, path: Path | None) -> None:
    assert sqlite_path(url) == path


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql+psycopg://brein@localhost/brein", "got the scheme 'postgresql+psycopg'"),  # a driver is not named
    ("mysql://brein@localhost/brein", "expected a URL starting sqlite:// (or postgresql://), got the scheme 'mysql'"),
    ("sqlite://host/brein.db", "expected sqlite:///relative/path.db or sqlite:////absolute/path.db"),
    ("sqlite:///brein.db?mode=ro", "expected sqlite:///relative/path.db or sqlite:////absolute/path.db"),
    ("", "expected a store URL like sqlite:///var/brein.db, got ''"),
])  # fmt: skip
def test_a_url_no_backend_reads_is_refused_with_the_reason(url: str, message: str) -> None:
    with pytest.raises(UnknownStore, match=re.escape(message)):
        open_store(url)


def test_a_file_that_is_no_store_is_refused_with_the_reason_and_left_as_it_was(tmp_path: Path) -> None:
    """Such a file was an sqlite3.DatabaseError traceback (``brein ... --store /etc/passwd``)."""
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n" * 100)
    with pytest.raises(UnknownStore, match=r"notes\.txt: not a Brein store: file is not a database"):
        open_store(f"sqlite:///{text}")
    assert text.read_text() == "not a database\n" * 100
    log = tmp_path / "brein.db"
    open_store(f"sqlite:///{log}").close()
    (tmp_path / "brein.worker.db").write_bytes(b"SQLite format 3\x00" + b"\xff" * 200)  # the worker's file damaged
    running = set(threading.enumerate())
    with pytest.raises(UnknownStore, match=r"brein\.worker\.db: not a Brein store: file is not a database"):
        open_store(f"sqlite:///{log}")
    assert set(threading.enumerate()) <= running  # the log's engine, opened first, was closed


def test_a_missing_store_is_not_created_when_one_must_exist(tmp_path: Path) -> None:
    with pytest.raises(UnknownStore, match="no store at .*nowhere.db: give --store"):
        open_store(str(tmp_path / "nowhere.db"), create=False)
    assert not (tmp_path / "nowhere.db").exists()


@pytest.mark.parametrize("made", ["empty file", "empty database"])
def test_a_file_holding_no_store_is_not_made_into_one_when_one_must_exist(tmp_path: Path, made: str) -> None:
    """`join` and `log export` (create=False) built a whole new store in a 0-byte log file."""
    path = tmp_path / "brein.db"
    path.touch()
    if made == "empty database":
        with closing(sqlite3.connect(path)) as conn:
            conn.execute("PRAGMA user_version = 1")
    before = path.read_bytes()
    with pytest.raises(UnknownStore, match="no store at .*brein.db: the file holds no tables: give --store"):
        open_store(str(path), create=False)
    assert path.read_bytes() == before and not Path(worker_file(str(path))).exists()


def test_a_database_of_another_application_is_refused_and_left_as_it_was(tmp_path: Path) -> None:
    other = tmp_path / "crm.db"
    with closing(sqlite3.connect(other)) as conn, conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    with pytest.raises(UnknownStore, match=r"crm\.db: not a Brein store: it holds other tables \(customers\) and no record"):
        open_store(f"sqlite:///{other}")
    with closing(sqlite3.connect(other)) as conn:
        assert [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["customers"]


OPEN = """
import sys
from store import open_store
open_store(sys.argv[1]).close()
"""


def test_processes_opening_a_new_store_together_apply_its_migrations_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'brein.db'}"
    processes = [subprocess.Popen([sys.executable, "-c", OPEN, url], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for process in processes:
        assert process.wait(timeout=60) == 0, process.stderr.read() if process.stderr else ""
    with closing(sqlite3.connect(tmp_path / "brein.db")) as conn:
        applied = conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'brein.store' ORDER BY id").fetchall()
    names = [name for (name,) in applied]
    assert len(names) == len(set(names)) == 17
    assert names[0] == "m001_decision_log" and names[-1] == "m017_selected_among"
    with closing(sqlite3.connect(worker_file(str(tmp_path / "brein.db")))) as conn:
        worker = conn.execute("SELECT name FROM _sqlite_migrations WHERE migration_set = 'brein.worker' ORDER BY id").fetchall()
    assert worker == [("m001_worker_tables",), ("m002_provisional_examples",), ("m003_provisional_stages",),
                      ("m004_claims_confirmed",)]  # fmt: skip


def test_a_decision_commits_while_the_worker_holds_its_own_files_write_lock(store: SQLiteStore) -> None:
    """What the worker writes is in a file of its own: a transaction there (a join's write, a
    snapshot) holds no lock a decision's commit waits for. In one file the decision waited for it
    (LOCK_WAIT_SECONDS, then failed)."""
    with closing(sqlite3.connect(worker_file(str(store.path)), isolation_level=None)) as worker:
        worker.execute("BEGIN IMMEDIATE")
        worker.execute("DELETE FROM join_runs")
        store.decisions.submit_decisions([_decision("d1", "c1", 1.0)]).result(timeout=2)
        worker.execute("ROLLBACK")
    assert store.joins.pending_count() == 1


def test_a_count_holds_the_intake_taken_and_the_decisions_logged_since(store: SQLiteStore) -> None:
    """A count takes the intake into the queue first and looks up only the intake logged since."""
    store.decisions.submit_decisions([_decision("d1", "c1", 1.0), _decision("d2", "c2", 2.0)]).result()
    assert store.joins.closed_count(1.5) == 1 and sqlite_count(store, "join_queue") == 2
    store.decisions.submit_decisions([_decision("d3", "c3", 3.0)]).result()
    assert sqlite_count(store, "join_queue") == 2 and store.joins.pending_count() == 3
    assert store.joins.closed_count(3.0) == 3 and sqlite_count(store, "join_queue") == 3


def test_a_queued_decision_that_the_log_no_longer_has_leaves_the_queue_unjoined(store: SQLiteStore) -> None:
    """A joiner that read the intake before Forget deleted a decision takes it into the queue after
    Forget's writes: the read of closed decisions finds it gone and drops it, with no example."""
    store.decisions.submit_decisions([_decision("d1", "c1", 1.0), _decision("d2", "c2", 2.0)]).result()
    read = sqlite_rows(store, "SELECT seq, decision_id, event_time FROM join_intake ORDER BY seq")
    store.privacy.forget("c1", actor="test", at=3.0).result()
    store.worker_engine.submit(functools.partial(_queue_intake, read)).result()
    assert sqlite_count(store, "join_queue") == 2 and store.joins.pending_count() == 2
    assert [customer.customer_id for customer in store.joins.closing(10.0, 10.0, 0)] == ["c2"]
    assert sqlite_rows(store, "SELECT decision_id FROM join_queue") == [("d2",)] and store.joins.pending_count() == 1
    assert sqlite_count(store, "join_intake") == 0  # taken in, then trimmed


def test_forget_run_again_after_its_worker_write_failed_deletes_the_customers_joined_examples(store: SQLiteStore) -> None:
    """Forget deletes from the log's file, then from the worker's. If the second write fails, the log
    no longer names the customer's decisions: a Forget run again finds the joined examples by customer."""
    store.decisions.submit_decisions([_decision("d1", "c1", 1.0), _decision("d2", "c2", 2.0)]).result()
    joined = [(f"d{i}", f"c{i}", float(i), 1, "joined", 1.0, 0.0, {}, (), 0) for i in (1, 2)]
    store.joins.write_examples(joined).result()
    with closing(sqlite3.connect(str(store.path))) as log, log:
        log.execute("DELETE FROM decisions WHERE customer_id = 'c1'")  # as if the log's write had committed alone
    report = store.privacy.forget("c1", actor="test", at=3.0).result()
    assert (report.decisions, report.joined_examples) == (0, 1)
    assert sqlite_rows(store, "SELECT decision_id FROM joined_examples") == [("d2",)]


def test_a_log_opens_only_beside_its_own_workers_file(tmp_path: Path) -> None:
    """A log whose worker's file is gone (decisions already taken from its intake would never be
    joined) or beside another store's worker's file (its snapshots would serve) does not open."""
    log = tmp_path / "brein.db"
    SQLiteStore(log).close()
    other = tmp_path / "other"
    other.mkdir()
    shutil.copyfile(worker_file(str(log)), worker_file(str(other / "brein.db")))
    for sidecar in ("", "-wal", "-shm"):
        Path(worker_file(str(log)) + sidecar).unlink(missing_ok=True)
    with pytest.raises(UnknownStore, match="brein.worker.db is missing or new, beside .*restore both files"):
        SQLiteStore(log)
    with pytest.raises(UnknownStore, match="brein.worker.db is missing or new"):
        SQLiteStore(log)  # still: the empty worker's file the attempt made is not this log's
    with pytest.raises(UnknownStore, match="belongs to another store's log"):
        SQLiteStore(other / "brein.db")  # a new log beside a worker's file that is not its own


def test_the_database_itself_refuses_a_second_champion(store: SQLiteStore) -> None:
    for policy_id in ("champ", "cand"):
        with closing(sqlite3.connect(store.engine.path or "")) as conn, conn:
            conn.execute("INSERT INTO policies (id, kind, artifact, artifact_hash, args, features, parent, created, state, note) "
                         "VALUES (?, 'uniform', NULL, '', '[]', '{}', '', 0, 'candidate', '')", (policy_id,))  # fmt: skip
    with closing(sqlite3.connect(store.engine.path or "")) as conn:
        conn.execute("UPDATE policies SET state = 'champion' WHERE id = 'champ'")
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            conn.execute("UPDATE policies SET state = 'champion' WHERE id = 'cand'")


# -- a file made before the store had one migration history -----------------------------------------


def _snapshot_of(path: Path, queue: str = "join_queue") -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every table; the decisions queued read from ``queue`` (m014's join intake after it)."""
    queries = {
        "decisions": "SELECT decision_id, request_id, customer_id, event_time, action_id, features, eligible, pmf, shadow, "
                     "shared_line FROM decisions ORDER BY decision_id",
        "queue": f"SELECT decision_id, event_time FROM {queue} ORDER BY decision_id",
        "activations": "SELECT * FROM activations ORDER BY decision_id",
        "joined": "SELECT decision_id, customer_id, event_time, run, status, reward, cost, credit, outcomes FROM joined_examples "
                  "ORDER BY decision_id",
        "late": "SELECT * FROM late_outcomes ORDER BY outcome_id, decision_id",
        "models": "SELECT version, args, data, created_at, policy_id, learned FROM models ORDER BY version",
        "policies": f"SELECT {POLICY_COLUMNS.removesuffix(', trained_until, selected_among')} FROM policies ORDER BY id",
        "events": "SELECT * FROM policy_events ORDER BY id",
        "evaluations": f"SELECT id, {EVALUATION_COLUMNS.removesuffix(', gate_window')} FROM evaluations ORDER BY id",
        "audit": "SELECT * FROM audit ORDER BY id",
    }  # fmt: skip
    with closing(sqlite3.connect(path) if queue == "join_queue" else sqlite_files(path)) as conn:
        return {name: conn.execute(query).fetchall() for name, query in queries.items()}


def test_a_store_from_before_one_migration_history_migrates_in_place(tmp_path: Path, config: BreinConfig) -> None:
    path = tmp_path / "brein.db"
    with gzip.open(BEFORE) as packed, path.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    before = _snapshot_of(path)
    with closing(sqlite3.connect(path)) as conn:
        old_outcomes = conn.execute("SELECT rowid, outcome_id, customer_id, type, value, event_time, decision_id FROM outcomes "
                                    "ORDER BY rowid").fetchall()  # fmt: skip
        old_horizons = conn.execute("SELECT decision_id, outcome_rowid FROM joined_examples ORDER BY decision_id").fetchall()
        old_runs = conn.execute("SELECT run, watermark, cutoff, finished_at, joined, unactivated, late_outcomes, "
                                "late_checked_rowid FROM join_runs ORDER BY run").fetchall()  # fmt: skip
        old_sets = conn.execute("SELECT migration_set, name FROM _sqlite_migrations ORDER BY id").fetchall()
    assert {s for s, _ in old_sets} == {"brein.decision_log", "brein.joiner", "brein.registry"}

    store = open_store(f"sqlite:///{path}")
    try:
        assert _snapshot_of(path, "join_intake") == before  # every row kept as it was
        assert sqlite_rows(store, "PRAGMA integrity_check") == [("ok",)]
        # What the worker writes is in its own file now, and only there.
        with closing(sqlite3.connect(path)) as conn:
            left = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert {name for (name,) in left}.isdisjoint({*MOVED_TABLES, "join_queue"})
        # Outcomes are ordered by a seq that is their old rowid; what the client sent is taken as all of it.
        assert sqlite_rows(store, "SELECT seq, outcome_id, customer_id, type, value, event_time, decision_id FROM outcomes "
                                  "ORDER BY seq") == old_outcomes  # fmt: skip
        assert sqlite_rows(store, "SELECT DISTINCT value_sent, event_time_sent FROM outcomes") == [(1, 1)]
        assert sqlite_rows(store, "SELECT decision_id, horizon FROM joined_examples ORDER BY decision_id") == old_horizons
        assert store.joins.runs() == [
            JoinRun(run, watermark, cutoff, checked, joined, unactivated, late, checked, finished)
            for run, watermark, cutoff, finished, joined, unactivated, late, checked in old_runs
        ]
        horizon = store.joins.outcome_horizon()
        assert horizon == old_outcomes[-1][0] and store.joins.late_checked() == old_runs[-1][-1]
        # Read through the ports as any store.
        champion = store.registry.champion()
        assert champion is not None and [e.id for e in store.registry.policies("shadow")] == ["cand"]
        assert [e.trained_until for e in store.registry.policies()] == [None, None]  # m016: no policy's training end known
        assert [e.selected_among for e in store.registry.policies()] == [1, 1]  # m017: none picked among others
        snapshots = list(store.models.newest_first(champion.id))
        assert len(snapshots) == 3 and all(s.learned is not None and s.learned > START for s in snapshots)
        # Old snapshots have no encoding (read as the data-free ``auto``) and are found by (policy, version).
        assert all(s.encoding is None for s in snapshots)
        assert all(store.models.get(champion.id, s.version) == s for s in snapshots)
        assert sqlite_rows(store, "SELECT name FROM pragma_index_list('models') WHERE origin = 'pk'") != []
        assert [c for (c,) in sqlite_rows(store, "SELECT name FROM pragma_index_info("
                                                 "(SELECT name FROM pragma_index_list('models') WHERE origin = 'pk'))")] == [
            "policy_id", "version"]  # fmt: skip
        assert [e.action for e in store.audit.entries()].count("forget") == 1
        queued = store.joins.pending_count()
        assert queued == len(before["queue"]) > 0
        # And it goes on working: a new outcome comes after every old one; the joiner joins the
        # queued decisions once and counts no late outcome twice.
        store.decisions.submit_outcome(OutcomeRecord("new-1", "c1", "complaint", -50.0, T0 + 30 * DAY)).result()
        assert store.joins.outcome_horizon() == horizon + 1
        report = Joiner(config, store.joins).run(until=T0 + 100 * DAY)
        assert report.joined + report.unactivated == queued and report.run == old_runs[-1][0] + 1
        assert sqlite_count(store, "joined_examples") == len(before["joined"]) + queued
        assert sqlite_count(store, "late_outcomes") == len(before["late"]) + report.late_outcomes
    finally:
        store.close()
    again = open_store(str(path))  # a plain path, as configs had it: nothing is applied twice
    try:
        assert sqlite_count(again, "_sqlite_migrations", "WHERE migration_set = 'brein.store'") == 17
        with closing(sqlite3.connect(path)) as conn:
            assert conn.execute("SELECT COUNT(*) FROM _sqlite_migrations").fetchone()[0] == len(old_sets) + 17
    finally:
        again.close()


def _indexes_of_decisions(store: SQLiteStore) -> dict[str, list[str]]:
    names = sqlite_rows(store, "SELECT name FROM pragma_index_list('decisions')")
    return {name: [c for (c,) in sqlite_rows(store, f"SELECT name FROM pragma_index_info('{name}')")] for (name,) in names}


def test_a_store_from_main_with_a_request_id_index_migrates_in_place(tmp_path: Path, config: BreinConfig) -> None:
    """Main's file: every decision kept with its rowid (the joiner's), a decision made by the
    Decider written into no request_id index, and still one decision a request id."""
    path = tmp_path / "brein.db"
    with gzip.open(BEFORE_H3) as packed, path.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    columns = "rowid, decision_id, request_id, customer_id, event_time, features, eligible, pmf, shadow, shared_line"
    with closing(sqlite3.connect(path)) as conn:
        before = conn.execute(f"SELECT {columns} FROM decisions ORDER BY rowid").fetchall()
        queued = conn.execute("SELECT * FROM join_queue ORDER BY decision_id").fetchall()
        assert ["request_id"] in [[c for (c,) in conn.execute(f"SELECT name FROM pragma_index_info('{name}')")]
                                  for (name,) in conn.execute("SELECT name FROM pragma_index_list('decisions')")]  # fmt: skip
    own = [row for row in before if row[1].startswith("own-")]
    assert len(own) == 4 and len(before) > len(own) and len(queued) < len(before)  # some joined, some queued

    store = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SQLiteStore)
        assert sqlite_rows(store, f"SELECT {columns} FROM decisions ORDER BY rowid") == before
        assert sqlite_rows(store, "SELECT decision_id, event_time FROM join_intake ORDER BY decision_id") == queued
        assert sqlite_rows(store, "SELECT decision_id FROM decisions WHERE derived = 0 ORDER BY rowid") == [(r[1],) for r in own]
        assert sqlite_rows(store, "PRAGMA integrity_check") == [("ok",)]
        indexes = _indexes_of_decisions(store)
        assert sorted(indexes.values()) == [
            ["customer_id", "event_time"], ["customer_id", "event_time"], ["decision_id"], ["event_time"], ["request_id"]]
        partial = "SELECT partial FROM pragma_index_list('decisions') WHERE name = 'decisions_request_not_derived'"
        assert sqlite_rows(store, partial) == [(1,)]
        # Found by request id, both kinds, and each request id still gives one decision.
        found = store.decisions.decisions_by_request([r[2] for r in before])
        assert sorted(d.decision_id for d in found.values()) == sorted(r[1] for r in before)
        for record in found.values():
            own_id, derived_id = f"new-{record.decision_id}", decision_id_for(record.request_id)
            for again in (replace(record, decision_id=own_id), replace(record, decision_id=derived_id)):
                if again.decision_id != record.decision_id:
                    with pytest.raises(Conflict):
                        store.decisions.submit_decisions([again]).result()
        fresh = replace(next(iter(found.values())), request_id="fresh", decision_id=decision_id_for("fresh"))
        store.decisions.submit_decisions([fresh]).result()
        assert store.decisions.decisions_by_request(["fresh"]) == {"fresh": fresh}
        assert sqlite_rows(store, "SELECT derived FROM decisions WHERE request_id = 'fresh'") == [(1,)]
    finally:
        store.close()


def _primary_key(store: SQLiteStore, table: str) -> list[str]:
    columns = sqlite_rows(store, f"SELECT name, pk FROM pragma_table_info('{table}') WHERE pk > 0")
    return [name for name, _ in sorted(columns, key=lambda column: column[1])]


def test_a_store_from_main_with_a_queue_keyed_by_decision_migrates_in_place(tmp_path: Path, config: BreinConfig) -> None:
    """Main's file: the queue keeps every entry (in the join intake since m014, in the same order), and
    the worker's queue is keyed by (event time, decision id) with no index beside it; new decisions
    still enter the intake, the joiner empties both once, Forget clears them."""
    path = tmp_path / "brein.db"
    with gzip.open(BEFORE_H9) as packed, path.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    with closing(sqlite3.connect(path)) as conn:
        queued = conn.execute("SELECT decision_id, event_time FROM join_queue ORDER BY event_time, decision_id").fetchall()
        joined = conn.execute("SELECT * FROM joined_examples ORDER BY decision_id").fetchall()
        assert conn.execute("SELECT name FROM pragma_index_list('join_queue') WHERE origin = 'c'").fetchall() != []
    assert len(queued) > 1 and len(joined) > 0

    store = open_store(f"sqlite:///{path}")
    try:
        assert isinstance(store, SQLiteStore)
        assert sqlite_rows(store, "SELECT decision_id, event_time FROM join_intake ORDER BY seq") == queued
        assert _primary_key(store, "join_queue") == ["event_time", "decision_id"]
        assert sqlite_rows(store, "SELECT name FROM pragma_index_list('join_queue') WHERE origin = 'c'") == []
        assert sqlite_rows(store, "SELECT * FROM joined_examples ORDER BY decision_id") == joined
        assert sqlite_rows(store, "PRAGMA integrity_check") == [("ok",)]
        store.decisions.submit_decisions([_decision("after", "c9", T0 + 20 * DAY)]).result()
        assert store.joins.pending_count() == len(queued) + 1
        forgotten = sqlite_rows(store, "SELECT customer_id FROM decisions WHERE decision_id = ?", (queued[0][0],))[0][0]
        queued_of = ("join_intake q JOIN decisions d USING (decision_id)", "WHERE d.customer_id = ?", (forgotten,))
        mine = sqlite_count(store, *queued_of)
        report = store.privacy.forget(forgotten, actor="test", at=T0).result()
        assert report.joined_examples == sum(1 for row in joined if row[1] == forgotten) > 0
        assert sqlite_count(store, *queued_of) == 0
        pending = store.joins.pending_count()
        assert pending == len(queued) + 1 - mine
        run = Joiner(config, store.joins).run(until=T0 + 100 * DAY)
        assert run.joined + run.unactivated == pending and store.joins.pending_count() == 0
        assert Joiner(config, store.joins).run(until=T0 + 100 * DAY).joined == 0
        assert sqlite_count(store, "join_intake") == sqlite_count(store, "join_queue") == 0  # taken in, then trimmed
        assert sqlite_count(store, "joined_examples") == len(joined) - report.joined_examples + pending
    finally:
        store.close()


def _fill_wal(engine: Engine, commits: int = 120) -> None:
    log = SQLiteDecisionLog(engine, Forgets())
    for i in range(commits):
        log.submit_decisions([_decision(f"d{i}-{j}", f"c{j}", T0 + i) for j in range(30)]).result()


def test_commits_never_checkpoint_the_wal_the_stores_own_thread_does(tmp_path: Path) -> None:
    """A Decide's commit never copies the WAL into the database (SQLite's autocheckpoint would past
    1,000 pages); the checkpointer does, on its own connection."""
    path = tmp_path / "wal.db"
    engine = Engine(str(path), checkpoint_seconds=3600.0)
    try:
        assert engine.checkpointer is not None
        size = path.stat().st_size
        _fill_wal(engine)
        assert path.stat().st_size == size  # nothing copied by the commits
        busy, frames, copied = engine.checkpointer.checkpoint()
        assert busy == 0 and frames > 1000 and copied == frames
        assert path.stat().st_size > size
    finally:
        engine.close()


def test_the_checkpointer_runs_on_its_interval_and_stops_with_the_store(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    engine = Engine(str(path), checkpoint_seconds=0.05)
    size = path.stat().st_size
    _fill_wal(engine, commits=20)
    deadline = time.monotonic() + 10
    while path.stat().st_size == size and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.stat().st_size > size
    engine.close()
    assert not any(t.name == "brein-store-checkpointer" for t in threading.enumerate())


@pytest.mark.parametrize("victim", ["log", "worker"])
def test_a_store_file_deleted_while_open_fails_its_writes_within_a_check_and_commits_again_when_put_back(
    tmp_path: Path, victim: str
) -> None:
    """SQLite would go on committing into the unlinked inode: within one checkpointer period of the
    deletion every write of the store (the log's and the worker's) fails, the checkpointer's thread
    fails loudly, and the file put back at its path lets writes commit again."""
    log = tmp_path / "log.db"
    path = log if victim == "log" else Path(worker_file(str(log)))
    failures: list[tuple[str, BaseException]] = []
    store = SQLiteStore(log, on_thread_failure=lambda thread, error: failures.append((thread, error)))
    try:
        store.decisions.submit_decisions([_decision("d0", "c0", 1.0)]).result()
        path.rename(tmp_path / "aside.db")
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        assert failures and isinstance(failures[0][1], StoreUnavailable) and str(path) in str(failures[0][1])
        with pytest.raises(StoreUnavailable, match="deleted or replaced while open"):
            store.decisions.submit_decisions([_decision("d1", "c1", 2.0)]).result()
        with pytest.raises(StoreUnavailable, match="deleted or replaced while open"):
            store.worker_engine.submit(lambda conn: conn.execute("DELETE FROM join_queue")).result()
        with pytest.raises(StoreUnavailable, match="deleted or replaced while open"):  # a write over both files too
            store.registry.register(entry("p"), event("p", "", "candidate"), []).result()
        (tmp_path / "aside.db").rename(path)
        deadline = time.monotonic() + 30  # the failed thread runs again after its pause, and checks again
        while time.monotonic() < deadline:
            try:
                store.decisions.submit_decisions([_decision("d2", "c2", 3.0)]).result()
                break
            except StoreUnavailable:
                time.sleep(0.2)
        assert [r[0] for r in sqlite_rows(store, "SELECT decision_id FROM decisions ORDER BY 1")] == ["d0", "d2"]
    finally:
        store.close()


LEASE_HOLDER = """
import sys
from store.sqlite.lease import FileLease
lease = FileLease(sys.argv[1])
for line in sys.stdin:
    print(lease.try_acquire(), flush=True)
"""


@pytest.fixture
def other_process() -> Iterator[Callable[[Path], Callable[[], bool]]]:
    """Another process's FileLease on the lock file the test names: each call asks for it there."""
    processes: list[subprocess.Popen[str]] = []

    def start(path: Path) -> Callable[[], bool]:
        process = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(path)], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        processes.append(process)

        def ask() -> bool:
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write("\n")
            process.stdin.flush()
            return process.stdout.readline().strip() == "True"

        return ask

    yield start
    for process in processes:
        process.kill()
        process.wait()


@pytest.mark.parametrize("holder_asks_first", [True, False])
def test_a_lease_whose_lock_file_is_removed_is_held_by_one_process_from_the_holders_next_ask(
    tmp_path: Path, other_process: Callable[[Path], Callable[[], bool]], holder_asks_first: bool
) -> None:
    """A flock holds the inode: removing ``brein.db.worker.lock`` let a second worker lock a new file
    while the first held the old one. The holder checks its file at each ask: it locks the new one,
    or gives the lease up to whoever did."""
    path = tmp_path / "brein.db.worker.lock"
    lease = FileLease(str(path))
    other = other_process(path)
    assert lease.try_acquire() and not other()
    assert path.read_text() == f"{os.getpid()}\n" and holder(str(path)) == f"pid {os.getpid()}"
    path.unlink()
    if holder_asks_first:
        assert lease.try_acquire() and not other()
    else:
        assert other() and not lease.try_acquire()
    lease.release()


def test_a_serving_store_is_the_only_one_and_refuses_writes_while_another_holds_its_lock(
    tmp_path: Path, other_process: Callable[[Path], Callable[[], bool]]
) -> None:
    """One server writes a SQLite store: a second serving store is refused naming the first's pid,
    stores that do not serve (the worker, the CLI) open beside it. Its lock file removed and taken by
    another process: from its next check the first's writes fail rather than write beside the other's."""
    log = tmp_path / "brein.db"
    lock = tmp_path / "brein.db.serving.lock"
    failures: list[BaseException] = []
    store = SQLiteStore(log, serving=True, on_thread_failure=lambda thread, error: failures.append(error))
    try:
        with pytest.raises(StoreUnavailable, match=rf"brein.db is served already, by pid {os.getpid()}: one `brein serve`"):
            SQLiteStore(log, serving=True)
        SQLiteStore(log).close()
        store.decisions.submit_decisions([_decision("d0", "c0", 1.0)]).result()
        other = other_process(lock)
        assert not other()  # started, and refused while the store holds the lock
        lock.unlink()
        assert other()
        deadline = time.monotonic() + 10
        while not failures and time.monotonic() < deadline:
            time.sleep(0.05)
        with pytest.raises(StoreUnavailable, match="took this lock: it writes the store now"):
            store.decisions.submit_decisions([_decision("d1", "c1", 2.0)]).result()
    finally:
        store.close()


KILLED_IN_M014 = """
import contextlib, os, sys
import store.sqlite.schema as schema

@contextlib.contextmanager
def closing_then_killed(conn):
    with contextlib.closing(conn):
        yield conn
    os._exit(9)  # the worker's file committed, the log's transaction not: as a SIGKILL there

schema.closing = closing_then_killed
from store.sqlite import SQLiteStore
SQLiteStore(sys.argv[1])
"""


def test_an_old_store_whose_m014_was_killed_after_the_workers_file_committed_opens_again(tmp_path: Path) -> None:
    """m014 commits the store's id in the new worker's file before the log's transaction commits: a
    process killed in between left a log without m014 beside a file claimed with an id that each
    new run, making an id of its own, refused ("belongs to another store's log") for ever. A claim
    no log has confirmed is taken again; one a log confirmed is still another store's."""
    log = tmp_path / "brein.db"
    with gzip.open(BEFORE_H9) as packed, log.open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    killed = subprocess.run([sys.executable, "-c", KILLED_IN_M014, str(log)], capture_output=True, text=True, timeout=60)
    assert killed.returncode == 9, killed.stderr
    with closing(sqlite3.connect(worker_file(str(log)))) as conn:
        (claimed,) = conn.execute("SELECT store_id FROM worker_identity").fetchone()
    with closing(sqlite3.connect(log)) as conn:
        assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'store_identity'").fetchone()
    store = SQLiteStore(log)
    try:
        assert sqlite_rows(store, "SELECT store_id FROM store_identity") == [(claimed,)]
        assert sqlite_count(store, "joined_examples") > 0
    finally:
        store.close()
    other = tmp_path / "other"
    other.mkdir()
    with gzip.open(BEFORE_H9) as packed, (other / "brein.db").open("wb") as unpacked:
        shutil.copyfileobj(packed, unpacked)
    shutil.copyfile(worker_file(str(log)), worker_file(str(other / "brein.db")))
    with pytest.raises(UnknownStore, match="belongs to another store's log"):
        SQLiteStore(other / "brein.db")  # an old log beside a worker's file its own log has confirmed


@pytest.mark.parametrize("migrated", ["log", "worker"])
def test_a_store_migrated_by_a_newer_brein_is_refused_in_one_line_and_left_as_it_was(tmp_path: Path, migrated: str) -> None:
    """A migration this Brein does not know was ignored: the store opened, read and written in a
    layout this Brein does not know."""
    log = tmp_path / "brein.db"
    SQLiteStore(log).close()
    path, history = (log, "brein.store") if migrated == "log" else (Path(worker_file(str(log))), "brein.worker")
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) VALUES (?, 'm099_next', 'x')", (history,))
    before = path.read_bytes()
    with pytest.raises(UnknownStore, match=rf"brein.*db: migrated by a newer Brein: {history} has m099_next, which this Brein"):
        open_store(f"sqlite:///{log}", create=False)
    assert path.read_bytes() == before
