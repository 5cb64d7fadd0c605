"""Online learning: joined examples train the champion in join order (run, event time), and every
so many examples a snapshot is stored and handed over to serve.

Learning runs outside the serving model (VW's own driver continues from the last snapshot), so
it never holds the lock that predictions take. Each snapshot records how far it has learned, so
a restarted server continues where its last snapshot stopped.
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import ACTION_LINES_MEMO_SIZE, ActionLines, LabelledExample, TextTrainer, action_lines, model_version
from bandit.store import ModelSnapshot, SQLiteStore

log = logging.getLogger("brein.learner")

Cursor = tuple[int, float, str]
START: Cursor = (0, 0.0, "")
FETCH = 5000
ORDERED = (
    "SELECT j.run, j.event_time, j.decision_id, {columns} "
    "FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
    "WHERE j.status = 'joined' AND (j.run, j.event_time, j.decision_id) > (?, ?, ?) "
    "ORDER BY j.run, j.event_time, j.decision_id LIMIT ?"
)
LEARN_COLUMNS = "j.reward, d.eligible, d.action_id, d.probability, d.shared_line, d.features"
EXPORT_COLUMNS = f"{LEARN_COLUMNS}, j.credit, d.pmf, d.shadow"


def action_from_id(catalog: Catalog, action_id: str) -> Action:
    """The catalog's action, or one rebuilt from its id when the catalog no longer has it."""
    known = catalog.by_id.get(action_id)
    if known is not None:
        return known
    offer, _, rest = action_id.partition("/")
    channel, _, slot = rest.partition("/")
    return Action(action_id, offer, channel, slot, 0.0)


class ExampleReader:
    """Joined examples as VW learning examples, in the order the online learner learns them."""

    def __init__(self, config: BreinConfig, store: SQLiteStore, *, logged_lines: bool = False) -> None:
        """``logged_lines``: learn from the features exactly as the serving model saw them at decision
        time (online learning); otherwise encode the logged raw features with ``config`` (a candidate
        with other features, an export)."""
        self.logged_lines = logged_lines
        self.store = store
        self.catalog = Catalog(config)
        self.encoder = FeatureEncoder(config)
        self.scale = config.learner.reward_scale
        # A logged action list (its JSON) recurs for every customer left the same actions: parsed once.
        self._offered: Callable[[str], ActionLines] = functools.lru_cache(maxsize=ACTION_LINES_MEMO_SIZE)(self._parse_offered)

    def read(self, after: Cursor = START) -> Iterator[tuple[Cursor, LabelledExample, sqlite3.Row]]:
        """Yield (position, example, the joined row) for every learned-from example after ``after``."""
        for row in self._rows(EXPORT_COLUMNS, after, sqlite3.Row):
            offered = self._offered(row["eligible"])
            example = LabelledExample(
                shared_line=self._shared_line(row["shared_line"], row["features"]),
                actions=offered.actions,
                chosen=offered.index[row["action_id"]],
                probability=row["probability"],
                cost=-row["reward"] / self.scale,
            )
            yield (row["run"], row["event_time"], row["decision_id"]), example, row

    def texts(self, after: Cursor = START) -> Iterator[tuple[Cursor, str]]:
        """Yield (position, its VW text) for every learned-from example after ``after``: what
        ``read`` yields, made into text (``example_text``) without building the example."""
        rows = self._rows(LEARN_COLUMNS, after, None)
        for run, event_time, decision_id, reward, eligible, action_id, probability, shared_line, features in rows:
            offered = self._offered(eligible)
            shared = self._shared_line(shared_line, features)
            yield (
                (run, event_time, decision_id),
                offered.text(shared, offered.index[action_id], -reward / self.scale, probability),
            )

    def _rows(self, columns: str, after: Cursor, row_factory: type[sqlite3.Row] | None) -> Iterator[Any]:
        """The joined rows after ``after`` in learning order, ``FETCH`` per query: position, then ``columns``."""
        cursor = self.store.db.conn.cursor()
        cursor.row_factory = row_factory
        sql = ORDERED.format(columns=columns)
        position = after
        while True:
            rows = cursor.execute(sql, (*position, FETCH)).fetchall()
            yield from rows
            if len(rows) < FETCH:
                return
            position = (rows[-1][0], rows[-1][1], rows[-1][2])

    def _parse_offered(self, eligible: str) -> ActionLines:
        """The actions of a logged action list (JSON) and their text."""
        return action_lines(tuple(action_from_id(self.catalog, a) for a in json.loads(eligible)))

    def _shared_line(self, logged: str, features: str) -> str:
        return logged if self.logged_lines and logged else self.encoder.shared_line(json.loads(features))


class OnlineLearner:
    def __init__(
        self,
        config: BreinConfig,
        store: SQLiteStore,
        args: list[str],
        model_data: bytes | None,
        publish: Callable[[ModelSnapshot], None],
        *,
        policy_id: str,
        after: Cursor = START,
    ) -> None:
        self.config = config
        self.store = store
        self.policy_id = policy_id
        self.args = args
        self.model_data = model_data
        self.publish = publish
        self.position = after
        self.reader = ExampleReader(config, store, logged_lines=True)

    def step(self) -> int:
        """Learn every joined example not learned yet, a snapshot (stored, then served) every
        ``learner.snapshot_every`` examples and one for the rest."""
        texts = self.reader.texts(self.position)
        learned = 0
        with TextTrainer(self.args) as trainer:
            while chunk := list(islice(texts, self.config.learner.snapshot_every)):
                self.model_data, count = trainer.learn(self.model_data, (text for _, text in chunk))
                self.position = chunk[-1][0]
                learned += count
                self.snapshot()
        return learned

    def snapshot(self) -> None:
        """Store the model as it is now and hand the stored snapshot to ``publish``."""
        if self.model_data is None:
            return
        snapshot = ModelSnapshot(model_version(self.model_data), self.args, self.model_data, self.policy_id, list(self.position))
        self.store.save_model(snapshot)
        self.publish(snapshot)
