"""Speed of Decide, each figure next to its baseline, measured in one run.

1. Unary Decide throughput with N calls in flight, against a no-op server of the same messages.
2. Latency p50/p99 at a fixed offered rate (open loop, from the scheduled send time).
3. DecideBatch decisions/s end to end, every decision checked in the store's decisions table.
4. In-process decide (no gRPC, no store) in µs per decision for ~20 and ~200 eligible actions,
   next to VW's predict_one alone for the same actions.

Servers and the client run in processes of their own (the client must not share a server's GIL);
each server binds 127.0.0.1:0 and logs to a temp SQLite file. ``--quick`` for a short run.
``--store-url postgresql://...``: Brein's server logs to a scratch database of its own on that server
instead, and its server CPU includes that database's backends' (the database's share; see
bench/postgres.py).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.context import SpawnContext
from pathlib import Path
from typing import Any, TypeVar, cast

from rich.console import Console
from rich.table import Table
from vowpal_wabbit_next import TextFormatParser, Workspace

from bandit.catalog import Catalog
from bandit.config import BreinConfig, parse_config
from bandit.contact_policy import ContactPolicy
from bandit.decider import Decider, ServingPolicy
from bandit.exclusions import Exclusions
from bandit.features import FeatureEncoder, action_line, local_hour_weekday
from bandit.history import EMPTY_HISTORY, history_features
from bandit.learner import VWPolicy, vw_arguments
from bandit.requests import DecisionRequest, validate_decision_request
from bandit.rules import EligibilityRules
from bandit.sampling import sample_index, uniform_draw
from bench import load, servers
from bench.postgres import database_of, postgres_cpu, scratch_database
from bench.workload import EVENT_TIME, eligible_customer, sized_config, telecom_config, train_model
from store import open_store
from store.opening import is_postgres
from store.ports import DecisionLog
from store.records import CustomerLog, DecisionRecord, Head, SharedFeatures, decision_id_for

T = TypeVar("T")
SEED = 20261122
TARGET_RATIO = 0.8
TARGET_BATCH = 10_000.0


@dataclass(frozen=True)
class Settings:
    customers: int = 100_000
    concurrency: tuple[int, ...] = (32, 64)
    rounds: int = 3
    warmup: float = 1.0
    duration: float = 4.0
    rate: float = 300.0
    latency_seconds: float = 10.0
    chunks: tuple[int, ...] = (100, 500)
    batch_decisions: int = 200_000
    batch_seconds: float = 8.0
    train_examples: int = 3_000
    inprocess_calls: int = 2_000
    inprocess_repeats: int = 5


FULL = Settings()
QUICK = Settings(
    concurrency=(32,),
    rounds=1,
    warmup=0.5,
    duration=2.0,
    latency_seconds=3.0,
    batch_decisions=50_000,
    batch_seconds=3.0,
    train_examples=1_000,
    inprocess_calls=300,
    inprocess_repeats=3,
)


# -- processes ------------------------------------------------------------------------------------


def _receive(conn: Connection, timeout: float, what: str) -> Any:
    try:
        if not conn.poll(timeout):
            raise TimeoutError(f"no answer from {what} within {timeout:.0f} s")
        return conn.recv()
    except EOFError:
        raise RuntimeError(f"{what} exited (its traceback is above)") from None


class ServerProcess:
    def __init__(
        self, ctx: SpawnContext, kind: str, config: dict[str, Any], store: Path | str, profile: Path | None, *,
        background: bool = False,
    ) -> None:  # fmt: skip
        self.kind = kind
        self.store = store
        self._database = database_of(str(store)) if is_postgres(str(store)) else None
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(
            target=servers.serve,
            args=(kind, config, str(store), SEED, child, str(profile) if profile else None, background),
            name=f"brein-bench-{kind}",
            daemon=not background,  # a daemonic process may not start the server's join/learn worker
        )
        self._process.start()
        child.close()
        status, detail = _receive(self._conn, 120, f"the {kind} server")
        if status != "ready":
            raise RuntimeError(f"the {kind} server did not start: {detail}")
        self.address = f"127.0.0.1:{detail}"

    @property
    def pid(self) -> int:
        """The server's process id (its threads are in /proc/<pid>/task: bench/threads.py)."""
        if self._process.pid is None:
            raise RuntimeError(f"the {self.kind} server has not started")
        return self._process.pid

    def cpu(self) -> float:
        """CPU seconds of the server's process, and of its database's backends on a PostgreSQL store."""
        self._conn.send("cpu")
        seconds: float = _receive(self._conn, 10, f"the {self.kind} server")
        return seconds + self.database_cpu()

    def model_changes(self) -> tuple[float, float]:
        """How many times the server changed its serving model, and the seconds those changes took
        (brein_model_change_seconds: only a server that follows the store, ``background``)."""
        self._conn.send("model_changes")
        count, seconds = _receive(self._conn, 10, f"the {self.kind} server")
        return count, seconds

    def database_cpu(self) -> float:
        """CPU seconds of the backends of the server's PostgreSQL database (0 on SQLite)."""
        return postgres_cpu(self._database) if self._database else 0.0

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send("stop")
                _receive(self._conn, 30, f"the {self.kind} server")
            self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


