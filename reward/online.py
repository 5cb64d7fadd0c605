"""Online learning: joined examples train the champion in join order (run, event time), and every
so many examples a snapshot is stored; servers follow the newest snapshot through the store.

A lineage's first model fixes its numeric encoding: quantile edges learned from the raw features
of the decisions logged by then (bandit/encoding.py), stored with every snapshot after it. A line
logged under another encoding (by another policy, or by the lineage's cold start) is re-encoded
from the raw features.

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
from bandit.encoding import LearnedEncoding, learn_encoding, learns_encoding
from bandit.features import FeatureEncoder
from bandit.learner import (
    ACTION_LINES_MEMO_SIZE,
    COLD_START,
    ActionLines,
    LabelledExample,
    TextTrainer,
    action_lines,
    model_version,
)
from store.ports import DecisionLog, JoinedExamples, ModelSnapshots
from store.records import START, Cursor, LoggedExample, ModelSnapshot, SharedFeatures
from store.rows import from_json

FETCH = 5000
"""Examples read from the store at a time."""
BIRTH_DECISIONS = 100_000
"""Logged decisions a lineage's quantile edges are learned from, at most (the newest ones)."""


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


def encoding_at_birth(config: BreinConfig, decisions: DecisionLog, until: float | None = None) -> LearnedEncoding | None:
    """The encoding a lineage born now fixes: quantile edges of the raw features of the decisions
    logged before ``until`` (None: all), every decision, not only the joined ones (a feature's spread
    does not wait for the outcomes: at a first model there are many times more); None (``auto``) when
    the config learns none."""
    if not learns_encoding(config.features):
        return None
    return learn_encoding(config.features, decisions.features_before(until, BIRTH_DECISIONS))


MONEY_PER_COST = 24.0
"""The default reward scale's divisor: VW's cost of 1 is 1/24 of the config's largest |outcome value|."""
UNSCALED = 10.0
"""The reward scale of a config whose outcome types carry no default value (nothing to scale by)."""


def largest_value(config: BreinConfig) -> float:
    """The largest |default value| of the config's outcome types: the money of its world, in its unit."""
    return max((abs(t.value) for t in config.outcomes.values()), default=0.0)


def reward_scale(config: BreinConfig) -> float:
    """Money per unit of VW's cost: ``learner.reward_scale``, or by default the config's largest
    |outcome value| / MONEY_PER_COST. A fixed number would make learning depend on the unit of
    money: with values counted in cents instead of euros, every cost gap is 100 times as wide to
    SquareCB and `--elim`, and in two generated worlds Brein all but stopped contacting
    (docs/simulation.md, "The unit of money")."""
    if config.learner.reward_scale is not None:
        return config.learner.reward_scale
    largest = largest_value(config)
    return largest / MONEY_PER_COST if largest > 0 else UNSCALED


def contact_margin(config: BreinConfig) -> float:
    """The money a contact is learned as earning less than it did: ``learner.restraint`` times the
    largest |value| of the config's outcome types (scale-free: a share of the world's own money)."""
    return config.learner.restraint * largest_value(config)


