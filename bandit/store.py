"""The decision log: an interface, and its embedded SQLite implementation (WAL, group commit).

Every write goes through one writer thread that commits whatever is queued in one transaction
(group commit: one fsync for many concurrent requests) and only then resolves each write's
future, so a caller that waits on its future holds a durable write. Each write runs in its own
savepoint: one bad write fails alone, the others in its group still commit. Decision writes that
follow one another in a group are inserted together, in multi-row statements, and one by one only
if that fails. Reads use one connection per thread and see only committed data.
"""

from __future__ import annotations

import functools
import itertools
import json
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson
from sqlite_utils import Database, Migrations

from bandit.errors import Conflict, StoreUnavailable
from bandit.history import DAY, HISTORY_DAYS, Contact, CustomerHistory, CustomerLog
from bandit.records import ActivationRecord, DecisionRecord, OutcomeRecord

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], T]
CommitListener = Callable[[float, int, bool], None]
"""Called after every group commit with (seconds, writes in the group, succeeded)."""

MAX_GROUP = 2048

migrations = Migrations("brein.decision_log")


@migrations()
def m001_decision_log(db: Database) -> None:
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
    db.execute(
        """CREATE TABLE activations (
            decision_id TEXT PRIMARY KEY,
            event_time REAL NOT NULL,
            received_at REAL NOT NULL
        )"""
    )
    db.execute(
        """CREATE TABLE models (
            version TEXT PRIMARY KEY,
            args TEXT NOT NULL,
            data BLOB NOT NULL,
            created_at REAL NOT NULL
        )"""
    )


@migrations()
def m002_join_queue_and_audit(db: Database) -> None:
    """Every decision enters the join queue in the transaction that logs it; the joiner takes it
    out in the transaction that writes its joined example: exactly once, whatever gets killed."""
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
    db.execute("ALTER TABLE models ADD COLUMN policy_id TEXT NOT NULL DEFAULT ''")
    db.execute("ALTER TABLE models ADD COLUMN learned TEXT")
    db.execute("CREATE INDEX models_policy ON models (policy_id, created_at)")


@migrations()
def m004_shadow_pmfs(db: Database) -> None:
    db.execute("ALTER TABLE decisions ADD COLUMN shadow TEXT NOT NULL DEFAULT '{}'")


@migrations()
def m005_shared_line(db: Database) -> None:
    """The shared features exactly as the model saw them, so online learning reads, not re-encodes."""
    db.execute("ALTER TABLE decisions ADD COLUMN shared_line TEXT NOT NULL DEFAULT ''")


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    version: str
    args: list[str]
    data: bytes
    policy_id: str = ""
    # The learner's position in the joined examples: [run, event time, decision id].
    learned: list[Any] | None = None


class DecisionLog(Protocol):
    """What the core needs from a store; another database can take SQLite's place behind it."""

    def submit(self, write: Write[T]) -> Future[T]: ...
    def submit_decision(self, record: DecisionRecord) -> Future[None]: ...
    def submit_decisions(self, records: Sequence[DecisionRecord]) -> Future[None]: ...
    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]: ...
    def submit_activation(self, record: ActivationRecord) -> Future[bool]: ...
    def decision(self, decision_id: str) -> DecisionRecord | None: ...
    def decision_by_request(self, request_id: str) -> DecisionRecord | None: ...
    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]: ...
    def history(self, customer_id: str, now: float, lookback_days: float) -> CustomerHistory: ...
    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]: ...
    def save_model(self, snapshot: ModelSnapshot) -> None: ...
    def model(self, version: str) -> ModelSnapshot | None: ...
    def latest_model(self, policy_id: str) -> ModelSnapshot | None: ...
    def snapshots(self, policy_id: str) -> Iterator[ModelSnapshot]: ...
    def close(self) -> None: ...


