"""The one module that talks to Vowpal Wabbit (vowpal-wabbit-next): a cb_explore_adf policy.

A VW workspace is not safe to share between threads, so every call into it holds a lock. Parsed
action examples are cached: actions never change, and VW leaves unlabelled examples as they were
after predict and learn (the learned model is byte-identical to one learned from fresh parses).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from vowpal_wabbit_next import CBLabel, Example, TextFormatParser, Workspace

from bandit.catalog import Action
from bandit.config import LearnerConfig
from bandit.features import SharedFeatures, action_line

COLD_START = "cold-start"


def vw_arguments(config: LearnerConfig) -> list[str]:
    args = ["--cb_explore_adf", "--quiet"]
    if config.exploration == "squarecb":
        args.append("--squarecb")
    else:
        args += ["--epsilon", str(config.epsilon)]
    for pair in config.interactions:
        args += ["-q", pair]
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


class VWPolicy:
    def __init__(self, args: Sequence[str], model_data: bytes | None = None) -> None:
        self.args = list(args)
        self._workspace = Workspace(self.args, model_data=model_data)
        self._parser = TextFormatParser(self._workspace)
        self._lock = threading.Lock()
        self._action_examples: dict[str, Example] = {}
        self.examples_learned = 0
        self.version = COLD_START if model_data is None else hashlib.sha256(model_data).hexdigest()[:12]

    @property
    def cold(self) -> bool:
        """No model and nothing learned yet: serve uniform exploration over the eligible actions."""
        return self.version == COLD_START and self.examples_learned == 0

    def _action_example(self, action: Action) -> Example:
        example = self._action_examples.get(action.id)
        if example is None:
            example = self._parser.parse_line(action_line(action))
            self._action_examples[action.id] = example
        return example

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]:
        """The exploration distribution over ``actions``, in their order (``features`` are in the line)."""
        if self.cold:
            return [1.0 / len(actions)] * len(actions)
        with self._lock:
            shared = self._parser.parse_line(shared_line)
            scored = self._workspace.predict_one([shared] + [self._action_example(a) for a in actions])
        probabilities = [0.0] * len(actions)
        for index, probability in scored:
            probabilities[index] = probability
        total = sum(probabilities)
        return [p / total for p in probabilities]

    def learn(self, example: LabelledExample) -> None:
        with self._lock:
            lines = [self._parser.parse_line(example.shared_line)] + [self._action_example(a) for a in example.actions]
            labelled = self._parser.parse_line(action_line(example.actions[example.chosen]))
            labelled.set_label(CBLabel(label=(example.cost, example.probability)))
            lines[1 + example.chosen] = labelled
            self._workspace.learn_one(lines)
            self.examples_learned += 1

    def serialize(self) -> bytes:
        with self._lock:
            return self._workspace.serialize()

    def copy(self) -> VWPolicy:
        """An independent copy (same version) that can learn while this one serves."""
        twin = VWPolicy(self.args, None if self.cold else self.serialize())
        twin.version = self.version
        return twin


def contributions(args: Sequence[str], model_data: bytes, shared_line: str, action: Action) -> list[tuple[str, float]]:
    """Each feature's weight x value in the action's predicted cost, named through VW's invert hash.

    A fresh workspace that records feature names scores the shared features with this one action;
    its readable model then lists exactly the weights that prediction touched.
    """
    workspace = Workspace(list(args), model_data=model_data, record_feature_names=True)
    parser = TextFormatParser(workspace)
    workspace.predict_one([parser.parse_line(shared_line), parser.parse_line(action_line(action))])
    values = _feature_values(shared_line + " " + action_line(action))
    result = []
    for line in workspace.readable_model(include_feature_names=True).splitlines():
        parts = line.split(":")
        if len(parts) < 3 or "^" not in parts[0] and parts[0] != "Constant":
            continue
        name = parts[0]
        weight = float(parts[2].split()[0])
        value = 1.0
        for term in name.split("*"):
            value *= values.get(term, 1.0)
        if weight * value != 0.0:
            result.append((name, weight * value))
    result.sort(key=lambda item: abs(item[1]), reverse=True)
    return result


def _feature_values(text: str) -> dict[str, float]:
    """Map 'namespace^feature' to its value, as the invert hash names terms."""
    values: dict[str, float] = {}
    namespace = ""
    for token in text.split():
        if token.startswith("|"):
            namespace = token[1:]
        elif token != "shared":
            name, _, value = token.partition(":")
            values[f"{namespace}^{name}"] = float(value) if value else 1.0
    return values
