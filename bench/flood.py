"""One customer's flood against the joiner: `python -m bench.flood [--repeats N | --quick] [--store-url postgresql://...]`.

A caller deciding for one customer in a loop (a probe, a test account, a retry storm), or reporting
its outcomes in a loop, must cost the joiner in proportion to what it sent — its decisions, and its
outcomes times the decisions each is credited to (at most ``[joiner] max_credited_decisions``) —
not to decisions times outcomes, which held every other customer's learning back. Two floods, each with its outcomes reported
before the decisions are joined (the closing run credits them) and after (the next run finds them
late), timed in the join run that meets the outcomes:
  * 20,000 decisions of one customer over 20 days, and 200 renewals of it;
  * 300 decisions of one customer, and 20,000 renewals of it.
Beside each, the baseline: the same numbers of decisions and outcomes spread over 1,000 customers.
The example config's credit: each renewal shared equally by the decisions in its window (at most
``[joiner] max_credited_decisions``, the latest). Medians of ``--repeats`` runs, each on a new store.

Then a Decide's read of one customer's log (``deciding_reads``, what every Decide for it reads: its
contacts of the lookback, the last outcome of each type before the Decide's time and those after it)
with 20,000 of one kind of fact logged for it: contacts over the last 25 days, do-nothing
decisions, outcomes before the Decide's time (a renewal, then complaints), outcomes reported ahead of
it. Beside each, the read of a customer with one fact of the kind, in the same store; medians of
READS reads.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from rich.console import Console
from rich.table import Table

from bandit.config import load_config
from bench.join import CONFIG, T0
from bench.postgres import scratch_database
from reward.joiner import Joiner
from store import open_store
from store.ports import Store
from store.records import DAY, ActivationRecord, DecisionRecord, OutcomeRecord

T = TypeVar("T")

SPAN = 20 * DAY
SPREAD_CUSTOMERS = 1_000
FLOODS = [(20_000, 200), (300, 20_000)]
READ_FLOOD = 20_000
READS = 200
LOOKBACK_DAYS = 30.0


def _decision(i: int, customer: str, at: float) -> DecisionRecord:
    return DecisionRecord(
        decision_id=f"d{i}", request_id=f"r{i}", customer_id=customer, touchpoint="app", event_time=at,
        action_id="renewal/email/morning", offer="renewal", channel="email", slot="morning", send_at=at, probability=0.5,
        exploratory=False, policy_id="p", model_version="v", personalised=True, features={"n": {"touchpoint": "app"}},
        eligible=("do_nothing", "renewal/email/morning"), pmf=(0.5, 0.5),
    )  # fmt: skip


def timed_join(url: str, decisions: int, outcomes: int, customers: int, late: bool) -> float:
    """Seconds of the join run that meets the outcomes: ``decisions`` and ``outcomes`` over
    ``customers`` customers (the i-th of each to customer i mod customers), in 20 days."""
    config = load_config(CONFIG)
    store = open_store(url)
    try:
        joiner = Joiner(config, store.joins)
        logged = [_decision(i, f"c{i % customers}", T0 + SPAN * i / decisions) for i in range(decisions)]
        for start in range(0, decisions, 1_000):
            store.decisions.submit_decisions(logged[start : start + 1_000]).result()
        for activated in [store.decisions.submit_activation(ActivationRecord(d.decision_id, d.event_time)) for d in logged]:
            activated.result()
        if late:
            joiner.run(until=T0 + 60 * DAY)
        reported = [OutcomeRecord(f"o{i}", f"c{i % customers}", "contract_renewal", 240.0, T0 + SPAN * (i + 0.5) / outcomes)
                    for i in range(outcomes)]  # fmt: skip
        for done in [store.decisions.submit_outcome(outcome) for outcome in reported]:
            done.result()
        started = time.perf_counter()
        joiner.run(until=T0 + 90 * DAY)
        return time.perf_counter() - started
    finally:
        store.close()


def _decided(store: Store, customer: str, count: int, now: float, nothing: bool = False) -> None:
    """``count`` decisions for ``customer`` over the 25 days before ``now``: contacts, or do-nothing ones."""
    logged = [replace(_decision(i, customer, now - 25 * DAY * (i + 1) / count), decision_id=f"{customer}{i}",
                      request_id=f"r{customer}{i}") for i in range(count)]  # fmt: skip
    if nothing:
        logged = [replace(d, action_id="do_nothing", offer="do_nothing", channel="", slot="") for d in logged]
    for start in range(0, count, 1_000):
        store.decisions.submit_decisions(logged[start : start + 1_000]).result()


def _report(store: Store, customer: str, times: list[tuple[str, float]]) -> None:
    reported = [OutcomeRecord(f"{customer}{i}", customer, kind, 0.0, at, "") for i, (kind, at) in enumerate(times)]
    for start in range(0, len(reported), 1_000):
        for done in [store.decisions.submit_outcome(outcome) for outcome in reported[start : start + 1_000]]:
            done.result()


def _outcomes_before(store: Store, customer: str, count: int, now: float) -> None:
    _report(store, customer, [("contract_renewal", now - 26 * DAY)] + [("complaint", now - 25 * DAY * (i + 1) / count)
                                                                      for i in range(count - 1)])  # fmt: skip


def _outcomes_ahead(store: Store, customer: str, count: int, now: float) -> None:
    _report(store, customer, [("complaint", now + 60 + DAY * i / count) for i in range(count)])


READ_FLOODS: list[tuple[str, Callable[[Store, str, int, float], None]]] = [
    ("contacts", _decided),
    ("do-nothing decisions", functools.partial(_decided, nothing=True)),
    ("outcomes before the Decide", _outcomes_before),
    ("outcomes reported ahead of it", _outcomes_ahead),
]


def timed_reads(url: str, flood: Callable[[Store, str, int, float], None]) -> tuple[float, float]:
    """Milliseconds of one customer's read (median of READS) with READ_FLOOD facts of a kind logged
    for it, and of another's with one."""
    now = T0 + 30 * DAY
    store = open_store(url)
    try:
        flood(store, "flooded", READ_FLOOD, now)
        flood(store, "calm", 1, now)
        medians = []
        for customer in ("flooded", "calm"):
            seconds = []
            for i in range(READS):
                started = time.perf_counter()
                store.decisions.deciding_reads([f"q{i}"], [customer], now, now, LOOKBACK_DAYS)
                seconds.append(time.perf_counter() - started)
            medians.append(statistics.median(seconds) * 1e3)
        return medians[0], medians[1]
    finally:
        store.close()


