"""The `brein` command: run the server, and a small client for the tour and for operators."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from bandit.config import BreinConfig, load_config
from bandit.errors import BreinError
from policies.cli import policy, replay
from serving import converters
from serving.cli_security import COMMANDS, ClientCredentials, credential_options
from serving.cli_store import opened_store, store_option
from serving.cli_types import FiniteFloatRange, TextGroup
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from store.errors import StoreError

console = Console()
DEFAULT_ADDRESS = "127.0.0.1:50051"


def _config(path: str) -> BreinConfig:
    try:
        return load_config(path)
    except BreinError as error:
        raise click.ClickException(str(error)) from None


def _pairs(values: tuple[str, ...], option: str, convert: Callable[[str], Any]) -> dict[str, Any]:
    result = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected NAME=VALUE, got {item!r}", param_hint=option)
        try:
            result[key] = convert(value)
        except ValueError:
            raise click.BadParameter(f"{key}: {value!r} is not a number", param_hint=option) from None
    return result


def _event_time(value: datetime | None) -> dict[str, Any]:
    if value is None:
        return {}
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return {"event_time": converters.timestamp(value.timestamp())}


@contextmanager
def _client(address: str) -> Iterator[pb_grpc.DecisionServiceStub]:
    credentials = click.get_current_context().find_object(ClientCredentials) or ClientCredentials()
    with credentials.channel(address) as channel:
        try:
            yield pb_grpc.DecisionServiceStub(channel)  # type: ignore[no-untyped-call]
        except grpc.RpcError as error:
            raise click.ClickException(f"{error.code().name}: {error.details()}") from None


def _emit(message: Message, as_json: bool, render: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(MessageToDict(message, preserving_proto_field_name=True), indent=2))
    else:
        render()


address_option = click.option("--address", default=DEFAULT_ADDRESS, show_default=True, help="The Brein server's gRPC address.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the response as JSON, for scripts.")
at_option = click.option("--at", "at", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]), help="Event time (UTC); default now.")


@click.group(cls=TextGroup)
@credential_options
@click.pass_context
def main(ctx: click.Context, api_key: str | None, ca_file: str | None, cert_file: str | None, key_file: str | None) -> None:
    """Brein: the next-best-action decision service."""
    ctx.obj = ClientCredentials(api_key, ca_file, cert_file, key_file)


for _command in COMMANDS:
    main.add_command(_command)


main.add_command(policy)
main.add_command(replay)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
@store_option
@click.option("--workers", "processes", default=1, show_default=True, type=int,
              help="Serving processes on the one port (SO_REUSEPORT); more than 1 needs a PostgreSQL store.")  # fmt: skip
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def serve(config_path: str, store_url: str | None, processes: int, log_level: str) -> None:
    """Serve gRPC (Decide, DecideBatch, ReportOutcome, Activate, Explain, health, reflection) and metrics."""
    from brain import logs
    from serving.processes import serve_processes
    from serving.server import serve as run

    logs.configure(log_level)
    config = _config(config_path)
    if store_url:
        config = config.model_copy(update={"server": config.server.model_copy(update={"store": store_url})})
    try:
        if processes == 1:
            asyncio.run(run(config))
        elif code := serve_processes(config, processes, log_level):
            raise SystemExit(code)
    except (BreinError, StoreError) as error:
        raise click.ClickException(str(error)) from None


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
@store_option
@click.option("--log-level", default="INFO", show_default=True, type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"]))
def worker(config_path: str, store_url: str | None, log_level: str) -> None:
    """Join, learn and apply retention, while this worker holds the store's lease (one worker works
    at a time; another one stands by and takes over when it goes). Runs until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from brain import logs
    from brain.worker import BESIDE_A_SERVER_COMMIT_PAUSE, work

    logs.configure(log_level)
    config = _config(config_path)
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    with opened_store(config, store_url, write_pause=BESIDE_A_SERVER_COMMIT_PAUSE, create=True) as store:
        work(config, store, lambda event: None, stopping.wait)  # what it does, it logs


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
def check(config_path: str) -> None:
    """Validate a config file: its keys, its CEL rules, its catalog, its learner's VW arguments, and the
    files `brein serve` reads (TLS certificates and key, the pseudonymisation key)."""
    from bandit.catalog import Catalog
    from bandit.pseudonyms import Pseudonyms
    from bandit.rules import EligibilityRules
    from brain.champion import config_model
    from serving.security import transport

    config = _config(config_path)
    try:
        rules = EligibilityRules(config)
        config_model(config)
        transport(config, config.server.address)
        Pseudonyms.from_config(config.privacy)
    except BreinError as error:
        raise click.ClickException(str(error)) from None
    catalog = Catalog(config)
    click.echo(f"{config_path}: OK — {len(catalog)} actions, {len(rules.rules)} rules, {len(config.outcomes)} outcome types")


