"""Tuning from the log: train several learning set-ups on the joined examples before a cut, evaluate
each off-policy on the examples after it against the champion, and register the best reliable one.

A set-up is data: a name and overrides of the ``[learner]`` section (any of its learning keys, e.g.
``interactions`` with cubic terms, ``exploration``, ``epsilon``, ``reward_scale``) plus the VW
settings the section only reaches through ``extra_args``: ``learning_rate``, ``power_t`` (its
decay), ``l1``, ``l2``, ``cb_type`` (VW's SquareCB takes only ``mtr``: the others need
``exploration = "epsilon"``) and ``clip_p`` (importance-weight clipping: a logged probability counts
as at least this). And ``numeric_default``, the encoding of numeric fields: ``quantile`` (edges
learned from the examples a set-up trains on) or ``auto`` (data-free); a model carries its encoding
(stored with its snapshots), so it is evaluated and served on the features it was trained on.

Picking the best of several set-ups by the lower bound of its lift on one log favours the one whose
estimate erred upwards (the winner's curse): each set-up's intervals are at level 1 - alpha / k for
the k set-ups competing (Bonferroni), so the gate's "beats the champion at 1 - alpha" holds for the one
picked, and each has k times the bootstrap resamples, as many beyond each bound as a single one. A run
against the champion is one candidate judged against it, and alpha is its rank's
(policies/spending.py): the i-th candidate's ALPHA·6/(π² i²). Its trial is recorded
(``register_best``) whether it registers its best or nothing, so that the next is judged after it.

Nothing is written while set-ups are trained and evaluated. The best is registered afterwards: its
snapshot and its evaluation first, under an id no registered policy has, then the registry entry
in one store call, so a run killed at any point leaves either no candidate or a whole one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from bandit.config import BreinConfig, FeaturesConfig, LearnerConfig, read_toml
from bandit.errors import BreinError, excerpt, validation_problems
from bandit.features import FeatureEncoder
from bandit.learner import vw_arguments, vw_refusal
from policies.estimators import ALPHA, Estimate, level
from policies.evaluation import (
    ESTIMATORS,
    AsServed,
    EvaluationReport,
    LoggedData,
    Target,
    evaluate_on,
    load_logged,
    reward_predictions,
)
from policies.gate import gate_reliability, resamples
from policies.operations import Trained, evaluation_record, resolve_policy, train_model
from policies.registry import (
    POLICY_ID_LENGTH,
    InvalidTransition,
    Registry,
    artifact_hash,
    checked_new_policy_id,
    unused_policy_id,
)
from policies.spending import Spending, candidate_alpha, look_alpha, ordinal, rank, trial_entry, trials
from reward.credit import CreditRules
from store import Store
from store.records import DAY, EvaluationRecord, PolicyEntry

VW_KEYS: dict[str, str] = {
    "learning_rate": "--learning_rate", "power_t": "--power_t", "l1": "--l1", "l2": "--l2",
    "cb_type": "--cb_type", "clip_p": "--clip_p",
}  # fmt: skip
"""Set-up keys that are VW options, not keys of the ``[learner]`` section."""
FEATURE_KEYS: dict[str, tuple[str, ...]] = {"numeric_default": ("quantile", "auto")}
"""Set-up keys of the ``[features]`` section, and the values a set-up may give them: a model of
either encoding is served as it was trained whichever of the two the config names (an ``auto``
model's fields are encoded ``auto`` when its config says ``quantile`` and it has no edges)."""
NOT_LEARNING = frozenset({"policy_id", "model", "online", "snapshot_every"})
"""``[learner]`` keys that say how the server runs a model, not how it learns: not for a set-up."""
LEARNER_KEYS = sorted(set(LearnerConfig.model_fields) - NOT_LEARNING)
ACTOR = "brein-tuning"


class TuningError(BreinError):
    """Tuning cannot run on this input (a bad set-up file, a cut outside the log, too few examples)."""


class TooFewExamples(TuningError):
    """The log holds too few joined examples before or after the cut (yet: a growing log may hold enough later)."""


def _without(args: Sequence[str], option: str) -> list[str]:
    """``args`` without ``option`` and its value (``--option value``, ``--option=value``, or VW's short
    ``-l value`` for ``--learning_rate``): the set-up's value replaces the config's."""
    names = {option, *(["-l"] if option == "--learning_rate" else [])}
    kept: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in names:
            skip = True
        elif not arg.startswith(f"{option}="):
            kept.append(arg)
    return kept


@dataclass(frozen=True, slots=True)
class Setup:
    """A named learning set-up: overrides of the ``[learner]`` section and VW options (``VW_KEYS``)."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)

    def config(self, config: BreinConfig) -> BreinConfig:
        """``config`` with this set-up's learner; TuningError naming the key when it is not valid."""
        unknown = sorted(set(self.overrides) - set(LEARNER_KEYS) - set(VW_KEYS) - set(FEATURE_KEYS))
        if unknown:
            raise TuningError(f"set-up {self.name!r}: unknown learner key {', '.join(map(repr, unknown))}; "
                              f"expected some of {', '.join(LEARNER_KEYS + list(VW_KEYS) + list(FEATURE_KEYS))}")  # fmt: skip
        features = self._features(config)
        learner = {k: v for k, v in self.overrides.items() if k not in VW_KEYS and k not in FEATURE_KEYS}
        extra = [str(a) for a in learner.pop("extra_args", config.learner.extra_args)]
        for key, option in VW_KEYS.items():
            if key in self.overrides:
                extra = [*_without(extra, option), option, str(self.overrides[key])]
        try:
            tuned = LearnerConfig.model_validate({**config.learner.model_dump(), **learner, "extra_args": extra})
        except ValidationError as error:
            raise TuningError(f"set-up {self.name!r}: {validation_problems(error)}") from None
        refusal = vw_refusal(vw_arguments(tuned))
        if refusal is not None:
            raise TuningError(f"set-up {self.name!r}: VW refuses {' '.join(vw_arguments(tuned))}: {refusal}")
        return config.model_copy(update={"learner": tuned, "features": features})

    def _features(self, config: BreinConfig) -> FeaturesConfig:
        """The config's ``[features]`` with this set-up's ``FEATURE_KEYS``."""
        update = {k: v for k, v in self.overrides.items() if k in FEATURE_KEYS}
        for key, value in update.items():
            allowed = FEATURE_KEYS[key]
            if value not in allowed or getattr(config.features, key) not in allowed:
                raise TuningError(f"set-up {self.name!r}: {key}: expected one of {', '.join(allowed)} in the set-up and "
                                  f"the config, got {value!r} and {getattr(config.features, key)!r}")  # fmt: skip
        return config.features.model_copy(update=update)


def default_setups(config: BreinConfig) -> list[Setup]:
    """Twelve set-ups around the config's own learner (the first, ``config``, changes nothing), and one in the other encoding:

    - ``cubic``: the config's interactions plus offer x channel and context x offer x channel/slot terms;
    - ``lr-0.1``, ``lr-2``: VW's learning rate (default 0.5) lower and higher;
    - ``power_t-0.25``, ``power_t-0``: the learning rate decays more slowly, or not at all (default 0.5);
    - ``l1``, ``l2``: a little regularisation;
    - ``clip_p-0.05``: logged probabilities below 0.05 count as 0.05 in learning;
    - ``restraint-0.01``: every contact learned 1% of the largest outcome value worse than it earned,
      a hurdle against contacts that lose money (it helps in the choosing worlds that over-contact and
      hurts in the others, docs/simulation.md "round 3": so it is judged per log here, not a default);
    - ``epsilon-dr``, ``epsilon-ips``: epsilon-greedy (the config's epsilon) learning with the doubly
      robust or the IPS cost estimate instead of SquareCB's regression;
    - ``auto`` (or ``quantile``): numeric fields in the other of the two encodings, when the config
      names one of them.
    """
    cubic = [*config.learner.interactions, "oc", "uoc", "uos", "hoc", "noc"]
    epsilon = config.learner.epsilon
    return [
        Setup("config"),
        Setup("cubic", {"interactions": list(dict.fromkeys(cubic))}),
        Setup("lr-0.1", {"learning_rate": 0.1}),
        Setup("lr-2", {"learning_rate": 2.0}),
        Setup("power_t-0.25", {"power_t": 0.25}),
        Setup("power_t-0", {"power_t": 0.0}),
        Setup("l1", {"l1": 1e-6}),
        Setup("l2", {"l2": 1e-6}),
        Setup("clip_p-0.05", {"clip_p": 0.05}),
        Setup("restraint-0.01", {"restraint": 0.01}),
        Setup("epsilon-dr", {"exploration": "epsilon", "epsilon": epsilon, "cb_type": "dr"}),
        Setup("epsilon-ips", {"exploration": "epsilon", "epsilon": epsilon, "cb_type": "ips"}),
        *other_encoding(config),
    ]


def other_encoding(config: BreinConfig) -> list[Setup]:
    """The set-up with the other numeric encoding (``quantile`` <-> ``auto``); none for another one."""
    other = {"quantile": "auto", "auto": "quantile"}.get(config.features.numeric_default)
    return [] if other is None else [Setup(other, {"numeric_default": other})]


def load_setups(path: str | Path) -> list[Setup]:
    """A set-up file: ``[[setup]]`` tables, each with a ``name`` and its learner keys, e.g.

        [[setup]]
        name = "cubic-fast"
        interactions = ["uo", "uc", "uoc"]
        learning_rate = 1.0
    """
    path = Path(path)
    data = read_toml(path, TuningError)
    tables = data.get("setup")
    if set(data) != {"setup"} or not isinstance(tables, list) or not tables:
        raise TuningError(f"{path}: expected one or more [[setup]] tables and nothing else, got keys {', '.join(data) or 'none'}")
    setups = []
    for i, table in enumerate(tables):
        name = table.get("name")
        if not isinstance(name, str) or not name:
            raise TuningError(f"{path}: setup[{i}]: expected a non-empty name")
        try:
            checked_new_policy_id(candidate_id(0.0, name))
        except ValueError as error:  # the name is part of the id its candidate is registered under
            raise TuningError(f"{path}: setup[{i}]: name {excerpt(name)} makes no candidate id: {error}") from None
        setups.append(Setup(name, {k: v for k, v in table.items() if k != "name"}))
    names = [s.name for s in setups]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise TuningError(f"{path}: set-up names must differ; {', '.join(twice)} more than once")
    return setups


@dataclass(frozen=True)
class Tried:
    """One set-up trained and evaluated: its model, its report, and the gate's reading of that report
    (``record``: the gate estimator's lift over the champion with the wider of its intervals' bounds)."""

    setup: Setup
    trained: Trained
    train_seconds: float
    report: EvaluationReport
    record: EvaluationRecord

    @property
    def reliable(self) -> bool:
        return self.report.reliable

    @property
    def value(self) -> Estimate:
        """The set-up's own estimated value (money per decision) by the gate estimator."""
        return self.report.estimates[[e.estimator for e in self.report.estimates].index(self.record.estimator)]

    def as_dict(self, *, evaluation: bool = True) -> dict[str, Any]:
        first = self.report.comparisons[0]  # the diagnostics are each policy's on the log: every estimator shares them
        sides = ((first.candidate, self.setup.name), (first.baseline, self.record.against))
        reasons = [f"{name}: {reason}" for estimate, name in sides for reason in estimate.reasons]
        value, record = self.value, self.record
        row = {"setup": self.setup.name, "overrides": dict(self.setup.overrides), "args": self.trained.args,
               "trained_on": self.trained.learned, "train_seconds": self.train_seconds, "estimator": record.estimator,
               "value": value.value,
               "value_interval": [min(value.bootstrap.low, value.analytic.low), max(value.bootstrap.high, value.analytic.high)],
               "lift": record.lift, "lift_interval": [record.lift_lower, record.lift_upper], "ess": record.ess,
               "reliable": self.reliable, "reasons": reasons}  # fmt: skip
        return {**row, "evaluation": self.report.as_dict()} if evaluation else row


@dataclass
class Tuning:
    """A tuning run's result: everything tried, the best (None when none is reliable and wins) and why."""

    cut: float
    until: float | None
    baseline: str
    """The registry's champion, or the set-up every other one is compared with (``against``)."""
    against_champion: bool
    trained_until: float
    """The set-ups learned the joined decisions before this: the cut, or what the champion had learned by it."""
    trained_on: int
    evaluated_on: int
    tried: list[Tried]
    best: Tried | None
    verdict: str
    alpha: float
    """Every interval's level is 1 - alpha: the run's alpha shared by the set-ups competing to be the best."""
    as_served: bool = False
    """The baseline is the champion as it served the held-out decisions (``AsServed``), not its model."""
    registered: str | None = None
    spending: Spending | None = None
    """Against the champion: the run's level as a candidate judged against it (its rank: policies/spending.py)."""

    def as_dict(self, *, evaluation: bool = True) -> dict[str, Any]:
        """JSON-ready; each set-up's whole evaluation report too unless ``evaluation`` is False."""
        return {"cut": self.cut, "until": self.until, "baseline": self.baseline, "against_champion": self.against_champion,
                "baseline_as_served": self.as_served, "trained_until": self.trained_until, "trained_on": self.trained_on,
                "evaluated_on": self.evaluated_on, "best": self.best.setup.name if self.best else None, "verdict": self.verdict,
                "alpha": self.alpha, "spending": self.spending.as_dict() if self.spending else None,
                "registered": self.registered,
                "tried": [t.as_dict(evaluation=evaluation) for t in self.tried]}  # fmt: skip


Progress = Callable[[str, int, int], None]
"""What is being done, and how many of the set-ups' steps (a training, an evaluation) are done of how many."""


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M")


def check_log(config: BreinConfig, store: Store, cut: float, until: float | None = None) -> tuple[int, int]:
    """How many joined examples lie before the cut and in [cut, until); TuningError when tuning cannot use them."""
    before = store.examples.count(until=cut)
    after = store.examples.count(since=cut, until=until)
    if before == 0 and after == 0:
        raise TooFewExamples("the log holds no joined examples to tune on (has `brein join` run?)")
    if before == 0:
        raise TooFewExamples(f"the cut {_when(cut)} is before the log: no joined examples to train on before it")
    if after == 0:
        raise TooFewExamples(f"the cut {_when(cut)} is after the log: no joined examples to evaluate on after it")
    needed = config.gate.min_decisions
    choices = store.examples.count(since=cut, until=until, choices=True)  # the gate counts only these
    if choices < needed:
        raise TooFewExamples(f"too few joined examples after the cut {_when(cut)} to evaluate on: {after:,}, {choices:,} of "
                             f"them with a choice of action, and the gate needs {needed:,} (gate.min_decisions): choose an "
                             "earlier cut")  # fmt: skip
    return before, after


def cut_holding(store: Store, needed: int, latest: float, until: float) -> float:
    """The latest cut at or before ``latest`` with at least ``needed`` joined examples with a choice of
    action (those the gate counts) in [cut, until): ``latest`` when it holds them, else the event time
    (to a minute) from which the log holds them, else the start of the log (then ``check_log`` says
    how many there are)."""
    if store.examples.count(since=latest, until=until, choices=True) >= needed:
        return latest
    span, high = DAY, latest
    low = latest - span  # low: a cut early enough, found by doubling the span; high: one too late
    while store.examples.count(since=low, until=until, choices=True) < needed:
        if store.examples.count(until=low) == 0:
            return low
        high, span = low, 2 * span
        low = latest - span
    while high - low > 60.0:
        middle = (low + high) / 2
        low, high = (middle, high) if store.examples.count(since=middle, until=until, choices=True) >= needed else (low, middle)
    return low


def tune(
    config: BreinConfig,
    store: Store,
    *,
    cut: float,
    until: float | None = None,
    setups: Sequence[Setup] | None = None,
    against: str | None = None,
    progress: Progress | None = None,
    n_bootstrap: int = 500,
) -> Tuning:
    """Train every set-up (default ``default_setups``) on the joined examples before ``cut``, evaluate
    each with every estimator on those in [cut, until) with its paired lift over the champion, and
    pick the best: the reliable one with the highest lower bound of the gate estimator's lift, if
    that lift is positive. Reads the store only.

    Against the champion as it served (``champion_baseline``) the set-ups learn only what the champion
    had learned when it served the first held-out decision: the decisions joined by the cut, those
    before it less the join's ``close_after`` (a decision is joined once its longest window closes).
    Trained up to the cut, a set-up would know outcomes the champion learned only weeks later, and
    beat it by hindsight, not by learning better; trained so, it has at most the data the champion
    had at every held-out decision. Promoted, it learns on online from there, as every lineage does.

    ``against``: the name of one of the set-ups, compared with instead of the champion (what tuning
    finds over the config's own set-up, retrained on the same examples); such a run registers nothing."""
    chosen = list(setups) if setups is not None else default_setups(config)
    if not chosen:
        raise TuningError("expected at least one set-up to try")
    configs = [setup.config(config) for setup in chosen]  # every set-up is checked before anything is trained
    names = [setup.name for setup in chosen]
    if against is not None and against not in names:
        raise TuningError(f"against: expected the name of a set-up ({', '.join(names)}), got {against!r}")
    before, _ = check_log(config, store, cut, until)
    trained_until = cut
    spending = None
    if against is None:
        baseline, logged = champion_baseline(config, store, cut, until)
        if isinstance(baseline[1], AsServed):
            trained_until, before = known_by(config, store, cut)
        # a new candidate against the champion: the next rank after every candidate judged against it
        spending = Spending(rank(trials(store, baseline[0]), None), 1, len(chosen))
    else:
        logged = load_logged(config, store.examples, cut, until)
    encoder = FeatureEncoder(config)
    alpha, resamples = competing_level(len(chosen) - (against is not None), n_bootstrap, spending)
    steps, done = 2 * len(chosen) + 1, 0

    def step(what: str) -> None:
        if progress:
            progress(what, done, steps)

    step("fitting the reward model for DM and DR")
    reward_hat = reward_predictions(encoder, logged)
    done += 1
    models: list[tuple[Trained, float]] = []
    for setup, tuned in zip(chosen, configs, strict=True):
        step(f"training {setup.name} on {before:,} examples")
        started = time.perf_counter()
        models.append((train_model(tuned, store, since=None, until=trained_until), time.perf_counter() - started))
        done += 1
    policies = [Target(setup.name, trained.policy()) for setup, (trained, _) in zip(chosen, models, strict=True)]
    if against is not None:
        baseline = policies[names.index(against)]
    tried = []
    for setup, (trained, seconds), policy in zip(chosen, models, policies, strict=True):
        step(f"evaluating {setup.name} on {len(logged):,} decisions")
        report = evaluate_on(logged, encoder, policy, baseline, tuple(ESTIMATORS), reliability=gate_reliability(config.gate),
                             n_bootstrap=resamples, reward_hat=reward_hat,
                             min_probability=config.learner.min_probability, alpha=alpha)  # fmt: skip
        report = replace(report, spending=spending)
        done += 1
        record = evaluation_record(config, report, logged, setup.name, baseline[0], gate_window=True)  # held out by the cut
        tried.append(Tried(setup, trained, seconds, report, record))
    step("done")
    as_served = isinstance(baseline[1], AsServed)
    contenders = [t for t in tried if t.setup.name != against]
    shown = baseline[0] + (" as served" if as_served else "")
    best, verdict = _best(contenders, shown, alpha, config.gate.min_lift, None if spending is None else (spending, baseline[0]))
    return Tuning(cut, until, baseline[0], against is None, trained_until, before, len(logged), tried, best, verdict, alpha,
                  as_served, spending=spending)


def known_by(config: BreinConfig, store: Store, cut: float) -> tuple[float, int]:
    """The time before which decisions were joined by the cut, and how many joined examples lie before
    it; TooFewExamples when none do."""
    lag = CreditRules(config).close_after
    until = cut - lag
    before = store.examples.count(until=until)
    if before == 0:
        raise TooFewExamples(f"no joined examples to train on before {_when(until)}: what the champion had learned by the cut "
                             f"{_when(cut)}, the join closing a decision {lag / DAY:g} days after it")  # fmt: skip
    return until, before


def champion_baseline(config: BreinConfig, store: Store, cut: float, until: float | None) -> tuple[Target, LoggedData]:
    """What a set-up is compared with, and on which held-out decisions: the champion as it served them
    (``AsServed``: its lineage kept learning while it served, and the log supports that behaviour and
    no frozen snapshot of it) on the decisions it served, when it served at least ``gate.min_decisions``
    of them; else (a champion promoted since the cut) its model, off-policy, on all of them."""
    champion = resolve_policy("champion", config, store).target
    served = load_logged(config, store.examples, cut, until, served_by=champion.label)
    if len(served) >= config.gate.min_decisions:
        return Target(champion.label, AsServed()), served
    return champion, load_logged(config, store.examples, cut, until)


def _best(
    tried: Sequence[Tried], champion: str, alpha: float, min_lift: float, judged: tuple[Spending, str] | None = None
) -> tuple[Tried | None, str]:
    """The reliable set-up with the highest lower bound of its lift, when that bound is above ``min_lift``
    (``gate.min_lift``): what the gate needs. A positive point estimate is not a win: the set-up
    registered at +0.426 [-0.527, +1.684] may well be worse than the champion."""
    reliable = [t for t in tried if t.reliable]
    if not reliable:
        return None, "no set-up's evaluation is reliable (too little support in the log: see each one's reasons)"
    best = max(reliable, key=lambda t: t.record.lift_lower)
    lift = best.record
    run = ALPHA if judged is None else candidate_alpha(judged[0].rank)
    rank_shown = "" if judged is None else f", the {ordinal(judged[0].rank)} candidate judged against {judged[1]}"
    interval = (f"{lift.lift:+.3f} [{lift.lift_lower:+.3f}, {lift.lift_upper:+.3f}] per decision "
                f"({level(alpha)} interval: {level(run)} for the best of {len(tried)}{rank_shown})")  # fmt: skip
    if lift.lift_lower <= min_lift:
        return None, (f"no reliable set-up beats {champion}: the best, {best.setup.name}, has a {lift.estimator} lift of "
                      f"{interval}, its lower bound not above the gate's minimum lift {min_lift:+g}")  # fmt: skip
    return best, (f"{best.setup.name}: the highest lower bound of the {lift.estimator} lift over {champion} among the reliable "
                  f"set-ups, {interval}")  # fmt: skip


def competing_level(competing: int, n_bootstrap: int, spending: Spending | None = None) -> tuple[float, int]:
    """The alpha of each of ``competing`` set-ups' intervals (Bonferroni: the run's alpha shared among
    them; ``spending``'s against the champion, else ALPHA) and the bootstrap resamples that leave as many
    beyond each bound as ``n_bootstrap`` leave at ALPHA."""
    alpha = look_alpha(1, competing) if spending is None else spending.alpha
    return alpha, resamples(alpha, n_bootstrap)


def candidate_id(cut: float, setup: str) -> str:
    """The id a tuning registers its best set-up under by default."""
    return f"tuned-{datetime.fromtimestamp(cut, tz=UTC):%Y%m%d}-{setup}"


FRESH_IDS = 100
"""The ids a tuning tries for its candidate when it chose the id itself and finds it taken: the
default, then the default with -2, -3, ... (``fresh_id``)."""


def fresh_id(base: str, n: int) -> str:
    """The n-th id a tuning tries for a candidate whose default id is ``base``: ``base``, then ``base-n``
    (``base`` shortened to keep it a policy id)."""
    if n == 1:
        return base
    suffix = f"-{n}"
    return f"{base[: POLICY_ID_LENGTH - len(suffix)]}{suffix}"


def register_best(
    config: BreinConfig, store: Store, tuning: Tuning, *, actor: str = ACTOR, policy_id: str | None = None
) -> PolicyEntry | None:
    """Register the best set-up's model as a candidate with its evidence (None when there is no best):
    its entry, its snapshot (learned up to the cut) and its evaluation against the champion in one
    write (``Registry.register``), so that no other registration of its id, however close in time,
    gets its model or evidence, nor it theirs. An id the caller named (``policy_id``) that is taken,
    before or while it is written, refuses the registration (TuningError): a name somebody chose is
    not replaced. The id a tuning chooses itself (``candidate_id``: tuned-<cut's date>-<set-up>) is a
    name only (another tuning on the same day, the worker's and an operator's at once): when it is
    taken, the candidate gets the next free one (``fresh_id``).

    A run against the champion is recorded as a candidate judged against it (its trial, ``TRIAL_ACTION``:
    in the registration's write, or alone when it registers nothing), so that the next candidate is
    judged at the level after it (policies/spending.py): a run whose best did not pass was a chance to
    pass all the same. Unless none of its set-ups was reliable: then none could pass, whatever the
    rewards, and it spent nothing."""
    best = tuning.best
    if best is None:
        if tuning.spending is not None and any(t.reliable for t in tuning.tried):
            store.audit.record(trial_entry(tuning.baseline, tuning.spending, actor=actor, at=time.time(),
                                           verdict=tuning.verdict)).result()  # fmt: skip
        return None
    if not tuning.against_champion:
        raise TuningError(f"a tuning against the set-up {tuning.baseline} registers nothing: the gate compares with the champion")
    registry = Registry(store.registry)
    trained = best.trained
    report = {**best.record.report, "tuning": tuning.as_dict(evaluation=False)}
    note = (f"tuned on {tuning.trained_on:,} joined examples before {_when(tuning.trained_until)}, evaluated on "
            f"{tuning.evaluated_on:,} from {_when(tuning.cut)}; best of {len(tuning.tried)} set-ups: {tuning.verdict}; "
            f"set-up {dict(best.setup.overrides)}")  # fmt: skip
    base = policy_id or candidate_id(tuning.cut, best.setup.name)
    for n in range(1, 2 if policy_id is not None else FRESH_IDS + 1):
        new_id = fresh_id(base, n)
        at = time.time()
        run_row = [] if tuning.spending is None else [
            trial_entry(tuning.baseline, tuning.spending, actor=actor, at=at, verdict=tuning.verdict, candidate=new_id,
                        artifact_hash=artifact_hash("vw", trained.data))
        ]  # fmt: skip
        try:
            unused_policy_id(registry, new_id)
            entry = registry.register(new_id, "vw", artifact=trained.data, args=trained.args,
                                      features=trained.features(config), parent=tuning.baseline, note=note, actor=actor,
                                      trained_until=trained.until, selected_among=len(tuning.tried),
                                      evidence=[replace(best.record, policy_id=new_id, at=at, report=report)],
                                      snapshot=trained.snapshot(new_id), audit=run_row)  # fmt: skip
        except InvalidTransition as taken:
            if policy_id is not None:
                raise TuningError(str(taken)) from None
            continue
        tuning.registered = entry.id
        return entry
    raise TuningError(f"{base} and {fresh_id(base, FRESH_IDS)} and every id between are taken: name the candidate (--id)")
