"""Online learning: joined examples train the champion in join order (run, event time), and every
so many examples a snapshot is stored and handed over to serve.

The learner trains its own VW workspace; serving gets a fresh copy of each snapshot, so learning
never holds the lock that predictions take. Each snapshot records how far it has learned, so a
restarted server continues where its last snapshot stopped.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Iterator
from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import LabelledExample, VWPolicy
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

    def __init__(self, config: BreinConfig, store: SQLiteStore) -> None:
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
                "d.pmf, d.shadow FROM joined_examples j JOIN decisions d ON d.decision_id = j.decision_id "
                "WHERE j.status = 'joined' AND (j.run, j.event_time, j.decision_id) > (?, ?, ?) "
                "ORDER BY j.run, j.event_time, j.decision_id LIMIT ?",
                (*position, FETCH),
            ).fetchall()
            for row in rows:
                position = (row["run"], row["event_time"], row["decision_id"])
                eligible = json.loads(row["eligible"])
                example = LabelledExample(
                    shared_line=self.encoder.shared_line(json.loads(row["features"])),
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
        model: VWPolicy,
        publish: Callable[[VWPolicy], None],
        *,
        policy_id: str,
        after: Cursor = START,
    ) -> None:
        self.config = config
        self.store = store
        self.policy_id = policy_id
        self.model = model
        self.publish = publish
        self.position = after
        self.reader = ExampleReader(config, store)

    def step(self) -> int:
        """Learn every joined example not learned yet; snapshot and publish as configured."""
        learned = since_snapshot = 0
        for position, example, _ in self.reader.read(self.position):
            self.model.learn(example)
            self.position = position
            learned += 1
            since_snapshot += 1
            if since_snapshot >= self.config.learner.snapshot_every:
                self.snapshot()
                since_snapshot = 0
        if since_snapshot:
            self.snapshot()
        return learned

    def snapshot(self) -> VWPolicy:
        """Store the model as it is now and hand a fresh copy of it to ``publish``."""
        data = self.model.serialize()
        served = VWPolicy(self.model.args, data)
        self.store.save_model(ModelSnapshot(served.version, served.args, data, self.policy_id, list(self.position)))
        self.publish(served)
        return served
