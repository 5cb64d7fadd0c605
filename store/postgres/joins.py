"""The joiner's state on PostgreSQL (store.ports.JoinState) and its joined examples in learning
order (store.ports.JoinedExamples).

A run reads its facts in one statement, streamed customer by customer (CLOSING). A write of
examples takes its decisions out of the join queue (``DELETE ... RETURNING``) and COPYs in the
examples of those it took, in one transaction: a decision forgotten meanwhile, or joined by an
earlier write, gets none.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from concurrent.futures import Future
from contextlib import closing
from itertools import groupby
from operator import itemgetter
from typing import Any

from store.postgres.engine import Connection, Engine
from store.postgres.schema import lock_key
from store.records import (
    START,
    ClosingCustomer,
    Cursor,
    JoinDecision,
    JoinedExample,
    JoinRun,
    LateCustomer,
    LateOutcome,
    LearningRow,
    LoggedExample,
    OutcomeFacts,
    ProvisionalExample,
    StoredStage,
    WrittenExamples,
)
from store.rows import (
    EXAMPLE_COLUMNS,
    EXAMPLE_STATUS,
    NEW_OUTCOMES,
    RUN_COLUMNS,
    example_rows,
    from_json,
    late_customers,
    late_windows,
    learning_rows,
    logged_examples,
    new_stage_keys,
    stored_stages,
    written_examples,
)

DEQUEUE = "DELETE FROM join_queue WHERE decision_id = ANY(%b::text[]) RETURNING decision_id"
COPY_EXAMPLES = f"COPY joined_examples ({EXAMPLE_COLUMNS}) FROM STDIN (FORMAT BINARY)"
EXAMPLE_TYPES = ["text", "text", "float8", "int8", "text", "float8", "float8", "text", "text", "int8"]
"""EXAMPLE_COLUMNS' types, for a binary COPY: 0.6-1.0 us of the joiner's CPU a row against 2.5-4.3
as text (each value escaped), and 1.5-5 us of wall against 12-19 into a temporary table (50,000 rows,
load 12). A write is one DELETE and one COPY, whatever its size."""
LOGGED = (
    "SELECT j.run, j.event_time, j.decision_id, j.reward, d.eligible, d.action_id, d.probability, d.shared_line, "
    "d.features, d.policy_id, d.model_version, j.credit, d.pmf, d.shadow "
    "FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
    "WHERE j.status = 'joined' AND (j.run, j.event_time, j.decision_id) > (%s, %s, %s) "
    "AND j.event_time >= %s AND j.event_time < %s "
    "ORDER BY j.run, j.event_time, j.decision_id LIMIT %s"
)
CLOSED = (
    "WITH customers AS (SELECT DISTINCT d.customer_id FROM join_queue q JOIN decisions d ON d.decision_id = q.decision_id "
    "WHERE {closes}) "
    "SELECT d.customer_id, 0 AS kind, d.event_time, d.decision_id, d.offer, d.channel, d.action_id, a.event_time, "
    "{closes}, NULL::double precision "
    "FROM customers c JOIN decisions d ON d.customer_id = c.customer_id "
    "LEFT JOIN join_queue q ON q.decision_id = d.decision_id LEFT JOIN activations a ON a.decision_id = d.decision_id "
    "WHERE d.event_time <= %(watermark)s "
    "UNION ALL "
    "SELECT o.customer_id, 1, o.event_time, o.outcome_id, o.type, o.decision_id, NULL, NULL, NULL, o.value "
    "FROM customers c JOIN outcomes o ON o.customer_id = c.customer_id WHERE o.seq <= %(horizon)s "
    "ORDER BY 1, 2, 3, 4"
)
CLOSING = CLOSED.format(closes="q.event_time <= %(cutoff)s")
"""Every fact a run needs, in one statement: the closing customers' decisions up to the watermark
(each with its activation and whether it is closing now), then their outcomes up to the horizon,
customer by customer. Set-based, so PostgreSQL chooses the plan for the run's size: for a backlog,
one hash join over each table and a sort; for a few closed decisions, the customer indexes. Read
customer by customer (three queries a batch of 1,000 customers, a nested loop on the customer's
index each) it visited each decision's heap page once per row: 9-11 s of a 200,000-decision join."""
WHOLE_RUN = ("SET LOCAL cursor_tuple_fraction = 1", "SET LOCAL work_mem = '256MB'")
"""A cursor is planned for its first 10% of rows by default (nested loops through the customer
index: a random heap read a decision); CLOSING's rows are all read, and sorted in memory."""
STAGING = CLOSED.format(
    closes="q.event_time > %(since)s AND q.event_time <= %(cutoff)s AND NOT EXISTS "
    "(SELECT 1 FROM provisional_examples p JOIN provisional_stages s ON s.stage = p.stage WHERE p.decision_id = q.decision_id "
    "AND s.age >= (SELECT age FROM provisional_stages WHERE stage = %(stage)s))"
)
"""CLOSING for a provisional stage: the queued decisions in (since, cutoff] without an example of that
stage's age or a later one (one staged later under other windows is not staged again earlier)."""
CHURNED = ("decisions", "join_queue", "outcomes", "joined_examples", "provisional_examples")
"""The tables whose rows the joiner's queries plan over and whose churn (the queue's) autovacuum clears."""
CLOSING_PER_FETCH = 20_000
POSITION = "(decision_id || '#' || stage) COLLATE \"C\""
LEARNING = (
    "SELECT e.run, e.event_time, e.position, e.reward, d.eligible, d.action_id, d.probability, d.shared_line, d.features, "
    "d.policy_id, d.model_version FROM ("
    "(SELECT run, event_time, decision_id AS position, decision_id, reward FROM joined_examples "
    "WHERE status = 'joined' AND (run, event_time, decision_id) > (%(run)s, %(time)s, %(id)s) "
    "ORDER BY run, event_time, decision_id LIMIT %(limit)s) "
    f"UNION ALL (SELECT run, event_time, {POSITION}, decision_id, reward FROM provisional_examples "
    f"WHERE status = 'joined' AND (run, event_time, {POSITION}) > (%(run)s, %(time)s, %(id)s) ORDER BY 1, 2, 3 LIMIT %(limit)s)"
    ") e JOIN decisions d ON d.decision_id = e.decision_id ORDER BY e.run, e.event_time, e.position LIMIT %(limit)s"
)
"""The joined and the provisional examples after a position, in one learning order."""
INSERT_PROVISIONAL = (
    "INSERT INTO provisional_examples SELECT * FROM unnest(%s::text[], %s::int[], %s::text[], %s::float8[], %s::int8[], "
    "%s::text[], %s::float8[]) AS v(decision_id, stage, customer_id, event_time, run, status, reward) "
    "WHERE EXISTS (SELECT 1 FROM join_queue q WHERE q.decision_id = v.decision_id) ON CONFLICT DO NOTHING"
)
LATE = (
    "WITH late AS (SELECT * FROM unnest(%s::text[], %s::float8[], %s::float8[], %s::int8[]) "
    "AS f(customer_id, since, until, newest) "
    "WHERE EXISTS (SELECT 1 FROM decisions d JOIN joined_examples j ON j.decision_id = d.decision_id "
    "WHERE d.customer_id = f.customer_id AND d.event_time >= f.since AND d.event_time < f.until AND j.horizon < f.newest)) "
    "SELECT l.customer_id, d.decision_id, d.event_time, d.offer, d.channel, d.action_id, a.event_time, j.horizon "
    "FROM late l JOIN decisions d ON d.customer_id = l.customer_id AND d.event_time >= l.since AND d.event_time < l.until "
    "LEFT JOIN activations a ON a.decision_id = d.decision_id LEFT JOIN joined_examples j ON j.decision_id = d.decision_id "
    "ORDER BY l.customer_id, d.event_time, d.decision_id"
)
"""The decisions in the late windows (store.rows.late_windows) of the customers one of whose
decisions there was joined before the newest of their new outcomes arrived. The new outcomes are
read first, by themselves: joined back to these customers in one statement, PostgreSQL (before
statistics on a new store) searched the seq range once a customer, 11 s for 20,000 customers."""
INSERT_LATE = ("INSERT INTO late_outcomes SELECT outcome_id, decision_id, %s FROM unnest(%s::text[], %s::text[]) "
               "AS v(outcome_id, decision_id) ON CONFLICT DO NOTHING")  # fmt: skip
