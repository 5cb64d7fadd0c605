"""Logged decisions from the simulated telecom world, where every policy's true value is known: the
yardstick for the off-policy estimators of ``policies.estimators``.

For one seed, ``simulator_log`` builds a fresh world and
  1. draws ``decisions`` customers at random among those who arrive in the first ``days`` days, and
     takes each one's FIRST arrival: ONE decision per customer. ``realised_value`` credits every
     outcome inside a decision's windows, whoever caused it, and ``expected_values`` assumes no
     further contact in them; a second contact of the logging policy to the same customer inside
     an earlier decision's window would leak its outcomes into that decision's reward (and its own
     context would carry the first contact's fatigue and complaint pressure). With one decision per
     customer neither happens: given its context and action, a decision's expected reward is
     exactly the world's expected value of that action at that moment, and decisions are
     independent (customers are drawn independently; one customer's contacts change nothing for
     another). For the same reason the eligible sets and expected values, computed before any act,
     are those at the decision moment;
  2. lets the logging policy choose among the eligible actions (Brein's rules, consent and contact
     policy, ``Eligibility``) with known probabilities, and acts it in the world in event-time order;
  3. takes each decision's reward as its realised value: the money of the outcomes credited to it
     minus the action's cost. The world schedules every outcome an act causes when it acts, inside
     the outcome type's window, and the organic ones when it is built, so once every decision has
     been acted on the realised value is final: the windows have closed, as far as these decisions
     can tell.

The truth. A target policy's value on these decisions is the mean over decisions i of
sum_a pi(a|x_i) * world.expected_values(x_i, a), the world's expected value of each eligible
action at the decision moment (outcomes already on their way included, as they are in the
rewards). It is the value on these decision contexts, not over the population of contexts: the
intervals are judged on covering it (the population value differs from it by the sampling noise
of the contexts, which only makes covering it easier).

Policies are ``MixturePolicy``s: with probability share_j follow rule j (its action where
eligible, do-nothing otherwise), with the remaining probability explore uniformly over the
eligible actions; the probability of each action is exact. The default log is an A/B/n-style mix
of a do-nothing hold-out, the renewal e-mail campaign and uniform exploration (a third each), so
propensities vary from about 1/150 to 1 across decisions and actions. The default targets are the
campaign (the calibrated world's best single action) and a context rule (renewal by e-mail in the
last three months of the contract, do-nothing otherwise), each with 10% exploration, and the
do-nothing baseline.

Arrays come in the layout the estimators take: decision i's eligible actions are columns
0..K_i-1 of the (n, K) matrices, do-nothing first, zeros beyond. The VW-text shared and action
lines (Brein's own feature encoding) feed ``CrossFittedRewardModel`` for DM, DR and SNDR.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from bandit.catalog import DO_NOTHING, Action
from bandit.config import BreinConfig
from bandit.features import FeatureEncoder, action_line
from bandit.history import history_features
from policies.estimators import LoggedDecisions
from policies.reward_model import CrossFittedRewardModel
from policies.simulation.baselines import DecisionPoint
from policies.simulation.eligibility import Eligibility
from policies.simulation.world import World

__all__ = [
    "CAMPAIGN",
    "LOGGING",
    "TARGETS",
    "MixturePolicy",
    "Rule",
    "SimulatorLog",
    "action_rule",
    "epsilon_greedy",
    "renewal_rule",
    "simulator_log",
]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

Rule = Callable[[Mapping[str, float]], str]
"""The request's numeric context -> the id of the action the rule wants (do-nothing where it is not eligible)."""

CAMPAIGN = "renewal/email/evening"  # the best single action of the calibrated telecom world
# More customers than decisions: a few of them do not arrive within the days (about 5% in 30 days).
CUSTOMERS_PER_DECISION = 1.25


def action_rule(action_id: str) -> Rule:
    """Always the same action."""

    def rule(numeric: Mapping[str, float]) -> str:
        return action_id

    return rule


