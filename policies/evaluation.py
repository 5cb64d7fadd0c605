"""Off-policy evaluation of Brein policies on logged decisions: from the store's joined examples or
from an exported DSJSON log, to the estimators' arrays, to a report a person or a script reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any, NamedTuple

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.errors import excerpt, validation_problems
from bandit.features import FeatureEncoder, action_line
from bandit.policies import Policy
from bandit.requests import MAX_FEATURE_MAGNITUDE
from bandit.sampling import floored
from policies.estimators import (
    ALPHA,
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    Comparison,
    Estimate,
    Estimator,
    Interval,
    LoggedDecisions,
    Reliability,
    compare_policies,
)
from policies.estimators import evaluate as run_estimators
from policies.reward_model import CrossFittedRewardModel
from policies.spending import KEY, Spending
from reward.online import action_from_id, logged_examples
from store.ports import JoinedExamples
from store.records import SharedFeatures

FloatArray = npt.NDArray[np.float64]
# Clipped IPS truncates importance weights here: a decision can count for at most 50 (a propensity
# of 2% for an action the candidate always takes), trading a little bias for much less variance.
CLIP = 50.0

ESTIMATORS: dict[str, type[Estimator]] = {
    "ips": IPS, "clipped_ips": ClippedIPS, "snips": SNIPS, "dm": DM, "dr": DR, "sndr": SNDR,
}  # fmt: skip


@dataclass
class LoggedData:
    """Logged decisions with their observed rewards, as the estimators and the policies need them."""

    decision_ids: list[str]
    event_times: FloatArray
    features: list[SharedFeatures]
    actions: list[tuple[Action, ...]]
    chosen: npt.NDArray[np.int64]
    propensity: FloatArray
    reward: FloatArray
    # Per decision: shadow policy id -> the pmf it logged over the decision's actions.
    shadow: list[dict[str, list[float]]] = field(default_factory=list)
    # Per decision: the distribution the logging policy served over the decision's actions (empty: not logged).
    served: list[list[float]] = field(default_factory=list)
    # Per decision: the id of the policy that served it (empty: not logged, as in an export).
    served_by: list[str] = field(default_factory=list)
    # Per decision: the positions in ``actions`` of those today's catalog has (empty: every action, in every decision).
    servable: list[tuple[int, ...]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.decision_ids)


class Row(NamedTuple):
    """One logged decision as ``LoggedData`` holds it (``served``/``served_by``: empty when the source lacks them)."""

    decision_id: str
    event_time: float
    features: SharedFeatures
    eligible: list[str]
    action_id: str
    probability: float
    reward: float
    shadow: dict[str, list[float]]
    served: list[float]
    served_by: str


def _logged(rows: Iterable[Row], catalog: Catalog, *, servable_only: bool) -> LoggedData:
    """The rows with each decision's eligible actions as logged (one ``catalog`` lacks rebuilt from its
    id) and, ``servable_only``, which of them ``catalog`` has: a policy is judged on those only (one
    dropped from the config since cannot be served, and a rule that names it never fires). A decision
    whose chosen action was dropped stays in the log: every policy gives that action probability 0,
    so it weighs 0 in the importance-weighted sums and counts in n, as it would for any action a
    policy does not take (the rest of the log is not made to stand for it: it would give the
    contexts where a dropped action was taken more weight)."""
    ids, times, features, actions, chosen, propensity, reward, shadow, served, served_by = [], [], [], [], [], [], [], [], [], []
    servable: list[tuple[int, ...]] = []
    dropped = False
    for row in rows:
        ids.append(row.decision_id)
        times.append(row.event_time)
        features.append(row.features)
        actions.append(tuple(action_from_id(catalog, a) for a in row.eligible))
        kept = tuple(i for i, a in enumerate(row.eligible) if a in catalog.by_id)
        servable.append(kept)
        dropped = dropped or (servable_only and len(kept) < len(row.eligible))
        chosen.append(row.eligible.index(row.action_id))
        propensity.append(row.probability)
        reward.append(row.reward)
        shadow.append(row.shadow)
        served.append(row.served)
        served_by.append(row.served_by)
    return LoggedData(ids, np.array(times, dtype=float), features, actions, np.array(chosen, dtype=np.int64),
                      np.array(propensity, dtype=float), np.array(reward, dtype=float), shadow,
                      served if all(served) else [], served_by if all(served_by) else [],
                      servable if dropped else [])  # fmt: skip


def load_logged(
    config: BreinConfig,
    examples: JoinedExamples,
    since: float | None = None,
    until: float | None = None,
    *,
    served_by: str | None = None,
) -> LoggedData:
    """Joined examples (decisions that were shown, with their final reward) with since <= time < until,
    in the order the online learner and `brein log export` take them: an evaluation of the store and
    a replay of its export see the same rows in the same order, so they give the same numbers.
    ``served_by``: only the decisions that policy (any version of its lineage) served."""
    rows = (r for r in logged_examples(examples, since=since, until=until) if served_by is None or r.policy_id == served_by)
    return _logged(
        (Row(r.decision_id, r.event_time, r.features, list(r.eligible), r.action_id, r.probability, r.reward,
             {policy: list(pmf) for policy, pmf in r.shadow.items()}, list(r.pmf), r.policy_id) for r in rows), Catalog(config),
        servable_only=True,
    )  # fmt: skip


Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite JSON number (not a numeric string, not true)."""
FeatureValue = Annotated[Number, Field(ge=-MAX_FEATURE_MAGNITUDE, le=MAX_FEATURE_MAGNITUDE)] | StrictStr
"""A feature as a request may carry it: a number within the server's bound, or a category."""


