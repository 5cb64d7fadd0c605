"""Cross-fitted reward model for DM and DR: a Vowpal Wabbit regression of reward on (context, action).

Input, per logged decision i: the shared (context) features as VW text, e.g.
``|u tenure:2.3 plan=basic |n touchpoint=web`` (a leading ``shared`` token is accepted and
dropped), one VW-text string per eligible action, e.g. ``|o renewal |c email |s morning``, the
index of the logged action among them and its reward. Each decision contributes one regression
example, its shared and logged action's features on one line, labelled with the reward.

Output: the (n, K) matrix of predicted rewards for every eligible action of every decision,
zero-padded beyond a decision's actions (the layout ``policies.estimators`` takes).

Cross-fitting: the decisions are split at random into k folds; fold j's predictions come from a
model trained on the other k - 1 folds. No decision's prediction has seen its own reward, which
DR needs: a model that memorised r_i would cancel the correction term w_i (r_i - q_i).

Plain Python and numpy in and out: nothing here knows about the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from bandit.learner import VWRegression

__all__ = ["CrossFittedRewardModel"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class CrossFittedRewardModel:
    """Hyper-parameters of the cross-fitted VW regression.

    ``interactions`` are VW ``-q`` pairs of namespace first letters; None crosses every shared
    namespace with every action namespace found in the input (so "which action works for whom"
    can be learned, while shared-only terms cannot rank actions anyway). ``vw_args`` are passed
    through, e.g. ``("--l2", "1e-6")`` or ``("--min_prediction", "0", "--max_prediction", "1")``.
    """

    folds: int = 5
    interactions: tuple[str, ...] | None = None
    passes: int = 1
    vw_args: tuple[str, ...] = ()
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise ValueError(f"folds: expected an integer >= 2, got {self.folds!r}")
        if isinstance(self.passes, bool) or not isinstance(self.passes, int) or self.passes < 1:
            raise ValueError(f"passes: expected an integer >= 1, got {self.passes!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        if self.interactions is not None and (
            not isinstance(self.interactions, tuple)
            or not all(isinstance(pair, str) and len(pair) == 2 and " " not in pair for pair in self.interactions)
        ):
            raise ValueError(
                f"interactions: expected a tuple of two-letter namespace pairs like ('uo', 'uc'), got {self.interactions!r}"
            )
        if not isinstance(self.vw_args, tuple) or not all(isinstance(arg, str) for arg in self.vw_args):
            raise ValueError(f"vw_args: expected a tuple of strings, got {self.vw_args!r}")

    def fit_predict(
        self,
        shared: Sequence[str],
        actions: Sequence[Sequence[str]],
        chosen: Any,
        reward: Any,
    ) -> FloatArray:
        """Cross-fitted predictions (n, K) for every eligible action of every decision."""
        shared_lines = _shared_lines(shared)
        n = len(shared_lines)
        action_lines = _action_lines(actions, n)
        chosen_index = _chosen(chosen, action_lines)
        rewards = np.asarray(reward, dtype=np.float64) if _is_numeric(reward) else None
        if rewards is None or rewards.shape != (n,) or not np.isfinite(rewards).all():
            raise ValueError(f"reward: expected {n} finite numbers, got {_describe(reward)}")
        if n < self.folds:
            raise ValueError(f"folds: expected at most one fold per decision ({n}), got {self.folds}")

        args = ["--quiet", "--random_seed", str(self.seed)]
        for pair in self.interactions if self.interactions is not None else _crossed(shared_lines, action_lines):
            args += ["-q", pair]
        args += list(self.vw_args)

        rng = np.random.default_rng(self.seed)
        fold_of = rng.permutation(n) % self.folds
        offers: dict[tuple[str, ...], int] = {}
        offer_id = [offers.setdefault(tuple(row), len(offers)) for row in action_lines]
        width = max(len(row) for row in action_lines)
        predictions = np.zeros((n, width))
        for fold in range(self.folds):
            model = VWRegression(args)
            train = np.flatnonzero(fold_of != fold)
            for _ in range(self.passes):
                for i in rng.permutation(train):
                    model.learn(float(rewards[i]), f"{shared_lines[i]} {action_lines[i][chosen_index[i]]}")
                model.end_pass()
            # Logs repeat (context, offered actions) pairs; within a fold VW's answer to one does not change.
            seen: dict[tuple[str, int], FloatArray] = {}
            for i in np.flatnonzero(fold_of == fold):
                key = (shared_lines[i], offer_id[i])
                values = seen.get(key)
                if values is None:
                    values = seen[key] = np.array(
                        [model.predict(f"{shared_lines[i]} {action}") for action in action_lines[i]]
                    )
                predictions[i, : values.size] = values
        return predictions


def _shared_lines(shared: Sequence[str]) -> list[str]:
    if isinstance(shared, str) or not isinstance(shared, Sequence) or len(shared) == 0:
        raise ValueError(f"shared: expected a non-empty sequence of VW-text strings, got {_describe(shared)}")
    lines = []
    for i, text in enumerate(shared):
        line = text.strip() if isinstance(text, str) else None
        if line is not None and line.split(maxsplit=1)[:1] == ["shared"]:
            line = line[len("shared") :].lstrip()
        if line is None or "\n" in line or not line.startswith("|"):
            raise ValueError(f"shared[{i}]: expected VW namespaces starting with '|', got {text!r}")
        lines.append(line)
    return lines


def _action_lines(actions: Sequence[Sequence[str]], n: int) -> list[list[str]]:
    if isinstance(actions, str) or not isinstance(actions, Sequence) or len(actions) != n:
        raise ValueError(f"actions: expected {n} sequences of VW-text strings, one per decision, got {_describe(actions)}")
    rows = []
    for i, row in enumerate(actions):
        if isinstance(row, str) or not isinstance(row, Sequence) or len(row) == 0:
            raise ValueError(f"actions[{i}]: expected a non-empty sequence of VW-text strings, got {row!r}")
        for j, text in enumerate(row):
            if not isinstance(text, str) or "\n" in text or not text.strip().startswith("|"):
                raise ValueError(f"actions[{i}][{j}]: expected VW namespaces starting with '|', got {text!r}")
        rows.append([text.strip() for text in row])
    return rows


def _chosen(chosen: Any, action_lines: list[list[str]]) -> npt.NDArray[np.int64]:
    n = len(action_lines)
    index = np.asarray(chosen)
    if index.shape != (n,) or not np.issubdtype(index.dtype, np.integer):
        raise ValueError(f"chosen: expected {n} integer indices, got {_describe(chosen)}")
    counts = np.array([len(row) for row in action_lines])
    bad = (index < 0) | (index >= counts)
    if bad.any():
        i = int(np.argmax(bad))
        got = f"got {int(index[i])} for decision {i} with {counts[i]} actions"
        raise ValueError(f"chosen: expected an index into each decision's actions, {got}")
    return index.astype(np.int64)


def _crossed(shared_lines: list[str], action_lines: list[list[str]]) -> list[str]:
    """Every shared namespace letter paired with every action namespace letter, as ``-q`` arguments."""
    shared = sorted(set().union(*(_namespaces(line) for line in shared_lines)))
    offered = sorted(set().union(*(_namespaces(line) for line in {line for row in action_lines for line in row})))
    return [s + a for s in shared for a in offered]


def _namespaces(line: str) -> set[str]:
    """First letters of the named namespaces in a VW-text line (the unnamed default one has none)."""
    return {token[1] for token in line.split() if token.startswith("|") and len(token) > 1}


def _is_numeric(value: Any) -> bool:
    try:
        np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return True


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"dtype {value.dtype} and shape {value.shape}"
    if isinstance(value, Sequence) and not isinstance(value, str):
        return f"{type(value).__name__} of length {len(value)}"
    return repr(value)
