"""Make ``store-before-h1.db.gz``: a SQLite store in the layout Brein had before the store had one
migration history (three migration sets, outcomes ordered by rowid), made by that code itself.

It runs against the code of commit 6cec0b5 (main before the store became a port), not this one:

    git worktree add /tmp/brein-6cec0b5 6cec0b5 && cd /tmp/brein-6cec0b5
    python /path/to/tests/data/make_store_before_h1.py /path/to/tests/data/store-before-h1.db.gz
"""

import gzip
import random
import shutil
import sqlite3
import sys
import tempfile
from pathlib import Path

from serving.app import Brain

from bandit.config import load_config
from bandit.requests import DecisionRequest
from reward.ingest import ActivationReport, OutcomeReport

T0 = 1_780_000_000.0
DAY = 86_400.0


def make(path: Path) -> None:
    config = load_config("examples/telecom.toml")
    config = config.model_copy(update={"learner": config.learner.model_copy(update={"snapshot_every": 20})})
    brain = Brain(config, path, clock=lambda: T0 + 100 * DAY)
    rng = random.Random(4)
    for day in range(20):
        for c in rng.sample(range(12), 3):
            at = T0 + day * DAY + rng.uniform(0, DAY / 2)
            request = DecisionRequest(customer_id=f"c{c}", touchpoint="app", request_id=f"r{day}-{c}", event_time=at,
                                      personalisation="granted", numeric={"months_to_contract_end": float(c % 6)},
                                      categorical={"plan": "basic", "has_app": "yes"})  # fmt: skip
            record = brain.decider.decide_and_wait(request).record
            if record.action_id != "do_nothing":
                brain.activate(ActivationReport(record.decision_id, at + 60)).result()
            if rng.random() < 0.5:
                report = OutcomeReport(f"o-{record.decision_id}", f"c{c}", "contract_renewal", event_time=at + 2 * DAY)
                brain.report_outcome(report)[1].result()
    brain.join_and_learn(until=T0 + 40 * DAY)  # the first days' decisions closed, the rest still queued
    late = OutcomeReport("late-1", "c3", "contract_renewal", event_time=T0 + 3 * DAY)  # in a window joined already
    brain.report_outcome(late)[1].result()
    brain.join_and_learn(until=T0 + 45 * DAY)
    brain.registry.register("cand", "uniform", actor="maker", note="a candidate")
    brain.registry.set_state("cand", "shadow", actor="maker", reason="watch it")
    brain.audit("maker", "explain", "r0-1", "an explain")
    brain.forget("c7", actor="maker").result()
    brain.close()
    with sqlite3.connect(path) as conn:  # one file, no WAL beside it
        conn.execute("PRAGMA journal_mode = DELETE")
        conn.execute("VACUUM")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        made = Path(tmp) / "store.db"
        make(made)
        with made.open("rb") as source, gzip.open(sys.argv[1], "wb", compresslevel=9) as target:
            shutil.copyfileobj(source, target)