_DECISION_COLUMNS = (
    "decision_id, request_id, customer_id, touchpoint, event_time, received_at, action_id, offer, channel, slot, "
    "send_at, probability, exploratory, policy_id, model_version, personalised, features, eligible, pmf, "
    "exclusions, contact_consent, shadow, shared_line"
)
_INSERT_DECISIONS = f"INSERT INTO decisions ({_DECISION_COLUMNS}) VALUES "
_INSERT_QUEUED = "INSERT INTO join_queue (decision_id, event_time) VALUES "
ROWS_PER_STATEMENT = (256, 64, 16, 4, 1)
"""Rows one INSERT takes, largest first: few distinct statements to prepare, few executions."""
MAX_IDS = 500
"""Ids bound in one statement (SQLite allows 32766 variables)."""


@functools.lru_cache(maxsize=64)
def _customer_logs_sql(count: int) -> str:
    """The histories of ``count`` customers over a span of decision times, in one statement (see
    CustomerLog): ?1..?count the customer ids (distinct), then the first decision time less the
    lookback, the last decision time, the first decision time."""
    since, last, first = f"?{count + 1}", f"?{count + 2}", f"?{count + 3}"
    # One customer (every unary Decide) is compared directly: no table of wanted ids to build.
    wanted, is_wanted, each = ("", "= ?1", "?1") if count == 1 else (
        f"WITH wanted(id) AS (VALUES {', '.join(f'(?{i + 1})' for i in range(count))})", "IN wanted", "id"
    )
    return f"""{wanted}
SELECT 0, customer_id, event_time, decision_id, channel, offer FROM decisions
    WHERE customer_id {is_wanted} AND event_time >= {since} AND event_time < {last} AND action_id != 'do_nothing'
UNION ALL
SELECT 1, {each}, (SELECT event_time FROM decisions
                   WHERE customer_id = {each} AND event_time < {since} AND action_id != 'do_nothing'
                   ORDER BY event_time DESC LIMIT 1), NULL, NULL, NULL {"" if count == 1 else "FROM wanted"}
UNION ALL
SELECT 2, customer_id, MAX(event_time), type, NULL, NULL FROM outcomes WHERE customer_id {is_wanted} AND event_time < {first}
    GROUP BY customer_id, type
UNION ALL
SELECT 3, customer_id, event_time, type, NULL, NULL FROM outcomes
    WHERE customer_id {is_wanted} AND event_time >= {first} AND event_time < {last}"""


@functools.lru_cache(maxsize=64)
def _decisions_by_request_sql(count: int) -> str:
    return f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE request_id IN ({', '.join('?' * count)})"


def _slices(ids: Collection[str]) -> list[list[str]]:
    """Distinct ids, at most MAX_IDS a statement."""
    distinct = list(dict.fromkeys(ids))
    return [distinct[i : i + MAX_IDS] for i in range(0, len(distinct), MAX_IDS)]


def _json(value: Any) -> str:
    # orjson: the decision row's JSON columns cost a tenth of the standard encoder's time, and
    # Decide encodes six per decision. Compact, like the standard encoder with separators (",", ":").
    return orjson.dumps(value).decode()


def _decision_row(r: DecisionRecord) -> tuple[Any, ...]:
    return (
        r.decision_id, r.request_id, r.customer_id, r.touchpoint, r.event_time, r.received_at, r.action_id,
        r.offer, r.channel, r.slot, r.send_at, r.probability, int(r.exploratory), r.policy_id, r.model_version,
        int(r.personalised), _json(r.features), _json(r.eligible), _json(r.pmf), _json(r.exclusions),
        _json(r.contact_consent), _json(r.shadow), r.shared_line,
    )  # fmt: skip


class _DecisionWrite:
    """Decision rows and their join-queue entries: a write the writer may merge with its neighbours."""

    __slots__ = ("rows", "queued")

    def __init__(self, records: Sequence[DecisionRecord]) -> None:
        self.rows = [_decision_row(r) for r in records]
        self.queued = [(r.decision_id, r.event_time) for r in records]

    def __call__(self, conn: sqlite3.Connection) -> None:
        _insert(conn, _INSERT_DECISIONS, self.rows)
        _insert(conn, _INSERT_QUEUED, self.queued)


def _insert(conn: sqlite3.Connection, insert: str, rows: Sequence[tuple[Any, ...]]) -> None:
    """Rows in multi-row INSERT statements: the writer's thread gives up and takes back the GIL once
    per statement (each SQLite step), not once per row as executemany does, and so waits for it far
    less often while the event loop keeps the GIL busy."""
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


