"""What operators and data scientists do with policies, as plain functions: the CLI and notebooks
both call these. Domain errors come out as exceptions; only the CLI turns them into exit codes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.encoding import LearnedEncoding
from bandit.errors import BreinError, ConfigError
from bandit.features import FeatureEncoder
from bandit.learner import LabelledExample, VWPolicy, train, vw_arguments, vw_refusal
from bandit.policies import DoNothingPolicy, Policy, RulePolicy, UniformPolicy
from policies.evaluation import ESTIMATORS, EvaluationReport, LoggedData, Target, evaluate_on, load_logged
from policies.gate import GateRefused, Window, check_gate, gate_reliability, look, resamples
from policies.loading import LEARNED_KEY, PolicyLoadError, check_servable, load_policy, parse_rules
from policies.registry import ChampionChanged, InvalidTransition, Registry, UnknownPolicy, unused_policy_id
from policies.spending import Spending, look_alpha, rank, trials
from reward.credit import CreditRules
from reward.online import ExampleReader, encoding_at_birth
from store import Store, open_store
from store.records import DAY, START, Cursor, EvaluationRecord, Kind, ModelSnapshot, PolicyEntry

Progress = Callable[[int, int], None]


REGISTRY = "registry:"
"""A spec's prefix that names a registry entry, whatever else its id could name (``registry:champion``)."""
BUILTIN = "builtin:"
"""A spec's prefix that names a built-in policy, whatever is registered under its name."""
BUILTINS: dict[str, Callable[[], Policy]] = {"uniform": UniformPolicy, "do_nothing": DoNothingPolicy}


class AmbiguousPolicy(BreinError):
    """A policy spec that names both a registry entry and a built-in policy or a file."""


