"""Online learning throughput: `python -m bench.learn [--quick] [--rounds N]`.

Logs 30,000 decisions (8,000 with --quick) through the real decider with telecom-like contexts,
reports outcomes, joins them, and then learns the joined examples side by side:
  * Brein's online learner, timed end to end: reading joined examples from the store, VW text
    from the logged feature lines, VW's driver in snapshot-sized chunks, each snapshot stored (as
    in the server's worker process; the server loads it to serve, in its own process);
  * VW's own CLI driver (vowpal-wabbit-next's run_cli_driver) on the DSJSON export of the same
    examples, with the same arguments: as VW runs by default (a background parser thread), and
    with onethread=True, the mode Brein's learner drives VW in (the faster of the two here).
Each round learns all the examples from scratch with each of the three; the ratios are taken
within a round. Target: Brein's examples/s at least 0.5 of the CLI's.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table
from vowpal_wabbit_next import run_cli_driver

from bandit.config import BreinConfig, load_config
from bandit.learner import vw_arguments
from bandit.requests import DecisionRequest
from brain.core import Brain
from brain.probe import Prober
from reward.export import dsjson_lines
from reward.ingest import ActivationReport, OutcomeReport
from reward.joiner import Joiner
from reward.online import ExampleReader, OnlineLearner
from store import open_store

BREIN = "Brein online learner"
CLI = "VW CLI driver"
CLI_ONE_THREAD = "VW CLI driver, onethread"
ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "telecom.toml"
T0 = 1_760_000_000.0
DAY = 86_400.0
Timing = tuple[float, float]
"""Wall-clock and CPU seconds (this process, all its threads: VW's parser thread too)."""


def fill(brain: Brain, decisions: int, seed: int = 3) -> None:
    rng = random.Random(seed)
    pending = []
    for i in range(decisions):
        at = T0 + i * (90 * DAY / decisions)
        request = DecisionRequest(
            customer_id=f"c{rng.randrange(decisions // 3)}", touchpoint=rng.choice(["app", "web", "call_centre"]), request_id=f"r{i}",
            event_time=at, personalisation="granted",
            numeric={"months_to_contract_end": float(rng.randint(0, 24)), "tenure_months": float(rng.randint(1, 120)),
                     "monthly_spend": rng.uniform(10, 90), "handset_age_months": float(rng.randint(0, 40))},
            categorical={"plan": rng.choice(["basic", "plus", "unlimited"]), "has_app": rng.choice(["yes", "no"]),
                         "region": rng.choice(["north", "south", "east", "west"]), "device": rng.choice(["ios", "android"])},
        )  # fmt: skip
        pending.append(brain.decide(request))
    for p in pending:
        p.committed.result()
    futures = []
    for p in pending:
        record = p.record
        if record.action_id != "do_nothing":
            futures.append(brain.activate(ActivationReport(record.decision_id, record.event_time + 60)))
        if rng.random() < 0.3:
            kind = rng.choice(["contract_renewal", "sim_activation", "complaint"])
            futures.append(brain.report_outcome(OutcomeReport(f"o{record.decision_id}", record.customer_id, kind,
                                                              event_time=record.event_time + rng.uniform(0, 5) * DAY))[1])  # fmt: skip
    for future in futures:
        future.result()
    Joiner(brain.config, brain.store.joins).run(until=T0 + 200 * DAY)


def timed(run: Callable[[], object]) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    run()
    return time.perf_counter() - wall, time.process_time() - cpu


def learn_round(
    brain: Brain, config: BreinConfig, vw_args: list[str], export: Path, number: int
) -> tuple[int, dict[str, Timing]]:
    """One round: Brein's learner from scratch, then VW's CLI both ways: (examples, timing by row).
    Every round learns for a policy id of its own, so that it stores its own snapshots."""
    learner = OnlineLearner(config, brain.store.examples, brain.store.models, vw_args, None, decisions=brain.store.decisions,
                            policy_id=f"bench-{number}", probe=Prober(config).check)  # fmt: skip
    learned: list[int] = []
    seconds = {BREIN: timed(lambda: learned.append(learner.step().learned))}
    seconds[CLI] = timed(lambda: run_cli_driver(["--dsjson", "-d", str(export), *vw_args]))
    seconds[CLI_ONE_THREAD] = timed(lambda: run_cli_driver(["--dsjson", "-d", str(export), *vw_args], onethread=True))
    return learned[0], seconds


def round_table(number: int, load: float, learned: int, seconds: dict[str, Timing]) -> Table:
    table = Table("", "examples", "seconds", "CPU s", "examples/s", title=f"round {number} (load average {load:.2f})")
    for row, (wall, cpu) in seconds.items():
        table.add_row(row, f"{learned:,}", f"{wall:.2f}", f"{cpu:.2f}", f"{learned / wall:,.0f}")
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.learn", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="8,000 decisions instead of 30,000")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of learning the same examples (default 3)")
    args = parser.parse_args(argv)
    decisions = 8_000 if args.quick else 30_000
    config = load_config(CONFIG)
    console = Console()
    ratios: dict[str, list[float]] = {CLI: [], CLI_ONE_THREAD: []}
    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(str(Path(tmp) / "learn.db"))
        brain = Brain(config, store, clock=lambda: T0 + 400 * DAY)
        fill(brain, decisions)
        vw_args = vw_arguments(config.learner)
        export = Path(tmp) / "log.dsjson"
        export.write_text("\n".join(dsjson_lines(ExampleReader(config, store.examples), store.models)) + "\n")
        for number in range(1, args.rounds + 1):
            load = os.getloadavg()[0]
            learned, seconds = learn_round(brain, config, vw_args, export, number)
            console.print(round_table(number, load, learned, seconds))
            for baseline, found in ratios.items():
                found.append(seconds[baseline][0] / seconds[BREIN][0])
        store.close()
    for baseline, found in ratios.items():
        each = " ".join(f"{ratio:.2f}" for ratio in found)
        console.print(f"Brein / {baseline}: {each}; median {statistics.median(found):.2f} (target >= 0.5)")
    console.print(f"command: python -m bench.learn{' --quick' if args.quick else ''} --rounds {args.rounds}")


if __name__ == "__main__":
    main()