def _event_time(contact: Contact) -> float:
    return contact.event_time


def _decision_from_row(row: sqlite3.Row) -> DecisionRecord:
    return DecisionRecord(
        decision_id=row["decision_id"],
        request_id=row["request_id"],
        customer_id=row["customer_id"],
        touchpoint=row["touchpoint"],
        event_time=row["event_time"],
        received_at=row["received_at"],
        action_id=row["action_id"],
        offer=row["offer"],
        channel=row["channel"],
        slot=row["slot"],
        send_at=row["send_at"],
        probability=row["probability"],
        exploratory=bool(row["exploratory"]),
        policy_id=row["policy_id"],
        model_version=row["model_version"],
        personalised=bool(row["personalised"]),
        features=json.loads(row["features"]),
        eligible=tuple(json.loads(row["eligible"])),
        pmf=tuple(json.loads(row["pmf"])),
        exclusions=json.loads(row["exclusions"]),
        contact_consent=json.loads(row["contact_consent"]),
        shadow={k: tuple(v) for k, v in json.loads(row["shadow"]).items()},
        shared_line=row["shared_line"],
    )


def _snapshot(row: sqlite3.Row) -> ModelSnapshot:
    learned = None if row["learned"] is None else json.loads(row["learned"])
    return ModelSnapshot(row["version"], json.loads(row["args"]), bytes(row["data"]), row["policy_id"], learned)


LOCK_WAIT_SECONDS = 5.0
LOCK_POLL_SECONDS = 0.001


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=LOCK_WAIT_SECONDS)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout = {int(LOCK_WAIT_SECONDS * 1000)}")
    return conn


def _begin(conn: sqlite3.Connection) -> None:
    """Take the write lock, trying every millisecond for up to LOCK_WAIT_SECONDS. SQLite's own busy
    handler sleeps longer and longer between tries (up to 100 ms), so another process writing back
    to back (the join/learn worker) would keep this writer, and every Decide waiting on it, out
    for seconds; a short poll finds the gaps between its transactions."""
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() >= deadline:
                raise
        time.sleep(LOCK_POLL_SECONDS)


def _roll_back_unless_database_failed(conn: sqlite3.Connection, error: Exception) -> None:
    """Undo the savepoint ``w`` of a write that failed on its own; re-raise when the database itself
    failed (disk full, I/O, locked): then the whole group fails."""
    if isinstance(error, sqlite3.Error) and not isinstance(error, sqlite3.IntegrityError):
        raise error
    conn.execute("ROLLBACK TO w")
    conn.execute("RELEASE w")


def _write_alone(
    conn: sqlite3.Connection, write: Write[Any], future: Future[Any]
) -> tuple[Future[Any], Any, BaseException | None]:
    """One write in its own savepoint: (its future, its result, its error)."""
    conn.execute("SAVEPOINT w")
    try:
        result = write(conn)
    except Exception as error:  # a refused row or the write's own failure (a Conflict, ...) fails it alone
        _roll_back_unless_database_failed(conn, error)
        return future, None, error
    conn.execute("RELEASE w")
    return future, result, None


def _write_together(conn: sqlite3.Connection, writes: list[tuple[Write[Any], Future[Any]]]) -> bool:
    """Decision writes in one savepoint, their rows in multi-row statements; False (and nothing
    written) when a row is refused, so that each write can be tried alone and fail alone."""
    decisions = [write for write, _ in writes if isinstance(write, _DecisionWrite)]
    conn.execute("SAVEPOINT w")
    try:
        _insert(conn, _INSERT_DECISIONS, [row for w in decisions for row in w.rows])
        _insert(conn, _INSERT_QUEUED, [queued for w in decisions for queued in w.queued])
    except Exception as error:
        _roll_back_unless_database_failed(conn, error)
        return False
    conn.execute("RELEASE w")
    return True


