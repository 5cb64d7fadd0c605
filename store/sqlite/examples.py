"""Joined examples in learning order on SQLite (store.ports.JoinedExamples)."""

from __future__ import annotations

from store.records import START, Cursor, LearningRow, LoggedExample
from store.rows import learning_rows, logged_examples
from store.sqlite.engine import Engine

LOGGED = (
    "SELECT j.run, j.event_time, j.decision_id, j.reward, d.eligible, d.action_id, d.probability, d.shared_line, "
    "d.features, d.policy_id, d.model_version, j.credit, d.pmf, d.shadow "
    "FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
    "WHERE j.status = 'joined' AND (j.run, j.event_time, j.decision_id) > (?, ?, ?) AND j.event_time >= ? AND j.event_time < ? "
    "ORDER BY j.run, j.event_time, j.decision_id LIMIT ?"
)
LEARNING = (
    "SELECT e.run, e.event_time, e.position, e.reward, d.eligible, d.action_id, d.probability, d.shared_line, d.features, "
    "d.policy_id, d.model_version FROM ("
    "SELECT * FROM (SELECT run, event_time, decision_id AS position, decision_id, reward FROM joined_examples "
    "WHERE status = 'joined' AND (run, event_time, decision_id) > (?1, ?2, ?3) ORDER BY run, event_time, decision_id LIMIT ?4) "
    "UNION ALL SELECT * FROM (SELECT run, event_time, decision_id || '#' || stage AS position, decision_id, reward "
    "FROM provisional_examples WHERE status = 'joined' AND (run, event_time, decision_id || '#' || stage) > (?1, ?2, ?3) "
    "ORDER BY run, event_time, position LIMIT ?4)"
    ") e JOIN decisions d ON d.decision_id = e.decision_id ORDER BY e.run, e.event_time, e.position LIMIT ?4"
)
"""The joined and the provisional examples after a position, in one learning order."""
COUNT = ("SELECT COUNT(*) FROM joined_examples WHERE status = 'joined' AND (run, event_time, decision_id) > (?, ?, ?) "
         "AND event_time >= ? AND event_time < ?")  # fmt: skip
COUNT_CHOICES = ("SELECT COUNT(*) FROM joined_examples e JOIN decisions d ON d.decision_id = e.decision_id "
                 "WHERE e.status = 'joined' AND (e.run, e.event_time, e.decision_id) > (?, ?, ?) "
                 "AND e.event_time >= ? AND e.event_time < ? AND d.probability < 1")  # fmt: skip


def _span(since: float | None, until: float | None) -> tuple[float, float]:
    return (float("-inf") if since is None else since, float("inf") if until is None else until)


class SQLiteJoinedExamples:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def learning(self, after: Cursor, limit: int) -> list[LearningRow]:
        with self._engine.reading(with_worker=True) as conn:
            return learning_rows(conn.execute(LEARNING, (*after, limit)).fetchall())

    def logged(self, after: Cursor, limit: int, *, since: float | None = None, until: float | None = None) -> list[LoggedExample]:
        with self._engine.reading(with_worker=True) as conn:
            return logged_examples(conn.execute(LOGGED, (*after, *_span(since, until), limit)).fetchall())

    def count(
        self, *, after: Cursor = START, since: float | None = None, until: float | None = None, choices: bool = False
    ) -> int:
        with self._engine.reading(with_worker=True) as conn:
            return int(conn.execute(COUNT_CHOICES if choices else COUNT, (*after, *_span(since, until))).fetchone()[0])