"""One statement whatever the number of pairs: a row each (executemany) took 8 s for 900,000."""
RECENT_CREDIT = ("SELECT d.action_id, j.credit FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
                 "WHERE j.status = 'joined' ORDER BY j.run DESC, j.event_time DESC, j.decision_id DESC LIMIT %s")  # fmt: skip
NUMBER_RUNS = f"SELECT pg_advisory_xact_lock({lock_key('join_runs')})"
"""Held by the transaction that numbers a run (JoinState.start_run) until it commits: the next one
(another process's joiner) then reads the run number it stored (READ COMMITTED: a statement sees what
was committed when it began). Without it two joiners took the same MAX(run) + 1, and one failed on
join_runs' key ("duplicate key value violates unique constraint join_runs_pkey": `brein join`
beside a server's worker, 29 of 1,175 runs)."""
COUNT = ("SELECT COUNT(*) FROM joined_examples WHERE status = 'joined' AND (run, event_time, decision_id) > (%s, %s, %s) "
         "AND event_time >= %s AND event_time < %s")  # fmt: skip
COUNT_CHOICES = ("SELECT COUNT(*) FROM joined_examples e JOIN decisions d ON d.decision_id = e.decision_id "
                 "WHERE e.status = 'joined' AND (e.run, e.event_time, e.decision_id) > (%s, %s, %s) "
                 "AND e.event_time >= %s AND e.event_time < %s AND d.probability < 1")  # fmt: skip