class ClientProcess:
    def __init__(self, ctx: SpawnContext, customers: int) -> None:
        self._conn, child = ctx.Pipe()
        self._process = ctx.Process(target=load.drive, args=(child, customers, SEED), name="brein-bench-client", daemon=True)
        self._process.start()
        child.close()
        _receive(self._conn, 120, "the client")

    def run(self, command: load.Command, bound: float) -> dict[str, Any]:
        self._conn.send(command)
        status, result = _receive(self._conn, bound + 2 * load.DEADLINE + 10, "the client")
        if status != "ok":
            raise RuntimeError(f"client failed on {command}: {result}")
        answer: dict[str, Any] = result
        return answer

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


def _count_decisions(store: Path | str) -> int:
    opened = open_store(str(store))
    try:
        return opened.decisions.decision_count()
    finally:
        opened.close()


# -- figures 1 to 3: over gRPC --------------------------------------------------------------------


@dataclass
class Measured:
    """One figure for Brein and its baseline; ``runs`` keeps every round's raw result."""

    figure: str
    setting: str
    brein: float
    baseline: float
    unit: str
    note: str = ""
    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _server_cpu(server: ServerProcess, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    before = server.cpu()
    result = run()
    result["server_cpu"] = server.cpu() - before
    return result


def throughput(
    settings: Settings, client: ClientProcess, decide: ServerProcess, noop: ServerProcess, say: Callable[[str], None]
) -> list[Measured]:
    figures = []
    for concurrency in settings.concurrency:
        runs: dict[str, list[dict[str, Any]]] = {"decide": [], "noop": []}
        for round_ in range(settings.rounds):
            order = (noop, decide) if round_ % 2 == 0 else (decide, noop)
            for server in order:
                command = load.ClosedLoop(
                    server.address, concurrency, settings.warmup, settings.duration, 1_000_000, f"tp{concurrency}r{round_}"
                )
                result = _server_cpu(server, functools.partial(client.run, command, settings.warmup + settings.duration))
                runs[server.kind].append(result)
                say(
                    f"  throughput c={concurrency} round {round_ + 1} {server.kind:6}: {result['rate']:8.0f} req/s, "
                    f"server CPU {1e6 * result['server_cpu'] / max(1, result['completed']):.0f} µs/req, "
                    f"client CPU {100 * result['client_cpu']:.0f}%, errors {result['errors']}, "
                    f"eligible {result['eligible']:.1f}"
                )
        rate = {k: statistics.median(r["rate"] for r in v) for k, v in runs.items()}
        cpu = {k: statistics.median(1e6 * r["server_cpu"] / max(1, r["completed"]) for r in v) for k, v in runs.items()}
        client_cpu = max(r["client_cpu"] for r in runs["noop"])
        bound = " (client-bound? the no-op figure is then a floor)" if client_cpu > 0.9 else ""
        errors = sum(r["errors"] for v in runs.values() for r in v)
        eligible = statistics.fmean(r["eligible"] for r in runs["decide"])
        figures.append(
            Measured(
                "Decide throughput (req/s)",
                f"{concurrency} in flight, median of {settings.rounds}",
                rate["decide"],
                rate["noop"],
                "req/s",
                f"target ratio ≥ {TARGET_RATIO}; no-op client CPU {100 * client_cpu:.0f}%{bound}; {errors} errors; "
                f"mean eligible {eligible:.1f}",
                runs["decide"] + runs["noop"],
            )
        )
        figures.append(
            Measured(
                "Server CPU per Decide (µs)",
                f"{concurrency} in flight, median of {settings.rounds}",
                cpu["decide"],
                cpu["noop"],
                "µs",
                "all threads of the server process; steadier than req/s on a busy machine",
            )
        )
    return figures


def latency(
    settings: Settings, client: ClientProcess, decide: ServerProcess, noop: ServerProcess, say: Callable[[str], None]
) -> list[Measured]:
    count = int(settings.rate * settings.latency_seconds)
    warmup = int(settings.rate * 0.5)
    results = {}
    for server in (noop, decide):
        command = load.OpenLoop(server.address, settings.rate, count + warmup, warmup, f"lat-{server.kind}")
        result = client.run(command, settings.latency_seconds + 1)
        results[server.kind] = result
        say(
            f"  latency @{settings.rate:.0f}/s {server.kind:6}: p50 {1e3 * result['p50']:.2f} ms, "
            f"p99 {1e3 * result['p99']:.2f} ms, "
            f"max {1e3 * result['max']:.1f} ms, {result['measured']} measured, errors {result['errors']}, "
            f"sender late by up to {1e3 * result['sender_late']:.1f} ms"
        )
    setting = f"open loop {settings.rate:.0f} req/s, {count} requests"
    note = f"errors {results['decide']['errors']} / {results['noop']['errors']}"
    return [
        Measured("Decide latency p50 (ms)", setting, 1e3 * results["decide"]["p50"], 1e3 * results["noop"]["p50"], "ms", note),
        Measured("Decide latency p99 (ms)", setting, 1e3 * results["decide"]["p99"], 1e3 * results["noop"]["p99"], "ms", note),
    ]


def batch(
    settings: Settings, client: ClientProcess, decide: ServerProcess, noop: ServerProcess, say: Callable[[str], None]
) -> list[Measured]:
    figures = []
    for chunk in settings.chunks:
        results = {}
        for server in (noop, decide):
            before = _count_decisions(decide.store)
            command = load.Batch(
                server.address, chunk, settings.batch_decisions, settings.batch_seconds, 4, f"batch{chunk}-{server.kind}"
            )
            result = _server_cpu(server, functools.partial(client.run, command, settings.batch_seconds))
            result["logged"] = _count_decisions(decide.store) - before
            results[server.kind] = result
            say(
                f"  DecideBatch chunk {chunk} {server.kind:6}: {result['rate']:8.0f} decisions/s, "
                f"{result['decisions']} decisions in {result['seconds']:.1f} s, errors {result['errors']}, "
                f"rows logged {result['logged']}, eligible {result['eligible']:.1f}, "
                f"server CPU {1e6 * result['server_cpu'] / max(1, result['decisions']):.0f} µs/decision"
            )
        d = results["decide"]
        verified = (
            "every decision logged" if d["logged"] == d["decisions"] else f"LOGGED {d['logged']} != {d['decisions']} DECISIONS"
        )
        figures.append(
            Measured(
                "DecideBatch (decisions/s)",
                f"chunk {chunk}, 1 stream, 4 chunks in flight",
                d["rate"],
                results["noop"]["rate"],
                "decisions/s",
                f"target ≥ {TARGET_BATCH:,.0f}; {verified} ({d['decisions']}); {d['errors']} errors; "
                f"server CPU {1e6 * d['server_cpu'] / max(1, d['decisions']):.0f} µs/decision; mean eligible {d['eligible']:.1f}",
                [results["decide"], results["noop"]],
            )
        )
    return figures


def over_grpc(
    settings: Settings, tmp: Path, profile: Path | None, say: Callable[[str], None], database: str | None = None
) -> list[Measured]:
    """With ``database`` (a PostgreSQL URL), Brein's server logs to a schema of its own there and its
    server CPU includes the database's."""
    ctx = multiprocessing.get_context("spawn")
    say("training the telecom model for the servers ...")
    model = tmp / "telecom.vw"
    model.write_bytes(train_model(parse_config(telecom_config(tmp / "probe.db", None)), settings.train_examples, SEED))
    with contextlib.ExitStack() as stack:
        started = []
        for kind in ("decide", "noop"):
            store: Path | str = tmp / f"{kind}.db"
            if database and kind == "decide":
                store = stack.enter_context(scratch_database(database))
            server = ServerProcess(
                ctx, kind, telecom_config(store, model), store, profile / f"{kind}.pstats" if profile else None
            )
            stack.callback(server.stop)
            started.append(server)
        decide, noop = started
        client = ClientProcess(ctx, settings.customers)
        stack.callback(client.stop)
        say(f"servers: decide on {decide.address}, no-op on {noop.address}; client ready")
        figures = throughput(settings, client, decide, noop, say)
        figures += latency(settings, client, decide, noop, say)
        figures += batch(settings, client, decide, noop, say)
    return figures


# -- figure 4: in process -------------------------------------------------------------------------


def _done(value: T) -> Future[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return future


class NullLog:
    """The part of a DecisionLog that ``Decider.decide`` uses, keeping nothing: every customer is
    new and every write succeeds at once, so the timing is the decision alone."""

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        return _done(None)

    def may_refuse(self, heads: Mapping[str, Head]) -> bool:
        return False

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        return {}

    def features_before(self, until: float | None, limit: int) -> list[tuple[str, SharedFeatures]]:
        return []

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        return {c: CustomerLog(lookback_days) for c in customer_ids}

    def deciding_reads(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[dict[str, DecisionRecord], dict[str, CustomerLog]]:
        return {}, self.customer_logs(customer_ids, first, last, lookback_days)


def per_call_us(call: Callable[[], object], calls: int, repeats: int) -> float:
    """µs per call, best of ``repeats`` timed loops (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter_ns()
        for _ in range(calls):
            call()
        best = min(best, (time.perf_counter_ns() - started) / calls / 1e3)
    return best


def in_process_size(settings: Settings, config: BreinConfig, say: Callable[[str], None]) -> tuple[int, dict[str, float]]:
    """Timings of one catalog size: the whole decide with a null log, its public pieces, VW alone."""
    model = train_model(config, settings.train_examples, SEED)
    policy = VWPolicy(vw_arguments(config.learner), model)
    decider = Decider(config, cast(DecisionLog, NullLog()), ServingPolicy("bench", policy), clock=lambda: EVENT_TIME)
    catalog = Catalog(config)
    c = eligible_customer()
    request = DecisionRequest(
        customer_id=c.customer_id,
        touchpoint=c.touchpoint,
        numeric=c.numeric,
        categorical=c.categorical,
        personalisation="granted",
        contact_consent={channel: "granted" for channel in catalog.channels},
    )
    first = decider.decide(dataclasses.replace(request, request_id="first")).record
    if len(first.eligible) != len(catalog):
        raise RuntimeError(f"expected all {len(catalog)} actions eligible, got {len(first.eligible)}")
    if policy.cold:
        raise RuntimeError("expected a trained model, got the cold-start policy")

    n, r = settings.inprocess_calls, settings.inprocess_repeats
    requests = iter([dataclasses.replace(request, request_id=f"r{i}") for i in range(n * r + 1)])
    timings: dict[str, float] = {"decide": per_call_us(lambda: decider.decide(next(requests)), n, r)}

    # The pieces Decider._decide calls, through their public APIs, in its order.
    now = EVENT_TIME
    rules = EligibilityRules(config)
    contact_policy = ContactPolicy(config.contact_policy, catalog.channels)
    encoder = FeatureEncoder(config)
    outcome_types = tuple(config.outcomes)
    history = history_features(EMPTY_HISTORY, now, catalog.channels, outcome_types)
    hour, weekday = local_hour_weekday(now, config.zone)

    def exclusions() -> list[Any]:
        ex = Exclusions()
        verdict = rules.evaluate(
            {"numeric": dict(request.numeric), "categorical": dict(request.categorical), "history": history,
             "touchpoint": request.touchpoint, "hour": hour, "weekday": weekday}
        )  # fmt: skip
        ex.exclude_channels(verdict.channels)
        ex.exclude_offers(verdict.offers)
        contact_policy.apply(EMPTY_HISTORY, now, ex)
        return ex.eligible(catalog.actions)

    def features() -> str:
        shared = encoder.shared_features(
            touchpoint=request.touchpoint, event_time=now, numeric=request.numeric, categorical=request.categorical,
            history=history, personalised=True,
        )  # fmt: skip
        return encoder.shared_line(shared)

    eligible = exclusions()
    line = features()
    pmf = policy.pmf(line, eligible)

    def sampling() -> int:
        decision_id = decision_id_for("r-sample")
        return sample_index(pmf, uniform_draw(SEED, decision_id))

    timings["validate"] = per_call_us(lambda: validate_decision_request(request, config, catalog, now), n, r)
    timings["history features"] = per_call_us(lambda: history_features(EMPTY_HISTORY, now, catalog.channels, outcome_types), n, r)
    timings["rules + exclusions"] = per_call_us(exclusions, n, r)
    timings["features + VW line"] = per_call_us(features, n, r)
    timings["policy pmf"] = per_call_us(lambda: policy.pmf(line, eligible), n, r)
    timings["sampling"] = per_call_us(sampling, n, r)
    timings["send_at"] = per_call_us(lambda: catalog.send_at(eligible[-1], now), n, r)

    # The baseline: VW's predict_one alone, on examples parsed once, for the same actions.
    workspace = Workspace(vw_arguments(config.learner), model_data=model)
    parser = TextFormatParser(workspace)
    examples = [parser.parse_line(line)] + [parser.parse_line(action_line(a)) for a in eligible]
    timings["VW predict_one"] = per_call_us(lambda: workspace.predict_one(examples), n, r)
    timings["VW parse shared line"] = per_call_us(lambda: parser.parse_line(line), n, r)
    say(f"  in process, {len(eligible)} eligible: " + ", ".join(f"{k} {v:.1f} µs" for k, v in timings.items()))
    return len(eligible), timings


def in_process(settings: Settings, say: Callable[[str], None]) -> tuple[list[Measured], list[tuple[int, dict[str, float]]]]:
    figures, details = [], []
    for shape in ((5, 2, 2), (10, 4, 5)):
        eligible, timings = in_process_size(settings, sized_config(*shape), say)
        details.append((eligible, timings))
        figures.append(
            Measured(
                "In-process decide (µs/decision)",
                f"{eligible} eligible ({shape[0]} offers × {shape[1]} channels × {shape[2]} slots + do-nothing)",
                timings["decide"],
                timings["VW predict_one"],
                "µs",
                f"best of {settings.inprocess_repeats} × {settings.inprocess_calls}; baseline: VW predict_one alone",
            )
        )
    return figures, details


# -- the report -----------------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if value != value:
        return "n/a"
    if unit in ("req/s", "decisions/s"):
        return f"{value:,.0f}"
    return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"


def figures_table(figures: list[Measured], command: str) -> Table:
    table = Table(title=f"Brein Decide benchmarks — {command}", show_lines=True)
    for name, justify in (
        ("Figure", "left"),
        ("Setting", "left"),
        ("Brein", "right"),
        ("Baseline", "right"),
        ("Ratio", "right"),
        ("Notes", "left"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for f in figures:
        ratio = f.brein / f.baseline if f.baseline else float("nan")
        table.add_row(f.figure, f.setting, _fmt(f.brein, f.unit), _fmt(f.baseline, f.unit), f"{ratio:.2f}", f.note)
    return table


def pieces_table(details: list[tuple[int, dict[str, float]]], command: str) -> Table:
    table = Table(title=f"In-process decide, piece by piece (µs per call, best of repeats) — {command}")
    table.add_column("Piece")
    for eligible, _ in details:
        table.add_column(f"{eligible} eligible", justify="right")
    pieces = [k for k in details[0][1] if k != "decide"]
    for piece in ["decide"] + pieces:
        table.add_row(piece, *(f"{t[piece]:.1f}" for _, t in details))
    summed = ("validate", "history features", "rules + exclusions", "features + VW line", "policy pmf", "sampling", "send_at")
    table.add_row("sum of the pieces", *(f"{sum(t[p] for p in summed):.1f}" for _, t in details))
    return table


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.decide", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a short run (well under a minute)")
    parser.add_argument("--customers", type=int, default=FULL.customers, help="size of the customer pool (default 100,000)")
    parser.add_argument("--profile", type=Path, help="write each server's cProfile stats here (figures are then not valid)")
    parser.add_argument("--skip-grpc", action="store_true", help="only the in-process figures")
    parser.add_argument("--store-url", help="a PostgreSQL server for Brein's store (in a scratch database of its own)")
    args = parser.parse_args(argv)
    settings = dataclasses.replace(QUICK if args.quick else FULL, customers=args.customers)
    command = shlex.join(["python", "-m", "bench.decide", *(sys.argv[1:] if argv is None else argv)])
    console = Console(width=None if sys.stdout.isatty() else 170)

    def say(text: str) -> None:
        console.print(text, highlight=False, markup=False)

    say(f"{command}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    started = time.perf_counter()
    say("in-process decide ...")
    figures, details = in_process(settings, say)
    if not args.skip_grpc:
        if args.profile:
            args.profile.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="brein-bench-") as tmp:
            figures = over_grpc(settings, Path(tmp), args.profile, say, args.store_url) + figures
    say(
        f"done in {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.2f} at end "
        "(figures are noisy on a shared 2-core machine: see bench/README.md)"
    )
    console.print(figures_table(figures, command))
    console.print(pieces_table(details, command))


if __name__ == "__main__":
    main()
