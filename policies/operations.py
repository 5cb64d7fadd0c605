"""What operators and data scientists do with policies, as plain functions: the CLI and notebooks
both call these. Domain errors come out as exceptions; only the CLI turns them into exit codes."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.encoding import LearnedEncoding
from bandit.features import FeatureEncoder
from bandit.learner import LabelledExample, VWPolicy, train, vw_arguments, vw_refusal
from bandit.policies import DoNothingPolicy, Policy, RulePolicy, UniformPolicy
from policies.evaluation import ESTIMATORS, EvaluationReport, LoggedData, evaluate_on, load_logged
from policies.gate import check_gate, gate_reliability
from policies.loading import LEARNED_KEY, PolicyLoadError, check_servable, load_policy, parse_rules
from policies.registry import InvalidTransition, Registry, UnknownPolicy
from reward.online import ExampleReader, encoding_at_birth
from store import Store, open_store
from store.records import START, Cursor, EvaluationRecord, Kind, ModelSnapshot, PolicyEntry

Progress = Callable[[int, int], None]


def needs_registry(spec: str) -> bool:
    """Whether ``resolve_policy`` reads the policy from a registry (not a built-in or a file)."""
    return spec == "champion" or (spec not in ("uniform", "do_nothing") and not Path(spec).is_file())


def resolve_policy(spec: str, config: BreinConfig, store: Store | None) -> tuple[str, Policy]:
    """A policy named by a registry id, 'champion', 'uniform', 'do_nothing', a rule file (.json) or a VW model file.
    ``store`` may be None when the spec names a built-in policy or a file."""
    if store is None and needs_registry(spec):
        raise ValueError(f"{spec}: no such file, and not 'uniform' or 'do_nothing'; a registry id needs a store (--store)")
    if spec == "champion" and store is not None:
        champion = store.registry.champion()
        if champion is None:
            raise UnknownPolicy("champion")
        return champion.id, load_policy(champion, store.models)[0]
    if spec == "uniform":
        return spec, UniformPolicy()
    if spec == "do_nothing":
        return spec, DoNothingPolicy()
    path = Path(spec)
    if path.suffix == ".json" and path.is_file():
        return path.name, RulePolicy(parse_rules(path.read_text()), version=path.name)
    if path.is_file():
        try:
            return path.name, VWPolicy(vw_arguments(config.learner), path.read_bytes())
        except Exception as error:
            raise PolicyLoadError(f"{spec}: not a VW model for the config's learner arguments: {error}") from None
    if store is None:  # unreachable: needs_registry said so above
        raise ValueError(f"{spec}: a registry id needs a store (--store)")
    return spec, load_policy(Registry(store.registry).get(spec), store.models)[0]


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
    learner arguments unless given), a rule file (its actions must be in the catalog), uniform or do-nothing."""
    registry = Registry(store.registry)
    if registry.has(policy_id):
        raise InvalidTransition(f"a policy {policy_id!r} is already registered")
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
        # compiles every condition (a bad one is refused here) and checks every action is in the catalog
        check_servable(policy_id, RulePolicy(parse_rules(artifact), version="check"), Catalog(config))
    champion = registry.champion()
    return registry.register(
        policy_id, kind, artifact=artifact, args=args, features=config.features.model_dump(),
        parent=champion.id if champion else "", note=note or f"registered {kind} policy", actor=actor,
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
    a registry candidate trained on the log, those after its training data, else all of them. A rules
    candidate with an action the catalog no longer has is refused (``check_servable``). A registry
    candidate's evaluation against the champion is recorded; on another window, marked as no evidence
    for the gate (``EvaluationRecord.gate_window``)."""
    registry = Registry(store.registry)
    held_out = registry.get(candidate).trained_until if registry.has(candidate) else None
    on_gate_window = data is None and until is None and since in (None, held_out)
    window = (held_out, None) if on_gate_window else (since, until)
    logged = data if data is not None else load_logged(config, store.examples, *window)
    encoder = FeatureEncoder(config)
    baseline = resolve_policy(against, config, store) if against else None
    evaluated = resolve_policy(candidate, config, store)
    check_servable(*evaluated, Catalog(config))
    report = evaluate_on(logged, encoder, evaluated, baseline, estimators,
                         reliability=gate_reliability(config.gate), n_bootstrap=n_bootstrap,
                         min_probability=config.learner.min_probability)  # fmt: skip
    champion = registry.champion()
    if record and baseline is not None and champion is not None and baseline[0] == champion.id and registry.has(candidate):
        registry.record_evaluation(evaluation_record(config, report, logged, candidate, champion.id, gate_window=on_gate_window))
    return report


def evaluation_record(
    config: BreinConfig, report: EvaluationReport, logged: LoggedData, policy_id: str, champion: str, *, gate_window: bool
) -> EvaluationRecord:
    """What the promotion gate reads of a paired evaluation against the champion: the gate estimator's
    row (else the first), its lift with the wider of its two intervals' bounds, the whole report, and
    whether it was made on the gate's window (else the gate does not take it as evidence)."""
    names = [c.estimator for c in report.comparisons]
    gate_row = report.comparisons[names.index(config.gate.estimator)] if config.gate.estimator in names else report.comparisons[0]
    return EvaluationRecord(
        policy_id=policy_id, against=champion, at=time.time(),
        since=float(logged.event_times.min()), until=float(logged.event_times.max()), decisions=report.decisions,
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
    """Train a VW candidate from the joined examples in [since, until) and register it."""
    registry = Registry(store.registry)
    if registry.has(policy_id):
        raise InvalidTransition(f"a policy {policy_id!r} is already registered")
    trained = train_model(config, store, since=since, until=until, vw_args=vw_args, progress=progress)
    champion = registry.champion()
    entry = registry.register(
        policy_id, "vw", artifact=trained.data, args=trained.args, features=trained.features(config),
        parent=champion.id if champion else "", note=f"trained on {trained.learned} joined examples", actor=actor,
        trained_until=trained.until,
    )  # fmt: skip
    store.models.save(trained.snapshot(policy_id)).result()
    return entry, trained.learned


def promote(config: BreinConfig, store: Store, policy_id: str, *, actor: str, force: bool = False, reason: str = "") -> str | None:
    """Make the candidate the champion if the gate lets it through (or ``force`` with a reason)."""
    registry = Registry(store.registry)
    entry = registry.get(policy_id)
    champion = registry.champion()
    if champion is not None and champion.id == policy_id:
        raise InvalidTransition(f"{policy_id} is the champion already")
    # refuse a policy that would not load, or would serve an action the catalog no longer has, before anything changes
    check_servable(policy_id, load_policy(entry, store.models)[0], Catalog(config))
    if not force:
        check_gate(config.gate, registry.evaluations(policy_id), policy_id, champion.id if champion else "", time.time())
    elif not reason:
        raise ValueError("--force needs --reason: say why the gate is overridden")
    why = f"forced: {reason}" if force else (reason or "passed the gate")
    return registry.make_champion(entry.id, actor=actor, reason=why)


def rollback(store: Store, *, actor: str, reason: str = "") -> str:
    registry = Registry(store.registry)
    previous = registry.previous_champion()
    if previous is None:
        raise ValueError("there is no previous champion to roll back to")
    load_policy(registry.get(previous), store.models)
    registry.make_champion(previous, actor=actor, reason=f"rollback: {reason}" if reason else "rollback")
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