@main.command()
@click.option("--customer", required=True, help="The customer id.")
@click.option("--channel", required=True, help="The calling touchpoint (web, app, ...).")
@click.option("--request-id", default="", help="Idempotency key; default a new one.")
@click.option("--numeric", "-n", multiple=True, metavar="NAME=NUMBER", help="A numeric context feature (repeatable).")
@click.option("--categorical", "-c", multiple=True, metavar="NAME=VALUE", help="A categorical context feature (repeatable).")
@click.option("--candidate", multiple=True, help="Restrict to this action id (repeatable).")
@click.option("--consent", type=click.Choice(["granted", "denied", "unspecified"]), default="unspecified", show_default=True,
              help="Personalisation consent.")  # fmt: skip
@click.option("--no-contact", multiple=True, metavar="CHANNEL", help="The customer gave no contact consent for this channel.")
@at_option
@address_option
@json_option
def decide(
    customer: str, channel: str, request_id: str, numeric: tuple[str, ...], categorical: tuple[str, ...], candidate: tuple[str, ...],
    consent: str, no_contact: tuple[str, ...], at: datetime | None, address: str, as_json: bool,
) -> None:  # fmt: skip
    """Ask the server for the next best action for one customer."""
    request = pb.DecideRequest(
        request_id=request_id or f"cli-{uuid.uuid4().hex}",
        customer_id=customer,
        channel=channel,
        context=pb.Context(numeric=_pairs(numeric, "--numeric", float), categorical=_pairs(categorical, "--categorical", str)),
        candidate_actions=candidate,
        consent=pb.Consent(
            personalisation={"granted": pb.CONSENT_STATE_GRANTED, "denied": pb.CONSENT_STATE_DENIED}.get(consent, pb.CONSENT_STATE_UNSPECIFIED),
            contact={c: pb.CONSENT_STATE_DENIED for c in no_contact},
        ),
        **_event_time(at),
    )
    with _client(address) as stub:
        response = stub.Decide(request)

    def render() -> None:
        kind = "exploring" if response.exploratory else "greedy"
        console.print(f"decision [bold]{response.decision_id}[/]: [bold green]{response.action.id}[/] "
                      f"p={response.probability:.3f} ({kind}; policy {response.policy_id}, model {response.model_version})")  # fmt: skip
        table = Table("action", "probability")
        for ranked in response.ranking:
            table.add_row(ranked.action_id, f"{ranked.probability:.4f}")
        console.print(table)

    _emit(response, as_json, render)


