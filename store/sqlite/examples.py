"""Joined examples in learning order on SQLite (store.ports.JoinedExamples)."""

from __future__ import annotations

from typing import Any

from store.records import START, Cursor, LearningRow, LoggedExample
from store.rows import learning_rows, logged_examples
from store.sqlite.engine import Engine

ORDERED = (
    "SELECT j.run, j.event_time, j.decision_id, j.reward, d.eligible, d.action_id, d.probability, d.shared_line, "
    "d.features, d.policy_id, d.model_version{more} "
    "FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
    "WHERE j.status = 'joined' AND (j.run, j.event_time, j.decision_id) > (?, ?, ?) AND j.event_time >= ? AND j.event_time < ? "
    "ORDER BY j.run, j.event_time, j.decision_id LIMIT ?"
)
LEARNING = ORDERED.format(more="")
LOGGED = ORDERED.format(more=", j.credit, d.pmf, d.shadow")
COUNT = ("SELECT COUNT(*) FROM joined_examples WHERE status = 'joined' AND (run, event_time, decision_id) > (?, ?, ?) "
         "AND event_time >= ? AND event_time < ?")  # fmt: skip


def _span(since: float | None, until: float | None) -> tuple[float, float]:
    return (float("-inf") if since is None else since, float("inf") if until is None else until)


class SQLiteJoinedExamples:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def _fetch(self, query: str, after: Cursor, limit: int, since: float | None, until: float | None) -> list[Any]:
        with self._engine.reading(with_worker=True) as conn:
            return conn.execute(query, (*after, *_span(since, until), limit)).fetchall()

    def learning(self, after: Cursor, limit: int) -> list[LearningRow]:
        return learning_rows(self._fetch(LEARNING, after, limit, None, None))

    def logged(self, after: Cursor, limit: int, *, since: float | None = None, until: float | None = None) -> list[LoggedExample]:
        return logged_examples(self._fetch(LOGGED, after, limit, since, until))

    def count(self, *, after: Cursor = START, since: float | None = None, until: float | None = None) -> int:
        with self._engine.reading(with_worker=True) as conn:
            return int(conn.execute(COUNT, (*after, *_span(since, until))).fetchone()[0])