def renewal_rule(action_id: str = CAMPAIGN, months: float = 3.0) -> Rule:
    """``action_id`` when the contract ends within ``months`` months, do-nothing otherwise."""

    def rule(numeric: Mapping[str, float]) -> str:
        return action_id if numeric.get("months_to_contract_end", math.inf) <= months else DO_NOTHING

    return rule


@dataclass(frozen=True)
class MixturePolicy:
    """With probability ``shares[j]`` follow ``rules[j]`` (do-nothing where its action is not eligible);
    with probability ``explore`` = 1 - sum(shares), any eligible action uniformly."""

    rules: tuple[Rule, ...]
    shares: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.rules) != len(self.shares):
            raise ValueError(f"shares: expected one share per rule ({len(self.rules)}), got {len(self.shares)}")
        if not all(isinstance(s, int | float) and 0 <= s <= 1 for s in self.shares) or sum(self.shares) > 1 + 1e-12:
            raise ValueError(f"shares: expected probabilities summing to at most 1, got {self.shares!r}")

    @property
    def explore(self) -> float:
        return max(0.0, 1.0 - sum(self.shares))

    def pmf(self, eligible: Sequence[Action], numeric: Mapping[str, float]) -> FloatArray:
        """The probability of each eligible action (``eligible`` holds do-nothing, as Brein's always does)."""
        position = {action.id: k for k, action in enumerate(eligible)}
        if DO_NOTHING not in position:
            raise ValueError("eligible: expected the do-nothing action among the eligible actions, got none")
        probabilities = np.full(len(eligible), self.explore / len(eligible))
        for rule, share in zip(self.rules, self.shares, strict=True):
            probabilities[position.get(rule(numeric), position[DO_NOTHING])] += share
        return probabilities


def epsilon_greedy(rule: Rule, epsilon: float) -> MixturePolicy:
    """The rule's action with probability 1 - ``epsilon``, any eligible action uniformly otherwise."""
    if isinstance(epsilon, bool) or not isinstance(epsilon, int | float) or not 0 <= epsilon <= 1:
        raise ValueError(f"epsilon: expected a probability in [0, 1], got {epsilon!r}")
    return MixturePolicy((rule,), (1.0 - epsilon,))


LOGGING = MixturePolicy((action_rule(DO_NOTHING), action_rule(CAMPAIGN)), (1 / 3, 1 / 3))
TARGETS: Mapping[str, MixturePolicy] = MappingProxyType(
    {
        "campaign": epsilon_greedy(action_rule(CAMPAIGN), 0.1),
        "renewal rule": epsilon_greedy(renewal_rule(), 0.1),
        "do-nothing": epsilon_greedy(action_rule(DO_NOTHING), 0.0),
    }
)


@dataclass(frozen=True, eq=False)
class SimulatorLog:
    """One seeded log of the world; (n, K) matrices are zero-padded beyond each decision's K_i actions.

    ``expected`` holds the world's true expected value of every eligible action at the decision,
    ``logging`` and ``targets`` the policies' distributions over them.
    """

    points: tuple[DecisionPoint, ...]
    action: IntArray
    propensity: FloatArray
    reward: FloatArray
    expected: FloatArray
    logging: FloatArray
    targets: Mapping[str, FloatArray]
    shared: tuple[str, ...]
    actions: tuple[tuple[str, ...], ...]

    @property
    def n(self) -> int:
        return len(self.points)

    def value(self, pmf: FloatArray) -> float:
        """The true value of a policy with (n, K) distribution ``pmf`` on these decisions."""
        return float(np.mean(np.einsum("ij,ij->i", pmf, self.expected)))

    def truth(self, name: str) -> float:
        """The true value of the target ``name`` on these decisions."""
        return self.value(self.targets[name])

    def logged(self, reward_hat: FloatArray | None = None) -> LoggedDecisions:
        """The log as the estimators take it, with the reward model's (n, K) predictions if given."""
        return LoggedDecisions(reward=self.reward, propensity=self.propensity, action=self.action, reward_hat=reward_hat)

    def reward_model(self, model: CrossFittedRewardModel | None = None) -> FloatArray:
        """Cross-fitted predictions (n, K) of the reward of every eligible action (default model: 5 folds)."""
        return (model or CrossFittedRewardModel()).fit_predict(self.shared, self.actions, self.action, self.reward)