@main.command()
@click.option("--customer", required=True, help="The customer id.")
@click.option("--type", "outcome_type", required=True, help="A configured outcome type.")
@click.option("--value", type=FiniteFloatRange(), help="Money; default the type's value.")
@click.option("--outcome-id", default="", help="Idempotency key; default a new one.")
@click.option("--decision-id", default="", help="Attribute directly to this decision.")
@at_option
@address_option
@json_option
def outcome(
    customer: str, outcome_type: str, value: float | None, outcome_id: str, decision_id: str, at: datetime | None, address: str,
    as_json: bool,
) -> None:  # fmt: skip
    """Report an outcome (renewal, complaint, ...) for a customer."""
    request = pb.ReportOutcomeRequest(
        outcome_id=outcome_id or f"cli-{uuid.uuid4().hex}", customer_id=customer, type=outcome_type, decision_id=decision_id,
        **_event_time(at),
    )  # fmt: skip
    if value is not None:
        request.value = value
    with _client(address) as stub:
        response = stub.ReportOutcome(request)
    _emit(response, as_json, lambda: console.print(
        f"outcome {request.outcome_id}: {outcome_type} worth {response.value:g}" + (" (duplicate, stored before)" if response.duplicate else "")
    ))  # fmt: skip


@main.command()
@click.argument("decision_id")
@at_option
@address_option
@json_option
def activate(decision_id: str, at: datetime | None, address: str, as_json: bool) -> None:
    """Tell the server the channel really delivered a decision's action."""
    with _client(address) as stub:
        response = stub.Activate(pb.ActivateRequest(decision_id=decision_id, **_event_time(at)))
    _emit(response, as_json, lambda: console.print(f"activated {decision_id}" + (" (before)" if response.duplicate else "")))


@main.command()
@click.argument("decision_id")
@address_option
@json_option
def explain(decision_id: str, address: str, as_json: bool) -> None:
    """Why was this customer shown this action."""
    with _client(address) as stub:
        response = stub.Explain(pb.ExplainRequest(decision_id=decision_id))

    def render() -> None:
        when = datetime.fromtimestamp(response.event_time.seconds, tz=UTC).isoformat()
        console.print(f"[bold]{response.decision_id}[/] for customer {response.customer_id} via {response.channel} at {when}")
        console.print(f"chose [bold green]{response.action.id}[/] with p={response.probability:.3f}"
                      f"{' (exploration)' if response.exploratory else ''}; policy {response.policy_id}, model {response.model_version}; "
                      f"{'personalised' if response.personalised else 'not personalised (no consent)'}")  # fmt: skip
        eligible = Table("eligible action", "probability", title="Eligible")
        for ranked in response.eligible:
            eligible.add_row(ranked.action_id, f"{ranked.probability:.4f}")
        console.print(eligible)
        if response.removed:
            removed = Table("action", "removed because", title="Removed")
            for item in response.removed:
                removed.add_row(item.action_id, item.reason)
            console.print(removed)
        features = Table("namespace", "feature", "value", title="Features used")
        for f in response.features:
            features.add_row(f.namespace, f.name, f.category or f"{f.value:g}")
        console.print(features)
        if response.contributions:
            contributions = Table("feature", "contribution to cost (negative favours)", title="Top contributions")
            for c in response.contributions:
                contributions.add_row(c.feature, f"{c.contribution:+.4f}")
            console.print(contributions)
        if response.contributions_note:
            console.print(response.contributions_note)
        if response.encoding:
            encoding = Table("namespace", "numeric field", "encoding", "edges", title="Numeric encoding of the model")
            for e in response.encoding:
                edges = " | ".join(", ".join(f"{x:g}" for x in e_edges.edges) for e_edges in e.edges)
                encoding.add_row(e.namespace, e.field, e.kind, edges)
            console.print(encoding)

    _emit(response, as_json, render)


@main.command()
@click.option("--customer", required=True, help="The customer id to forget.")
@address_option
@json_option
def forget(customer: str, address: str, as_json: bool) -> None:
    """Delete everything stored about a customer (the right to be forgotten)."""
    with _client(address) as stub:
        response = stub.Forget(pb.ForgetRequest(customer_id=customer))
    _emit(response, as_json, lambda: console.print(
        f"forgot {customer}: {response.decisions} decisions, {response.outcomes} outcomes, {response.activations} activations, "
        f"{response.joined_examples} joined examples deleted"
    ))  # fmt: skip


