"""Serving replicas on one PostgreSQL database: `python -m bench.replicas [--quick] [POSTGRES_URL]`.

Two Brein servers (processes of their own, each its own store instance and port, as two replicas
or `brein serve --workers 2` have) on one scratch database, and one client process. Each round
measures, for ONE replica (the first server alone) and for TWO (both, the client's calls spread
round robin over them), one after the other:
  * Decide throughput with 32 calls in flight, and the server CPU per call: both serving processes
    (the idle one too, in the one-replica figure) and the database's backends (bench/postgres.py);
  * p50/p99 latency at 300 requests/s, open loop.
The figures are medians over rounds (the order alternates); the client and PostgreSQL share the
machine's cores with the servers, so on a 2-core box the client's CPU is printed beside them.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bandit.config import parse_config
from bench import load
from bench.decide import SEED, ClientProcess, ServerProcess
from bench.postgres import DEFAULT_URL, scratch_database
from bench.workload import telecom_config, train_model

CONCURRENCY = 32
RATE = 300.0


def _cpu(servers: list[ServerProcess]) -> float:
    """CPU seconds of every serving process and (counted once) the database's backends."""
    total = sum(server.cpu() for server in servers)
    return total - (len(servers) - 1) * servers[0].database_cpu()


def _round(client: ClientProcess, servers: list[ServerProcess], address: str, tag: str, seconds: float) -> dict[str, Any]:
    before = _cpu(servers)
    result = client.run(load.ClosedLoop(address, CONCURRENCY, 0.5, seconds, 10_000_000, tag), seconds + 0.5)
    result["cpu_per_call"] = 1e6 * (_cpu(servers) - before) / max(1, result["completed"])
    count = int(RATE * seconds)
    latency = client.run(load.OpenLoop(address, RATE, count + int(RATE / 2), int(RATE / 2), f"{tag}-lat"), seconds + 1)
    result.update(p50=1e3 * latency["p50"], p99=1e3 * latency["p99"], latency_errors=latency["errors"])
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"a PostgreSQL server (default {DEFAULT_URL})")
    parser.add_argument("--quick", action="store_true", help="3 rounds of 3 s instead of 5 of 6 s")
    parser.add_argument("--customers", type=int, default=100_000, help="size of the customer pool (default 100,000)")
    args = parser.parse_args(argv)
    rounds, seconds = (3, 3.0) if args.quick else (5, 6.0)
    command = shlex.join(["python", "-m", "bench.replicas", *(sys.argv[1:] if argv is None else argv)])
    console = Console(width=None if sys.stdout.isatty() else 170)
    console.print(f"{command}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", highlight=False)
    ctx = multiprocessing.get_context("spawn")
    runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
    with tempfile.TemporaryDirectory(prefix="brein-bench-") as tmp, contextlib.ExitStack() as stack:
        url = stack.enter_context(scratch_database(args.url))
        model = Path(tmp) / "telecom.vw"
        model.write_bytes(train_model(parse_config(telecom_config(Path(tmp) / "probe.db", None)), 1_000, SEED))
        config = telecom_config(url, model)
        servers = []
        for _ in range(2):
            server = ServerProcess(ctx, "decide", config, url, None)
            stack.callback(server.stop)
            servers.append(server)
        client = ClientProcess(ctx, args.customers)
        stack.callback(client.stop)
        addresses = {"one": servers[0].address, "two": "ipv4:" + ",".join(server.address for server in servers)}
        for round_ in range(rounds):
            for name in ("one", "two") if round_ % 2 == 0 else ("two", "one"):
                result = _round(client, servers, addresses[name], f"r{round_}{name}", seconds)
                runs[name].append(result)
                console.print(
                    f"  round {round_ + 1} {name} replica{'s' if name == 'two' else ''}: {result['rate']:6.0f} req/s, "
                    f"{result['cpu_per_call']:5.0f} µs CPU a call, client CPU {100 * result['client_cpu']:3.0f}%, "
                    f"p50 {result['p50']:6.1f} ms, p99 {result['p99']:6.1f} ms at {RATE:.0f}/s, "
                    f"errors {result['errors'] + result['latency_errors']}",
                    highlight=False,
                )
    table = Table(title=f"Replicas on one PostgreSQL — {command} (medians of {rounds} rounds)")
    for column in ("replicas", f"Decide req/s, {CONCURRENCY} in flight", "server CPU µs a call (all + DB)", "client CPU",
                   f"p50 ms @{RATE:.0f}/s", f"p99 ms @{RATE:.0f}/s", "errors"):  # fmt: skip
        table.add_column(column, justify="left" if column == "replicas" else "right")
    median = {name: {k: statistics.median(r[k] for r in got) for k in ("rate", "cpu_per_call", "client_cpu", "p50", "p99")}
              for name, got in runs.items()}  # fmt: skip
    for name, m in median.items():
        errors = sum(r["errors"] + r["latency_errors"] for r in runs[name])
        table.add_row(name, f"{m['rate']:,.0f}", f"{m['cpu_per_call']:,.0f}", f"{100 * m['client_cpu']:.0f}%", f"{m['p50']:.1f}",
                      f"{m['p99']:.1f}", str(errors))  # fmt: skip
    rate, cpu = (median["two"][k] / median["one"][k] for k in ("rate", "cpu_per_call"))
    table.add_row("two / one", f"{rate:.2f}x (target ≥ 1.3x)", f"{cpu:.2f}x (target ≤ 1.15x)", "", "", "", "")
    console.print(table)
    console.print(f"load average {os.getloadavg()[0]:.2f} at end", highlight=False)


if __name__ == "__main__":
    main()
