"""The one module that talks to Vowpal Wabbit (vowpal-wabbit-next): a cb_explore_adf policy, and
the plain regression the off-policy reward model fits.

A VW workspace is not safe to share between threads, so every call into it holds a lock. Parsed
action examples are cached: actions never change, and VW leaves unlabelled examples as they were
after predict and learn (the learned model is byte-identical to one learned from fresh parses).
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, cast

import numpy as np
from vowpal_wabbit_next import TextFormatParser, Workspace, _core

from bandit.catalog import Action
from bandit.config import LearnerConfig
from bandit.encoding import LearnedEncoding
from bandit.features import action_line
from bandit.vw_driver import DriverError, shared_driver
from store.records import SharedFeatures

COLD_START = "cold-start"
ACTION_LINES_MEMO_SIZE = 1024
"""Action lists whose text is remembered: an action list recurs for every customer the same rules,
consent and contact policy leave the same actions to."""
ACTION_EXAMPLES_MEMO_SIZE = 1024
"""Action lists (tuples) whose parsed examples a VWPolicy remembers as one list, for the same reason."""


def vw_arguments(config: LearnerConfig) -> list[str]:
    args = ["--cb_explore_adf", "--quiet"]
    if config.exploration == "squarecb":
        args.append("--squarecb")
    else:
        args += ["--epsilon", str(config.epsilon)]
    for term in config.interactions:
        # VW's -q takes pairs only; a triple (e.g. "uoc": user x offer x channel) is an --interactions term.
        args += ["-q", term] if len(term) == 2 else ["--interactions", term]
    return args + list(config.extra_args)


@dataclass(frozen=True, slots=True)
class LabelledExample:
    """One learning example: the shared line, the actions offered, which was taken with what
    probability, and its cost (VW minimises cost: cost = -reward * scale)."""

    shared_line: str
    actions: tuple[Action, ...]
    chosen: int
    probability: float
    cost: float


def model_version(model_data: bytes) -> str:
    """A model's version: the start of its bytes' SHA-256, the same wherever it is computed."""
    return hashlib.sha256(model_data).hexdigest()[:12]


class VWPolicy:
    def __init__(self, args: Sequence[str], model_data: bytes | None = None, encoding: LearnedEncoding | None = None) -> None:
        """``encoding``: the numeric encoding of the model's lineage, the one its lines are made with."""
        self.args = list(args)
        self.encoding = encoding
        self._workspace = Workspace(self.args, model_data=model_data)
        self._parser = TextFormatParser(self._workspace)
        self._predict = _unchecked_predict(self._workspace)
        self._lock = threading.Lock()
        self._action_examples: dict[str, _core.Example] = {}
        # id of an action tuple -> (that tuple, its examples): the tuple is held, so its id is not reused.
        self._example_lists: dict[int, tuple[tuple[Action, ...], list[_core.Example]]] = {}
        self.version = COLD_START if model_data is None else model_version(model_data)

    @property
    def cold(self) -> bool:
        """No model yet: serve uniform exploration over the eligible actions."""
        return self.version == COLD_START

    def _action_example(self, action: Action) -> _core.Example:
        example = self._action_examples.get(action.id)
        if example is None:
            example = self._parser.parse_line(action_line(action))._example
            self._action_examples[action.id] = example
        return example

    def _examples(self, shared: _core.Example, actions: Sequence[Action]) -> list[_core.Example]:
        """The shared example, then the actions' (under the lock). The Decider hands the same tuple
        for the same eligible actions (Decider._eligible): its examples are listed once."""
        if type(actions) is not tuple:  # a list may change after this call: not remembered
            return [shared, *map(self._action_example, actions)]
        found = self._example_lists.get(id(actions))
        if found is None or found[0] is not actions:
            if len(self._example_lists) >= ACTION_EXAMPLES_MEMO_SIZE:
                self._example_lists.clear()
            found = self._example_lists[id(actions)] = (actions, list(map(self._action_example, actions)))
        return [shared, *found[1]]

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]:
        """The exploration distribution over ``actions``, in their order (``features`` are in the line).

        VW's list is made a distribution: SquareCB with ``--elim`` counts one surviving action in
        its denominator, so when actions tie it gives them 1 each and the best one 1 - (ties),
        a negative probability. Negatives count as 0. A list with nothing left to normalise is
        returned as NaN: the decider's check for a non-finite distribution handles it like any other."""
        if self.cold:
            return [1.0 / len(actions)] * len(actions)
        with self._lock:
            shared = self._parser.parse_line(shared_line)._example
            # cb_explore_adf predicts an action-probability list (vowpal-wabbit-next types it as any prediction).
            scored = cast("list[tuple[int, float]]", self._predict(self._examples(shared, actions)))
        probabilities = [0.0] * len(actions)
        for index, probability in scored:
            probabilities[index] = 0.0 if probability < 0.0 else probability  # max(probability, 0.0), NaN kept
        total = sum(probabilities)
        if not total > 0.0:
            return [math.nan] * len(actions)
        return [p / total for p in probabilities]

    def serialize(self) -> bytes:
        with self._lock:
            return self._workspace.serialize()

    def non_finite_weights(self) -> int | None:
        """How many of the model's weights (and their learning-rate state) are NaN or infinite: what
        learning from an infinite cost leaves. numpy counts them over VW's own weight table, without
        a copy and mostly without the GIL (0.2-1 ms for the default 2^18 weights). None for a model
        with ``--sparse_weights``, whose table VW cannot show as one array.

        vowpal-wabbit-next 0.7.0 shows the table as (2^bits, weights a feature, state a weight),
        but VW allocates 2^bits x (state a weight) floats and wraps every feature's several
        weights (``--nn``, ``--lrq``, ``--cover``: more than one) into them: the array claims
        memory past the table, and reading it whole crashed the process. Only the table is read."""
        with self._lock:
            try:
                weights = self._workspace.weights()
            except RuntimeError:  # "weights are sparse, cannot return dense weights"
                return None
            bits, _, state = weights.shape
            table = weights.reshape(-1)[: bits * state]
            return int(np.count_nonzero(~np.isfinite(table)))