def _not_ahead(ctx: click.Context, param: click.Parameter, value: datetime | None) -> datetime | None:
    """A watermark no later than now. One ahead closes decisions whose windows have not passed, for
    good: their outcomes, still to come, could no longer be credited (`--until 9999-12-31` closed
    every open decision at once). Now, not the latest logged event: a log of the past (a replay, a
    benchmark) may be closed whole, since every window of it has passed in the world."""
    if value is not None and value.replace(tzinfo=UTC) > datetime.now(UTC):
        raise click.BadParameter(f"{value.isoformat()} is ahead of now: decisions would close before their outcomes could come")
    return value


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
@store_option
@click.option("--until", type=click.DateTime(["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d"]), callback=_not_ahead,
              help="Watermark (UTC), at most now: join every decision whose window closed by then; default the latest event "
                   "time seen.")  # fmt: skip
@json_option
def join(config_path: str, store_url: str | None, until: datetime | None, as_json: bool) -> None:
    """Join closed decisions with their outcomes into learning examples (exactly once). Refused while a
    worker (`brein serve`'s, or `brein worker`) holds the store's lease: it joins the store itself."""
    from rich.progress import Progress

    from reward.joiner import Joiner

    config = _config(config_path)
    with opened_store(config, store_url) as store:
        if not store.lease.try_acquire():  # a worker joins the store: runs beside its own would interleave
            raise click.ClickException(
                "a worker holds the store's worker lease and joins it itself, every "
                f"{config.joiner.interval_seconds:g} s (`brein serve` starts one, `brein worker` is one): nothing was "
                "joined here. Online learning follows the order of join runs, so runs are made by one joiner at a "
                "time; to join by hand, stop the workers first"
            )
        joiner = Joiner(config, store.joins)
        watermark = None if until is None else until.replace(tzinfo=UTC).timestamp()
        with Progress(console=console, disable=as_json, transient=True) as bar:
            task = bar.add_task("joining", total=None)
            report = joiner.run(watermark, progress=lambda done, total: bar.update(task, completed=done, total=total))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    title = f"join run {report.run}" if report.run else "join: nothing closed, no new outcome"
    table = Table("joined", "unactivated (never shown)", "provisional", "late outcomes", "still open", "watermark", "seconds",
                  title=title)  # fmt: skip
    watermark_text = datetime.fromtimestamp(report.watermark, tz=UTC).isoformat() if report.watermark else "-"
    table.add_row(str(report.joined), str(report.unactivated), str(report.provisional), str(report.late_outcomes),
                  str(report.pending), watermark_text, f"{report.seconds:.1f}")  # fmt: skip
    console.print(table)


@main.group()
def log() -> None:
    """Read the decision log: export joined examples for VW and notebooks."""


@log.command("export")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
@store_option
@click.option("--format", "fmt", type=click.Choice(["dsjson"]), default="dsjson", show_default=True, help="Output format.")
@click.option("--output", "-o", type=click.File("w"), default="-", help="Output file; default standard output.")
def export(config_path: str, store_url: str | None, fmt: str, output: Any) -> None:
    """Write joined examples in VW's decision-service JSON, one per line, in learning order."""
    from policies.loading import load_policy
    from policies.registry import Registry
    from reward.export import dsjson_lines
    from reward.online import ExampleReader

    config = _config(config_path)
    count = 0
    with opened_store(config, store_url) as store:
        champion = Registry(store.registry).champion()
        encoding = None if champion is None else load_policy(champion, store.models)[0].encoding
        for line in dsjson_lines(ExampleReader(config, store.examples, encoding=encoding), store.models):
            output.write(line + "\n")
            count += 1
    if not count:
        output.write("")  # the file is opened at its first write: an empty log is an empty file, not none
    click.echo(f"exported {count} joined examples", err=True)


@main.command()
@click.option("--config", "config_path", default="examples/telecom.toml", show_default=True, type=click.Path(dir_okay=False),
              help="The Brein config the world and the server use.")  # fmt: skip
