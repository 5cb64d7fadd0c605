"""Online learning: joined examples train the champion in join order (run, event time), and every
so many examples a snapshot is stored and handed over to serve.

Learning runs outside the serving model (VW's own driver continues from the last snapshot), so
it never holds the lock that predictions take. Each snapshot records how far it has learned, so
a restarted server continues where its last snapshot stopped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from itertools import islice
from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import LabelledExample, VWPolicy, train
from bandit.store import ModelSnapshot, SQLiteStore

log = logging.getLogger("brein.learner")

Cursor = tuple[int, float, str]
START: Cursor = (0, 0.0, "")
FETCH = 5000


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

    def read(self, after: Cursor = START) -> Iterator[tuple[Cursor, LabelledExample, sqlite3.Row]]:
        """Yield (position, example, the joined row) for every learned-from example after ``after``."""
        conn = self.store.db.conn
        position = after
        while True:
            rows = conn.execute(
                "SELECT j.run, j.event_time, j.decision_id, j.reward, j.credit, d.features, d.eligible, d.action_id, d.probability, "
                "d.pmf, d.shadow, d.shared_line FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
                "WHERE j.status = 'joined' AND (j.run, j.event_time, j.decision_id) > (?, ?, ?) "
                "ORDER BY j.run, j.event_time, j.decision_id LIMIT ?",
                (*position, FETCH),
            ).fetchall()
            for row in rows:
                position = (row["run"], row["event_time"], row["decision_id"])
                eligible = json.loads(row["eligible"])
                example = LabelledExample(
                    shared_line=row["shared_line"] if self.logged_lines and row["shared_line"] else self.encoder.shared_line(json.loads(row["features"])),
                    actions=tuple(action_from_id(self.catalog, a) for a in eligible),
                    chosen=eligible.index(row["action_id"]),
                    probability=row["probability"],
                    cost=-row["reward"] / self.scale,
                )
                yield position, example, row
            if len(rows) < FETCH:
                return

class OnlineLearner:
    def __init__(
        self,
        config: BreinConfig,
        store: SQLiteStore,
        args: list[str],
        model_data: bytes | None,
        publish: Callable[[VWPolicy], None],
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
        examples = self.reader.read(self.position)
        learned = 0
        while True:
            chunk = list(islice(examples, self.config.learner.snapshot_every))
            if not chunk:
                return learned
            self.model_data, count = train(self.args, self.model_data, (example for _, example, _ in chunk))
            self.position = chunk[-1][0]
            learned += count
            self.snapshot()

    def snapshot(self) -> VWPolicy:
        """Store the model as it is now and hand a fresh copy of it to ``publish``."""
        served = VWPolicy(self.args, self.model_data)
        if self.model_data is not None:
            self.store.save_model(ModelSnapshot(served.version, served.args, self.model_data, self.policy_id, list(self.position)))
        self.publish(served)
        return served