def _decisions_by_request(conn: sqlite3.Connection, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
    found = {}
    for ids in _slices(request_ids):
        for row in conn.execute(_decisions_by_request_sql(len(ids)), ids):
            found[row["request_id"]] = _decision_from_row(row)
    return found


def _customer_logs(
    conn: sqlite3.Connection, customer_ids: Collection[str], first: float, last: float, lookback_days: float
) -> dict[str, CustomerLog]:
    days = max(lookback_days, HISTORY_DAYS)
    contacts: dict[str, list[Contact]] = {}
    before: dict[str, float | None] = {}
    outcomes: dict[str, list[tuple[str, float]]] = {}
    for ids in _slices(customer_ids):
        rows = conn.execute(_customer_logs_sql(len(ids)), (*ids, first - days * DAY, last, first))
        for part, customer, at, name, channel, offer in rows:
            if part == 0:
                contacts.setdefault(customer, []).append(Contact(name, at, channel, offer))
            elif part == 1:
                before[customer] = at
            elif at is not None:
                outcomes.setdefault(customer, []).append((name, at))
    logs = {}
    for customer in customer_ids:
        mine = contacts.get(customer, [])
        mine.sort(key=_event_time)
        logs[customer] = CustomerLog(days, tuple(mine), before.get(customer), tuple(outcomes.get(customer, ())))
    return logs


class SQLiteStore:
    """The embedded default store: one SQLite file in WAL mode, fsync on every group commit."""

    def __init__(self, path: str | Path, *, on_commit: CommitListener | None = None, commit_pause: float = 0.0) -> None:
        """``commit_pause``: seconds the writer waits after each commit, so that a writer in another
        process (the server's) gets the write lock between this one's transactions."""
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file:"):
            raise ValueError(f"expected a file path (the log needs WAL and several connections), got {self.path!r}")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._writer_conn = _connect(self.path)
        self._writer_conn.execute("PRAGMA journal_mode = WAL")
        self._writer_conn.execute("PRAGMA synchronous = FULL")
        migrations.apply(Database(self._writer_conn))
        self._writer_conn.execute("PRAGMA busy_timeout = 0")  # _begin waits for the write lock instead
        self._commit_pause = commit_pause
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._on_commit = on_commit
        self._queue: queue.SimpleQueue[tuple[Write[Any], Future[Any]] | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="brein-store-writer", daemon=True)
        self._closed = False
        self._writer.start()

    @property
    def db(self) -> Database:
        """A sqlite-utils view on this thread's read connection."""
        return Database(self._reader())

    # -- writes -------------------------------------------------------------------------------

    def submit(self, write: Write[T]) -> Future[T]:
        """Queue a write; its future resolves once the group it joined is durably committed."""
        future: Future[T] = Future()
        if self._closed:
            future.set_exception(StoreUnavailable("the store is closed"))
        else:
            self._queue.put((write, future))
        return future

    def _write_loop(self) -> None:
        conn = self._writer_conn
        while True:
            item = self._queue.get()
            if item is None:
                return
            group = [item]
            while len(group) < MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)
                    break
                group.append(more)
            self._commit_group(conn, group)
            if self._commit_pause:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                time.sleep(self._commit_pause)

    def _commit_group(self, conn: sqlite3.Connection, group: list[tuple[Write[Any], Future[Any]]]) -> None:
        started = time.perf_counter()
        results: list[tuple[Future[Any], Any, BaseException | None]] = []
        try:
            _begin(conn)
            # Runs of neighbouring writes: decision writes together, any other write on its own.
            for merge, run in itertools.groupby(group, key=lambda item: isinstance(item[0], _DecisionWrite)):
                # A write whose caller gave up (deadline) before it began is never written.
                begun = [(write, future) for write, future in run if future.set_running_or_notify_cancel()]
                if merge and len(begun) > 1 and _write_together(conn, begun):
                    results.extend((future, None, None) for _, future in begun)
                else:
                    results.extend(_write_alone(conn, write, future) for write, future in begun)
            conn.execute("COMMIT")
        except sqlite3.Error as error:
            if conn.in_transaction:
                try:
                    conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # SQLite rolls back by itself when the connection next commits or closes
            failure = StoreUnavailable(f"the store could not commit: {error}")
            if self._on_commit:  # counted before any caller hears of it, as a success is
                self._on_commit(time.perf_counter() - started, len(group), False)
            for _, future in group:
                with suppress(InvalidStateError):  # a caller may have cancelled it meanwhile
                    future.set_exception(failure)
            return
        if self._on_commit:
            self._on_commit(time.perf_counter() - started, len(results), True)
        for future, value, failed in results:
            if failed is None:
                future.set_result(value)
            else:
                future.set_exception(failed)

    def submit_decision(self, record: DecisionRecord) -> Future[None]:
        return self.submit_decisions([record])

    def submit_decisions(self, records: Sequence[DecisionRecord]) -> Future[None]:
        """Log decisions (one write: all or none) and queue them for the joiner."""
        return self.submit(_DecisionWrite(records))

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        """Resolves to True when the outcome_id was already stored with the same content."""
        row = (record.outcome_id, record.customer_id, record.type, record.value, record.event_time, record.decision_id, record.received_at)

        def write(conn: sqlite3.Connection) -> bool:
            existing = conn.execute(
                "SELECT customer_id, type, value, event_time, decision_id FROM outcomes WHERE outcome_id = ?", (record.outcome_id,)
            ).fetchone()
            if existing is None:
                conn.execute("INSERT INTO outcomes VALUES (?, ?, ?, ?, ?, ?, ?)", row)
                return False
            if tuple(existing) != row[1:6]:
                raise Conflict(f"outcome_id {record.outcome_id!r} was already recorded with different content")
            return True

        return self.submit(write)

    def submit_activation(self, record: ActivationRecord) -> Future[bool]:
        """Resolves to True when the decision had been activated before (the first time is kept)."""

        def write(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO activations VALUES (?, ?, ?)", (record.decision_id, record.event_time, record.received_at)
            )
            return cursor.rowcount == 0

        return self.submit(write)

    def save_model(self, snapshot: ModelSnapshot) -> None:
        row = (snapshot.version, _json(snapshot.args), snapshot.data, time.time(), snapshot.policy_id,
               None if snapshot.learned is None else _json(snapshot.learned))  # fmt: skip

        def write(conn: sqlite3.Connection) -> None:
            conn.execute("INSERT OR IGNORE INTO models (version, args, data, created_at, policy_id, learned) VALUES (?, ?, ?, ?, ?, ?)", row)

        self.submit(write).result()

    # -- reads --------------------------------------------------------------------------------

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = _connect(self.path)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def decision(self, decision_id: str) -> DecisionRecord | None:
        row = self._reader().execute(f"SELECT {_DECISION_COLUMNS} FROM decisions WHERE decision_id = ?", (decision_id,)).fetchone()
        return None if row is None else _decision_from_row(row)

    def decision_by_request(self, request_id: str) -> DecisionRecord | None:
        return self.decisions_by_request((request_id,)).get(request_id)

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        """The logged decisions of those request ids that have one (one statement for up to MAX_IDS)."""
        return _decisions_by_request(self._reader(), request_ids)

    def history(self, customer_id: str, now: float, lookback_days: float) -> CustomerHistory:
        return self.customer_logs((customer_id,), now, now, lookback_days)[customer_id].at(now)

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        """Every customer's log for histories as of any time in [first, last], in one statement (one
        snapshot) for up to MAX_IDS customers; the history looks back ``lookback_days`` (at least HISTORY_DAYS)."""
        return _customer_logs(self._reader(), customer_ids, first, last, lookback_days)

    def model(self, version: str) -> ModelSnapshot | None:
        row = self._reader().execute("SELECT version, args, data, policy_id, learned FROM models WHERE version = ?", (version,)).fetchone()
        return None if row is None else _snapshot(row)

    def latest_model(self, policy_id: str) -> ModelSnapshot | None:
        return next(self.snapshots(policy_id), None)

    def snapshots(self, policy_id: str) -> Iterator[ModelSnapshot]:
        """The policy's stored snapshots, newest first, read one at a time."""
        rows = self._reader().execute(
            "SELECT version, args, data, policy_id, learned FROM models WHERE policy_id = ? ORDER BY created_at DESC, rowid DESC",
            (policy_id,),
        )
        for row in rows:
            yield _snapshot(row)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close every connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._writer.join()
        self._writer_conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()