@click.option("--customers", default=20_000, show_default=True, type=click.IntRange(min=100), help="Customers in the world.")
@click.option("--days", default=180.0, show_default=True, type=FiniteFloatRange(min=31), help="Simulated days.")
@click.option("--seed", default=1, show_default=True, type=int, help="World seed: the same customers and arrivals for every policy.")
@click.option("--last-days", default=30.0, show_default=True, type=FiniteFloatRange(min=0, min_open=True),
              help="Report the value over the run's last days (at most --days).")  # fmt: skip
@click.option("--in-process", is_flag=True, help="Drive Brein's core in-process (deterministic) instead of a server over gRPC.")
@click.option("--plot", type=click.Path(dir_okay=False), help="Write the learning curves to this PNG file.")
@json_option
def simulate(config_path: str, customers: int, days: float, seed: int, last_days: float, in_process: bool, plot: str | None,
             as_json: bool) -> None:  # fmt: skip
    """Drive Brein through a simulated telecom world and compare it with do-nothing, the best single
    action, uniform random and the oracle."""
    import tomllib

    from rich.progress import Progress

    from bandit.config import parse_config
    from policies.simulation.baselines import best_single_action
    from policies.simulation.harness import gain_share, run, run_references
    from policies.simulation.world import World
    from serving.simulate import brein_driver, plot_curves

    if last_days > days:
        raise click.BadParameter(f"{last_days:g} days is more than the {days:g} simulated", param_hint="--last-days")
    data = tomllib.loads(Path(config_path).read_text())
    config = _config(config_path)
    with Progress(console=console, disable=as_json) as bar:
        best = best_single_action(World(config, customers, seed), seed)
        task = bar.add_task("reference policies", total=4.0)
        done = [0.0]

        def step(share: float) -> None:
            bar.update(task, completed=done[0] + share)
            if share >= 1.0:
                done[0] += 1.0

        references = run_references(lambda: World(config, customers, seed), seed, days, best, progress=step)
        learned = bar.add_task("Brein", total=1.0)
        with brein_driver(data, in_process=in_process) as driver:
            result = run(World(parse_config(data), customers, seed), driver, days, seed=seed,
                         progress=lambda share: bar.update(learned, completed=share))  # fmt: skip
    oracle = references[-1]
    rows = [result, *references]
    if plot:
        plot_curves(rows, Path(plot))
    if as_json:
        click.echo(json.dumps({"customers": customers, "days": days, "seed": seed, "last_days": last_days, "policies": [
            {"policy": r.name, "decisions": len(r.times), "gain_per_decision": r.value_per_decision(last_days),
             "net_per_decision": r.net_per_decision(last_days), "share_of_oracle_gain": gain_share(r, oracle, last_days), "contacts": r.contacts,
             "gain_by_offer": r.gain_by_offer(last_days)}
            for r in rows]}, indent=2))  # fmt: skip
        return
    table = Table("policy", "decisions", f"gain/decision, last {last_days:g} days", "net money/decision", "share of oracle's gain", "contacts",
                  title=f"{customers:,} customers, {days:g} simulated days, seed {seed}")  # fmt: skip
    for r in rows:
        table.add_row(r.name, f"{len(r.times):,}", f"{r.value_per_decision(last_days):+.2f}", f"{r.net_per_decision(last_days):+.2f}",
                      f"{gain_share(r, oracle, last_days):.0%}", f"{r.contacts:,}")  # fmt: skip
    console.print(table)
    by_offer = {r.name: r.gain_by_offer(last_days) for r in (result, oracle)}
    offers = sorted({offer for gains in by_offer.values() for offer in gains} - {"do_nothing"})
    table = Table("offer", *by_offer, title=f"what each offer added to the gain per decision, last {last_days:g} days")
    for offer in offers:
        table.add_row(offer, *(f"{gains.get(offer, 0.0):+.2f}" for gains in by_offer.values()))
    console.print(table)
    if plot:
        console.print(f"learning curves written to {plot}")