class ExampleReader:
    """Joined examples as VW learning examples, in the order the online learner learns them."""

    def __init__(
        self,
        config: BreinConfig,
        examples: JoinedExamples,
        *,
        logged_lines: bool = False,
        encoding: LearnedEncoding | None = None,
        lineage: str | None = None,
    ) -> None:
        """``logged_lines``: learn from the features exactly as the serving model saw them at decision
        time; otherwise encode the logged raw features with ``config`` and ``encoding`` (a candidate
        with other features, an export). ``lineage``: the policy whose logged lines ``texts`` may use
        as they are (they were made with ``encoding``)."""
        self.logged_lines = logged_lines
        self.examples = examples
        self.catalog = Catalog(config)
        self.features = config.features
        self.encoding = encoding
        self.lineage = lineage
        self.encoder = FeatureEncoder(config, encoding)
        self.scale = reward_scale(config)
        self.margin = contact_margin(config)
        # A logged action list recurs for every customer left the same actions: made into text once.
        self._offered: Callable[[tuple[str, ...]], ActionLines] = functools.lru_cache(ACTION_LINES_MEMO_SIZE)(self._parse_offered)

    def read(
        self, after: Cursor = START, *, since: float | None = None, until: float | None = None
    ) -> Iterator[tuple[Cursor, LabelledExample, LoggedExample]]:
        """Yield (position, example, the joined example as stored) for every learned-from example
        after ``after`` with since <= event time < until."""
        for row in logged_examples(self.examples, after, since=since, until=until):
            offered = self._offered(row.eligible)
            chosen = offered.index[row.action_id]
            example = LabelledExample(
                shared_line=self._shared_line(row.shared_line, row.features),
                actions=offered.actions,
                chosen=chosen,
                probability=row.probability,
                cost=self._cost(row.reward, offered.actions[chosen]),
            )
            yield row.position, example, row

    def texts(self, after: Cursor = START) -> Iterator[tuple[Cursor, str]]:
        """Yield (position, its VW text) for every learned-from example after ``after``, as online
        learning learns it: from the shared features as the serving model saw them when it was of
        the ``lineage`` and made with its encoding, else encoded from the raw features."""
        position = after
        while True:
            rows = self.examples.learning(position, FETCH)
            for row in rows:
                offered = self._offered(row.eligible)
                shared = row.shared_line if self._own(row.shared_line, row.policy_id, row.model_version) else (
                    self.encoder.shared_line(from_json(row.features_json)))  # fmt: skip
                chosen = offered.index[row.action_id]
                yield row.position, offered.text(shared, chosen, self._cost(row.reward, offered.actions[chosen]), row.probability)
            if len(rows) < FETCH:
                return
            position = rows[-1].position

    def _cost(self, reward: float, action: Action) -> float:
        """VW's cost of a joined reward: -reward / scale, a contact's less the restraint margin."""
        return -(reward if action.do_nothing else reward - self.margin) / self.scale

    def _parse_offered(self, eligible: tuple[str, ...]) -> ActionLines:
        """The actions of a logged action list and their text."""
        return action_lines(tuple(action_from_id(self.catalog, a) for a in eligible))

    def _own(self, line: str, policy_id: str, version: str) -> bool:
        """Whether a logged line was made with this reader's encoding: the lineage's, after its cold
        start (whose lines were ``auto``) unless the lineage is ``auto`` itself."""
        return bool(line) and policy_id == self.lineage and (version != COLD_START or self.encoding is None)

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
        decisions: DecisionLog,
        policy_id: str,
        after: Cursor = START,
        encoding: LearnedEncoding | None = None,
    ) -> None:
        """``encoding``: the lineage's, from its newest snapshot; a lineage without a model yet
        learns its own from the decision log when it has its first example to learn."""
        self.config = config
        self.examples = examples
        self.decisions = decisions
        self.models = models
        self.policy_id = policy_id
        self.args = args
        self.model_data = model_data
        self.position = after
        self.encoding = encoding
        self.reader = ExampleReader(config, examples, encoding=encoding, lineage=policy_id)

    def step(self) -> int:
        """Learn every joined example not learned yet, a snapshot stored every
        ``learner.snapshot_every`` examples and one for the rest."""
        if self.model_data is None and self.encoding is None and self.examples.learning(self.position, 1):
            self.encoding = encoding_at_birth(self.config, self.decisions)
            self.reader = ExampleReader(self.config, self.examples, encoding=self.encoding, lineage=self.policy_id)
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
        encoding = None if self.encoding is None else self.encoding.to_json()
        data = self.model_data
        snapshot = ModelSnapshot(model_version(data), self.args, data, self.policy_id, self.position, encoding)
        self.models.save(snapshot).result()
