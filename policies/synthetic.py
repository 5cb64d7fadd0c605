"""Reference problems for the off-policy estimators, shared by the tests and ``bench/estimators.py``.

A synthetic logged-bandit problem whose policy values are known exactly (coverage of the
intervals, bias of DM under a wrong model), the estimators configured for its binary rewards, and
the cases on which IPS, SNIPS and the Cressie-Read interval are compared with vw-estimators.
Nothing here is used while serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from policies.estimators import DM, DR, IPS, SNDR, SNIPS, ClippedIPS, Estimator, LoggedDecisions
from policies.open_bandit import load_open_bandit_log

__all__ = ["BINARY", "ParityCase", "Problem", "all_estimators", "parity_cases", "simulate", "synthetic_problem", "vw_estimators"]

BINARY = (0.0, 1.0)
FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Problem:
    """Context types drawn uniformly; type c offers its first ``eligible[c]`` of K actions.

    ``mean[c, a]`` is the Bernoulli reward probability; ``logging``, ``target`` and ``baseline``
    are (contexts, K) distributions, zero beyond a type's actions. ``model`` is a deliberately
    wrong reward model (shrunk towards 0.3), fixed, so DM is biased and DR must not be.
    """

    eligible: npt.NDArray[np.int64]
    mean: FloatArray
    logging: FloatArray
    target: FloatArray
    baseline: FloatArray
    model: FloatArray

    def value(self, policy: FloatArray) -> float:
        """Exact value: the average over context types of sum_a policy(a|c) mean(c, a)."""
        return float(np.mean(np.sum(policy * self.mean, axis=1)))


def synthetic_problem(contexts: int = 30, actions: int = 5, seed: int = 20240611) -> Problem:
    rng = np.random.default_rng(seed)
    eligible = rng.integers(2, actions + 1, size=contexts)
    offered = np.arange(actions)[None, :] < eligible[:, None]
    logit = rng.normal(-1.0, 1.2, size=(contexts, actions))
    mean = np.where(offered, 1 / (1 + np.exp(-logit)), 0.0)

    def softmax(scores: FloatArray, support: npt.NDArray[np.bool_]) -> FloatArray:
        e = np.where(support, np.exp(scores - scores.max(axis=1, keepdims=True)), 0.0)
        distribution: FloatArray = e / e.sum(axis=1, keepdims=True)
        return distribution

    uniform = offered / eligible[:, None]
    logging = 0.7 * softmax(rng.normal(0, 0.8, size=(contexts, actions)), offered) + 0.3 * uniform
    # The target prefers good actions and, in every third context type, never takes the worst one.
    support = offered.copy()
    worst = np.argmin(np.where(offered, mean, np.inf), axis=1)
    support[np.arange(0, contexts, 3), worst[::3]] = False
    target = softmax(3.0 * logit, support)
    model = np.where(offered, 0.3 + 0.5 * (mean - 0.3), 0.0)
    return Problem(eligible=eligible, mean=mean, logging=logging, target=target, baseline=uniform, model=model)


def simulate(problem: Problem, n: int, seed: int) -> tuple[LoggedDecisions, FloatArray, FloatArray]:
    """n logged decisions: (log with the fixed reward model, target (n, K), baseline (n, K))."""
    rng = np.random.default_rng(seed)
    context = rng.integers(0, problem.eligible.size, size=n)
    cumulative = np.cumsum(problem.logging[context], axis=1)
    action = np.minimum((rng.random(n)[:, None] >= cumulative).sum(axis=1), problem.eligible[context] - 1)
    reward = (rng.random(n) < problem.mean[context, action]).astype(np.float64)
    log = LoggedDecisions(
        reward=reward,
        propensity=problem.logging[context, action],
        action=action,
        reward_hat=problem.model[context],
    )
    return log, problem.target[context], problem.baseline[context]


def all_estimators(n_bootstrap: int = 200, clip: float = 5.0) -> list[Estimator]:
    """The six estimators for rewards in [0, 1], in the order IPS, clipped IPS, SNIPS, DM, DR, SNDR."""
    kinds: list[type[Estimator]] = [IPS, SNIPS, DM, DR, SNDR]
    estimators = [kind(n_bootstrap=n_bootstrap, reward_range=BINARY) for kind in kinds]
    return estimators[:1] + [ClippedIPS(clip=clip, n_bootstrap=n_bootstrap, reward_range=BINARY)] + estimators[1:]


# --- Parity with vw-estimators (an optional, test-and-benchmark-only dependency) ----------------

ParityCase = tuple[str, LoggedDecisions, FloatArray, float, tuple[float, float]]
"""(name, log, the target's probability of each logged action, alpha, reward range)."""


def parity_cases(open_bandit_extract: Path) -> list[ParityCase]:
    problem = synthetic_problem()
    log, target, _ = simulate(problem, 3000, seed=5)
    logged = target[np.arange(log.n), log.action]
    rng = np.random.default_rng(3)
    spread = LoggedDecisions(reward=rng.uniform(-1.0, 2.0, size=log.n), propensity=log.propensity)
    obd = load_open_bandit_log(open_bandit_extract)
    return [
        ("synthetic", log, logged, 0.05, BINARY),
        ("synthetic alpha 0.1", log, logged, 0.1, BINARY),
        ("rewards in [-1, 2]", spread, logged, 0.05, (-1.0, 2.0)),
        ("open bandit", obd, np.full(obd.n, 1 / 80), 0.05, BINARY),
    ]


def vw_estimators(
    log: LoggedDecisions, target_logged: FloatArray, alpha: float, reward_range: tuple[float, float]
) -> tuple[float, float, tuple[float, float]]:
    """IPS, SNIPS and the Cressie-Read interval as vw-estimators computes them (ImportError without it)."""
    from estimators.bandits import cressieread, ips, snips

    point_ips, point_snips = ips.Estimator(), snips.Estimator()
    interval = cressieread.Interval(rmin=reward_range[0], rmax=reward_range[1])
    for p, r, pi in zip(log.propensity.tolist(), log.reward.tolist(), target_logged.tolist(), strict=True):
        point_ips.add_example(p, r, pi)
        point_snips.add_example(p, r, pi)
        interval.add_example(p, r, pi)
    low, high = interval.get(alpha)
    return point_ips.get(), point_snips.get(), (low, high)
