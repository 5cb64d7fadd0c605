"""Online learning throughput: `python -m bench.learn [--quick]`.

Logs 30,000 decisions (8,000 with --quick) through the real decider with telecom-like contexts,
reports outcomes, joins them, and then learns the joined examples twice, side by side:
  * Brein's online learner (reading joined examples from the store, encoding, VW learn);
  * VW's own CLI driver (vowpal-wabbit-next's run_cli_driver) on the DSJSON export of the same
    examples, with the same arguments.
Target: Brein's examples/s at least 0.5 of the CLI's.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from vowpal_wabbit_next import run_cli_driver

from bandit.config import load_config
from bandit.requests import DecisionRequest
from reward.export import dsjson_lines
from reward.ingest import ActivationReport, OutcomeReport
from reward.online import OnlineLearner
from serving.app import Brain

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "telecom.toml"
T0 = 1_760_000_000.0
DAY = 86_400.0


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
    brain.joiner.run(until=T0 + 200 * DAY)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.learn", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="8,000 decisions instead of 30,000")
    args = parser.parse_args(argv)
    decisions = 8_000 if args.quick else 30_000
    config = load_config(CONFIG)
    console = Console()
    with tempfile.TemporaryDirectory() as tmp:
        brain = Brain(config, Path(tmp) / "learn.db", clock=lambda: T0 + 400 * DAY)
        fill(brain, decisions)
        vw_args = brain.decider.policy.model.args
        learner = OnlineLearner(config, brain.store, vw_args, None, lambda model: None, policy_id="bench")
        started = time.perf_counter()
        learned = learner.step()
        ours = time.perf_counter() - started
        export = Path(tmp) / "log.dsjson"
        export.write_text("\n".join(dsjson_lines(learner.reader)) + "\n")
        started = time.perf_counter()
        run_cli_driver(["--dsjson", "-d", str(export), *vw_args])
        cli = time.perf_counter() - started
        brain.close()
    table = Table("", "examples", "seconds", "examples/s", title="online learning throughput (same examples, same VW arguments)")
    table.add_row("VW CLI driver on the DSJSON export", f"{learned:,}", f"{cli:.2f}", f"{learned / cli:,.0f}")
    table.add_row("Brein online learner from the store", f"{learned:,}", f"{ours:.2f}", f"{learned / ours:,.0f}")
    console.print(table)
    console.print(f"ratio Brein / VW CLI: {cli / ours:.2f} (target >= 0.5); command: python -m bench.learn{' --quick' if args.quick else ''}")


if __name__ == "__main__":
    main()