class PostgresJoinState:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def watermark(self) -> float | None:
        found = self._engine.value(
            "SELECT GREATEST((SELECT MAX(event_time) FROM decisions), (SELECT MAX(event_time) FROM outcomes))"
        )
        return None if found is None else float(found)

    def outcome_horizon(self) -> int:
        """The newest outcome's seq: outcomes take their seqs under one lock, in commit order, so
        every seq up to the newest one seen is committed."""
        return int(self._engine.value("SELECT COALESCE(MAX(seq), 0) FROM outcomes"))

    def closed_count(self, cutoff: float) -> int:
        return int(self._engine.value("SELECT COUNT(*) FROM join_queue WHERE event_time <= %s", (cutoff,)))

    def closing(self, cutoff: float, watermark: float, horizon: int) -> Generator[ClosingCustomer, None, None]:
        return self._closing(CLOSING, {"cutoff": cutoff, "watermark": watermark, "horizon": horizon})

    def staging(
        self, stage: int, since: float, cutoff: float, watermark: float, horizon: int
    ) -> Generator[ClosingCustomer, None, None]:
        args = {"stage": stage, "since": since, "cutoff": cutoff, "watermark": watermark, "horizon": horizon}
        return self._closing(STAGING, args)

    def _closing(self, query: str, args: dict[str, Any]) -> Generator[ClosingCustomer, None, None]:
        rows = self._engine.streamed(query, args, settings=WHOLE_RUN, per_fetch=CLOSING_PER_FETCH)
        with closing(rows):
            for customer, facts in groupby(rows, key=itemgetter(0)):
                closed: list[JoinDecision] = []
                others: list[JoinDecision] = []
                outcomes: list[OutcomeFacts] = []
                for _, kind, at, key, offer_or_type, channel_or_decision, action, activated, closes, value in facts:
                    if kind:
                        outcomes.append(OutcomeFacts(key, offer_or_type, value, at, channel_or_decision))
                    else:
                        (closed if closes else others).append((key, at, offer_or_type, channel_or_decision, action, activated))
                yield ClosingCustomer(customer, closed, others, outcomes)

    def start_run(self, watermark: float, cutoff: float, horizon: int) -> Future[int]:
        started = time.time()

        def write(conn: Connection) -> int:
            # One numbering at a time (NUMBER_RUNS); runs killed before they finished may have examples
            # and no row: numbered after both.
            conn.execute(NUMBER_RUNS)
            last = conn.execute("SELECT GREATEST((SELECT MAX(run) FROM joined_examples), (SELECT MAX(run) FROM join_runs))")
            run = int((last.fetchone() or (None,))[0] or 0) + 1
            conn.execute("INSERT INTO join_runs (run, watermark, cutoff, horizon, started_at) VALUES (%s, %s, %s, %s, %s)",
                         (run, watermark, cutoff, horizon, started))  # fmt: skip
            return run

        return self._engine.submit(write)

    def write_examples(self, examples: Sequence[JoinedExample]) -> Future[WrittenExamples]:
        rows = example_rows(examples)

        def write(conn: Connection) -> WrittenExamples:
            with conn.cursor() as cursor:
                cursor.execute(DEQUEUE, ([r[0] for r in rows],))
                queued = {decision_id for (decision_id,) in cursor.fetchall()}
                mine = [row for row in rows if row[0] in queued]
                with cursor.copy(COPY_EXAMPLES) as copy:
                    copy.set_types(EXAMPLE_TYPES)
                    for row in mine:
                        copy.write_row(row)
            return written_examples(row[EXAMPLE_STATUS] for row in mine)

        return self._engine.submit(write)

    def stages(self, ages: Sequence[float]) -> list[StoredStage]:
        def write(conn: Connection) -> list[StoredStage]:
            # Two joiners registering at once (a standby's start beside `brein join`) number in turn.
            conn.execute("LOCK TABLE provisional_stages IN SHARE ROW EXCLUSIVE MODE")
            added = new_stage_keys(conn.execute("SELECT age, stage FROM provisional_stages"), ages)
            if added:
                conn.cursor().executemany("INSERT INTO provisional_stages (stage, age) VALUES (%s, %s)", added)
            return stored_stages(conn.execute("SELECT age, stage, staged_until FROM provisional_stages"), ages)

        return self._engine.submit(write).result()

    def write_provisional(self, examples: Sequence[ProvisionalExample], staged: tuple[int, float] | None = None) -> Future[None]:
        columns = [list(column) for column in zip(*sorted(examples), strict=True)] if examples else [[]] * 7

        def write(conn: Connection) -> None:
            conn.execute(INSERT_PROVISIONAL, columns)
            if staged is not None:
                conn.execute("UPDATE provisional_stages SET staged_until = GREATEST(staged_until, %s) WHERE stage = %s",
                             (staged[1], staged[0]))  # fmt: skip

        return self._engine.submit(write)

    def recent_credit(self, limit: int) -> list[tuple[str, dict[str, float]]]:
        return [(action_id, from_json(credit)) for action_id, credit in reversed(self._engine.rows(RECENT_CREDIT, (limit,)))]

    def late_checked(self) -> int:
        return int(self._engine.value("SELECT COALESCE(MAX(late_checked), 0) FROM join_runs"))

    def late_candidates(self, after: int, horizon: int, window: float) -> list[LateCustomer]:
        new = self._engine.rows(f"SELECT {NEW_OUTCOMES} FROM outcomes WHERE seq > %s AND seq <= %s "
                                "ORDER BY customer_id, event_time, outcome_id", (after, horizon))  # fmt: skip
        if not new:
            return []
        windows = late_windows(new, window)
        return late_customers(new, self._engine.rows(LATE, [list(column) for column in zip(*windows, strict=True)]))

    def finish_run(self, run: JoinRun, late: Sequence[LateOutcome]) -> Future[None]:
        marked = (run.run, [outcome_id for outcome_id, _ in late], [decision_id for _, decision_id in late])
        counts = (time.time(), run.joined, run.unactivated, run.late_outcomes, run.late_checked, run.run)

        def write(conn: Connection) -> None:
            conn.execute(INSERT_LATE, marked)
            conn.execute("UPDATE join_runs SET finished_at = %s, joined = %s, unactivated = %s, late_outcomes = %s, "
                         "late_checked = %s WHERE run = %s", counts)  # fmt: skip

        return self._engine.submit(write)

    def pending_count(self) -> int:
        return int(self._engine.value("SELECT COUNT(*) FROM join_queue"))

    def maintenance_warnings(self) -> list[str]:
        """Autovacuum, off for the server or for a table the joiner churns: the join queue's dead rows
        and the planner's statistics are then left as they are (docs/benchmarks.md, "A restarted
        joiner": join runs of a few decisions took 7-8 s on a million-decision store never analysed)."""
        server = self._engine.value("SELECT current_setting('autovacuum') = 'on' AND current_setting('track_counts') = 'on'")
        tables = [name for (name,) in self._engine.rows(
            "SELECT c.relname FROM pg_class c WHERE c.oid = ANY(%s::regclass[]) "
            "AND 'autovacuum_enabled=false' = ANY(COALESCE(c.reloptions, '{}')) ORDER BY 1", (list(CHURNED),))]  # fmt: skip
        off = [] if server else ["the server (autovacuum or track_counts is off)"]
        off += [f"table {name}" for name in tables]
        if not off:
            return []
        return [f"PostgreSQL's autovacuum does not run for {', '.join(off)}: run VACUUM ANALYZE on the store's "
                "tables daily and after bulk imports, or the joiner slows down as the join queue's dead rows and "
                "stale statistics pile up (README, Running on PostgreSQL)"]  # fmt: skip

    def runs(self) -> list[JoinRun]:
        return [JoinRun(*row) for row in self._engine.rows(f"SELECT {RUN_COLUMNS} FROM join_runs ORDER BY run")]


def _span(since: float | None, until: float | None) -> tuple[float, float]:
    return (float("-inf") if since is None else since, float("inf") if until is None else until)


class PostgresJoinedExamples:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def learning(self, after: Cursor, limit: int) -> list[LearningRow]:
        run, at, position = after
        return learning_rows(self._engine.rows(LEARNING, {"run": run, "time": at, "id": position, "limit": limit}))

    def logged(self, after: Cursor, limit: int, *, since: float | None = None, until: float | None = None) -> list[LoggedExample]:
        return logged_examples(self._engine.rows(LOGGED, (*after, *_span(since, until), limit)))

    def count(
        self, *, after: Cursor = START, since: float | None = None, until: float | None = None, choices: bool = False
    ) -> int:
        return int(self._engine.value(COUNT_CHOICES if choices else COUNT, (*after, *_span(since, until))))
