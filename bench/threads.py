"""Where a unary Decide's server CPU goes, thread by thread: `python -m bench.threads [--quick]`.

Brein's server and the no-op server (bench/servers.py), each in turn under the same closed loop of
32 calls in flight; each server thread's CPU is read from ``/proc/<pid>/task/*/stat`` before and
after, and printed per call: the event loop (the main thread, where the handlers run), the store's
writer (in Brein's server the busiest other 'python' thread), gRPC's poller and event-engine
threads. Rounds alternate the two servers; the summary is the median of the rounds. Linux only.
``--store-url postgresql://...``: Brein's server logs to a scratch database of its own on that server
(bench/postgres.py) and the database's backends are one more line, counted in the total.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from bandit.config import parse_config
from bench import load
from bench.decide import SEED, ClientProcess, ServerProcess
from bench.postgres import scratch_database, stat_cpu_seconds
from bench.workload import telecom_config, train_model
from store.opening import is_postgres

CONCURRENCY = 32


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of process ``pid``, keyed by '<name>:<thread id>' (Python's own
    threads are all named 'python' there; the store's writer is the busiest of them in Brein's server)."""
    seconds = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat, name = (task / "stat").read_text(), (task / "comm").read_text().strip()
        except OSError:  # the thread ended between two looks
            continue
        label = "event loop (main thread)" if task.name == str(pid) else f"{name}:{task.name}"
        seconds[label] = stat_cpu_seconds(stat)
    return seconds


def _cpu(server: ServerProcess) -> dict[str, float]:
    """Each thread's CPU seconds, and the database's backends' as one more entry on PostgreSQL."""
    seconds = thread_cpu(server.pid)
    if is_postgres(str(server.store)):
        seconds["database backends"] = server.database_cpu()
    return seconds


def measure(client: ClientProcess, server: ServerProcess, seconds: float) -> tuple[int, dict[str, float]]:
    """Calls answered in ``seconds`` of closed loop, and each thread's CPU µs per call over them."""
    client.run(load.ClosedLoop(server.address, CONCURRENCY, 0.5, 1.0, 1_000_000, "warm-up"), 3.0)
    before = _cpu(server)
    result = client.run(load.ClosedLoop(server.address, CONCURRENCY, 0.0, seconds, 1_000_000, "measured"), seconds + 2)
    after = _cpu(server)
    calls = max(1, int(result["completed"]))
    return calls, {name: 1e6 * (after[name] - before.get(name, 0.0)) / calls for name in after}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.threads", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="one round of 3 s a server")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each server once a round (default 3)")
    parser.add_argument("--seconds", type=float, default=6.0, help="closed-loop seconds a server a round (default 6)")
    parser.add_argument("--store-url", help="a PostgreSQL server for Brein's store (in a scratch database of its own)")
    args = parser.parse_args(argv)
    rounds, seconds = (1, 3.0) if args.quick else (args.rounds, args.seconds)
    say = print
    say(f"python -m bench.threads: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    ctx = multiprocessing.get_context("spawn")
    totals: dict[str, list[float]] = {"decide": [], "noop": []}
    with tempfile.TemporaryDirectory(prefix="brein-bench-") as tmp:
        model = Path(tmp) / "telecom.vw"
        model.write_bytes(train_model(parse_config(telecom_config(Path(tmp) / "probe.db", None)), 1_000, SEED))
        client = ClientProcess(ctx, 100_000)
        try:
            for round_ in range(rounds):
                for kind in ("noop", "decide") if round_ % 2 == 0 else ("decide", "noop"):
                    with contextlib.ExitStack() as stack:
                        store: Path | str = Path(tmp) / f"{kind}-{round_}.db"
                        if args.store_url and kind == "decide":
                            store = stack.enter_context(scratch_database(args.store_url))
                        server = ServerProcess(ctx, kind, telecom_config(store, model), store, None)
                        stack.callback(server.stop)
                        calls, per_call = measure(client, server, seconds)
                    totals[kind].append(sum(per_call.values()))
                    say(f"round {round_ + 1} {kind}: {calls / seconds:.0f} calls/s, load average {os.getloadavg()[0]:.2f}")
                    for name, us in sorted(per_call.items(), key=lambda item: -item[1]):
                        if us >= 1.0:
                            say(f"  {name:32} {us:8.0f} µs a call")
                    say(f"  {'all threads':32} {sum(per_call.values()):8.0f} µs a call")
        finally:
            client.stop()
    decide, noop = statistics.median(totals["decide"]), statistics.median(totals["noop"])
    say(f"median of {rounds} round(s): Decide {decide:.0f} µs a call, no-op {noop:.0f} µs, ratio {decide / noop:.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
