"""A joiner in a new process on a store with a backlog (a standby that took the worker lease, a
restarted worker): `python -m bench.takeover [--quick] [--store-url postgresql://...] [--json]`.

Builds bench.join's log (1,000,000 decisions and 300,000 outcomes over 120 days; 100,000 / 30,000
with --quick) and joins it once up to day 120, as the worker that then died had. Then, each in a
process of its own (a new process holds nothing in memory), a joiner runs four times: an hour of
event time after the first join (what a standby's first round finds), then 60 s apart; twice, one
process after the other. The baseline is the same process's later runs: what a round costs once the
joiner runs. Issue 14 wants a standby working within 10 s of the active worker's death: a standby
asks for the lease every LEASE_POLL_SECONDS (brain/worker.py; tests/test_worker.py checks a takeover
within 10 s), and its first run comes on top of that.

On PostgreSQL the log is in a scratch database, vacuumed and analysed after the build and after the
first join, as autovacuum would have (this machine's server runs without it; see the README).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bandit.config import load_config
from bench.join import CONFIG, DAY, T0, build
from bench.postgres import maintain, scratch_database
from reward.joiner import Joiner
from store import open_store

FIRST_JOIN_DAYS = 120
RUNS = 4
PROCESSES = 2
LATER_SECONDS = 60.0
STANDBY_SECONDS = 10.0


def runs(store_url: str, start: float) -> list[dict[str, float]]:
    """A new joiner's RUNS runs on ``store_url`` from event time ``start``, LATER_SECONDS apart:
    each one's seconds and what it did."""
    store = open_store(store_url)
    try:
        joiner = Joiner(load_config(CONFIG), store.joins)
        done = []
        for i in range(RUNS):
            started = time.perf_counter()
            report = joiner.run(until=start + i * LATER_SECONDS)
            done.append({"seconds": time.perf_counter() - started, "joined": report.joined, "provisional": report.provisional})
        return done
    finally:
        store.close()


def in_a_new_process(store_url: str, start: float) -> list[dict[str, float]]:
    command = [sys.executable, "-m", "bench.takeover", "--child", store_url, repr(start)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed: {done.stderr}")
    result: list[dict[str, float]] = json.loads(done.stdout)
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.takeover", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 decisions instead of 1,000,000")
    parser.add_argument("--decisions", type=int, help="decisions in the log (outcomes: three tenths of them)")
    parser.add_argument("--store-url", help="a PostgreSQL server: the log in a scratch database of its own there")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--child", nargs=2, metavar=("STORE", "START"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(runs(args.child[0], float(args.child[1]))))
        return
    decisions = args.decisions or (100_000 if args.quick else 1_000_000)
    console = Console(stderr=args.json)
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sqlite_url = f"sqlite:///{Path(tmp) / 'log.db'}"
        store_url = stack.enter_context(scratch_database(args.store_url)) if args.store_url else sqlite_url
        started = time.perf_counter()
        build(store_url, decisions, decisions * 3 // 10, customers=decisions // 10)
        if args.store_url:
            maintain(store_url)
        first_join = T0 + FIRST_JOIN_DAYS * DAY
        store = open_store(store_url)
        try:
            first = Joiner(load_config(CONFIG), store.joins).run(until=first_join)
        finally:
            store.close()
        if args.store_url:
            maintain(store_url)
        console.print(f"built and joined a log of {decisions:,} decisions in {time.perf_counter() - started:.0f} s: "
                      f"{first.joined:,} joined, {first.pending:,} left queued")  # fmt: skip
        processes = [in_a_new_process(store_url, first_join + 3600.0 * (1 + i)) for i in range(PROCESSES)]
    figures = [
        {
            "first_run_s": done[0]["seconds"],
            "later_runs_s": statistics.median(d["seconds"] for d in done[1:]),
            "first_joined": done[0]["joined"],
            "first_provisional": done[0]["provisional"],
        }
        for done in processes
    ]
    if args.json:
        print(json.dumps({"decisions": decisions, "queued": first.pending, "processes": figures}))
        return
    backend = "PostgreSQL" if args.store_url else "SQLite"
    title = f"a joiner in a new process, {first.pending:,} decisions queued, {backend}"
    table = Table("new process", "first run s", f"later runs s (median of {RUNS - 1}, baseline)", "first ÷ later",
                  "first run joined / staged", title=title)  # fmt: skip
    for i, f in enumerate(figures, start=1):
        ratio = f["first_run_s"] / f["later_runs_s"]
        table.add_row(str(i), f"{f['first_run_s']:.2f}", f"{f['later_runs_s']:.3f}", f"{ratio:.0f}",
                      f"{f['first_joined']:,.0f} / {f['first_provisional']:,.0f}")  # fmt: skip
    console.print(table)
    command = shlex.join(["python", "-m", "bench.takeover", *(sys.argv[1:] if argv is None else argv)])
    load = os.getloadavg()[0]
    console.print(f"target: a standby working within {STANDBY_SECONDS:.0f} s; command: {command}; load average {load:.2f}")


if __name__ == "__main__":
    main()
