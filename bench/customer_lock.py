"""`python -m bench.customer_lock [POSTGRES_URL]`: what serialising a customer costs a Decide on
PostgreSQL (the lock on the customer's row of customer_heads that store/postgres/ takes with every decision write).

Three stores on one database, in a schema of their own (dropped afterwards): two take the
customer's lock with every decision write, one does not (``customer_locks=False``, there only for
this measurement); all keep the head check. A Brain on each decides sequential calls
(decide_and_wait: decided, written, committed) for distinct customers, the three taking turns call
by call (in a rotating order), so all meet the same machine; the second locking store is the
control: what it differs from the first by is noise. (Timed a round at a time, two identical
stores differed by 1.9 ms per decide on a loaded machine.) Prints, for each, the median over
rounds of the wall-clock and this process's CPU microseconds per decide, then the differences.
"""

from __future__ import annotations

import argparse
import statistics
import time

from bandit.config import parse_config
from bandit.requests import DecisionRequest
from bench.postgres import DEFAULT_URL, scratch_schema
from bench.workload import EVENT_TIME, customers, example_data
from brain.core import Brain
from store.postgres import PostgresStore

SEED = 20261206


def _round(brains: dict[str, Brain], requests: list[DecisionRequest]) -> dict[str, tuple[float, float]]:
    """Each brain's wall-clock and CPU microseconds per decide, taking turns over ``requests``."""
    names = list(brains)
    spent = {name: [0.0, 0.0] for name in brains}
    for i, request in enumerate(requests):
        name = names[(i + i // len(names)) % len(names)]
        wall, cpu = time.perf_counter(), time.process_time()
        brains[name].decider.decide_and_wait(request)
        spent[name][0] += time.perf_counter() - wall
        spent[name][1] += time.process_time() - cpu
    calls = len(requests) / len(brains)
    return {name: (w * 1e6 / calls, c * 1e6 / calls) for name, (w, c) in spent.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default=DEFAULT_URL, help=f"a PostgreSQL database (default {DEFAULT_URL})")
    parser.add_argument("--calls", type=int, default=500, help="decides a round, each way")
    parser.add_argument("--rounds", type=int, default=8, help="rounds")
    args = parser.parse_args()
    config = parse_config(example_data())
    people = customers(args.calls * args.rounds * 3, SEED)
    with scratch_schema(args.url) as url:
        stores = {
            "lock on": PostgresStore(url),
            "lock off": PostgresStore(url, customer_locks=False),
            "control": PostgresStore(url),
        }
        try:
            brains = {name: Brain(config, store) for name, store in stores.items()}
            figures: dict[str, list[tuple[float, float]]] = {name: [] for name in brains}
            for r in range(args.rounds):
                batch = people[r * args.calls * len(brains) : (r + 1) * args.calls * len(brains)]
                requests = [
                    DecisionRequest(customer_id=c.customer_id, touchpoint=c.touchpoint, request_id=f"{r}-{i}",
                                    event_time=EVENT_TIME, personalisation="granted", numeric=c.numeric,
                                    categorical=c.categorical)
                    for i, c in enumerate(batch)
                ]  # fmt: skip
                for name, figure in _round(brains, requests).items():
                    figures[name].append(figure)
        finally:
            for store in stores.values():
                store.close()
    medians = {name: (statistics.median(w for w, _ in f), statistics.median(c for _, c in f)) for name, f in figures.items()}
    for name, (wall, cpu) in medians.items():
        print(f"{name:9s} {wall:8.1f} us/decide wall  {cpu:8.1f} us/decide CPU (this process)  rounds of {args.calls}")
    (on_wall, on_cpu), (off_wall, off_cpu), (again_wall, again_cpu) = medians["lock on"], medians["lock off"], medians["control"]
    print(f"the lock  {on_wall - off_wall:+8.1f} us/decide wall  {on_cpu - off_cpu:+8.1f} us/decide CPU")
    print(f"noise     {again_wall - on_wall:+8.1f} us/decide wall  {again_cpu - on_cpu:+8.1f} us/decide CPU (control - lock on)")


if __name__ == "__main__":
    main()
