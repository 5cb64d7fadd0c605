"""Joining decisions with outcomes: `python -m bench.join [--quick] [--store-url postgresql://...]`.

Builds a log of 1,000,000 decisions and 300,000 outcomes (100,000 / 30,000 with --quick) over 120
days, then times, in separate processes so each peak memory is its own:
  * `brein join` — the joiner, exactly-once writes included (target: <= 60 s, <= 1 GiB);
  * the baseline — one SQL query that sums, per decision, the outcomes in a 30-day window, the
    least work any join of this log must do (no attribution modes, no writes): store/sqlite/baseline.py.
With ``--store-url``, the log is in a scratch database on that PostgreSQL server (its baseline
store/postgres/baseline.py), and the database's side is measured too: the CPU its backends used and
the most resident memory they held together (shared buffers counted in each backend that touched
them: an upper bound), sampled from /proc (bench/postgres.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bandit.config import load_config
from bench.postgres import Sampler, database_of, scratch_database
from store import open_store
from store.records import ActivationRecord, DecisionRecord, OutcomeRecord

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "telecom.toml"
T0 = 1_760_000_000.0
DAY = 86_400.0
ACTIONS = ["do_nothing", "renewal/email/morning", "renewal_discount/sms/evening", "sim_only/app_push/afternoon", "data_upsell/email/evening"]
OUTCOMES = [("contract_renewal", 240.0), ("sim_activation", 80.0), ("complaint", -50.0), ("unsubscribe", -30.0)]

def build(store_url: Path | str, decisions: int, outcomes: int, customers: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    store = open_store(str(store_url))
    batch: list[DecisionRecord] = []
    for i in range(decisions):
        action = rng.choice(ACTIONS)
        offer, channel, slot = action.split("/") if "/" in action else (action, "", "")
        at = T0 + rng.uniform(0, 120) * DAY
        batch.append(DecisionRecord(
            decision_id=f"d{i}", request_id=f"r{i}", customer_id=f"c{rng.randrange(customers)}", touchpoint="app", event_time=at,
            action_id=action, offer=offer, channel=channel, slot=slot, send_at=at, probability=0.2, exploratory=False, policy_id="p",
            model_version="v", personalised=True, features={"n": {"touchpoint": "app"}, "u": {"tenure_months": 12.0, "plan": "basic"}},
            eligible=tuple(ACTIONS), pmf=(0.2,) * 5,
        ))  # fmt: skip
        if len(batch) == 1_000:  # a write's customers are locked together (see store/postgres/engine.py)
            store.decisions.submit_decisions(batch).result()
            batch = []
    if batch:
        store.decisions.submit_decisions(batch).result()
    writes: list[Future[bool]] = []
    for i in range(outcomes):
        kind, value = rng.choice(OUTCOMES)
        outcome = OutcomeRecord(f"o{i}", f"c{rng.randrange(customers)}", kind, value, T0 + rng.uniform(0, 125) * DAY)
        writes.append(store.decisions.submit_outcome(outcome))
        _settle(writes)
    for i in range(decisions):
        if i % 5 != 0:
            writes.append(store.decisions.submit_activation(ActivationRecord(f"d{i}", T0)))
            _settle(writes)
    _settle(writes, 0)
    store.close()


def _settle(writes: list[Future[bool]], keep: int = 20_000) -> None:
    """Wait for the writes queued when more than ``keep`` are: a million futures would not fit."""
    if len(writes) > keep:
        for write in writes:
            write.result()
        writes.clear()


# A small launcher runs each measured command: a child forked from this (large) process would
# count this process's memory in its own peak RSS.
LAUNCHER = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
print(done.stdout.strip())
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(done.returncode)
"""


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall seconds, the command's own peak RSS in MiB, and its output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed: {done.stderr}")
    *output, peak_kib = done.stdout.strip().splitlines()
    return time.perf_counter() - started, int(peak_kib) / 1024, "\n".join(output)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.join", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="100,000 decisions instead of 1,000,000")
    parser.add_argument("--store-url", help="a PostgreSQL server: the log in a scratch database of its own there")
    args = parser.parse_args(argv)
    decisions, outcomes = (100_000, 30_000) if args.quick else (1_000_000, 300_000)
    console = Console()
    load_config(CONFIG)
    database: tuple[float, float] | None = None
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        store = stack.enter_context(scratch_database(args.store_url)) if args.store_url else str(Path(tmp) / "join.db")
        started = time.perf_counter()
        build(store, decisions, outcomes, customers=decisions // 5)
        console.print(f"built a log of {decisions:,} decisions and {outcomes:,} outcomes in {time.perf_counter() - started:.0f} s")
        backend = "postgres" if args.store_url else "sqlite"
        base_s, base_mib, base_out = timed([sys.executable, str(ROOT / "store" / backend / "baseline.py"), store])
        with Sampler(database_of(store)) if args.store_url else contextlib.nullcontext() as sampler:
            join_s, join_mib, report = timed([sys.executable, "-m", "serving", "join", "--config", str(CONFIG), "--store", store,
                                              "--until", "2026-06-01", "--json"])  # fmt: skip
        if sampler is not None:
            database = (sampler.cpu, sampler.peak_mib)
        joined = sum(json.loads(report)[kind] for kind in ("joined", "unactivated"))
    title = f"join {decisions:,} decisions, {outcomes:,} outcomes on {'PostgreSQL' if args.store_url else 'SQLite'}"
    table = Table("", "decisions", "seconds", "decisions/s", "peak RSS MiB", title=title)
    table.add_row("baseline: one SQL window sum", base_out, f"{base_s:.1f}", f"{decisions / base_s:,.0f}", f"{base_mib:.0f}")
    table.add_row("brein join (exactly once)", f"{joined:,}", f"{join_s:.1f}", f"{decisions / join_s:,.0f}", f"{join_mib:.0f}")
    console.print(table)
    if database is not None:
        cpu, mib = database
        console.print(f"the database's backends during brein join: {cpu:.1f} s CPU, at most {mib:.0f} MiB resident together")
    command = shlex.join(["python", "-m", "bench.join", *(sys.argv[1:] if argv is None else argv)])
    load = os.getloadavg()[0]
    console.print(f"target: <= 60 s and <= 1024 MiB for 1,000,000 decisions; command: {command}; load average {load:.2f}")


if __name__ == "__main__":
    main()
