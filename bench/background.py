"""Decide latency while the server joins and learns: `python -m bench.background [--quick] [--tuning] [--store-url URL]`.

A real server (``create_server`` with its background work, as ``brein serve`` runs it) starts on a
store holding a backlog of closed decisions and their outcomes (200,000 and 60,000; 50,000 and
15,000 with --quick). Its join/learn worker joins the backlog, then learns it, then idles. Calls go
out at 300 requests/s, open loop, in windows of 2 seconds; each window is put in the phase the
worker was in when it began (from the store: joined rows, the latest snapshot's learned position).
Per phase: the median of its windows' p50s, the worst of their p99s, and the p99 of all its calls
together. The baseline is the same server in the same run once its worker idles. Each phase also counts the
server's changes of its serving model (``brein_model_change_seconds``), with the mean time they took:
the stalls ``server.snapshot_seconds`` paces. With ``--store-url
postgresql://...``, the store is a scratch database on that PostgreSQL server (bench/postgres.py).

With --tuning the worker also has ``[tuning]`` on: once it has learned the backlog, it tunes
learning set-ups on it (brain/tuning.py) before it idles; the phase is "tuning" until the store's
audit trail holds the run.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import multiprocessing
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bandit.config import parse_config
from bench import load
from bench.decide import SEED, ClientProcess, ServerProcess
from bench.join import DAY, build
from bench.join import T0 as BACKLOG_START
from bench.postgres import scratch_database
from bench.workload import telecom_config, train_model
from brain.tuning import AUDIT_ACTION
from store import Store, open_store
from store.records import START

RATE = 300.0
WINDOW_SECONDS = 2.0
IDLE_WINDOWS = 3
MAX_SECONDS = 240.0
BACKLOG_DAYS = 120
"""The backlog's decisions are spread over this many days from BACKLOG_START (bench/join.py)."""
PHASES = ("joining", "learning", "tuning", "idle")


def phase(store: Store, backlog: int, policy_id: str, tuning: bool = False) -> str:
    """What the worker is doing: joining the backlog, learning what it joined, tuning (with
    ``tuning``: until its first run is in the audit trail), or nothing."""
    if sum(run.joined + run.unactivated for run in store.joins.runs() if run.finished_at is not None) < backlog:
        return "joining"
    newest = next(store.models.newest_first(policy_id), None)
    position = newest.learned if newest is not None and newest.learned is not None else START
    if store.examples.count(after=position):
        return "learning"
    return "tuning" if tuning and not store.audit.entries(AUDIT_ACTION) else "idle"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.background", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a backlog of 50,000 decisions instead of 200,000")
    parser.add_argument("--tuning", action="store_true", help="the worker also tunes learning set-ups ([tuning] on)")
    parser.add_argument("--store-url", help="a PostgreSQL server: the store in a scratch database of its own there")
    args = parser.parse_args(argv)
    backlog = 50_000 if args.quick else 200_000
    console = Console(width=None if sys.stdout.isatty() else 170)
    command = shlex.join(["python", "-m", "bench.background", *(sys.argv[1:] if argv is None else argv)])
    console.print(f"{command}: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start", highlight=False)
    ctx = multiprocessing.get_context("spawn")
    windows: dict[str, list[dict[str, Any]]] = {p: [] for p in PHASES}
    with tempfile.TemporaryDirectory(prefix="brein-bench-") as tmp, contextlib.ExitStack() as stack:
        store: Path | str = stack.enter_context(scratch_database(args.store_url)) if args.store_url else Path(tmp) / "brein.db"
        build(store, backlog, backlog * 3 // 10, customers=backlog // 5)
        model = Path(tmp) / "telecom.vw"
        model.write_bytes(train_model(parse_config(telecom_config(Path(tmp) / "probe.db", None)), 1_000, SEED))
        # The backlog just built is still being written back to disk: the server's first synced commits
        # would wait behind it (60-300 ms in the first joining window of every run), a bench artefact.
        os.sync()
        config = telecom_config(store, model)
        config["joiner"] = {**config.get("joiner", {}), "interval_seconds": 0.5}
        if args.tuning:
            # Live Decides are made at the wall clock's time, months after the backlog: the held-out
            # part of the log reaches back to the backlog's last 30 days, so there is something to tune on.
            config["tuning"] = {"enabled": True, "holdout_days": (time.time() - BACKLOG_START) / DAY - BACKLOG_DAYS + 30}
        policy_id = parse_config(config).learner.policy_id
        observer = open_store(str(store))  # how far the worker is, read as any process reads the store
        stack.callback(observer.close)
        client = ClientProcess(ctx, 100_000)
        stack.callback(client.stop)
        server = ServerProcess(ctx, "decide", config, store, None, background=True)
        stack.callback(server.stop)
        started = time.monotonic()
        for window in itertools.count():
            if len(windows["idle"]) >= IDLE_WINDOWS or time.monotonic() - started >= MAX_SECONDS:
                break
            now = phase(observer, backlog, policy_id, args.tuning)
            count = int(RATE * WINDOW_SECONDS)
            before = server.model_changes()
            result = client.run(load.OpenLoop(server.address, RATE, count, 0, f"w{window}"), WINDOW_SECONDS + 1)
            after = server.model_changes()
            result = {**result, "model_changes": after[0] - before[0], "model_change_seconds": after[1] - before[1]}
            windows[now].append(result)
            console.print(
                f"  {time.monotonic() - started:5.0f} s {now:8}: p50 {1e3 * result['p50']:7.1f} ms, p99 {1e3 * result['p99']:7.1f} ms, "
                f"errors {result['errors']}, model changes {result['model_changes']:.0f}",
                highlight=False,
            )
        tuned = observer.audit.entries(AUDIT_ACTION)
    table = Table(title=f"Decide latency at {RATE:.0f} req/s while the server's worker works — {command}")
    columns = (
        "worker", "windows", "p50 ms (median of windows)", "p99 ms (worst window)", "p99 ms (the phase's calls)",
        "model changes (mean ms)", "errors",
    )  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "worker" else "right")
    for name in PHASES:
        got = windows[name]
        if got:
            p50 = statistics.median(1e3 * w["p50"] for w in got)
            p99 = max(1e3 * w["p99"] for w in got)
            calls = 1e3 * load.percentile(sorted(x for w in got for x in w["latencies"]), 0.99)
            changes = sum(w["model_changes"] for w in got)
            took = f" ({1e3 * sum(w['model_change_seconds'] for w in got) / changes:.1f})" if changes else ""
            errors = str(sum(int(w["errors"]) for w in got))
            label = name if name != "idle" else "idle (baseline)"
            table.add_row(label, str(len(got)), f"{p50:.1f}", f"{p99:.1f}", f"{calls:.1f}", f"{changes:.0f}{took}", errors)
    console.print(table)
    if args.tuning:
        console.print(f"tuning runs (audit trail): {[entry.detail for entry in tuned]}", highlight=False)
    console.print(f"backlog {backlog:,} decisions; load average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