def vw_refusal(args: Sequence[str], model_data: bytes | None = None) -> str | None:
    """Why VW does not load ``model_data`` (or start a new model) with ``args``: arguments it does not
    know or cannot combine, a file that is not a whole model for them; None when it does.

    VW reads weights up to the end of a file and adds ``args`` to the options stored in it, so a file
    cut short loaded as a smaller model and one of another reduction (a regression, csoaa, cb_adf) as
    an empty cb_explore_adf. So the file is loaded with its own options too: that model must be written
    back to the file's length, and loading with ``args`` must write the same bytes (both loads reset
    the same counters). A file cut at a weight's boundary is a smaller whole model: the format keeps
    no count of its weights."""
    try:
        policy = VWPolicy(args, model_data)
        if model_data is None:
            return None
        own = Workspace(["--quiet"], model_data=model_data)
    except Exception as error:
        return str(error)
    written = own.serialize()
    if len(written) != len(model_data):
        return f"the file is {len(model_data):,} bytes, the model in it {len(written):,}: cut short or with bytes after it"
    if policy.serialize() != written:
        return f"the file holds a model of {_stored_options(own)}, which these arguments would change"
    return None


def _stored_options(workspace: Workspace[Literal[False]]) -> str:
    """The VW options a model keeps in its file, as VW's readable model shows them (none: a plain regression)."""
    lines = workspace.readable_model().splitlines()
    stored = next((line.removeprefix("options:").strip() for line in lines if line.startswith("options:")), "")
    return repr(stored) if stored else "no options (a plain regression)"


