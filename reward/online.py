"""Online learning: joined examples train the champion in join order (run, event time), and every
so many examples a snapshot is stored; servers follow the newest snapshot through the store.

Learning runs outside any serving model (VW's own driver continues from the last snapshot), so
it never holds the lock that predictions take. Each snapshot records how far it has learned, so
a restarted learner continues where its last snapshot stopped.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from itertools import islice

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import ACTION_LINES_MEMO_SIZE, ActionLines, LabelledExample, TextTrainer, action_lines, model_version
from store.ports import JoinedExamples, ModelSnapshots
from store.records import START, Cursor, LoggedExample, ModelSnapshot, SharedFeatures

FETCH = 5000
"""Examples read from the store at a time."""


def action_from_id(catalog: Catalog, action_id: str) -> Action:
    """The catalog's action, or one rebuilt from its id when the catalog no longer has it."""
    known = catalog.by_id.get(action_id)
    if known is not None:
        return known
    offer, _, rest = action_id.partition("/")
    channel, _, slot = rest.partition("/")
    return Action(action_id, offer, channel, slot, 0.0)


def logged_examples(
    examples: JoinedExamples, after: Cursor = START, *, since: float | None = None, until: float | None = None
) -> Iterator[LoggedExample]:
    """Every learned-from example after ``after`` with since <= event time < until, a page at a time."""
    position = after
    while True:
        page = examples.logged(position, FETCH, since=since, until=until)
        yield from page
        if len(page) < FETCH:
            return
        position = page[-1].position


class ExampleReader:
    """Joined examples as VW learning examples, in the order the online learner learns them."""

    def __init__(self, config: BreinConfig, examples: JoinedExamples, *, logged_lines: bool = False) -> None:
        """``logged_lines``: learn from the features exactly as the serving model saw them at decision
        time (online learning); otherwise encode the logged raw features with ``config`` (a candidate
        with other features, an export)."""
        self.logged_lines = logged_lines
        self.examples = examples
        self.catalog = Catalog(config)
        self.encoder = FeatureEncoder(config)
        self.scale = config.learner.reward_scale
        # A logged action list recurs for every customer left the same actions: made into text once.
        self._offered: Callable[[tuple[str, ...]], ActionLines] = functools.lru_cache(ACTION_LINES_MEMO_SIZE)(self._parse_offered)

    def read(
        self, after: Cursor = START, *, since: float | None = None, until: float | None = None
    ) -> Iterator[tuple[Cursor, LabelledExample, LoggedExample]]:
        """Yield (position, example, the joined example as stored) for every learned-from example
        after ``after`` with since <= event time < until."""
        for row in logged_examples(self.examples, after, since=since, until=until):
            offered = self._offered(row.eligible)
            example = LabelledExample(
                shared_line=self._shared_line(row.shared_line, row.features),
                actions=offered.actions,
                chosen=offered.index[row.action_id],
                probability=row.probability,
                cost=-row.reward / self.scale,
            )
            yield row.position, example, row

    def texts(self, after: Cursor = START) -> Iterator[tuple[Cursor, str]]:
        """Yield (position, its VW text) for every learned-from example after ``after``, as online
        learning learns it: from the shared features as the serving model saw them (encoded with
        ``config`` only for a decision logged without them). What ``read`` yields with
        ``logged_lines``, made into text (``example_text``) without building the example."""
        position = after
        while True:
            rows = self.examples.learning(position, FETCH)
            for row in rows:
                offered = self._offered(row.eligible)
                shared = row.shared_line if row.features is None else self.encoder.shared_line(row.features)
                yield row.position, offered.text(shared, offered.index[row.action_id], -row.reward / self.scale, row.probability)
            if len(rows) < FETCH:
                return
            position = rows[-1].position

    def _parse_offered(self, eligible: tuple[str, ...]) -> ActionLines:
        """The actions of a logged action list and their text."""
        return action_lines(tuple(action_from_id(self.catalog, a) for a in eligible))

    def _shared_line(self, logged: str, features: SharedFeatures) -> str:
        return logged if self.logged_lines and logged else self.encoder.shared_line(features)


class OnlineLearner:
    def __init__(
        self,
        config: BreinConfig,
        examples: JoinedExamples,
        models: ModelSnapshots,
        args: list[str],
        model_data: bytes | None,
        *,
        policy_id: str,
        after: Cursor = START,
    ) -> None:
        self.config = config
        self.models = models
        self.policy_id = policy_id
        self.args = args
        self.model_data = model_data
        self.position = after
        self.reader = ExampleReader(config, examples)

    def step(self) -> int:
        """Learn every joined example not learned yet, a snapshot stored every
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
        """Store the model as it is now, with how far it has learned."""
        if self.model_data is None:
            return
        snapshot = ModelSnapshot(model_version(self.model_data), self.args, self.model_data, self.policy_id, self.position)
        self.models.save(snapshot).result()