def simulator_log(
    config: BreinConfig,
    decisions: int,
    seed: int,
    *,
    days: float = 30.0,
    logging: MixturePolicy = LOGGING,
    targets: Mapping[str, MixturePolicy] = TARGETS,
) -> SimulatorLog:
    """``decisions`` logged decisions, one per customer, of ``logging`` in a fresh world of ``seed``;
    see the module docstring."""
    if isinstance(decisions, bool) or not isinstance(decisions, int) or decisions < 2:
        raise ValueError(f"decisions: expected an integer >= 2, got {decisions!r}")
    world = World(config, math.ceil(decisions * CUSTOMERS_PER_DECISION), seed)
    schedule = world.arrivals(world.start, days)
    first = np.unique(schedule.customers, return_index=True)[1]
    if first.size < decisions:
        raise ValueError(f"decisions: expected at most the {first.size} customers arriving in {days:g} days, got {decisions}")
    rng = np.random.default_rng([seed, 0x1065])
    chosen = np.sort(rng.choice(first, size=decisions, replace=False))  # arrival indices, in time order

    eligibility = Eligibility(config)
    encoder = FeatureEncoder(config)
    channels, outcome_types = world.catalog.channels, tuple(config.outcomes)
    width = len(world.actions)
    expected = np.zeros((decisions, width))
    logging_pmf = np.zeros((decisions, width))
    target_pmf = {name: np.zeros((decisions, width)) for name in targets}
    points, shared, action_lines = [], [], []
    action = np.empty(decisions, dtype=np.int64)
    for i, k in enumerate(chosen.tolist()):
        customer, t = int(schedule.customers[k]), float(schedule.times[k])
        touchpoint = schedule.touchpoint_names[int(schedule.touchpoint_index[k])]
        eligible = eligibility.eligible(world, customer, t, touchpoint)
        size = len(eligible)
        points.append(DecisionPoint(customer, t, touchpoint, tuple(eligible)))
        numeric, categorical = world.context(customer, t)
        expected[i, :size] = world.expected_values(customer, t, eligible)
        pmf = logging.pmf(eligible, numeric)
        logging_pmf[i, :size] = pmf
        action[i] = min(int(np.searchsorted(np.cumsum(pmf), rng.random(), side="right")), size - 1)
        for name, policy in targets.items():
            target_pmf[name][i, :size] = policy.pmf(eligible, numeric)
        features = encoder.shared_features(
            touchpoint=touchpoint,
            event_time=t,
            numeric=numeric,
            categorical=categorical,
            history=history_features(world.history(customer, t), t, channels, outcome_types),
            personalised=world.consent(customer, t).personalisation,
        )
        shared.append(encoder.shared_line(features))
        action_lines.append(tuple(action_line(a) for a in eligible))

    # Act in event-time order, then read the rewards: every outcome is scheduled by then.
    act_rng = np.random.default_rng([seed, 0xAC7])
    for i, point in enumerate(points):
        world.act(point.customer, point.event_time, point.eligible[action[i]], act_rng, decision=f"log-{i}")
    reward = np.array([world.realised_value(p.customer, p.event_time, p.eligible[action[i]]) for i, p in enumerate(points)])

    used = max(len(p.eligible) for p in points)
    return SimulatorLog(
        points=tuple(points),
        action=action,
        propensity=logging_pmf[np.arange(decisions), action],
        reward=reward,
        expected=expected[:, :used],
        logging=logging_pmf[:, :used],
        targets=MappingProxyType({name: pmf[:, :used] for name, pmf in target_pmf.items()}),
        shared=tuple(shared),
        actions=tuple(action_lines),
    )