def _unchecked_predict(workspace: Workspace[Literal[False]]) -> Callable[[list[_core.Example]], object]:
    """``workspace``'s multi-line predict without vowpal-wabbit-next's check, in Python, that each
    example's label type is the workspace's: 28 µs of a 69 µs predict over 22 examples, for nothing
    here, where every example is parsed by the workspace's own parser. Its core binding, as the
    pinned vowpal-wabbit-next 0.7.0 calls it (tests/test_decider.py: the same distribution
    as its public ``predict_one``)."""
    return workspace._workspace.predict_multi_ex_one


@dataclass(frozen=True, slots=True)
class ActionLines:
    """The VW text of actions offered together, cut around each action, so that the text of a
    learning example is one join: its shared line, the lines before the chosen action, the chosen
    action's labelled line, the lines after it."""

    actions: tuple[Action, ...]
    index: dict[str, int]
    lines: tuple[str, ...]
    before: tuple[str, ...]
    after: tuple[str, ...]

    def text(self, shared_line: str, chosen: int, cost: float, probability: float) -> str:
        """One learning example in VW's multi-line text format, the label on action ``chosen``."""
        return f"{shared_line}\n{self.before[chosen]}0:{cost!r}:{probability!r} {self.lines[chosen]}\n{self.after[chosen]}"


@lru_cache(maxsize=ACTION_LINES_MEMO_SIZE)
def action_lines(actions: tuple[Action, ...]) -> ActionLines:
    lines = tuple(action_line(action) for action in actions)
    ends = [line + "\n" for line in lines]
    return ActionLines(
        actions=actions,
        index={action.id: i for i, action in enumerate(actions)},
        lines=lines,
        before=tuple("".join(ends[:i]) for i in range(len(ends))),
        after=tuple("".join(ends[i + 1 :]) + "\n" for i in range(len(ends))),
    )


def example_text(example: LabelledExample) -> str:
    """One learning example in VW's multi-line text format, the label on the chosen action."""
    return action_lines(example.actions).text(example.shared_line, example.chosen, example.cost, example.probability)


def train(args: Sequence[str], model_data: bytes | None, examples: Iterable[LabelledExample]) -> tuple[bytes | None, int]:
    """Learn ``examples`` in order, continuing from ``model_data`` (or from scratch with ``args``).
    Returns the new model and how many were learned."""
    with TextTrainer(args) as trainer:
        return trainer.learn(model_data, map(example_text, examples))