def _on_new_store(store_url: str | None, run: Callable[[str], T]) -> T:
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        url = stack.enter_context(scratch_database(store_url)) if store_url else f"sqlite:///{Path(tmp) / 'flood.db'}"
        return run(url)


def median_join(store_url: str | None, repeats: int, decisions: int, outcomes: int, customers: int, late: bool) -> float:
    return statistics.median(
        _on_new_store(store_url, lambda url: timed_join(url, decisions, outcomes, customers, late)) for _ in range(repeats)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.flood", description=__doc__)
    parser.add_argument("--repeats", type=int, default=3, help="runs of each case (median); default 3")
    parser.add_argument("--quick", action="store_true", help="one run of each case")
    parser.add_argument("--store-url", help="a PostgreSQL server: each run in a scratch database of its own there")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats
    console = Console()
    backend = "PostgreSQL" if args.store_url else "SQLite"
    table = Table("decisions", "outcomes", "outcomes reported", "one customer s", f"{SPREAD_CUSTOMERS:,} customers s", "ratio",
                  title=f"one customer's flood against the joiner on {backend}")  # fmt: skip
    for decisions, outcomes in FLOODS:
        for late in (False, True):
            flood = median_join(args.store_url, repeats, decisions, outcomes, 1, late)
            spread = median_join(args.store_url, repeats, decisions, outcomes, SPREAD_CUSTOMERS, late)
            when = "after the join (late)" if late else "before the join"
            table.add_row(f"{decisions:,}", f"{outcomes:,}", when, f"{flood:.2f}", f"{spread:.2f}", f"{flood / spread:.1f}x")
    console.print(table)
    reads = Table("one customer's log", f"{READ_FLOOD:,} logged ms", "one logged ms", "ratio",
                  title=f"a Decide's read of one customer's log on {backend}")  # fmt: skip
    for name, fill in READ_FLOODS:
        runs = [_on_new_store(args.store_url, functools.partial(timed_reads, flood=fill)) for _ in range(repeats)]
        flooded, calm = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        reads.add_row(name, f"{flooded:.3f}", f"{calm:.3f}", f"{flooded / calm:.1f}x")
    console.print(reads)
    command = shlex.join(["python", "-m", "bench.flood", *(sys.argv[1:] if argv is None else argv)])
    console.print(f"medians of {repeats}; command: {command}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
