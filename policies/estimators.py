"""Off-policy estimators: what a candidate policy would have earned on decisions another policy logged.

Inputs, one row per logged decision i (``LoggedDecisions``):
  ``reward``      r_i, the observed reward;
  ``propensity``  p_i, the logging policy's probability of the action it took (> 0);
  ``action``      the logged action's column in the (n, K) matrices below;
  ``reward_hat``  (n, K) the reward model's prediction for each of the decision's eligible actions.
And the candidate ("target") policy, either
  (n,)   pi_i, its probability of the logged action, which is all IPS, clipped IPS and SNIPS need; or
  (n, K) its full distribution over each decision's eligible actions, which DM, DR and SNDR need.

Padding: decisions offer different numbers of actions, so decision i's K_i eligible actions are
columns 0..K_i-1 of the (n, K) matrices, K the largest K_i. The target distribution must be 0 on
padding columns and the predictions there finite (0 will do). No mask is needed: every sum over
actions is weighted by the target distribution, so padding never contributes.

Every estimate carries two 95% intervals (at ``alpha`` = 0.05): a bootstrap percentile interval
and the analytic Cressie-Read interval (see ``policies.intervals`` for why Cressie-Read), and the
target's diagnostics on the log (``Diagnostics``). ``compare`` estimates candidate - baseline on the
same decisions with intervals of the difference itself: each bootstrap resample is applied to both
policies, and the analytic interval is taken over per-decision differences.

How sure an estimate is (``Reliability``): the diagnostics are those of the target's *unclipped*
importance weights on the decisions where the logging policy had a choice, whatever the estimator,
since they say how much the log tells about the target at all; clipping hides that (it caps the
weights, not the missing support), and DM extrapolates its model exactly where the weights are
large. An estimate whose diagnostics fall short is unreliable, with the reasons in words. An
interval whose coverage is known to fail says so in its ``caveat``: the bootstrap, and the t-form
interval of a plain mean (clipped IPS, DR, SNDR, every difference), treat the per-decision terms as
a sample whose mean is near-normal, which fails when one decision holds more than
``max_weight_share`` of the weight they average (a resample's value then turns on how often it drew
that decision). The Cressie-Read interval of IPS and SNIPS uses the constraint that the weights
average to one and has no such caveat (on such a log it is as wide as it should be).

Several estimators evaluated together (``evaluate``/``compare_policies``) share their bootstrap
resamples when their ``n_bootstrap`` and ``seed`` agree, which makes six estimators cost about as
much as one; the numbers are those of estimating one at a time (up to rounding).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from policies.intervals import (
    bootstrap_sums,
    cressie_read_interval,
    effective_sample_size,
    largest_weight_share,
    mean_interval,
    percentile_interval,
)
from policies.reward_model import CrossFittedRewardModel

__all__ = [
    "DM",
    "DR",
    "IPS",
    "SNDR",
    "SNIPS",
    "ClippedIPS",
    "Comparison",
    "CrossFittedRewardModel",
    "Diagnostics",
    "Estimate",
    "Estimator",
    "Interval",
    "LoggedDecisions",
    "Reliability",
    "compare_policies",
    "evaluate",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

# How far a target distribution's row may sum from 1 (float32 soft-maxes and the like).
PMF_TOLERANCE = 1e-6
# The smallest propensity and the largest |reward| a log may hold: the intervals sum squares of
# weighted rewards in float64, which a propensity of 1e-300 or a reward of 1e160 overflowed (an
# exception, not an estimate); within these bounds such sums over a billion decisions stay below
# 1e70. A logging policy's own distribution never comes near 1e-12, nor money near 1e15.
MIN_PROPENSITY = 1e-12
MAX_REWARD = 1e15


@dataclass(frozen=True, eq=False)
class LoggedDecisions:
    """What the logging policy did, one row per decision; see the module docstring for the layout."""

    reward: FloatArray
    propensity: FloatArray
    action: IntArray | None = None
    reward_hat: FloatArray | None = None

    def __post_init__(self) -> None:
        reward = _float_array("reward", self.reward, ndim=1)
        n = reward.shape[0]
        if n == 0:
            raise ValueError("reward: expected at least one logged decision, got an empty array")
        valid = np.abs(reward) <= MAX_REWARD
        if not valid.all():
            raise ValueError(f"reward: expected numbers within ±{MAX_REWARD:g}, got {_first_bad(reward, valid)}")
        propensity = _float_array("propensity", self.propensity, ndim=1, rows=n)
        valid = (propensity >= MIN_PROPENSITY) & (propensity <= 1)
        if not valid.all():
            bad = _first_bad(propensity, valid)
            raise ValueError(f"propensity: expected probabilities in [{MIN_PROPENSITY:g}, 1], got {bad}")
        object.__setattr__(self, "reward", reward)
        object.__setattr__(self, "propensity", propensity)
        width = None
        if self.reward_hat is not None:
            reward_hat = _float_array("reward_hat", self.reward_hat, ndim=2, rows=n)
            object.__setattr__(self, "reward_hat", reward_hat)
            width = reward_hat.shape[1]
        if self.action is not None:
            action = np.asarray(self.action)
            if action.shape != (n,) or not np.issubdtype(action.dtype, np.integer):
                raise ValueError(f"action: expected {n} integer column indices, got {_describe(action)}")
            valid = (action >= 0) & (action < (width if width is not None else np.inf))
            if not valid.all():
                bound = f"[0, {width})" if width is not None else "[0, K)"
                raise ValueError(f"action: expected column indices in {bound}, got {_first_bad(action, valid)}")
            object.__setattr__(self, "action", action.astype(np.int64, copy=False))
        elif self.reward_hat is not None:
            raise ValueError("action: expected the logged actions' columns alongside reward_hat, got None")

    @property
    def n(self) -> int:
        return int(self.reward.shape[0])

    @cached_property
    def choice(self) -> npt.NDArray[np.bool_]:
        """The decisions where the logging policy had a choice: another action had positive probability
        (the logged one's propensity is below 1, beyond PMF_TOLERANCE). Reliability is measured on these
        only (``Diagnostics``): where the logging policy could take nothing but the action it took (one
        eligible action, as ``candidate_actions=["do_nothing"]`` makes), the log shows nothing of any
        other, every policy that can act there gives it weight 1, and a thousand such decisions made a
        candidate with an ESS of 78 look reliable without telling anything more about it. The estimates
        keep every decision: they are unbiased only over all of them."""
        return self.propensity < 1 - PMF_TOLERANCE


@dataclass(frozen=True, slots=True)
class Interval:
    """``caveat``: why its coverage is known to fail on this log, in words; None when no such reason is known."""

    low: float
    high: float
    method: str  # "bootstrap" or "cressie-read"
    caveat: str | None = None

    @property
    def trustworthy(self) -> bool:
        return self.caveat is None


@dataclass(frozen=True, slots=True)
class Diagnostics:
    """How much a log says about a target policy, from its unclipped importance weights w_i = pi_i / p_i
    on the ``choices`` logged decisions where the logging policy had a choice (``LoggedDecisions.choice``).

    The same for every estimator of that target on that log.
    ``ess``: Kish's effective sample size (sum w)^2 / sum w^2, how many on-policy decisions the log is worth;
    ``largest_weight_share``: max w / sum w, the share of the weight one logged decision holds;
    ``never_taken_share``: the share of those decisions whose logged action the target gives
    probability 0 (weight 0: those decisions tell nothing about it);
    ``choices``: how many decisions these are (the gate's ``min_decisions`` counts them).
    """

    ess: float
    largest_weight_share: float
    never_taken_share: float
    choices: int


@dataclass(frozen=True, slots=True)
class Reliability:
    """When an estimate can be trusted: an effective sample size of at least ``min_ess``, and no logged
    decision holding more than ``max_weight_share`` of the importance weight. Brein applies the gate's
    thresholds (``gate.min_ess``, ``gate.max_weight_share``), whose defaults these are."""

    min_ess: float = 100.0
    max_weight_share: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.min_ess, bool) or not isinstance(self.min_ess, int | float) or not 0 <= self.min_ess < math.inf:
            raise ValueError(f"min_ess: expected a finite number >= 0, got {self.min_ess!r}")
        share = self.max_weight_share
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0 < share <= 1:
            raise ValueError(f"max_weight_share: expected a number in (0, 1], got {share!r}")

    def reasons(self, diagnostics: Diagnostics) -> tuple[str, ...]:
        """Why an estimate with these diagnostics is unreliable, one sentence each; empty if it is reliable."""
        if diagnostics.never_taken_share == 1:
            return ("the target gives probability 0 to every logged action: the log says nothing about it",)
        reasons = []
        if diagnostics.ess < self.min_ess:
            reasons.append(
                f"the effective sample size of the unclipped importance weights is {diagnostics.ess:,.1f}, "
                f"below the {self.min_ess:g} required"
            )
        if diagnostics.largest_weight_share > self.max_weight_share:
            reasons.append(
                f"one logged decision holds {diagnostics.largest_weight_share:.0%} of the importance weight, "
                f"more than the {self.max_weight_share:.0%} allowed"
            )
        return tuple(reasons)

    def caveat(self, *weights: FloatArray | None) -> str | None:
        """Why an interval that treats terms with these weights as a sample has unknown coverage; None if none."""
        share = max((largest_weight_share(w) for w in weights if w is not None), default=0.0)
        if share <= self.max_weight_share:
            return None
        return (
            f"one logged decision holds {share:.0%} of the importance weight this interval averages, more than the "
            f"{self.max_weight_share:.0%} allowed: its coverage is unknown"
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    """A policy value: point estimate, two intervals at level 1 - alpha, and the target's diagnostics.

    ``reasons``: why the estimate is unreliable under the ``Reliability`` it was made with, empty
    when it is reliable. ``clipped_ess``: clipped IPS only, the effective sample size of the
    clipped weights it applies, beside (never instead of) the diagnostics' unclipped one.
    """

    estimator: str
    value: float
    bootstrap: Interval
    analytic: Interval
    diagnostics: Diagnostics
    reasons: tuple[str, ...]
    n: int
    alpha: float
    clipped_ess: float | None = None

    @property
    def reliable(self) -> bool:
        return not self.reasons


@dataclass(frozen=True, slots=True)
class Comparison:
    """candidate - baseline on the same logged decisions, with intervals of the difference itself.
    Reliable when both policies' estimates are."""

    estimator: str
    difference: float
    bootstrap: Interval
    analytic: Interval
    candidate: Estimate
    baseline: Estimate

    @property
    def reliable(self) -> bool:
        return self.candidate.reliable and self.baseline.reliable


class _Policy:
    """Validated inputs for one target policy on one log, with the per-decision columns estimators sum.

    Columns are computed once and shared by every estimator that names them.
    """

    def __init__(self, log: LoggedDecisions, target: npt.ArrayLike, *, full: bool) -> None:
        n = log.n
        array = np.asarray(target)
        if array.ndim == 1:
            if full:
                raise ValueError(
                    f"target: expected the target policy's full distribution, an ({n}, K) array, got shape {array.shape}"
                )
            logged = _float_array("target", array, ndim=1, rows=n)
            valid = (logged >= 0) & (logged <= 1)
            if not valid.all():
                raise ValueError(f"target: expected probabilities in [0, 1], got {_first_bad(logged, valid)}")
            self.pmf: FloatArray | None = None
        else:
            pmf = _float_array("target", array, ndim=2, rows=n)
            if log.action is None:
                raise ValueError("action: expected the logged actions' columns to read a full target distribution, got None")
            if log.reward_hat is not None and log.reward_hat.shape != pmf.shape:
                raise ValueError(f"target: expected the shape of reward_hat {log.reward_hat.shape}, got {pmf.shape}")
            if int(log.action.max()) >= pmf.shape[1]:
                raise ValueError(f"action: expected column indices in [0, {pmf.shape[1]}), got {int(log.action.max())}")
            if pmf.min() < 0:
                raise ValueError(f"target: expected probabilities >= 0, got {float(pmf.min())!r}")
            totals = pmf.sum(axis=1)
            off = np.abs(totals - 1) > PMF_TOLERANCE
            if off.any():
                row = int(np.argmax(off))
                raise ValueError(f"target: expected each row to sum to 1, got {float(totals[row])!r} in row {row}")
            self.pmf = pmf
            logged = pmf[np.arange(n), log.action]
        if full and log.reward_hat is None:
            raise ValueError("reward_hat: expected the reward model's (n, K) predictions for DM/DR/SNDR, got None")
        self.log = log
        self.logged = logged
        self._columns: dict[Hashable, FloatArray] = {}

    @cached_property
    def weights(self) -> FloatArray:
        return self.logged / self.log.propensity

    def column(self, key: Hashable) -> FloatArray:
        """Per-decision terms by name: "w", "wr", ("wc", clip), ("wcr", clip), "dm" or "w_residual"."""
        if key not in self._columns:
            self._columns[key] = self._compute(key)
        return self._columns[key]

    def _compute(self, key: Hashable) -> FloatArray:
        log = self.log
        if key == "w":
            return self.weights
        if key == "wr":
            return self.weights * log.reward
        if isinstance(key, tuple) and key[0] == "wc":
            return np.minimum(self.weights, key[1])
        if isinstance(key, tuple) and key[0] == "wcr":
            return self.column(("wc", key[1])) * log.reward
        assert self.pmf is not None and log.reward_hat is not None and log.action is not None
        if key == "dm":
            expected: FloatArray = np.einsum("ij,ij->i", self.pmf, log.reward_hat)
            return expected
        if key == "w_residual":
            return self.weights * (log.reward - log.reward_hat[np.arange(log.n), log.action])
        raise KeyError(key)

    @cached_property
    def diagnostics(self) -> Diagnostics:
        choice = self.log.choice
        weights, logged = self.weights[choice], self.logged[choice]
        never_taken = float(np.mean(logged == 0)) if logged.size else 0.0
        return Diagnostics(effective_sample_size(weights), largest_weight_share(weights), never_taken, int(choice.sum()))


ALPHA = 0.05
"""An interval's level is 1 - ALPHA unless a caller asks for another (tuning, for the set-ups it compares)."""


def level(alpha: float) -> str:
    """An interval's level as people read it, its alpha to three digits: 95%, 96.96%, 99.615%, 99.99889%."""
    digits = max(0, 2 - math.floor(math.log10(100 * alpha)))
    return f"{100 * (1 - alpha):.{digits}f}".rstrip("0").rstrip(".") + "%"


MAX_RESAMPLES = 20_000
"""The most bootstrap resamples an estimator needs to be given, whatever its level: at 1 - alpha beyond
1 - 2 / MAX_RESAMPLES (99.99%) they leave no resample beyond an end, and the bootstrap interval says so
(its ends are the resamples' extremes: ``Interval.caveat``) while the Cressie-Read interval carries the
tail. A bound on an evaluation's time (20,000 resamples of 2,000 decisions: 0.7 s an estimator); the
gate judges some looks far beyond it (the 7th at a candidate tuned among 13 set-ups at 99.99215%: refused
for too few resamples before this bound was the estimators' too)."""


@dataclass(frozen=True, kw_only=True)
class Estimator(ABC):
    """An off-policy estimator and its hyper-parameters.

    ``reward_range`` bounds the rewards, hence the policy value: it calibrates the Cressie-Read
    interval and clips both intervals. None takes the range observed in the log; give the true
    range when it is known (clicks: (0, 1)).
    """

    alpha: float = ALPHA
    n_bootstrap: int = 500
    seed: int = 0
    reward_range: tuple[float, float] | None = None

    name: ClassVar[str]
    needs_model: ClassVar[bool] = False

    def __post_init__(self) -> None:
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, int | float) or not 0 < self.alpha < 1:
            raise ValueError(f"alpha: expected a number in (0, 1), got {self.alpha!r}")
        minimum = min(math.ceil(2 / self.alpha), MAX_RESAMPLES)
        if isinstance(self.n_bootstrap, bool) or not isinstance(self.n_bootstrap, int) or self.n_bootstrap < minimum:
            raise ValueError(
                f"n_bootstrap: expected an integer >= {minimum} (at least one resample beyond each end at alpha={self.alpha}, "
                f"at most {MAX_RESAMPLES:,} needed), got {self.n_bootstrap!r}"
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed: expected a non-negative integer, got {self.seed!r}")
        if self.reward_range is not None:
            bounds = self.reward_range
            if (
                not isinstance(bounds, tuple)
                or len(bounds) != 2
                or not all(isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in bounds)
                or not bounds[0] < bounds[1]
            ):
                raise ValueError(f"reward_range: expected a tuple (low, high) of finite numbers with low < high, got {bounds!r}")

    def estimate(self, log: LoggedDecisions, target: npt.ArrayLike, *, reliability: Reliability = Reliability()) -> Estimate:
        """The target policy's value on ``log``; ``target`` is (n,) or (n, K), see the module docstring."""
        return evaluate(log, target, [self], reliability=reliability)[0]

    def compare(
        self, log: LoggedDecisions, candidate: npt.ArrayLike, baseline: npt.ArrayLike, *, reliability: Reliability = Reliability()
    ) -> Comparison:
        """candidate - baseline on the same logged decisions."""
        return compare_policies(log, candidate, baseline, [self], reliability=reliability)[0]

    # What a subclass defines: the columns it sums, the statistic of their sums, and the
    # per-decision terms (mean = value) of its analytic interval.
    @abstractmethod
    def _keys(self) -> tuple[Hashable, ...]: ...

    @abstractmethod
    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray: ...

    @abstractmethod
    def _terms(self, policy: _Policy, value: float) -> FloatArray: ...

    def _analytic(self, policy: _Policy, value: float, bounds: tuple[float, float]) -> tuple[float, float]:
        return mean_interval(self._terms(policy, value), self.alpha)

    # Whether the analytic interval is Cressie-Read's under E[w] = 1 (honest however the weights fall),
    # rather than the t-form of a plain mean (which treats the terms as a near-normal sample).
    weight_constrained: ClassVar[bool] = False

    def _averaged_weights(self, policy: _Policy) -> FloatArray | None:
        """The importance weights this estimator averages (None: it averages none)."""
        return policy.weights

    def _clipped_ess(self, policy: _Policy) -> float | None:
        return None


@dataclass(frozen=True, kw_only=True)
class IPS(Estimator):
    """Inverse propensity scoring: mean of w_i r_i, w_i = pi_i / p_i. Unbiased when the log covers the target.

    Its analytic interval is Cressie-Read's for E[w r] under E[w] = 1, an interval for the policy
    value that IPS and SNIPS share (the same one vw-estimators computes).
    """

    name: ClassVar[str] = "ips"
    weight_constrained: ClassVar[bool] = True

    def _keys(self) -> tuple[Hashable, ...]:
        return ("wr",)

    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray:
        return sums["wr"] / n

    def _terms(self, policy: _Policy, value: float) -> FloatArray:
        return policy.column("wr")

    def _analytic(self, policy: _Policy, value: float, bounds: tuple[float, float]) -> tuple[float, float]:
        return cressie_read_interval(policy.weights, policy.log.reward, alpha=self.alpha, reward_range=bounds)


@dataclass(frozen=True, kw_only=True)
class ClippedIPS(Estimator):
    """IPS with weights capped at ``clip``: mean of min(w_i, clip) r_i.

    Trades bias for variance: with non-negative rewards it underestimates by the mass above the
    cap. Its intervals are for that clipped value, not for the policy value.
    """

    clip: float
    name: ClassVar[str] = "clipped_ips"

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.clip, bool) or not isinstance(self.clip, int | float) or not self.clip > 0 or math.isnan(self.clip):
            raise ValueError(f"clip: expected a positive number, got {self.clip!r}")

    def _keys(self) -> tuple[Hashable, ...]:
        return (("wcr", float(self.clip)),)

    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray:
        return sums[("wcr", float(self.clip))] / n

    def _terms(self, policy: _Policy, value: float) -> FloatArray:
        return policy.column(("wcr", float(self.clip)))

    def _averaged_weights(self, policy: _Policy) -> FloatArray | None:
        return policy.column(("wc", float(self.clip)))

    def _clipped_ess(self, policy: _Policy) -> float | None:
        return effective_sample_size(policy.column(("wc", float(self.clip))))


@dataclass(frozen=True, kw_only=True)
class SNIPS(Estimator):
    """Self-normalised IPS: sum w_i r_i / sum w_i. Slightly biased, much less variable than IPS
    when the weights' mean strays from 1; undefined if the target gives every logged action 0."""

    name: ClassVar[str] = "snips"
    weight_constrained: ClassVar[bool] = True

    def _keys(self) -> tuple[Hashable, ...]:
        return ("wr", "w")

    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray:
        return _ratio(sums["wr"], sums["w"])

    def _terms(self, policy: _Policy, value: float) -> FloatArray:
        # Linearised (delta-method) terms of the ratio: their mean is the estimate.
        w = policy.weights
        return value + w * (policy.log.reward - value) / float(w.mean())

    def _analytic(self, policy: _Policy, value: float, bounds: tuple[float, float]) -> tuple[float, float]:
        return cressie_read_interval(policy.weights, policy.log.reward, alpha=self.alpha, reward_range=bounds)


@dataclass(frozen=True, kw_only=True)
class DM(Estimator):
    """Direct method: mean over decisions of sum_a pi(a|x_i) q(x_i, a), q the reward model.

    No importance weights, so low variance, but biased as much as the model is wrong; its
    intervals describe sampling noise only, not the model's bias (nor its fitting noise).
    """

    name: ClassVar[str] = "dm"
    needs_model: ClassVar[bool] = True

    def _keys(self) -> tuple[Hashable, ...]:
        return ("dm",)

    def _averaged_weights(self, policy: _Policy) -> FloatArray | None:
        return None

    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray:
        return sums["dm"] / n

    def _terms(self, policy: _Policy, value: float) -> FloatArray:
        return policy.column("dm")


@dataclass(frozen=True, kw_only=True)
class DR(Estimator):
    """Doubly robust: DM plus the importance-weighted residual of the logged action,
    mean of dm_i + w_i (r_i - q(x_i, a_i)). Unbiased if the propensities are right, whatever the
    model; lower variance than IPS when the model is good. Use a cross-fitted model
    (``policies.reward_model``) so no decision's prediction was trained on its own reward."""

    name: ClassVar[str] = "dr"
    needs_model: ClassVar[bool] = True

    def _keys(self) -> tuple[Hashable, ...]:
        return ("dm", "w_residual")

    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray:
        return (sums["dm"] + sums["w_residual"]) / n

    def _terms(self, policy: _Policy, value: float) -> FloatArray:
        return policy.column("dm") + policy.column("w_residual")


@dataclass(frozen=True, kw_only=True)
class SNDR(Estimator):
    """Self-normalised DR: mean(dm_i) + sum w_i (r_i - q_i) / sum w_i, as SNIPS is to IPS."""

    name: ClassVar[str] = "sndr"
    needs_model: ClassVar[bool] = True

    def _keys(self) -> tuple[Hashable, ...]:
        return ("dm", "w_residual", "w")

    def _statistic(self, sums: Mapping[Hashable, FloatArray], n: int) -> FloatArray:
        return sums["dm"] / n + _ratio(sums["w_residual"], sums["w"])

    def _terms(self, policy: _Policy, value: float) -> FloatArray:
        w = policy.weights
        residual = policy.column("w_residual")
        correction = float(residual.sum() / w.sum())
        return policy.column("dm") + correction + (residual - correction * w) / float(w.mean())


def evaluate(
    log: LoggedDecisions, target: npt.ArrayLike, estimators: Sequence[Estimator], *, reliability: Reliability = Reliability()
) -> list[Estimate]:
    """Every estimator's estimate of ``target`` on ``log``, in order; shared resamples where possible."""
    _check_estimators(log, estimators)
    policy = _Policy(log, target, full=any(e.needs_model for e in estimators))
    values, samples = _run(estimators, [policy])
    return [_estimate(e, policy, v[0], s[0], reliability) for e, v, s in zip(estimators, values, samples, strict=True)]


def compare_policies(
    log: LoggedDecisions,
    candidate: npt.ArrayLike,
    baseline: npt.ArrayLike,
    estimators: Sequence[Estimator],
    *,
    reliability: Reliability = Reliability(),
) -> list[Comparison]:
    """Each estimator's candidate - baseline on ``log``: each bootstrap resample serves both policies,
    and the analytic interval is that of the mean per-decision difference."""
    _check_estimators(log, estimators)
    full = any(e.needs_model for e in estimators)
    policies = [_Policy(log, candidate, full=full), _Policy(log, baseline, full=full)]
    values, samples = _run(estimators, policies)
    comparisons = []
    for estimator, (value_c, value_b), (samples_c, samples_b) in zip(estimators, values, samples, strict=True):
        low, high = _bounds(estimator, log)
        span = (low - high, high - low)
        difference = value_c - value_b
        terms = estimator._terms(policies[0], value_c) - estimator._terms(policies[1], value_b)
        caveat = reliability.caveat(*(_on_choices(p, estimator._averaged_weights(p)) for p in policies))
        comparisons.append(
            Comparison(
                estimator=estimator.name,
                difference=difference,
                bootstrap=_interval(percentile_interval(samples_c - samples_b, estimator.alpha), span, "bootstrap",
                                    _resolved(estimator, caveat)),
                analytic=_interval(mean_interval(terms, estimator.alpha), span, "cressie-read", caveat),
                candidate=_estimate(estimator, policies[0], value_c, samples_c, reliability),
                baseline=_estimate(estimator, policies[1], value_b, samples_b, reliability),
            )
        )
    return comparisons


def _run(estimators: Sequence[Estimator], policies: Sequence[_Policy]) -> tuple[list[list[float]], list[list[FloatArray]]]:
    """Point values and bootstrap samples of every estimator on every policy.

    Estimators with the same (n_bootstrap, seed) are resampled together: the union of the
    columns they need, for all policies, goes through one pass of ``bootstrap_sums``.
    """
    n = policies[0].log.n
    values: list[list[float]] = [[] for _ in estimators]
    samples: list[list[FloatArray]] = [[] for _ in estimators]
    groups: dict[tuple[int, int], list[int]] = {}
    for index, estimator in enumerate(estimators):
        groups.setdefault((estimator.n_bootstrap, estimator.seed), []).append(index)
    for (n_bootstrap, seed), members in groups.items():
        slots: dict[tuple[int, Hashable], int] = {}
        for index in members:
            for p in range(len(policies)):
                for key in estimators[index]._keys():
                    slots.setdefault((p, key), len(slots))
        columns = np.empty((n, len(slots)))
        for (p, key), slot in slots.items():
            columns[:, slot] = policies[p].column(key)
        totals = columns.sum(axis=0)
        resampled = bootstrap_sums(columns, n_bootstrap=n_bootstrap, seed=seed)
        del columns
        for index in members:
            estimator = estimators[index]
            for p in range(len(policies)):
                keys = estimator._keys()
                point = {key: totals[slots[(p, key)], None] for key in keys}
                boot = {key: resampled[:, slots[(p, key)]] for key in keys}
                value = float(estimator._statistic(point, n)[0])
                if not math.isfinite(value):
                    raise ValueError(
                        f"target: {estimator.name} is undefined, the target gives probability 0 to every logged action"
                    )
                values[index].append(value)
                samples[index].append(estimator._statistic(boot, n))
    return values, samples


def _estimate(estimator: Estimator, policy: _Policy, value: float, samples: FloatArray, reliability: Reliability) -> Estimate:
    bounds = _bounds(estimator, policy.log)
    caveat = reliability.caveat(_on_choices(policy, estimator._averaged_weights(policy)))
    return Estimate(
        estimator=estimator.name,
        value=value,
        bootstrap=_interval(percentile_interval(samples, estimator.alpha), bounds, "bootstrap", _resolved(estimator, caveat)),
        analytic=_interval(
            estimator._analytic(policy, value, bounds), bounds, "cressie-read", None if estimator.weight_constrained else caveat
        ),
        diagnostics=policy.diagnostics,
        reasons=reliability.reasons(policy.diagnostics),
        n=policy.log.n,
        alpha=estimator.alpha,
        clipped_ess=estimator._clipped_ess(policy),
    )


def _on_choices(policy: _Policy, weights: FloatArray | None) -> FloatArray | None:
    """``weights`` on the decisions where the logging policy had a choice, where reliability is measured."""
    return None if weights is None else weights[policy.log.choice]


def _bounds(estimator: Estimator, log: LoggedDecisions) -> tuple[float, float]:
    """The reward range: the estimator's, checked against the log, or the one observed."""
    low, high = float(log.reward.min()), float(log.reward.max())
    if estimator.reward_range is None:
        return low, high
    r_low, r_high = estimator.reward_range
    if low < r_low or high > r_high:
        outside = (log.reward < r_low) | (log.reward > r_high)
        row = int(np.argmax(outside))
        raise ValueError(
            f"reward: expected values within reward_range {estimator.reward_range}, got {float(log.reward[row])!r} in row {row}"
        )
    return float(r_low), float(r_high)


def _resolved(estimator: Estimator, caveat: str | None) -> str | None:
    """A bootstrap interval's caveat: ``caveat``, and whether its resamples resolve its level at all
    (fewer than 2 / alpha leave none beyond an end: its ends are then their extremes, narrower than it)."""
    if estimator.n_bootstrap >= math.ceil(2 / estimator.alpha):
        return caveat
    short = (f"{estimator.n_bootstrap:,} resamples leave none beyond its ends at {level(estimator.alpha)}: "
             f"they are the resamples' extremes, narrower than the interval")  # fmt: skip
    return short if caveat is None else f"{caveat}; {short}"


def _interval(bounds: tuple[float, float], span: tuple[float, float], method: str, caveat: str | None) -> Interval:
    low, high = bounds
    return Interval(low=min(max(low, span[0]), span[1]), high=max(min(high, span[1]), span[0]), method=method, caveat=caveat)


def _ratio(numerator: FloatArray, denominator: FloatArray) -> FloatArray:
    """numerator / denominator, NaN where the denominator is 0 (a resample with no weight on the target)."""
    safe = np.where(denominator != 0, denominator, 1.0)
    return np.where(denominator != 0, numerator / safe, np.nan)


def _check_estimators(log: LoggedDecisions, estimators: Sequence[Estimator]) -> None:
    if len(estimators) == 0 or not all(isinstance(e, Estimator) for e in estimators):
        raise ValueError(f"estimators: expected a non-empty sequence of estimators, got {estimators!r}")
    for estimator in estimators:
        _bounds(estimator, log)  # rewards outside an estimator's reward_range fail before any work


def _float_array(name: str, value: Any, *, ndim: int, rows: int | None = None) -> FloatArray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an array of numbers, got {type(value).__name__}") from None
    if array.ndim != ndim or (rows is not None and array.shape[0] != rows):
        expected = f"({rows},)" if ndim == 1 else f"({rows}, K)"
        raise ValueError(
            f"{name}: expected an array of shape {expected if rows is not None else f'{ndim}-D'}, got shape {array.shape}"
        )
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: expected finite numbers, got {_first_bad(array, np.isfinite(array))}")
    return array


def _first_bad(array: npt.NDArray[Any], ok: npt.NDArray[np.bool_]) -> str:
    flat = np.flatnonzero(~np.asarray(ok).ravel())
    if flat.size == 0:
        return "no offending value"
    position = np.unravel_index(int(flat[0]), array.shape)
    where = f"row {position[0]}" if len(position) == 1 else f"row {position[0]}, column {position[1]}"
    return f"{array.ravel()[flat[0]].item()!r} in {where}"


def _describe(array: npt.NDArray[Any]) -> str:
    return f"dtype {array.dtype} and shape {array.shape}"
