"""What operators and data scientists do with policies, as plain functions: the CLI and notebooks
both call these. Domain errors come out as exceptions; only the CLI turns them into exit codes."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bandit.config import BreinConfig
from bandit.features import FeatureEncoder
from bandit.learner import VWPolicy, vw_arguments
from bandit.policies import DoNothingPolicy, Policy, RulePolicy, UniformPolicy
from bandit.store import ModelSnapshot, SQLiteStore
from policies.evaluation import ESTIMATORS, EvaluationReport, LoggedData, evaluate_on, load_logged
from policies.gate import check_gate
from policies.loading import PolicyLoadError, load_policy, parse_rules
from policies.registry import EvaluationRecord, PolicyEntry, Registry, UnknownPolicy
from reward.online import START, Cursor, ExampleReader

Progress = Callable[[int, int], None]


def resolve_policy(spec: str, config: BreinConfig, registry: Registry) -> tuple[str, Policy]:
    """A policy named by a registry id, 'champion', 'uniform', 'do_nothing', a rule file (.json) or a VW model file."""
    if spec == "champion":
        champion = registry.champion()
        if champion is None:
            raise UnknownPolicy("champion")
        return champion.id, load_policy(champion, registry.store)[0]
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
    return spec, load_policy(registry.get(spec), registry.store)[0]


def evaluate_policy(
    config: BreinConfig,
    store: SQLiteStore,
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
    """Estimate the candidate's value (and its paired lift over ``against``) on the logged decisions.
    A registry candidate's evaluation against the champion is recorded for the promotion gate."""
    registry = Registry(store)
    logged = data if data is not None else load_logged(config, store, since, until)
    encoder = FeatureEncoder(config)
    baseline = resolve_policy(against, config, registry) if against else None
    report = evaluate_on(logged, encoder, resolve_policy(candidate, config, registry), baseline, estimators, n_bootstrap=n_bootstrap)
    champion = registry.champion()
    known = {e.id for e in registry.list()}
    if record and baseline is not None and champion is not None and baseline[0] == champion.id and candidate in known:
        gate_row = report.row(config.gate.estimator) if config.gate.estimator in estimators else report.comparisons[0]
        registry.record_evaluation(EvaluationRecord(
            policy_id=candidate, against=champion.id, at=time.time(),
            since=float(logged.event_times.min()), until=float(logged.event_times.max()), decisions=report.decisions,
            estimator=gate_row.estimator, lift=gate_row.difference,  # type: ignore[union-attr]
            lift_lower=min(gate_row.bootstrap.low, gate_row.analytic.low), lift_upper=max(gate_row.bootstrap.high, gate_row.analytic.high),
            ess=gate_row.candidate.effective_sample_size, report=report.as_dict(),  # type: ignore[union-attr]
        ))  # fmt: skip
    return report


def train_candidate(
    config: BreinConfig,
    store: SQLiteStore,
    *,
    policy_id: str,
    since: float | None,
    until: float | None,
    vw_args: Sequence[str] | None = None,
    actor: str,
    progress: Progress | None = None,
) -> tuple[PolicyEntry, int]:
    """Train a VW candidate from the joined examples in [since, until) and register it."""
    registry = Registry(store)
    args = list(vw_args) if vw_args else vw_arguments(config.learner)
    model = VWPolicy(args)
    reader = ExampleReader(config, store)
    total = int(store.db.execute(
        "SELECT COUNT(*) FROM joined_examples WHERE status = 'joined' AND event_time >= ? AND event_time < ?",
        (since if since is not None else float("-inf"), until if until is not None else float("inf")),
    ).fetchone()[0])  # fmt: skip
    learned = 0
    last: Cursor = START
    for position, example, row in reader.read():
        if (since is not None and row["event_time"] < since) or (until is not None and row["event_time"] >= until):
            continue
        model.learn(example)
        learned, last = learned + 1, position
        if progress and learned % 500 == 0:
            progress(learned, total)
    if learned == 0:
        raise ValueError("no joined examples in that time range to train on")
    champion = registry.champion()
    data = model.serialize()
    entry = registry.register(
        policy_id, "vw", artifact=data, args=args, features=config.features.model_dump(), parent=champion.id if champion else "",
        note=f"trained on {learned} joined examples", actor=actor,
    )  # fmt: skip
    store.save_model(ModelSnapshot(VWPolicy(args, data).version, args, data, policy_id, list(last)))
    if progress:
        progress(learned, total)
    return entry, learned


def promote(config: BreinConfig, store: SQLiteStore, policy_id: str, *, actor: str, force: bool = False, reason: str = "") -> str | None:
    """Make the candidate the champion if the gate lets it through (or ``force`` with a reason)."""
    registry = Registry(store)
    entry = registry.get(policy_id)
    champion = registry.champion()
    load_policy(entry, store)  # refuse a policy that would not load before anything changes
    if not force:
        latest = next(iter(registry.evaluations(policy_id)), None)
        check_gate(config.gate, latest, policy_id, champion.id if champion else "", time.time())
    elif not reason:
        raise ValueError("--force needs --reason: say why the gate is overridden")
    why = f"forced: {reason}" if force else (reason or "passed the gate")
    return registry.make_champion(entry.id, actor=actor, reason=why)


def rollback(store: SQLiteStore, *, actor: str, reason: str = "") -> str:
    registry = Registry(store)
    previous = registry.previous_champion()
    if previous is None:
        raise ValueError("there is no previous champion to roll back to")
    load_policy(registry.get(previous), store)
    registry.make_champion(previous, actor=actor, reason=f"rollback: {reason}" if reason else "rollback")
    return previous


def evaluate(
    candidate: str,
    *,
    config: BreinConfig | str | Path,
    store: SQLiteStore | str | Path | None = None,
    against: str | None = "champion",
    since: float | None = None,
    until: float | None = None,
    estimators: Sequence[str] = tuple(ESTIMATORS),
) -> EvaluationReport:
    """For notebooks: ``policies.evaluate("my-candidate", config="brein.toml")`` on the config's store."""
    from bandit.config import load_config

    loaded = config if isinstance(config, BreinConfig) else load_config(config)
    opened = store if isinstance(store, SQLiteStore) else SQLiteStore(store or loaded.server.store)
    try:
        return evaluate_policy(loaded, opened, candidate, against, since=since, until=until, estimators=estimators, record=False)
    finally:
        if opened is not store:
            opened.close()
