"""`brein policy ...` and `brein replay`: the operator's and the data scientist's commands."""

from __future__ import annotations

import getpass
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bandit.config import BreinConfig, load_config
from bandit.errors import BreinError
from bandit.features import FeatureEncoder
from policies import operations
from policies.estimators import Estimate, Interval, level
from policies.evaluation import ESTIMATORS, EvaluationReport, evaluate_on, load_dsjson
from policies.gate import gate_evidence, gate_reliability
from policies.plot import plot_report
from policies.registry import Registry, checked_new_policy_id
from policies.spending import KEY, Spending
from policies.tuning import Tuning, default_setups, load_setups, register_best, tune
from store import Store, open_store
from store.errors import StoreError
from store.records import KINDS

console = Console()
TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.replace(tzinfo=value.tzinfo or UTC).timestamp()


def _when(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M")


@contextmanager
def _errors() -> Iterator[None]:
    """Domain errors become one-line messages and a non-zero exit."""
    try:
        yield
    except (BreinError, StoreError, ValueError) as error:
        raise click.ClickException(str(error)) from None


@contextmanager
def _opened(config_path: str, store_url: str | None) -> Iterator[tuple[BreinConfig, Store]]:
    """The config and its (existing) store; domain errors become one-line messages and a non-zero exit."""
    with _errors():
        config = load_config(config_path)
        store = open_store(store_url or config.server.store, create=False)
        try:
            yield config, store
        finally:
            store.close()


config_option = click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
store_option = click.option("--store", "store_url", help="The store's URL (or a SQLite file); default the config's.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON, for scripts.")
reason_option = click.option("--reason", default="", help="Why: recorded in the policy's history.")
plot_option = click.option("--plot", type=click.Path(dir_okay=False),
                           help="Also draw each estimate with its intervals beside the baseline's to this PNG file.")  # fmt: skip
estimator_option = click.option("--estimator", "estimators", multiple=True, type=click.Choice(list(ESTIMATORS)),
                                help="Estimators to run (repeatable); default all.")  # fmt: skip


def _policy_id(context: click.Context, parameter: click.Parameter, value: str | None) -> str | None:
    """An ``--id`` checked before any work: a train or tune run is not wasted on an id the registry refuses."""
    try:
        return None if value is None else checked_new_policy_id(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from None


def cli_actor() -> str:
    """Who acts from the command line, for the registry's history and the audit: the login name,
    whatever its encoding (a name that is not UTF-8 is kept with its bytes escaped)."""
    user = getpass.getuser().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return f"cli:{user}"


UNTRUSTWORTHY = "unknown coverage"


def _interval_cell(interval: Interval, sign: str = "") -> str:
    text = f"[{interval.low:{sign}.3f}, {interval.high:{sign}.3f}]"
    return text if interval.trustworthy else f"[dim]{text}[/] {UNTRUSTWORTHY}"


def _estimate_cells(estimate: Estimate) -> list[str]:
    diagnostics = estimate.diagnostics
    ess = f"{diagnostics.ess:,.1f}" + ("" if estimate.clipped_ess is None else f" (clipped {estimate.clipped_ess:,.0f})")
    return [f"{estimate.value:.3f}", _interval_cell(estimate.bootstrap), _interval_cell(estimate.analytic), ess,
            f"{diagnostics.largest_weight_share:.1%}", f"{diagnostics.never_taken_share:.1%}"]  # fmt: skip


def _verdict(reliable: bool) -> str:
    return "yes" if reliable else "[bold red]UNRELIABLE[/]"


def _report_table(report: EvaluationReport, title: str) -> Table:
    at = level(report.alpha)
    columns = ["estimator", f"{report.candidate} value", f"{at} bootstrap", f"{at} Cressie-Read", "ESS (unclipped)",
               "largest weight", "never-taken share", "reliable"]  # fmt: skip
    if report.comparisons:
        columns += [f"{report.baseline} value", "lift (paired)", f"lift {at} bootstrap", f"lift {at} Cressie-Read"]
    table = Table(*columns, title=title)
    for c in report.comparisons:
        lift = [f"{c.difference:+.3f}", _interval_cell(c.bootstrap, "+"), _interval_cell(c.analytic, "+")]
        table.add_row(c.estimator, *_estimate_cells(c.candidate), _verdict(c.reliable), f"{c.baseline.value:.3f}", *lift)
    for e in [] if report.comparisons else report.estimates:
        table.add_row(e.estimator, *_estimate_cells(e), _verdict(e.reliable))
    return table


def _report_warnings(report: EvaluationReport) -> list[str]:
    """The lines under the table: which estimates are unreliable and why, which intervals have unknown coverage."""
    lines = []
    sides = [(report.candidate, report.estimates)]
    if report.comparisons:
        sides.append((report.baseline or "baseline", [c.baseline for c in report.comparisons]))
    for name, estimates in sides:
        if estimates and not estimates[0].reliable:  # the diagnostics are the policy's on the log: every estimator shares them
            rule = report.reliability
            lines.append(
                f"[bold red]UNRELIABLE[/]: every estimate of {name} on this log ({'; '.join(estimates[0].reasons)}). "
                "Clipping does not help: it caps the weights, not the missing support. The promotion gate refuses such "
                f"an evaluation (gate.min_ess = {rule.min_ess:g}, gate.max_weight_share = {rule.max_weight_share:g})."
            )
    flagged: dict[str, list[str]] = {}
    rows: list[tuple[str, Interval]] = []
    for e in report.estimates:
        rows += [(f"{e.estimator} bootstrap", e.bootstrap), (f"{e.estimator} Cressie-Read", e.analytic)]
    for c in report.comparisons:
        rows += [(f"{c.estimator} lift bootstrap", c.bootstrap), (f"{c.estimator} lift Cressie-Read", c.analytic)]
    for label, interval in rows:
        if interval.caveat is not None:
            flagged.setdefault(interval.caveat, []).append(label)
    for caveat, labels in flagged.items():
        lines.append(f"{UNTRUSTWORTHY.capitalize()} ({', '.join(labels)}): {caveat}.")
    return lines


def _print_report(report: EvaluationReport, title: str) -> None:
    console.print(_report_table(report, title))
    for line in _report_warnings(report):
        console.print(line)
    if report.spending is not None and report.baseline is not None:
        console.print(f"The gate's level: {report.spending.describe(report.baseline)}")


def _show(report: EvaluationReport, title: str, *, as_json: bool, plot: str | None) -> None:
    """The report as JSON or as a table with its warnings; and its figure, with --plot."""
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_report(report, title)
    if plot:
        with _errors():
            plot_report(report, Path(plot))
        if not as_json:
            console.print(f"plot written to {plot}")


@click.group()
def policy() -> None:
    """The policy registry: list, register, train, evaluate, shadow, promote, roll back, retire."""


@policy.command("list")
@config_option
@store_option
@json_option
def list_policies(config_path: str, store_url: str | None, as_json: bool) -> None:
    """Every registered policy with its state and latest evaluation on the gate's window."""
    with _opened(config_path, store_url) as (_, store):
        registry = Registry(store.registry)
        entries = [(e, gate_evidence(registry.evaluations(e.id))) for e in registry.list()]
    if as_json:
        click.echo(json.dumps([{"id": e.id, "kind": e.kind, "state": e.state, "created": e.created, "parent": e.parent,
                                "lift_lower": ev.lift_lower if ev else None} for e, ev in entries], indent=2))  # fmt: skip
        return
    table = Table("id", "kind", "state", "created", "parent", "gate's latest lift (lower bound)")
    for entry, evaluation in entries:
        lift = f"{evaluation.lift:+.3f} ({evaluation.lift_lower:+.3f}) vs {evaluation.against}" if evaluation else "-"
        table.add_row(entry.id, entry.kind, entry.state, _when(entry.created), entry.parent or "-", lift)
    console.print(table)


@policy.command()
@click.argument("policy_id")
@config_option
@store_option
@json_option
def show(policy_id: str, config_path: str, store_url: str | None, as_json: bool) -> None:
    """One policy: what it is, its history and its evaluations."""
    with _opened(config_path, store_url) as (_, store):
        registry = Registry(store.registry)
        entry = registry.get(policy_id)
        history = registry.history(policy_id)
        evaluations = registry.evaluations(policy_id)
    if as_json:
        click.echo(json.dumps({"id": entry.id, "kind": entry.kind, "state": entry.state, "artifact_hash": entry.artifact_hash,
                               "args": entry.args, "parent": entry.parent, "created": entry.created, "note": entry.note,
                               "trained_until": entry.trained_until, "selected_among": entry.selected_among,
                               "history": [asdict(h) for h in history], "evaluations": [asdict(e) for e in evaluations]}, indent=2))  # fmt: skip
        return
    console.print(f"[bold]{entry.id}[/] ({entry.kind}, {entry.state}) artifact {entry.artifact_hash[:12]}, parent {entry.parent or '-'}")
    if entry.args:
        console.print(f"VW arguments: {' '.join(entry.args)}")
    if entry.trained_until is not None:
        console.print(f"learned from (or registered after) the decisions before {_when(entry.trained_until)}: the gate "
                      f"evaluates it on those after")  # fmt: skip
    if entry.selected_among > 1:
        among = entry.selected_among
        console.print(f"picked as the best of {among} set-ups: every look at it shares its alpha among them, the k-th look "
                      f"at 1 - alpha / ({among} k²)")  # fmt: skip
    table = Table("when", "who", "from", "to", "why", title="History")
    for event in history:
        table.add_row(_when(event.at), event.actor, event.from_state or "-", event.to_state, event.reason)
    console.print(table)
    if evaluations:
        columns = ["when", "window", "against", "decisions", "estimator", "lift", "lower", "upper", "ESS", "reliable",
                   "candidate, look: level"]  # fmt: skip
        evals = Table(*columns, title="Evaluations (the gate takes the newest on its window)")
        for e in evaluations:
            reliable = e.report.get("reliable")  # as judged when it was made; absent from evaluations made before
            window = f"{'gate' if e.gate_window else 'chosen'}: {_when(e.since)} .. {_when(e.until)}"
            judged = Spending.read(e.report.get(KEY))
            spent = "-" if judged is None else f"{judged.rank}, {judged.look}: {level(judged.alpha)}"
            evals.add_row(_when(e.at), window, e.against, str(e.decisions), e.estimator, f"{e.lift:+.3f}", f"{e.lift_lower:+.3f}",
                          f"{e.lift_upper:+.3f}", f"{e.ess:,.0f}", "-" if reliable is None else _verdict(reliable), spent)  # fmt: skip
        console.print(evals)


@policy.command()
@config_option
@store_option
@click.option("--id", "policy_id", required=True, callback=_policy_id, help="The new candidate's id.")
@click.option("--kind", type=click.Choice(list(KINDS)), required=True, help="What the policy is.")
@click.option("--file", "file", type=click.Path(exists=True, dir_okay=False),
              help="A rules policy's JSON file ([{\"action\": ..., \"when\": CEL}]) or a VW policy's model file.")  # fmt: skip
@click.option("--vw-args", default="", help="A VW model's arguments; default the config's learner arguments.")
@click.option("--note", default="", help="What it is: recorded in the policy's history.")
def register(config_path: str, store_url: str | None, policy_id: str, kind: Any, file: str | None, vw_args: str,
             note: str) -> None:  # fmt: skip
    """Register a rule, uniform, do-nothing or VW-model policy as a candidate (it must load)."""
    artifact = Path(file).read_bytes() if file else None
    with _opened(config_path, store_url) as (config, store):
        entry = operations.register_policy(config, store, policy_id=policy_id, kind=kind, artifact=artifact,
                                           vw_args=vw_args.split() or None, note=note, actor=cli_actor())  # fmt: skip
    console.print(f"registered candidate [bold]{entry.id}[/] ({entry.kind}, artifact {entry.artifact_hash[:12]})")


@policy.command()
@config_option
@store_option
@click.option("--id", "policy_id", required=True, callback=_policy_id, help="The new candidate's id.")
@click.option("--since", type=click.DateTime(TIME_FORMATS), help="Train on joined decisions from this time (UTC).")
@click.option("--until", type=click.DateTime(TIME_FORMATS), required=True, help="Train on joined decisions before this time (UTC).")
@click.option("--holdout-until", type=click.DateTime(TIME_FORMATS), help="Evaluate on [until, this); default everything after until.")
@click.option("--vw-args", default="", help="VW arguments; default the config's learner arguments.")
@click.option("--no-evaluate", is_flag=True, help="Register without the held-out evaluation.")
@json_option
def train(config_path: str, store_url: str | None, policy_id: str, since: datetime | None, until: datetime, holdout_until: datetime | None,
          vw_args: str, no_evaluate: bool, as_json: bool) -> None:  # fmt: skip
    """Train a VW candidate on a time range and evaluate it on the later, held-out range."""
    with _opened(config_path, store_url) as (config, store), Progress(console=console, disable=as_json, transient=True) as bar:
        task = bar.add_task(f"training {policy_id}", total=None)
        entry, learned = operations.train_candidate(
            config, store, policy_id=policy_id, since=_epoch(since), until=_epoch(until), vw_args=vw_args.split() or None,
            actor=cli_actor(), progress=lambda done, total: bar.update(task, completed=done, total=total),
        )  # fmt: skip
        held_out = operations.registered(entry.id)
        report, not_evaluated = None, None
        if not no_evaluate:
            try:
                report = operations.evaluate_policy(config, store, held_out, since=_epoch(until), until=_epoch(holdout_until))
            except operations.NotJudgedYet as error:  # registered all the same: say so, why, and what to do
                not_evaluated = str(error)
            except (ValueError, BreinError) as error:
                not_evaluated = f"{error}; evaluate it with `brein policy evaluate {entry.id}` once there is a log to judge it on"
    if as_json:
        evaluation = report.as_dict() if report else None
        click.echo(json.dumps({"id": entry.id, "trained_on": learned, "evaluation": evaluation, "not_evaluated": not_evaluated},
                              indent=2))  # fmt: skip
        return
    console.print(f"registered candidate [bold]{entry.id}[/], trained on {learned:,} joined examples")
    if report:
        _print_report(report, f"held-out evaluation on {report.decisions:,} decisions")
    if not_evaluated:
        console.print(f"not evaluated on the held-out decisions: {not_evaluated}")


def _tuning_table(tuning: Tuning) -> Table:
    first = tuning.tried[0].record.estimator
    against = f"{tuning.baseline} as served" if tuning.as_served else tuning.baseline
    interval = f"{level(tuning.alpha)} interval"
    table = Table("set-up", "trained on", "train s", f"value ({first})", interval, f"lift vs {against}", f"lift {interval}",
                  "ESS (set-up)", "reliable", "best",
                  title=f"{len(tuning.tried)} set-ups trained on {tuning.trained_on:,} joined examples before the cut, "
                        f"evaluated on {tuning.evaluated_on:,} after it (money per decision)")  # fmt: skip
    for tried in tuning.tried:
        row = tried.as_dict(evaluation=False)
        value, lift = row["value_interval"], row["lift_interval"]
        table.add_row(tried.setup.name, f"{row['trained_on']:,}", f"{row['train_seconds']:.1f}", f"{row['value']:.3f}",
                      f"[{value[0]:.3f}, {value[1]:.3f}]", f"{row['lift']:+.3f}", f"[{lift[0]:+.3f}, {lift[1]:+.3f}]",
                      f"{row['ess']:,.0f}", _verdict(tried.reliable), "<- best" if tried is tuning.best else "")  # fmt: skip
    return table


@policy.command("tune")
@config_option
@store_option
@click.option("--cut", type=click.DateTime(TIME_FORMATS), required=True,
              help="Evaluate on joined decisions from this time (UTC) on, train on those before it (against the "
                   "champion as served: those joined by then).")  # fmt: skip
@click.option("--setups", "setups_path", type=click.Path(dir_okay=False),
              help="A TOML file of [[setup]] tables (name and [learner] keys); default twelve around the config's "
                   "learner and one in the other encoding.")  # fmt: skip
@click.option("--against", "against",
              help="Compare with this set-up (trained on the same examples), not the champion; registers nothing.")  # fmt: skip
@click.option("--id", "policy_id", callback=_policy_id, help="The registered candidate's id; default tuned-<cut date>-<set-up>.")
@json_option
def tune_setups(config_path: str, store_url: str | None, cut: datetime, setups_path: str | None, against: str | None,
                policy_id: str | None, as_json: bool) -> None:  # fmt: skip
    """Train set-ups before a cut, evaluate each after it against the champion as served, register the best reliable one."""
    with _opened(config_path, store_url) as (config, store), Progress(console=console, disable=as_json, transient=True) as bar:
        setups = load_setups(setups_path) if setups_path else default_setups(config)
        task = bar.add_task("tuning", total=None)
        tuning = tune(config, store, cut=_epoch(cut) or 0.0, setups=setups, against=against,
                      progress=lambda what, done, total: bar.update(task, description=what, completed=done,
                                                                    total=total))  # fmt: skip
        entry = register_best(config, store, tuning, actor=cli_actor(), policy_id=policy_id) if against is None else None
    if as_json:
        click.echo(json.dumps(tuning.as_dict(), indent=2))
    else:
        console.print(_tuning_table(tuning))
        reasons = sorted({reason for tried in tuning.tried for reason in tried.as_dict(evaluation=False)["reasons"]})
        for reason in reasons:
            console.print(f"[bold red]UNRELIABLE[/]: {reason}")
        if against is not None:
            console.print(f"compared with the set-up {against}, not the champion: nothing registered; {tuning.verdict}")
        else:
            registered = f"registered candidate [bold]{entry.id}[/]" if entry else "nothing registered"
            console.print(f"{registered}: {tuning.verdict}")
    if not any(tried.reliable for tried in tuning.tried):
        raise SystemExit(1)


@policy.command()
@click.argument("candidate")
@config_option
@store_option
@click.option("--against", default="champion", show_default=True,
              help="The baseline policy (registry id, 'champion': the current one, file); registry:ID, builtin:NAME or "
                   "./FILE say which when a name is both.")  # fmt: skip
@click.option("--since", type=click.DateTime(TIME_FORMATS),
              help="Logged decisions from this time (UTC); default the gate's window (after a trained candidate's training "
                   "data, else the whole log). A window chosen here is shown, never the gate's evidence.")  # fmt: skip
@click.option("--until", type=click.DateTime(TIME_FORMATS), help="Logged decisions before this time (UTC); see --since.")
@estimator_option
@json_option
@plot_option
def evaluate(candidate: str, config_path: str, store_url: str | None, against: str, since: datetime | None, until: datetime | None,
             estimators: tuple[str, ...], as_json: bool, plot: str | None) -> None:  # fmt: skip
    """Estimate a policy's value off-policy, with the paired lift over the champion."""
    with _opened(config_path, store_url) as (config, store):
        report = operations.evaluate_policy(config, store, candidate, against, since=_epoch(since), until=_epoch(until),
                                            estimators=estimators or tuple(ESTIMATORS))  # fmt: skip
    _show(report, f"{candidate} on {report.decisions:,} logged decisions (money per decision)", as_json=as_json, plot=plot)


@policy.command()
@click.argument("policy_id")
@config_option
@store_option
@click.option("--force", is_flag=True, help="Override the gate (needs --reason).")
@reason_option
def promote(policy_id: str, config_path: str, store_url: str | None, force: bool, reason: str) -> None:
    """Make a candidate the champion: only if it beats the champion with confidence."""
    with _opened(config_path, store_url) as (config, store):
        previous = operations.promote(config, store, policy_id, actor=cli_actor(), force=force, reason=reason)
        evidence = None if force else gate_evidence(Registry(store.registry).evaluations(policy_id))
    judged = None if evidence is None else Spending.read(evidence.report.get(KEY))
    passed = "" if judged is None else f", passed the gate at {judged.describe(previous or 'none')}"
    console.print(f"{policy_id} is the champion" + (f" (was {previous})" if previous else "") + passed
                  + "; running servers switch within seconds")  # fmt: skip


@policy.command()
@config_option
@store_option
@reason_option
def rollback(config_path: str, store_url: str | None, reason: str) -> None:
    """Restore the previous champion."""
    with _opened(config_path, store_url) as (config, store):
        restored = operations.rollback(config, store, actor=cli_actor(), reason=reason)
    console.print(f"rolled back: {restored} is the champion again")


def _set_state(policy_id: str, config_path: str, store_url: str | None, state: Any, reason: str) -> None:
    with _opened(config_path, store_url) as (_, store):
        Registry(store.registry).set_state(policy_id, state, actor=cli_actor(), reason=reason or state)
    console.print(f"{policy_id} is now {state}")


@policy.command()
@click.argument("policy_id")
@config_option
@store_option
@reason_option
def shadow(policy_id: str, config_path: str, store_url: str | None, reason: str) -> None:
    """Score every live decision with this policy too (logged, never served)."""
    _set_state(policy_id, config_path, store_url, "shadow", reason)


@policy.command()
@click.argument("policy_id")
@config_option
@store_option
@reason_option
def retire(policy_id: str, config_path: str, store_url: str | None, reason: str) -> None:
    """Retire a policy that is not the champion."""
    _set_state(policy_id, config_path, store_url, "retired", reason)


@click.command()
@click.argument("log_file", type=click.Path(exists=True, dir_okay=False))
@config_option
@click.option("--policy", "candidate", required=True,
              help="A registry id (from --store, default the config's), a VW model file, a rule file (.json), "
                   "'uniform' or 'do_nothing'.")
@click.option("--against", default=None, help="A baseline policy for the paired lift; default none.")
@store_option
@estimator_option
@json_option
@plot_option
def replay(log_file: str, config_path: str, candidate: str, against: str | None, store_url: str | None, estimators: tuple[str, ...],
           as_json: bool, plot: str | None) -> None:  # fmt: skip
    """Replay a policy on an exported log (`brein log export`) and estimate its value."""

    def run(config: BreinConfig, store: Store | None) -> EvaluationReport:
        data = load_dsjson(Path(log_file).read_text(encoding="utf-8-sig").splitlines(), config)  # a BOM is no JSON
        return evaluate_on(data, FeatureEncoder(config), operations.resolve_policy(candidate, config, store).target,
                           operations.resolve_policy(against, config, store).target if against else None,
                           estimators or tuple(ESTIMATORS), reliability=gate_reliability(config.gate),
                           min_probability=config.learner.min_probability)  # fmt: skip

    if store_url is None and not any(operations.needs_registry(spec) for spec in (candidate, against) if spec):
        with _errors():  # files and built-in policies only: no store is opened (or created)
            report = run(load_config(config_path), None)
    else:
        with _opened(config_path, store_url) as (config, store):
            report = run(config, store)
    _show(report, f"{report.candidate} replayed on {report.decisions:,} logged decisions", as_json=as_json, plot=plot)