class ExportedDecision(BaseModel):
    """One line of `brein log export` as a replay reads it: the fields it uses, their types and how
    they fit together checked, so that a line edited or written by hand is refused with its key
    rather than read as another decision (a negative ``_labelIndex`` picked the last action)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    decision_id: StrictStr = Field(alias="EventId", min_length=1)
    event_time: Number = Field(alias="_time")
    features: dict[StrictStr, dict[StrictStr, FeatureValue]] = Field(alias="_features")
    actions: list[StrictStr] = Field(alias="_actions", min_length=1)
    chosen: StrictInt = Field(alias="_labelIndex", ge=0)
    probability: Number = Field(alias="_label_probability")
    reward: Number = Field(alias="_reward")
    shadow: dict[StrictStr, list[Number]] = Field(alias="_shadow", default_factory=dict)

    @model_validator(mode="after")
    def _fits_its_actions(self) -> ExportedDecision:
        if self.chosen >= len(self.actions):
            raise ValueError(f"_labelIndex {self.chosen} is not one of the line's {len(self.actions)} actions")
        if len(set(self.actions)) < len(self.actions):
            raise ValueError("_actions: an action id appears more than once")
        for policy, pmf in self.shadow.items():
            if len(pmf) != len(self.actions):
                raise ValueError(f"_shadow.{policy}: {len(pmf)} probabilities for {len(self.actions)} actions")
        return self


def load_dsjson(lines: Iterable[str], config: BreinConfig) -> LoggedData:
    """An exported log (`brein log export`): each line carries the raw features, actions and reward.
    Propensities and rewards are checked where every log's are (``LoggedDecisions``). Every logged
    action is a policy's to take: an export may come from another world than the config's catalog
    (a public log replayed with a config of its features), unlike the store's log (``load_logged``).
    A decision is there once: an EventId on two lines is refused (two overlapping exports put together
    counted their decisions twice, and an estimate on 60 decisions read as a reliable one on 180)."""
    def rows() -> Iterable[Row]:
        seen: dict[str, int] = {}
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = ExportedDecision.model_validate_json(line)
            except ValidationError as error:
                raise ValueError(f"line {number}: not a Brein DSJSON export line ({validation_problems(error)})") from None
            first = seen.setdefault(item.decision_id, number)
            if first != number:
                raise ValueError(f"line {number}: EventId {excerpt(item.decision_id)} is line {first}'s too: a decision is "
                                 "logged once (two exports that overlap?)")  # fmt: skip
            yield Row(item.decision_id, item.event_time, item.features, item.actions, item.actions[item.chosen],
                      item.probability, item.reward, item.shadow, [], "")  # fmt: skip

    return _logged(rows(), Catalog(config), servable_only=False)


class PolicyCannotAct(ValueError):
    """A policy gives no probability to any eligible action of some logged decisions (do-nothing on a
    log without a do-nothing action, a rule whose fallback is not eligible): it has no value there,
    so no estimate of its value on that log means anything."""


class Target(NamedTuple):
    """A policy to evaluate: its name in reports, the policy, and the registry entry id its distributions
    were logged under as a shadow when it was read from that entry (None: a file, a built-in or a set-up,
    whose distributions are always computed). A label is no identity: a model file named like a shadow
    was scored with that shadow's logged distributions, and an export's ``_shadow.uniform`` could say
    anything about the built-in uniform."""

    label: str
    policy: Policy
    logged_as: str | None = None


class AsServed:
    """The policy that served the logged decisions, as it served each one: the distribution it logged
    with each (``LoggedData.served``), whatever version of its lineage served it. It exists on its own
    log only. Every importance weight is 1 there, so its value is known on-policy (the mean logged
    reward) and a paired lift against it needs no support for what it did not do: the baseline for a
    lineage that kept learning while it served, which no frozen snapshot of it is."""

    version = "as-served"
    cold = False
    encoding = None

    def pmf(self, shared_line: str, actions: Sequence[Action], features: SharedFeatures | None = None) -> list[float]:
        raise PolicyCannotAct("a policy as served has a distribution only on the decisions it logged")


def _as_served(policy_id: str, data: LoggedData) -> FloatArray:
    if not data.served:
        raise PolicyCannotAct(f"{policy_id} as served: the log holds no served distributions (an export has none)")
    target = np.zeros((len(data), max(len(a) for a in data.actions)))
    for i, pmf in enumerate(data.served):
        total = sum(pmf)  # stored rounded: a row sums to 1 within float precision, not exactly
        target[i, : len(pmf)] = [p / total for p in pmf]
    return target


def distribution(
    policy_id: str,
    policy: Policy,
    encoder: FeatureEncoder,
    data: LoggedData,
    min_probability: float = 0.0,
    *,
    logged_as: str | None = None,
) -> FloatArray:
    """The policy's (n, K) distribution over each decision's actions, zero-padded, and zero on those
    today's catalog no longer has (``LoggedData.servable``). The pmf logged under ``logged_as`` (a
    registry entry's id: ``Target``) is used where the log has it and every action of the decision is
    still in the catalog: exact probabilities on the live contexts (floored as served). Every pmf
    computed here gets ``min_probability`` (``learner.min_probability``) the way serving floors every
    policy it serves or shadows (``bandit.sampling.floored``), so the evaluation values the policy that
    would serve: a one-hot rule judged unfloored was valued for choices serving would not make.
    ``AsServed`` is taken as logged (what it served, also an action dropped since)."""
    if isinstance(policy, AsServed):
        return _as_served(policy_id, data)
    width = max(len(a) for a in data.actions)
    target = np.zeros((len(data), width))
    own = encoder.with_encoding(policy.encoding)  # a model sees its lineage's encoding
    for i, (features, actions) in enumerate(zip(data.features, data.actions, strict=True)):
        kept = list(data.servable[i]) if data.servable else list(range(len(actions)))
        if not kept:
            continue  # nothing the catalog has today: refused below
        logged = data.shadow[i].get(logged_as) if logged_as and data.shadow and len(kept) == len(actions) else None
        offered = [actions[k] for k in kept]
        pmf = logged if logged is not None else floored(policy.pmf(own.shared_line(features), offered, features), min_probability)
        target[i, kept] = pmf
    idle = np.flatnonzero(target.sum(axis=1) <= 0)
    if idle.size:
        first = int(idle[0])
        eligible = [a.id for a in data.actions[first]]
        shown = ", ".join(eligible[:3]) + (f" and {len(eligible) - 3} more" if len(eligible) > 3 else "")
        raise PolicyCannotAct(
            f"{policy_id} cannot act on {idle.size:,} of the {len(data):,} logged decisions: none of its actions is among their "
            f"eligible actions (the first, {data.decision_ids[first]}, allows {shown}), so it cannot be evaluated on this log"
        )
    return target


def reward_predictions(encoder: FeatureEncoder, data: LoggedData, *, seed: int = 0) -> FloatArray:
    """Cross-fitted VW regression of reward on (context, action), for DM and DR."""
    shared = [encoder.shared_line(f) for f in data.features]
    actions = [[action_line(a) for a in row] for row in data.actions]
    folds = min(5, len(data))
    return CrossFittedRewardModel(folds=max(folds, 2), seed=seed).fit_predict(shared, actions, data.chosen, data.reward)


@dataclass(frozen=True)
class EvaluationReport:
    """Estimates of the candidate (and comparisons with the baseline) made under ``reliability``;
    ``spending``: for a look the gate may take as evidence, the level it was judged at and why (its
    rank among the candidates judged against the champion, which look: policies/spending.py)."""

    candidate: str
    baseline: str | None
    decisions: int
    estimates: list[Estimate]
    comparisons: list[Comparison]
    reliability: Reliability
    spending: Spending | None = None

    def row(self, estimator: str) -> Comparison | Estimate:
        for comparison in self.comparisons:
            if comparison.estimator == estimator:
                return comparison
        for estimate in self.estimates:
            if estimate.estimator == estimator:
                return estimate
        raise KeyError(estimator)

    @property
    def reliable(self) -> bool:
        return all(c.reliable for c in self.comparisons) if self.comparisons else all(e.reliable for e in self.estimates)

    @property
    def alpha(self) -> float:
        """Every interval's level is 1 - alpha."""
        return self.estimates[0].alpha if self.estimates else ALPHA

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; each estimate's diagnostics under the keys of ``Diagnostics`` (the gate reads them back)."""

        def interval(key: str, i: Interval) -> dict[str, Any]:
            return {key: [i.low, i.high], f"{key}_trustworthy": i.trustworthy, f"{key}_caveat": i.caveat}

        def estimate(e: Estimate) -> dict[str, Any]:
            clipped = {} if e.clipped_ess is None else {"clipped_ess": e.clipped_ess}
            return {"value": e.value, "alpha": e.alpha, **interval("bootstrap", e.bootstrap), **interval("analytic", e.analytic),
                    **asdict(e.diagnostics), **clipped, "reliable": e.reliable, "reasons": list(e.reasons)}  # fmt: skip

        rows: dict[str, Any] = {}
        if self.comparisons:
            for c in self.comparisons:
                rows[c.estimator] = {"candidate": estimate(c.candidate), "baseline": estimate(c.baseline),
                                     "difference": c.difference, **interval("difference_bootstrap", c.bootstrap),
                                     **interval("difference_analytic", c.analytic), "reliable": c.reliable}  # fmt: skip
        else:
            rows = {e.estimator: {"candidate": estimate(e), "reliable": e.reliable} for e in self.estimates}
        spending = {} if self.spending is None else {KEY: self.spending.as_dict()}
        return {"candidate": self.candidate, "baseline": self.baseline, "decisions": self.decisions, "reliable": self.reliable,
                "thresholds": asdict(self.reliability), **spending, "estimators": rows}  # fmt: skip


