"""Make ``store-before-h3.db.gz``: a SQLite store in the layout of main before the decisions table
lost its ``request_id UNIQUE`` index (migrations m001-m010 of one history), made by that code itself.

Decisions of both kinds: made by the Decider (decision id = decision_id_for(request id)) and
written as plain records with ids of their own (as tests and benchmarks write them), some of
them joined, and an outcome. Run it against the code of main at 84f43dd, not this one:

    cd /path/to/brein-at-84f43dd
    PYTHONDONTWRITEBYTECODE=1 python /path/to/tests/data/make_store_before_h3.py /path/to/tests/data/store-before-h3.db.gz
"""

import gzip
import shutil
import sys
import tempfile
from pathlib import Path

from bandit.config import load_config
from bandit.requests import DecisionRequest
from brain.core import Brain
from reward.joiner import Joiner
from store import open_store
from store.records import DecisionRecord, OutcomeRecord

T0 = 1_780_000_000.0
DAY = 86_400.0


def make(path: Path) -> None:
    config = load_config("examples/telecom.toml")
    store = open_store(f"sqlite:///{path}")
    brain = Brain(config, store, clock=lambda: T0 + 40 * DAY)
    for i in range(12):
        request = DecisionRequest(customer_id=f"c{i % 5}", touchpoint="app", request_id=f"req-{i}", event_time=T0 + i * DAY,
                                  personalisation="granted", categorical={"plan": "basic", "has_app": "yes"})  # fmt: skip
        brain.decider.decide_and_wait(request)
    records = [
        DecisionRecord(decision_id=f"own-{i}", request_id=f"own-request-{i}", customer_id=f"c{i}", touchpoint="app",
                       event_time=T0 + i * DAY + 0.5, action_id="do_nothing", offer="do_nothing", channel="", slot="",
                       send_at=None, probability=1.0, exploratory=False, policy_id="p", model_version="v", personalised=True,
                       features={"n": {"touchpoint": "app"}}, eligible=("do_nothing",), pmf=(1.0,), received_at=T0 + i * DAY + 1)
        for i in range(4)
    ]  # fmt: skip
    store.decisions.submit_decisions(records).result()
    store.decisions.submit_outcome(OutcomeRecord("o-1", "c1", "complaint", -50.0, T0 + 2 * DAY)).result()
    Joiner(config, store.joins).run(until=T0 + 35 * DAY)
    store.close()


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "brein.db"
        make(path)
        with path.open("rb") as raw, gzip.open(sys.argv[1], "wb") as packed:
            shutil.copyfileobj(raw, packed)


if __name__ == "__main__":
    main()