class TextTrainer:
    """Learns examples given as VW text (``example_text``) with VW's own driver, chunk after chunk
    in one temporary folder, each chunk continuing from the model it is given.

    VW's driver reads the text with its C++ reader: faster than learning one example at a time
    through the Python API, and the same model as learning all chunks in one uninterrupted run,
    since a saved model resumes its learning state (given its arguments again). It runs with
    ``onethread``: the driver holds the GIL anyway, and its background parser thread cost more than
    it saved in every run measured, most of all per snapshot-sized chunk (docs/benchmarks.md,
    "Online learning").

    The driver runs in a process of its own (bandit/vw_driver.py: in this one it would take Ctrl-C
    away for good), shared by the trainers of this process.
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> TextTrainer:
        self._folder = tempfile.TemporaryDirectory(prefix="brein-vw-")
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def learn(self, model_data: bytes | None, texts: Iterable[str]) -> tuple[bytes | None, int]:
        """Learn ``texts`` in order, continuing from ``model_data`` (or from scratch with the
        trainer's ``args``). Returns the new model and how many examples were learned."""
        if self._folder is None:
            raise ValueError("expected a TextTrainer entered with 'with', got one outside it")
        folder = Path(self._folder.name)
        try:
            count = _write_texts(folder / "examples.txt", texts)
            return (self._run_driver(folder, model_data), count) if count else (model_data, 0)
        finally:
            # The next chunk writes new files: truncating a file to rewrite it makes ext4 write it
            # out to disk first (its replace-via-truncate safeguard), a new one stays in the page cache.
            for file in folder.iterdir():
                file.unlink()

    def _run_driver(self, folder: Path, model_data: bytes | None) -> bytes:
        """VW's driver on ``folder``'s examples.txt, from ``model_data``: the model it learned."""
        source = [a for a in self.args if a != "--quiet"]
        if model_data is not None:
            # A model file keeps only some of its options (--l1 and --l2 are not among them): the
            # arguments go with every chunk, or a resumed model would learn without the ones it lost.
            (folder / "in.vw").write_bytes(model_data)
            source += ["-i", str(folder / "in.vw")]
        try:
            with shared_driver() as driver:
                driver.run(["--quiet", "-d", str(folder / "examples.txt"), "-f", str(folder / "out.vw"), *source])
        except DriverError as error:
            raise ValueError(f"VW could not learn with {' '.join(self.args)}: {error}") from None
        return (folder / "out.vw").read_bytes()


def _write_texts(path: Path, texts: Iterable[str]) -> int:
    """Write ``texts`` to ``path``; how many there were."""
    count = 0
    with path.open("w", encoding="utf-8") as out:
        for text in texts:
            out.write(text)
            count += 1
    return count


class VWRegression:
    """A VW regression workspace on VW-text lines: learn ``features`` labelled with a value, predict
    the value of ``features``. Not shared between threads (one per fitted model)."""

    def __init__(self, args: Sequence[str]) -> None:
        self.args = list(args)
        self._workspace = Workspace(self.args)
        self._parser = TextFormatParser(self._workspace)

    def learn(self, label: float, features: str) -> None:
        """One example: ``features`` is VW text without a label, e.g. ``|u plan=basic |o renewal``."""
        self._workspace.learn_one(self._parser.parse_line(f"{float(label)!r} {features}"))

    def predict(self, features: str) -> float:
        return cast(float, self._workspace.predict_one(self._parser.parse_line(features)))  # a regression's prediction

    def end_pass(self) -> None:
        """The end of one pass over the data (what VW's ``--passes`` does between passes)."""
        self._workspace.end_pass()


def contributions(args: Sequence[str], model_data: bytes, shared_line: str, action: Action) -> list[tuple[str, float]]:
    """Each feature's weight x value in the action's predicted cost, named through VW's invert hash.

    A fresh workspace that records feature names scores the shared features with this one action;
    its readable model then lists exactly the weights that prediction touched. It is read on VW's
    own separators, "\\n" and " ": a name keeps what Python's splitlines() and split() also break
    on (U+2028, NEL, U+3000, ...).
    """
    workspace = Workspace(list(args), model_data=model_data, record_feature_names=True)
    parser = TextFormatParser(workspace)
    workspace.predict_one([parser.parse_line(shared_line), parser.parse_line(action_line(action))])
    values = _feature_values(shared_line + " " + action_line(action))
    result = []
    for line in workspace.readable_model(include_feature_names=True).split("\n"):
        parts = line.split(":")
        if len(parts) < 3 or "^" not in parts[0] and parts[0] != "Constant":
            continue
        name = parts[0]
        weight = float(parts[2].split(" ")[0])
        value = 1.0
        for term in name.split("*"):
            value *= values.get(term, 1.0)
        if weight * value != 0.0:
            result.append((name, weight * value))
    result.sort(key=lambda item: abs(item[1]), reverse=True)
    return result


def _feature_values(text: str) -> dict[str, float]:
    """Map 'namespace^feature' to its value, as the invert hash names terms (tokens are separated by
    " " alone: ``vw_safe`` escapes VW's other separators)."""
    values: dict[str, float] = {}
    namespace = ""
    for token in text.split(" "):
        if token.startswith("|"):
            namespace = token[1:]
        elif token != "shared":
            name, _, value = token.partition(":")
            values[f"{namespace}^{name}"] = float(value) if value else 1.0
    return values
