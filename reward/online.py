"""Online learning: joined examples train the champion in join order (run, event time), and every
so many examples a snapshot is stored; servers follow the newest snapshot through the store.

A lineage's first model fixes its numeric encoding: quantile edges learned from the raw features
of the decisions logged by then (bandit/encoding.py), stored with every snapshot after it. A line
logged under another encoding (by another policy, or by the lineage's cold start) is re-encoded
from the raw features.

Learning runs outside any serving model (VW's own driver continues from the last snapshot), so
it never holds the lock that predictions take. Each snapshot records how far it has learned, so
a restarted learner continues where its last snapshot stopped.

Every model the learner goes on from or stores passes the probe servers use (brain/probe.py). A
few extreme values can leave weights that are not finite (VW's adaptive, normalised update sums
g²x² in float32), and a model that has them stays so: learning on from it would refuse every later
snapshot for good, and a restarted learner would learn the same examples into the same state. The
examples that do it are found and set aside (``OnlineLearner.learn_finite``), the rest are learned.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
    VWPolicy,
    action_lines,
    model_version,
)
from store.ports import DecisionLog, JoinedExamples, ModelSnapshots
from store.records import START, Cursor, LoggedExample, ModelSnapshot, SharedFeatures
from store.rows import from_json

log = logging.getLogger("brein.learner")

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


Probe = Callable[[VWPolicy], str | None]
"""Why a model must not serve (or be learned on from), or None: brain/probe.py's ``Prober.check``."""
IDS_LOGGED = 10
"""Decision ids a warning about examples set aside names at most (the count is always given)."""


@dataclass(frozen=True, slots=True)
class LearnRun:
    """What a learner's step did: examples learned, and the decision ids of those set aside."""

    learned: int
    set_aside: tuple[str, ...] = ()


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
        probe: Probe,
        after: Cursor = START,
        encoding: LearnedEncoding | None = None,
    ) -> None:
        """``encoding``: the lineage's, from its newest snapshot; a lineage without a model yet
        learns its own from the decision log when it has its first example to learn. ``probe``: the
        check every model passes before it is learned on from or stored."""
        self.config = config
        self.examples = examples
        self.decisions = decisions
        self.models = models
        self.policy_id = policy_id
        self.args = args
        self.model_data = model_data
        self.position = after
        self.encoding = encoding
        self.probe = probe
        self.reader = ExampleReader(config, examples, encoding=encoding, lineage=policy_id)

    def step(self) -> LearnRun:
        """Learn every joined example not learned yet, a snapshot stored every
        ``learner.snapshot_every`` examples and one for the rest. An example whose learning leaves
        the model failing the probe is set aside: not learned, but passed like the others, so the
        position a snapshot records moves past it and a restart never learns it either."""
        if self.model_data is None and self.encoding is None and self.examples.learning(self.position, 1):
            self.encoding = encoding_at_birth(self.config, self.decisions)
            self.reader = ExampleReader(self.config, self.examples, encoding=self.encoding, lineage=self.policy_id)
        texts = self.reader.texts(self.position)
        learned = 0
        set_aside: list[str] = []
        with TextTrainer(self.args) as trainer:
            while chunk := list(islice(texts, self.config.learner.snapshot_every)):
                self.model_data, count, aside = self.learn_finite(trainer, self.model_data, chunk)
                self.position = chunk[-1][0]
                learned += count
                set_aside += aside
                self.snapshot()
        if set_aside:
            more = len(set_aside) - IDS_LOGGED
            shown = ", ".join(set_aside[:IDS_LOGGED]) + (f" and {more} more" if more > 0 else "")
            log.warning("set aside %d joined examples of %s: learning each left a model the probe refuses (decisions %s)",
                        len(set_aside), self.policy_id, shown, extra={"set_aside": len(set_aside)})  # fmt: skip
        return LearnRun(learned, tuple(set_aside))

    def learn_finite(
        self, trainer: TextTrainer, model_data: bytes | None, chunk: Sequence[tuple[Cursor, str]]
    ) -> tuple[bytes | None, int, list[str]]:
        """``chunk`` learned from ``model_data``, a model passing the probe (or none yet): the model
        after it, how many were learned, the decision ids of those set aside. When the model after
        the whole chunk fails the probe, each half is learned in turn the same way, from the model
        the one before it left: what is left of a single example that fails is set aside. One probe
        a chunk while nothing fails; about two a halving for each example set aside."""
        learned, count = trainer.learn(model_data, (text for _, text in chunk))
        if self.probe(VWPolicy(self.args, learned, self.encoding)) is None:
            return learned, count, []
        if len(chunk) == 1:
            return model_data, 0, [chunk[0][0][2]]
        half = len(chunk) // 2
        model_data, first, aside = self.learn_finite(trainer, model_data, chunk[:half])
        model_data, second, more = self.learn_finite(trainer, model_data, chunk[half:])
        return model_data, first + second, aside + more

    def snapshot(self) -> None:
        """Store the model as it is now, with how far it has learned."""
        if self.model_data is None:
            return
        encoding = None if self.encoding is None else self.encoding.to_json()
        data = self.model_data
        snapshot = ModelSnapshot(model_version(data), self.args, data, self.policy_id, self.position, encoding)
        self.models.save(snapshot).result()