class NotJudgedYet(BreinError):
    """A registry entry evaluated on the gate's window (the log after what it learned from, or after its
    registration) before the log holds joined decisions there: it says what to do first."""

    def __init__(self, config: BreinConfig, entry: PolicyEntry, decisions: int) -> None:
        assert entry.trained_until is not None
        after = datetime.fromtimestamp(entry.trained_until, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        days = CreditRules(config).close_after / DAY
        super().__init__(
            f"{entry.id} is judged only on the decisions logged after {after} (it learned from those before, or was "
            f"registered after them: no evidence about it), and the log holds {decisions} joined decision(s) after it "
            f"yet: shadow it first (`brein policy shadow {entry.id}`), so that it scores every live decision beside the "
            f"champion, and evaluate it (`brein policy evaluate {entry.id}`) once decisions logged from now on are "
            f"joined, each {days:g} days after it was made (when its outcomes' attribution windows have closed)"
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Resolved:
    """A policy spec resolved: its name in reports, the policy, and the registry entry it was read
    from (None: a built-in policy or a file, whatever its name)."""

    label: str
    policy: Policy
    entry: PolicyEntry | None = None

    @property
    def labelled(self) -> tuple[str, Policy]:
        return self.label, self.policy

    @property
    def target(self) -> Target:
        """What evaluation scores: a registry entry's logged shadow distributions are its own, by its id."""
        return Target(self.label, self.policy, self.entry.id if self.entry is not None else None)


def registered(policy_id: str) -> str:
    """The spec that names the registry entry ``policy_id`` and nothing else."""
    return REGISTRY + policy_id


def _outside(spec: str) -> str | None:
    """What ``spec`` names outside the registry ('built-in', 'file'), or None."""
    if spec.startswith(BUILTIN) or spec in BUILTINS:
        return "built-in"
    return "file" if Path(spec).is_file() else None


def needs_registry(spec: str) -> bool:
    """Whether ``resolve_policy`` reads the policy from a registry (not a built-in or a file)."""
    return spec == "champion" or spec.startswith(REGISTRY) or _outside(spec) is None


def resolve_policy(spec: str, config: BreinConfig, store: Store | None) -> Resolved:
    """A policy named by 'champion' (always the current champion), a registry id, 'uniform', 'do_nothing',
    a rule file (.json) or a VW model file. A spec that names both a registry entry and a built-in or a
    file is refused (AmbiguousPolicy): ``registry:ID``, ``builtin:NAME`` or ``./FILE`` says which.
    ``store`` may be None when the spec names a built-in policy or a file."""
    if store is None and needs_registry(spec):
        raise ValueError(f"{spec}: no such file, and not 'uniform' or 'do_nothing'; a registry id needs a store (--store)")
    outside = _outside(spec)
    if store is not None and (spec == "champion" or spec.startswith(REGISTRY) or outside is None):
        return _from_registry(spec, store)
    if store is not None and store.registry.policy(spec) is not None:
        how = f"'{BUILTIN}{spec}' for the built-in policy" if outside == "built-in" else f"'./{spec}' for the file"
        raise AmbiguousPolicy(f"{spec!r} names both a registered policy and a {outside}: say '{REGISTRY}{spec}' for the "
                              f"registered one or {how}")  # fmt: skip
    return _builtin(spec.removeprefix(BUILTIN)) if outside == "built-in" else _file(spec, config)


def _from_registry(spec: str, store: Store) -> Resolved:
    registry = Registry(store.registry)
    if spec == "champion":
        entry = registry.champion()
        if entry is None:
            raise UnknownPolicy("champion")
    else:
        entry = registry.get(spec.removeprefix(REGISTRY))
    return Resolved(entry.id, load_policy(entry, store.models)[0], entry)


def _builtin(name: str) -> Resolved:
    if name not in BUILTINS:
        raise ValueError(f"{BUILTIN}{name}: expected one of {', '.join(BUILTIN + b for b in BUILTINS)}")
    return Resolved(name, BUILTINS[name]())


def _file(spec: str, config: BreinConfig) -> Resolved:
    path = Path(spec)
    if path.suffix == ".json":
        return Resolved(path.name, RulePolicy(parse_rules(path.read_bytes()), version=path.name))  # JSON's bytes: a BOM read
    args, data = vw_arguments(config.learner), path.read_bytes()
    refusal = vw_refusal(args, data)  # as at registration: a file cut short or of another reduction loads, and misleads
    if refusal is not None:
        raise PolicyLoadError(f"{spec}: not a VW model for the config's learner arguments: {refusal}")
    return Resolved(path.name, VWPolicy(args, data))


def judged(candidate: Resolved, baseline: Resolved | None) -> tuple[str, str] | None:
    """The (candidate, champion) ids an evaluation is evidence for at the gate: a registry entry's, against
    the entry that was the champion when it was read. Identities, not names: a built-in or a file named
    like an entry is no evidence about it, nor is the champion's evaluation against itself."""
    if candidate.entry is None or baseline is None or baseline.entry is None:
        return None
    if baseline.entry.state != "champion" or candidate.entry.id == baseline.entry.id:
        return None
    return candidate.entry.id, baseline.entry.id


def register_policy(
    config: BreinConfig,
    store: Store,
    *,
    policy_id: str,
    kind: Kind,
    artifact: bytes | None = None,
    vw_args: Sequence[str] | None = None,
    note: str = "",
    actor: str,
) -> PolicyEntry:
    """Register a policy as a candidate once it is shown to load: a VW model file (with the config's
    learner arguments unless given), a rule file (its actions must be in the catalog), uniform or do-nothing.
    A file may have been built from every decision logged so far (340 rules copying the rewarded logged
    choices looked far better than the champion on those, and were worth less on the next): its
    ``trained_until`` is just after the latest event time logged at registration, so the gate judges it
    on the decisions logged after. The built-ins learned from nothing: the whole log judges them."""
    registry = Registry(store.registry)
    unused_policy_id(registry, policy_id)
    args: list[str] = []
    if kind in ("vw", "rules") and artifact is None:
        raise ValueError(f"a {kind} policy needs its file (--file)")
    if kind in ("uniform", "do_nothing") and artifact is not None:
        raise ValueError(f"a {kind} policy has no file")
    if kind == "vw":
        args = list(vw_args) if vw_args else vw_arguments(config.learner)
        refusal = vw_refusal(args, artifact)
        if refusal is not None:
            raise PolicyLoadError(f"{policy_id}: not a VW model for {' '.join(args)}: {refusal}")
    if kind == "rules" and artifact is not None:
        # compiles and weighs every condition (a bad one is refused here) and checks every action is in the catalog
        try:
            rules = RulePolicy(parse_rules(artifact), version="check")
        except ConfigError as error:
            raise PolicyLoadError(f"{policy_id}: {error}") from None
        check_servable(policy_id, rules, Catalog(config))
    champion = registry.champion()
    logged_until = store.joins.watermark() if artifact is not None else None
    return registry.register(
        policy_id, kind, artifact=artifact, args=args, features=config.features.model_dump(),
        parent=champion.id if champion else "", note=note or f"registered {kind} policy", actor=actor,
        trained_until=None if logged_until is None else math.nextafter(logged_until, math.inf),
    )  # fmt: skip


def evaluate_policy(
    config: BreinConfig,
    store: Store,
    candidate: str,
    against: str | None = "champion",
    *,
    since: float | None = None,
    until: float | None = None,
    estimators: Sequence[str] = tuple(ESTIMATORS),
    data: LoggedData | None = None,
    record: bool = True,
    n_bootstrap: int = 500,
) -> EvaluationReport:
    """Estimate the candidate's value (and its paired lift over ``against``) on the logged decisions
    with since <= time < until; by default (neither given) on the window the promotion gate fixes: for
    a registry candidate trained on the log, those after its training data (a file's: after its
    registration, ``register_policy``), else all of them. A rules candidate or baseline with an action
    the catalog does not have is refused (``check_servable``): its rule would never fire, and a baseline
    file with a typo was judged as the do-nothing after it. A registry entry's evaluation against the
    champion's entry is recorded (``judged``); on another window, marked as no evidence for the gate
    (``EvaluationRecord.gate_window``). A look on the gate's window is judged at the level the gate
    spends on it (``Spending``, in the report and its record): the k-th look (a log not judged before,
    under any id of the same artifact: ``Registry.looks``) at the i-th candidate judged against the
    champion (``policies.spending.rank``) at 1 - ALPHA·6/(π² i²) / k², shared among the m set-ups a tuned
    candidate was picked from. Any other evaluation spends nothing (it is no evidence): at 1 - ALPHA / m.
    ``record=False`` (a notebook's) records nothing, at the level the gate would judge that look at."""
    registry = Registry(store.registry)
    resolved = resolve_policy(candidate, config, store)
    check_servable(*resolved.labelled, Catalog(config))
    held_out = resolved.entry.trained_until if resolved.entry is not None else None
    on_gate_window = data is None and until is None and since in (None, held_out)
    window = (held_out, None) if on_gate_window else (since, until)
    logged = data if data is not None else load_logged(config, store.examples, *window)
    if on_gate_window and resolved.entry is not None and held_out is not None and len(logged) < 2:
        raise NotJudgedYet(config, resolved.entry, len(logged))
    encoder = FeatureEncoder(config)
    baseline = resolve_policy(against, config, store) if against else None
    if baseline is not None:
        check_servable(*baseline.labelled, Catalog(config))
    evidence = judged(resolved, baseline)
    selected_among = resolved.entry.selected_among if resolved.entry is not None else 1
    spending = None
    if evidence is not None and resolved.entry is not None and on_gate_window and len(logged):
        nth = look(registry.looks(resolved.entry), evidence[1], _judged_log(logged))
        spending = Spending(rank(trials(store, evidence[1]), resolved.entry.artifact_hash), nth, selected_among)
    alpha = spending.alpha if spending is not None else look_alpha(1, selected_among)
    report = evaluate_on(logged, encoder, resolved.target, baseline.target if baseline else None, estimators,
                         reliability=gate_reliability(config.gate), n_bootstrap=resamples(alpha, n_bootstrap),
                         min_probability=config.learner.min_probability, alpha=alpha)  # fmt: skip
    report = replace(report, spending=spending)
    if evidence is not None and record:
        registry.record_evaluation(evaluation_record(config, report, logged, *evidence, gate_window=on_gate_window))
    return report


def _judged_log(logged: LoggedData) -> Window:
    return float(logged.event_times.min()), float(logged.event_times.max()), len(logged)


def evaluation_record(
    config: BreinConfig, report: EvaluationReport, logged: LoggedData, policy_id: str, champion: str, *, gate_window: bool
) -> EvaluationRecord:
    """What the promotion gate reads of a paired evaluation against the champion: the gate estimator's
    row (else the first), its lift with the wider of its two intervals' bounds, the whole report (with
    the level a look on the gate's window was judged at: ``EvaluationReport.spending``), and whether it
    was made on the gate's window (else the gate does not take it as evidence)."""
    names = [c.estimator for c in report.comparisons]
    gate_row = report.comparisons[names.index(config.gate.estimator)] if config.gate.estimator in names else report.comparisons[0]
    since, until, decisions = _judged_log(logged)
    return EvaluationRecord(
        policy_id=policy_id, against=champion, at=time.time(), since=since, until=until, decisions=decisions,
        estimator=gate_row.estimator, lift=gate_row.difference,
        lift_lower=min(gate_row.bootstrap.low, gate_row.analytic.low),
        lift_upper=max(gate_row.bootstrap.high, gate_row.analytic.high),
        ess=gate_row.candidate.diagnostics.ess, report=report.as_dict(), gate_window=gate_window,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Trained:
    """A VW model learned from the joined examples of a time range, the position of the last one, the
    end of that range (``PolicyEntry.trained_until``), and the numeric encoding its lineage was born
    with (None: ``auto``)."""

    args: list[str]
    data: bytes
    learned: int
    position: Cursor
    until: float
    encoding: LearnedEncoding | None = None

    def policy(self) -> VWPolicy:
        return VWPolicy(self.args, self.data, self.encoding)

    def snapshot(self, policy_id: str) -> ModelSnapshot:
        """The model as its lineage's first snapshot, with the encoding it was trained with."""
        encoding = None if self.encoding is None else self.encoding.to_json()
        return ModelSnapshot(self.policy().version, self.args, self.data, policy_id, self.position, encoding)

    def features(self, config: BreinConfig) -> dict[str, Any]:
        """The registry entry's ``features``: the config's, and the encoding learned (LEARNED_KEY)."""
        features = config.features.model_dump()
        if self.encoding is not None:
            features[LEARNED_KEY] = self.encoding.to_json()
        return features


def train_model(
    config: BreinConfig, store: Store, *, since: float | None, until: float | None, vw_args: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Trained:  # fmt: skip
    """Learn a VW model (``vw_args``, default the config's learner arguments) from the joined examples
    in [since, until), encoded and scaled by ``config``, in the order the online learner takes them.
    A new lineage: its encoding is learned from the same examples (``encoding_at_birth``)."""
    args = list(vw_args) if vw_args else vw_arguments(config.learner)
    encoding = encoding_at_birth(config, store.decisions, until)
    reader = ExampleReader(config, store.examples, encoding=encoding)
    total = store.examples.count(since=since, until=until)
    last: list[Cursor] = [START]
    latest = -math.inf

    def in_range() -> Iterator[LabelledExample]:
        nonlocal latest
        for done, (position, example, _) in enumerate(reader.read(since=since, until=until), 1):
            last[0], latest = position, max(latest, position[1])
            yield example
            if progress and done % 500 == 0:
                progress(min(done, total), total)

    data, learned = train(args, None, in_range())
    if data is None:
        raise ValueError("no joined examples in that time range to train on")
    if progress:
        progress(learned, total)
    end = until if until is not None else math.nextafter(latest, math.inf)  # after the newest example learned
    return Trained(args, data, learned, last[0], end, encoding)


def train_candidate(
    config: BreinConfig,
    store: Store,
    *,
    policy_id: str,
    since: float | None,
    until: float | None,
    vw_args: Sequence[str] | None = None,
    actor: str,
    progress: Progress | None = None,
) -> tuple[PolicyEntry, int]:
    """Train a VW candidate from the joined examples in [since, until) and register it with its
    snapshot, which says how far its model has learned, in one write (``Registry.register``). The id
    is checked before training (``unused_policy_id``); one registered meanwhile, by another process
    however close in time, refuses this registration whole (InvalidTransition): the id was named,
    and another is not chosen for it."""
    registry = Registry(store.registry)
    unused_policy_id(registry, policy_id)
    trained = train_model(config, store, since=since, until=until, vw_args=vw_args, progress=progress)
    champion = registry.champion()
    entry = registry.register(
        policy_id, "vw", artifact=trained.data, args=trained.args, features=trained.features(config),
        parent=champion.id if champion else "", note=f"trained on {trained.learned} joined examples", actor=actor,
        trained_until=trained.until, snapshot=trained.snapshot(policy_id),
    )  # fmt: skip
    return entry, trained.learned


def promote(config: BreinConfig, store: Store, policy_id: str, *, actor: str, force: bool = False, reason: str = "") -> str | None:
    """Make the candidate the champion if the gate lets it through (or ``force`` with a reason): its
    evidence judged at the level its rank among the candidates judged against the champion gives its
    look (``check_gate``). The change commits only while the champion is still the one the gate judged
    against (GateRefused else); the next candidate against the new champion is its first."""
    registry = Registry(store.registry)
    entry = registry.get(policy_id)
    champion = registry.champion()
    if champion is not None and champion.id == policy_id:
        raise InvalidTransition(f"{policy_id} is the champion already")
    # refuse a policy that would not load, or would serve an action the catalog no longer has, before anything changes
    check_servable(policy_id, load_policy(entry, store.models)[0], Catalog(config))
    if not force:
        against = champion.id if champion else ""
        # the level its evidence must have been judged at: its rank among the candidates judged against the champion
        held = rank(trials(store, against), entry.artifact_hash)
        check_gate(config.gate, registry.evaluations(policy_id), policy_id, against, time.time(), held, entry.selected_among)
    elif not reason:
        raise ValueError("--force needs --reason: say why the gate is overridden")
    why = f"forced: {reason}" if force else (reason or "passed the gate")
    try:
        return registry.make_champion(entry.id, replacing=champion.id if champion else None, actor=actor, reason=why)
    except ChampionChanged as changed:
        raise GateRefused(f"the champion changed from {changed.expected or 'none'} to {changed.current or 'none'} since "
                          f"{policy_id} was checked against it: evaluate {policy_id} against {changed.current} and "
                          f"promote it again") from None  # fmt: skip


def rollback(config: BreinConfig, store: Store, *, actor: str, reason: str = "") -> str:
    """Make the previous champion the champion again, only while the champion is still the one rolled back
    from (ChampionChanged else), and only if it loads and serves today's catalog (as a promotion)."""
    registry = Registry(store.registry)
    champion = registry.champion()
    previous = registry.previous_champion()
    if previous is None:
        raise ValueError("there is no previous champion to roll back to")
    check_servable(previous, load_policy(registry.get(previous), store.models)[0], Catalog(config))
    registry.make_champion(previous, replacing=champion.id if champion else None, actor=actor,
                           reason=f"rollback: {reason}" if reason else "rollback")  # fmt: skip
    return previous


def evaluate(
    candidate: str,
    *,
    config: BreinConfig | str | Path,
    store: Store | str | Path | None = None,
    against: str | None = "champion",
    since: float | None = None,
    until: float | None = None,
    estimators: Sequence[str] = tuple(ESTIMATORS),
) -> EvaluationReport:
    """For notebooks: ``policies.evaluate("my-candidate", config="brein.toml")`` on the config's store
    (or ``store``: a store, its URL or a SQLite path)."""
    from bandit.config import load_config

    loaded = config if isinstance(config, BreinConfig) else load_config(config)
    if store is not None and not isinstance(store, str | Path):
        return evaluate_policy(loaded, store, candidate, against, since=since, until=until, estimators=estimators, record=False)
    opened = open_store(str(store or loaded.server.store), create=False)
    try:
        return evaluate_policy(loaded, opened, candidate, against, since=since, until=until, estimators=estimators, record=False)
    finally:
        opened.close()