def evaluate_on(
    data: LoggedData,
    encoder: FeatureEncoder,
    candidate: Target,
    baseline: Target | None = None,
    estimators: Sequence[str] = tuple(ESTIMATORS),
    *,
    reliability: Reliability,
    n_bootstrap: int = 500,
    seed: int = 0,
    reward_hat: FloatArray | None = None,
    min_probability: float = 0.0,
    alpha: float = ALPHA,
) -> EvaluationReport:
    """``reward_hat``: ``reward_predictions(encoder, data, seed=seed)`` made once for several
    evaluations on the same log (DM and DR need it); made here when absent. ``min_probability``: the
    floor serving puts under every policy's pmf (``learner.min_probability``). ``alpha``: every
    interval's level is 1 - alpha."""
    if len(data) < 2:
        raise ValueError(f"the log holds {len(data)} joined decisions in that range; an evaluation needs at least 2")
    unknown = sorted(set(estimators) - set(ESTIMATORS))
    if unknown:
        raise ValueError(f"estimator: unknown {', '.join(unknown)}; expected some of {', '.join(ESTIMATORS)}")
    chosen = [
        ClippedIPS(clip=CLIP, alpha=alpha, n_bootstrap=n_bootstrap, seed=seed)
        if name == "clipped_ips"
        else ESTIMATORS[name](alpha=alpha, n_bootstrap=n_bootstrap, seed=seed)
        for name in estimators
    ]
    # The policies' distributions first: one that cannot act on the log is refused before the reward model is fitted.
    named = [candidate] if baseline is None else [candidate, baseline]
    targets = [distribution(t.label, t.policy, encoder, data, min_probability, logged_as=t.logged_as) for t in named]
    needs_model = any(e.needs_model for e in chosen)
    log = LoggedDecisions(
        reward=data.reward, propensity=data.propensity, action=data.chosen,
        reward_hat=(reward_predictions(encoder, data, seed=seed) if reward_hat is None else reward_hat) if needs_model else None,
    )  # fmt: skip
    if len(targets) == 1:
        estimates = run_estimators(log, targets[0], chosen, reliability=reliability)
        return EvaluationReport(candidate.label, None, len(data), estimates, [], reliability)
    comparisons = compare_policies(log, targets[0], targets[1], chosen, reliability=reliability)
    estimates = [c.candidate for c in comparisons]
    return EvaluationReport(candidate.label, named[1].label, len(data), estimates, comparisons, reliability)
