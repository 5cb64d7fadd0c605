"""Issue 4 end to end, against real parts: a store of logged and joined decisions, the `brein` CLI,
and `brein serve` as a subprocess under continuous Decide load.

train -> shadow (live decisions log the shadow's pmf) -> evaluate -> promote (the running server
switches without a restart or a failed request) -> rollback; the gate's refusals; replay of an
exported log equal to ``policies.evaluate``; a rule policy served; a policy that does not load refused.
"""

from __future__ import annotations

import json
import math
import random
import sqlite3
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner, Result
from rich.console import Console

import policies
import policies.cli
from bandit.catalog import Catalog
from bandit.config import BreinConfig, parse_config
from bandit.features import FeatureEncoder
from bandit.learner import vw_arguments
from bandit.policies import RulePolicy, UniformPolicy
from bandit.requests import DecisionRequest
from brain.core import Brain
from policies.evaluation import Target, distribution, evaluate_on, load_logged
from policies.gate import gate_reliability
from policies.loading import load_policy, parse_rules
from policies.registry import Registry
from policies.spending import TRIAL_ACTION, Spending
from reward.ingest import ActivationReport, OutcomeReport
from reward.joiner import Joiner
from reward.online import action_from_id
from serving.cli import main
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from store import open_store
from store.sqlite.connections import worker_file
from tests.conftest import T0, example_data, postgres_store_url, sqlite_files, store_rows

pytestmark = pytest.mark.costly

DAY = 86_400.0
DAYS = 60
TRAIN_DAYS = 30  # train on the first 30 days, evaluate on the last 30
SPLIT = T0 + TRAIN_DAYS * DAY
ESTIMATORS = ["ips", "clipped_ips", "snips", "dm", "dr", "sndr"]
RULES = [
    {"action": "renewal/sms/evening", "when": "numeric.months_to_contract_end <= 3.0"},
    {"action": "data_upsell/app_push/morning"},
]


def _utc(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _config_data(store: Path | str, **gate: Any) -> dict[str, Any]:
    data = example_data()
    data["server"].update(address="127.0.0.1:0", metrics_address="127.0.0.1:0", store=str(store))
    data["joiner"] = {"interval_seconds": 0.2}
    # The champion does not learn while the test runs: evaluations stay comparable from step to step.
    data["learner"]["online"] = False
    data["gate"] = {"estimator": "snips", "min_lift": 0.0, "min_decisions": 1000, "min_ess": 50.0, "max_age_hours": 1.0, **gate}
    return data


def logged_world(
    brain: Brain, days: int = DAYS, customers: int = 300, per_day: int = 50, seed: int = 1, first_day: int = 0
) -> None:
    """The world of tests/test_online.py's ``simulate``, bigger and batched: customers close to
    contract end renew (240) after an SMS, complain (-50) after a call. Served by the cold champion,
    so the log is uniform exploration; each day's decisions are committed together. ``first_day``:
    the days from T0 + first_day, to log more of it later."""
    rng = random.Random(seed)
    for day in range(first_day, first_day + days):
        pending = []
        for c in rng.sample(range(customers), per_day):
            at = T0 + day * DAY + rng.uniform(0, DAY / 2)
            months = float(c % 6)
            request = DecisionRequest(
                customer_id=f"c{c}", touchpoint="app", request_id=f"r{day}-{c}", event_time=at, personalisation="granted",
                numeric={"months_to_contract_end": months, "tenure_months": float(c % 60)},
                categorical={"plan": "basic", "has_app": "yes"},
            )  # fmt: skip
            pending.append((c, at, months, brain.decide(request)))
        writes = []
        for c, at, months, decision in pending:
            decision.committed.result()
            record = decision.record
            if record.action_id != "do_nothing":
                writes.append(brain.activate(ActivationReport(record.decision_id, at + 60)))
            if record.channel == "sms" and months <= 3 and rng.random() < 0.7:
                renewal = OutcomeReport(f"o-{record.decision_id}", f"c{c}", "contract_renewal", event_time=at + 2 * DAY)
                writes.append(brain.report_outcome(renewal)[1])
            if record.channel == "outbound_call" and rng.random() < 0.5:
                complaint = OutcomeReport(f"k-{record.decision_id}", f"c{c}", "complaint", event_time=at + DAY)
                writes.append(brain.report_outcome(complaint)[1])
        for write in writes:
            write.result()
    # every decision closed, in one join run
    Joiner(brain.config, brain.store.joins).run(until=T0 + (first_day + days + 40) * DAY)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3,000 logged decisions, all joined; each test works on its own copy."""
    path = tmp_path_factory.mktemp("world") / "brein.db"
    store = open_store(str(path))
    try:
        logged_world(Brain(parse_config(_config_data(path)), store))
    finally:
        store.close()
    return path


@dataclass
class Flow:
    tmp_path: Path
    store: Path | str
    """A SQLite file, or a PostgreSQL store's URL."""
    config_path: Path

    @property
    def config(self) -> BreinConfig:
        return parse_config(_config_data(self.store))

    def write_config(self, name: str = "brein.toml", **gate: Any) -> Path:
        path = self.tmp_path / name
        path.write_text(tomli_w.dumps(_config_data(self.store, **gate)))
        return path

    def cli(self, *args: str, config: Path | None = None, ok: bool = True) -> Result:
        result = CliRunner().invoke(main, [*args, "--config", str(config or self.config_path)])
        if ok:
            assert result.exit_code == 0, result.output
        return result

    @contextmanager
    def registry(self) -> Iterator[Registry]:
        store = open_store(str(self.store))
        try:
            yield Registry(store.registry)
        finally:
            store.close()

    def states(self) -> dict[str, str]:
        with self.registry() as registry:
            return {e.id: e.state for e in registry.list()}


@pytest.fixture
def flow(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flow]:
    """On a copy of ``world``; with the parameter "postgres" (indirect), on a PostgreSQL store the
    world is logged into afresh."""
    monkeypatch.setattr(policies.cli, "console", Console(width=250))  # tables on one line each, for the assertions
    with ExitStack() as stack:
        store: Path | str
        if getattr(request, "param", "sqlite") == "postgres":
            store = stack.enter_context(postgres_store_url(request.getfixturevalue("postgres_database")))
            opened = stack.enter_context(closing(open_store(store)))
            logged_world(Brain(parse_config(_config_data(store)), opened))
        else:
            store = tmp_path / "brein.db"
            world = request.getfixturevalue("world")
            for original, file in ((world, store), (worker_file(str(world)), worker_file(str(store)))):
                with closing(sqlite3.connect(original)) as source, closing(sqlite3.connect(file)) as copy:
                    source.backup(copy)
        made = Flow(tmp_path, store, tmp_path / "brein.toml")
        made.write_config()
        yield made


MORE_DAYS = 24
"""Days of the world logged after a file is registered: 1,200 decisions, more than the gate's 1,000."""


def log_more(flow: Flow) -> None:
    """The next MORE_DAYS of the world, decided by the champion and joined: a policy registered from a
    file is judged at the gate on the decisions logged after its registration (it may have been built
    from every one before)."""
    with closing(open_store(str(flow.store))) as store:
        logged_world(Brain(flow.config, store), days=MORE_DAYS, seed=2, first_day=DAYS)


# --- A server process and a client that never stops asking --------------------------------------


class Server:
    def __init__(self, config: Path, cwd: Path) -> None:
        self.process = subprocess.Popen([sys.executable, "-m", "serving", "serve", "--config", str(config)], cwd=cwd,
                                        stderr=subprocess.PIPE, text=True)  # fmt: skip
        self.log: list[dict[str, Any]] = []
        assert self.process.stderr is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                raise AssertionError(f"server exited with {self.process.wait()}: {self.log}")
            entry = self._entry(line)
            if str(entry["message"]).startswith("serving on"):
                self.port = int(entry["port"])
                break
        self._drain = threading.Thread(target=self._read_rest, daemon=True)
        self._drain.start()

    def _entry(self, line: str) -> dict[str, Any]:
        try:
            entry: dict[str, Any] = json.loads(line)
        except ValueError:
            entry = {"message": line.rstrip()}
        self.log.append(entry)
        return entry

    def _read_rest(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._entry(line)

    def messages(self, prefix: str) -> list[str]:
        return [str(e["message"]) for e in list(self.log) if str(e["message"]).startswith(prefix)]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture
def start_server(flow: Flow) -> Iterator[Any]:
    servers: list[Server] = []

    def start() -> Server:
        servers.append(Server(flow.config_path, flow.tmp_path))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@dataclass
class Response:
    at: float
    policy_id: str
    action: str
    probability: float
    months: float


class Load:
    """One client thread sending Decide after Decide (new customers, personalised) until stopped."""

    def __init__(self, port: int, tag: str) -> None:
        self.port, self.tag = port, tag
        self.responses: list[Response] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
            stub = pb_grpc.DecisionServiceStub(channel)
            i = 0
            while not self._stop.is_set():
                months = float(i % 6)
                request = pb.DecideRequest(
                    request_id=f"{self.tag}-{i}", customer_id=f"live-{self.tag}-{i}", channel="app",
                    context=pb.Context(numeric={"months_to_contract_end": months, "tenure_months": 12.0},
                                       categorical={"plan": "basic", "has_app": "yes"}),
                    consent=pb.Consent(personalisation=pb.CONSENT_STATE_GRANTED),
                )  # fmt: skip
                try:
                    response = stub.Decide(request, timeout=10)
                    answered = Response(time.monotonic(), response.policy_id, response.action.id, response.probability, months)
                    self.responses.append(answered)
                except grpc.RpcError as error:
                    self.errors.append(f"{error.code().name}: {error.details()}")
                i += 1
                time.sleep(0.005)  # a steady stream, leaving the two cores to the server and the CLI

    def wait_for(self, policy_id: str, since: float, timeout: float = 10.0) -> float:
        """Seconds from ``since`` to the first response served by ``policy_id`` after it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for response in list(self.responses):
                if response.at > since and response.policy_id == policy_id:
                    return response.at - since
            time.sleep(0.05)
        served = sorted({r.policy_id for r in self.responses if r.at > since})
        raise AssertionError(f"no response from {policy_id} within {timeout} s; served by {served}; errors {self.errors[:3]}")

    def served_after(self, since: float) -> list[str]:
        return [r.policy_id for r in list(self.responses) if r.at > since]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=20)


def _runs(sequence: list[str]) -> list[str]:
    """The sequence with repeats collapsed: ['a', 'a', 'b', 'a'] -> ['a', 'b', 'a']."""
    return [item for i, item in enumerate(sequence) if i == 0 or sequence[i - 1] != item]


# --- train -> shadow -> evaluate -> promote -> rollback, on a live server -------------------------------


@pytest.mark.parametrize("flow", ["sqlite", "postgres"], indirect=True)
def test_train_shadow_evaluate_promote_and_roll_back_on_a_live_server(flow: Flow, start_server: Any) -> None:
    trained = json.loads(flow.cli("policy", "train", "--id", "cand", "--until", _utc(SPLIT), "--json").output)
    assert trained["id"] == "cand" and trained["trained_on"] == 1500
    held_out = trained["evaluation"]
    assert (held_out["candidate"], held_out["baseline"], held_out["decisions"]) == ("cand", "champion", 1500)
    assert list(held_out["estimators"]) == ESTIMATORS
    assert flow.states() == {"champion": "champion", "cand": "candidate"}

    server = start_server()
    load = Load(server.port, "shadow")
    try:
        flow.cli("policy", "shadow", "cand", "--reason", "compare on live traffic")
        shadowed = _wait_for_shadow_rows(flow.store, "cand")
    finally:
        load.stop()
    assert not load.errors
    # The shadow's pmf is cand's own distribution over each decision's eligible actions; champion served.
    store = open_store(str(flow.store))
    try:
        cand, _ = load_policy(Registry(store.registry).get("cand"), store.models)
        encoder, catalog = FeatureEncoder(flow.config), Catalog(flow.config)
        for policy_id, features, eligible, pmf in shadowed:
            actions = [action_from_id(catalog, a) for a in eligible]
            assert policy_id == "champion" and len(pmf) == len(eligible) and sum(pmf) == pytest.approx(1.0)
            assert pmf == pytest.approx(cand.pmf(encoder.shared_line(features), actions, features), abs=1e-6)
    finally:
        store.close()

    # Evaluate on the held-out days: a table, JSON, and the same numbers from Python.
    table = flow.cli("policy", "evaluate", "cand", "--since", _utc(SPLIT)).output
    assert "cand on 1,500 logged decisions" in table and "lift (paired)" in table
    assert all(f"│ {name} " in table for name in ESTIMATORS)
    evaluated = json.loads(flow.cli("policy", "evaluate", "cand", "--since", _utc(SPLIT), "--json").output)
    from_python = policies.evaluate("cand", config=flow.config_path, since=SPLIT).as_dict()
    assert evaluated == from_python
    snips = evaluated["estimators"]["snips"]
    assert f"{snips['candidate']['value']:.3f}" in table and f"{snips['difference']:+.3f}" in table
    assert snips["difference_analytic"][0] > 0 and snips["difference_bootstrap"][0] > 0  # cand beats the champion
    with flow.registry() as registry:
        evaluations = registry.evaluations("cand")
        assert len(evaluations) == 3  # train's held-out evaluation and the two above; policies.evaluate records nothing
        assert (evaluations[0].against, evaluations[0].estimator, evaluations[0].decisions) == ("champion", "snips", 1500)

    # Promote under load: the running server switches within seconds, and no request fails.
    load = Load(server.port, "promote")
    try:
        time.sleep(0.5)
        promoted_at = time.monotonic()
        promoted = flow.cli("policy", "promote", "cand", "--reason", "beats the champion on held-out days")
        assert ("cand is the champion (was champion), passed the gate at 96.96%: its 1st look as the 1st candidate judged "
                "against champion; running servers switch") in promoted.output  # fmt: skip
        switch = load.wait_for("cand", promoted_at)
        time.sleep(0.5)
        rolled_back_at = time.monotonic()
        rolled = flow.cli("policy", "rollback", "--reason", "complaints are up")
        assert "rolled back: champion is the champion again" in rolled.output
        switch_back = load.wait_for("champion", rolled_back_at)
        time.sleep(0.5)
    finally:
        load.stop()
    assert switch < 5 and switch_back < 5, (switch, switch_back)
    assert not load.errors, load.errors[:5]
    assert len(load.responses) > 50
    assert _runs([r.policy_id for r in load.responses]) == ["champion", "cand", "champion"]  # no flapping
    assert server.process.poll() is None  # the same process all along: no restart
    assert server.messages("now serving champion cand") and server.messages("now serving champion champion")

    assert flow.states() == {"champion": "champion", "cand": "retired"}
    shown = json.loads(flow.cli("policy", "show", "cand", "--json").output)
    assert [(h["from_state"], h["to_state"]) for h in shown["history"]] == [
        ("", "candidate"), ("candidate", "shadow"), ("shadow", "champion"), ("champion", "retired"),
    ]  # fmt: skip
    assert shown["history"][2]["reason"] == "beats the champion on held-out days"
    assert shown["history"][3]["reason"] == "replaced by champion: rollback: complaints are up"
    assert all(h["actor"].startswith("cli:") for h in shown["history"])

    # Forget a live customer through the running server: every row of theirs goes.
    forgotten = CliRunner().invoke(main, ["forget", "--customer", "live-promote-0", "--address", f"127.0.0.1:{server.port}"])
    assert forgotten.exit_code == 0, forgotten.output
    with closing(open_store(str(flow.store))) as store:
        assert store_rows(store, "SELECT COUNT(*) FROM decisions WHERE customer_id = 'live-promote-0'") == [(0,)]
        assert store.audit.entries("forget")[-1].subject == "live-promote-0"


def _wait_for_shadow_rows(
    store: Path | str, policy_id: str, timeout: float = 10.0
) -> list[tuple[str, Any, list[str], list[float]]]:
    """Live decisions (not the world's) whose shadow column holds ``policy_id``'s pmf."""
    deadline = time.monotonic() + timeout
    query = "SELECT policy_id, features, eligible, shadow FROM decisions WHERE customer_id LIKE 'live-%'"
    while time.monotonic() < deadline:
        with closing(open_store(str(store))) as opened:
            rows = store_rows(opened, query)
        found = [(p, json.loads(f), json.loads(e), json.loads(s)[policy_id]) for p, f, e, s in rows if policy_id in json.loads(s)]
        if len(found) >= 5:
            return found
        time.sleep(0.1)
    raise AssertionError(f"no live decision logged {policy_id}'s pmf within {timeout} s")


# --- The gate from the command line ---------------------------------------------------------------------


def test_the_gate_refuses_with_one_sentence_and_force_needs_a_reason(flow: Flow) -> None:
    flow.cli("policy", "train", "--id", "cand", "--until", _utc(SPLIT), "--no-evaluate")
    unevaluated = flow.cli("policy", "promote", "cand", ok=False)
    assert unevaluated.exit_code == 1
    assert unevaluated.output == (
        "Error: cand has no evaluation against the champion champion: run `brein policy evaluate cand` first\n"
    )

    flow.cli("policy", "evaluate", "cand", "--since", _utc(SPLIT), "--json")
    with flow.registry() as registry:
        lower = registry.evaluations("cand")[0].lift_lower
    strict = flow.write_config("strict.toml", min_lift=1000.0)
    refused = flow.cli("policy", "promote", "cand", config=strict, ok=False)
    assert refused.exit_code == 1
    assert refused.output == (
        f"Error: cand does not beat champion with confidence: the lower bound of the snips lift is {lower:+.3f} "
        "per decision, not above the required +1000 (at 96.96%: its 1st look as the 1st candidate judged against champion)\n"
    )
    few = flow.write_config("few.toml", min_decisions=2000)
    with closing(open_store(str(flow.store))) as store:  # a decision with one eligible action offers no choice
        choices = sum(len(actions) > 1 for actions in load_logged(flow.config, store.examples, SPLIT).actions)
    assert 0 < choices < 1500
    assert flow.cli("policy", "promote", "cand", config=few, ok=False).output == (
        f"Error: cand was evaluated on 1500 decisions, {choices} of them with a choice of action, fewer than the 2000 required\n"
    )
    ess = flow.write_config("ess.toml", min_ess=1e6)
    assert "is unreliable: for cand, the effective sample size of the unclipped importance weights is" in flow.cli(
        "policy", "promote", "cand", config=ess, ok=False
    ).output
    other = flow.write_config("other.toml", estimator="dr")
    assert flow.cli("policy", "promote", "cand", config=other, ok=False).output == (
        "Error: cand's latest evaluation used snips, not the gate's dr: evaluate it again\n"
    )

    no_reason = flow.cli("policy", "promote", "cand", "--force", config=strict, ok=False)
    assert no_reason.exit_code == 1 and no_reason.output == "Error: --force needs --reason: say why the gate is overridden\n"
    assert flow.states() == {"champion": "champion", "cand": "candidate"}

    flow.cli("policy", "promote", "cand", "--force", "--reason", "regulator asked for the new model", config=strict)
    assert flow.states() == {"champion": "retired", "cand": "champion"}
    shown = flow.cli("policy", "show", "cand").output
    assert "forced: regulator asked for the new model" in shown and "Evaluations" in shown
    history = json.loads(flow.cli("policy", "show", "cand", "--json").output)["history"]
    assert history[-1]["reason"] == "forced: regulator asked for the new model" and history[-1]["to_state"] == "champion"

    again = flow.cli("policy", "promote", "cand", ok=False)
    assert again.exit_code == 1 and again.output == "Error: cand is the champion already\n"
    retire = flow.cli("policy", "retire", "cand", ok=False)
    assert retire.output == "Error: cand is the champion: promote another policy or roll back first\n"
    unknown = flow.cli("policy", "promote", "nope", ok=False)
    assert unknown.exit_code == 1 and unknown.output == "Error: no policy 'nope' in the registry\n"
    listed = json.loads(flow.cli("policy", "list", "--json").output)
    assert [(p["id"], p["state"]) for p in listed] == [("champion", "retired"), ("cand", "champion")]


def test_the_gate_refuses_an_unreliable_evaluation_whatever_its_estimator(flow: Flow) -> None:
    """Issue 15, item 7: clipped IPS measured its ESS on its clipped weights, so a candidate whose support
    rests on one logged decision passed min_ess. Its diagnostics are the unclipped weights' (those of
    every estimator), and clipped IPS is not the gate's to use (``GateConfig.estimator``)."""
    rules = flow.tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    flow.cli("policy", "register", "--id", "rules", "--kind", "rules", "--file", str(rules))
    log_more(flow)  # judged on the decisions logged after its registration
    # One of those that the rules would take, as if logged at propensity 1e-6: it holds almost all their weight.
    with closing(sqlite_files(flow.store)) as conn, conn:
        (dominant,) = conn.execute(
            "SELECT d.decision_id FROM decisions d JOIN joined_examples j ON j.decision_id = d.decision_id "
            "WHERE j.status = 'joined' AND d.action_id = 'data_upsell/app_push/morning' AND d.event_time >= ? "
            "AND json_extract(d.features, '$.u.months_to_contract_end') > 3 ORDER BY d.decision_id LIMIT 1", (T0 + DAYS * DAY,)
        ).fetchone()
        conn.execute("UPDATE decisions SET probability = 1e-6 WHERE decision_id = ?", (dominant,))
    report = json.loads(flow.cli("policy", "evaluate", "rules", "--estimator", "clipped_ips", "--estimator", "snips",
                                 "--json").output)  # fmt: skip
    row = report["estimators"]["clipped_ips"]
    candidate, champion = row["candidate"], row["baseline"]  # the uniform champion takes that decision's action too
    assert row["reliable"] is False and candidate["reliable"] is False and champion["reliable"] is False
    assert candidate["clipped_ess"] > 50 > candidate["ess"]  # the clipped weights' ESS would pass min_ess
    assert min(row["difference_bootstrap"][0], row["difference_analytic"][0]) > 0  # and the clipped lift looks sure
    assert report["estimators"]["snips"]["candidate"]["ess"] == candidate["ess"]  # the same diagnostics for every estimator
    with flow.registry() as registry:
        stored = registry.evaluations("rules")[0]
    assert (stored.estimator, stored.ess) == ("snips", candidate["ess"])  # the gate's estimator, the unclipped ESS
    enough = flow.write_config("enough.toml", min_decisions=500)  # the decisions logged after it that offered a choice: 828
    refused = flow.cli("policy", "promote", "rules", config=enough, ok=False)
    assert refused.exit_code == 1
    reasons = [
        f"for {name}, the effective sample size of the unclipped importance weights is {side['ess']:,.1f}, below the 50 "
        f"required; for {name}, one logged decision holds {side['largest_weight_share']:.0%} of the importance weight, more "
        "than the 20% allowed"
        for name, side in (("rules", candidate), ("champion", champion))
    ]
    assert refused.output == f"Error: rules's snips evaluation against champion is unreliable: {'; '.join(reasons)}\n"


# --- Replay on an exported log ------------------------------------------------------------------------


DISCOUNT_CALLS = [  # an outbound call with a discount to every customer near the end of a contract: costly
    {"action": "renewal_discount/outbound_call/afternoon",
     "when": "has(numeric.months_to_contract_end) && numeric.months_to_contract_end <= 4.0"},
    {"action": "sim_only/email/morning"},
]  # fmt: skip


def _evaluated(flow: Flow, policy_id: str) -> list[tuple[str, float]]:
    with flow.registry() as registry:
        return [(e.against, e.lift) for e in registry.evaluations(policy_id)]


def test_what_the_gate_reads_is_an_evaluation_of_the_registered_policy_against_the_champion(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Identities, not names: a built-in, a file or a keyword named like a registry entry is never recorded
    as that entry's evaluation, nor a file named like the champion as an evaluation against it."""
    monkeypatch.chdir(flow.tmp_path)
    (flow.tmp_path / "upsell.json").write_text(json.dumps([{"action": "data_upsell/app_push/morning"}]))
    (flow.tmp_path / "discount.json").write_text(json.dumps(DISCOUNT_CALLS))
    (flow.tmp_path / "renew.json").write_text(json.dumps(RULES))  # not what is registered as renew.json below
    flow.cli("policy", "register", "--id", "upsell", "--kind", "rules", "--file", "upsell.json")
    flow.cli("policy", "promote", "upsell", "--force", "--reason", "a champion that is not the bootstrapped one")
    for taken, why in (("uniform", "is a keyword"), ("champion", "is a keyword"), ("renew.json", "looks like a file name")):
        refused = flow.cli("policy", "register", "--id", taken, "--kind", "rules", "--file", "discount.json", ok=False)
        assert refused.exit_code == 2 and f"policy_id: '{taken}' {why}" in refused.output
    with flow.registry() as registry:  # as a store made before such ids were refused holds them
        for legacy in ("uniform", "renew.json"):
            registry.register(legacy, "rules", artifact=json.dumps(DISCOUNT_CALLS).encode(), actor="test")

    for name, what, other in (("uniform", "built-in", "'builtin:uniform' for the built-in policy"),
                              ("renew.json", "file", "'./renew.json' for the file")):  # fmt: skip
        ambiguous = flow.cli("policy", "evaluate", name, "--estimator", "snips", ok=False)
        assert ambiguous.exit_code == 1
        assert ambiguous.output == (f"Error: '{name}' names both a registered policy and a {what}: "
                                    f"say 'registry:{name}' for the registered one or {other}\n")  # fmt: skip
    flow.cli("policy", "evaluate", "builtin:uniform", "--estimator", "snips")
    flow.cli("policy", "evaluate", "./renew.json", "--estimator", "snips")
    assert _evaluated(flow, "uniform") == _evaluated(flow, "renew.json") == []
    flow.cli("policy", "evaluate", "registry:uniform", "--estimator", "snips")
    [(against, lift)] = _evaluated(flow, "uniform")
    assert against == "upsell" and lift < 0  # the registered discount calls, not the built-in
    assert "Error: uniform does not beat upsell with confidence" in flow.cli("policy", "promote", "uniform", ok=False).output

    (flow.tmp_path / "elsewhere").mkdir()
    (flow.tmp_path / "elsewhere" / "upsell.json").write_text(json.dumps(DISCOUNT_CALLS))  # a strawman named like the champion
    flow.cli("policy", "register", "--id", "meh", "--kind", "uniform")
    flow.cli("policy", "evaluate", "meh", "--against", "elsewhere/upsell.json", "--estimator", "snips")
    assert _evaluated(flow, "meh") == []
    unevaluated = flow.cli("policy", "promote", "meh", ok=False).output
    assert unevaluated.startswith("Error: meh has no evaluation against the champion upsell")

    # The current champion (a file: its gate window is the log after its registration) against itself: no evidence.
    flow.cli("policy", "evaluate", "champion", "--since", _utc(T0), "--estimator", "snips")
    assert _evaluated(flow, "champion") == _evaluated(flow, "upsell") == []
    flow.cli("policy", "evaluate", "registry:champion", "--estimator", "snips")  # the retired bootstrapped lineage
    assert [against for against, _ in _evaluated(flow, "champion")] == ["upsell"]


def test_replay_of_an_export_gives_the_table_and_the_numbers_of_policies_evaluate(flow: Flow) -> None:
    flow.cli("policy", "train", "--id", "cand", "--until", _utc(SPLIT), "--no-evaluate")
    log = flow.tmp_path / "log.dsjson"
    flow.cli("log", "export", "--store", str(flow.store), "-o", str(log))
    assert len(log.read_text().splitlines()) == 3000
    model = flow.tmp_path / "cand.vw"
    rules = flow.tmp_path / "rules.json"
    with flow.registry() as registry:
        model.write_bytes(registry.get("cand").artifact or b"")
    rules.write_text(json.dumps(RULES))
    # Replaying files and built-in policies needs no store: a config pointing nowhere creates none.
    nowhere = flow.tmp_path / "nowhere" / "brein.db"
    standalone = flow.tmp_path / "standalone.toml"
    standalone.write_text(tomli_w.dumps(_config_data(nowhere)))

    cases = [("uniform", "uniform"), ("do_nothing", "do_nothing"), (str(rules), "rules.json"), (str(model), "cand.vw")]
    replays = {}
    for spec, name in cases:
        replayed = json.loads(flow.cli("replay", str(log), "--policy", spec, "--json", config=standalone).output)
        assert replayed["candidate"] == name and replayed["baseline"] is None and replayed["decisions"] == 3000
        assert list(replayed["estimators"]) == ESTIMATORS
        # The same policy evaluated from Python on the store the log was exported from: the same numbers.
        assert policies.evaluate(spec, config=flow.config_path, against=None).as_dict() == replayed
        replays[name] = replayed
    for spec, name in cases:  # the table: all six estimators for the model file, the cheap two for the rest
        chosen = ESTIMATORS if name == "cand.vw" else ["ips", "snips"]
        table = flow.cli("replay", str(log), "--policy", spec, *(f"--estimator={e}" for e in chosen), config=standalone).output
        assert f"{name} replayed on 3,000 logged decisions" in table
        for estimator in chosen:
            value = replays[name]["estimators"][estimator]["candidate"]["value"]
            assert f"│ {estimator} " in table and f"│ {value:.3f} " in table
    assert not nowhere.exists()
    # Uniform replayed on a uniform log is the log's mean reward (every weight is 1); the trained model beats it.
    rewards = [json.loads(line)["_reward"] for line in log.read_text().splitlines()]
    assert replays["uniform"]["estimators"]["ips"]["candidate"]["value"] == pytest.approx(sum(rewards) / len(rewards))
    snips = {name: replayed["estimators"]["snips"]["candidate"]["value"] for name, replayed in replays.items()}
    assert snips["cand.vw"] > snips["uniform"]
    cut_short = flow.tmp_path / "cut-short.vw"  # VW loads it as a smaller model: replayed, it misled
    cut_short.write_bytes(model.read_bytes()[:-10])
    refused_file = flow.cli("replay", str(log), "--policy", str(cut_short), config=standalone, ok=False)
    assert refused_file.exit_code == 1 and "not a VW model for the config's learner arguments: the file is" in refused_file.output

    # Registry ids come from the store; the registered model and its file are the same policy.
    by_id = json.loads(flow.cli("replay", str(log), "--policy=cand", f"--store={flow.store}", "--estimator=snips",
                                "--json").output)  # fmt: skip
    assert by_id["estimators"]["snips"] == replays["cand.vw"]["estimators"]["snips"]
    refused = flow.cli("replay", str(log), "--policy", "cand", config=standalone, ok=False)
    assert refused.exit_code == 1
    assert refused.output == f"Error: no store at {nowhere}: give --store, or run the server once to create it\n"
    assert not nowhere.exists()
    paired = json.loads(flow.cli("replay", str(log), "--policy", "cand", "--against", "champion", "--estimator", "snips",
                                 "--estimator", "dr", "--json").output)  # fmt: skip
    # The whole log, as exported (by default a trained candidate is evaluated on the decisions after its training data).
    assert paired == policies.evaluate("cand", config=flow.config_path, since=T0, estimators=("snips", "dr")).as_dict()
    assert paired["baseline"] == "champion" and list(paired["estimators"]) == ["snips", "dr"]
    paired_table = flow.cli("replay", str(log), "--policy", "cand", "--against", "champion", "--estimator", "snips").output
    assert "lift (paired)" in paired_table and f"{paired['estimators']['snips']['difference']:+.3f}" in paired_table


def test_logged_shadow_distributions_are_a_registry_entrys_never_a_file_or_built_in_named_like_it(flow: Flow) -> None:
    """A log's ``_shadow`` pmfs are keyed by the id of the registry entry that was shadowed: a model file
    named like it (``./dir/cand``) or the built-in uniform was scored with whatever the log said under
    that name (a forged export made uniform worth 58.2 instead of -2.4). Files and built-ins are computed."""
    flow.cli("policy", "train", "--id", "cand", "--until", _utc(SPLIT), "--no-evaluate")
    log, forged = flow.tmp_path / "log.dsjson", flow.tmp_path / "forged.dsjson"
    flow.cli("log", "export", "--store", str(flow.store), "-o", str(log))
    lines = [json.loads(line) for line in log.read_text().splitlines()]

    def lucky(line: dict[str, Any]) -> list[float]:
        """All the mass on the logged action when it earned something, else on another one."""
        k, chosen = len(line["_actions"]), line["_labelIndex"]
        pick = chosen if line["_reward"] > 0 or k == 1 else (chosen + 1) % k
        return [float(j == pick) for j in range(k)]

    forged.write_text("".join(json.dumps({**x, "_shadow": {"cand": lucky(x), "uniform": lucky(x)}}) + "\n" for x in lines))
    named_like_it = flow.tmp_path / "copy" / "cand"
    named_like_it.parent.mkdir()
    with flow.registry() as registry:
        named_like_it.write_bytes(registry.get("cand").artifact or b"")

    def snips(path: Path, spec: str) -> float:
        out = flow.cli("replay", str(path), "--policy", spec, "--estimator=snips", "--json", f"--store={flow.store}").output
        value: float = json.loads(out)["estimators"]["snips"]["candidate"]["value"]
        return value

    assert snips(forged, "uniform") == snips(log, "uniform")
    assert snips(forged, str(named_like_it)) == snips(log, str(named_like_it))
    assert snips(forged, "registry:cand") > snips(log, "registry:cand")  # the entry's own logged pmfs are taken


def test_a_replayed_export_and_a_rules_file_may_start_with_a_utf8_byte_order_mark(flow: Flow) -> None:
    """Files saved by Windows editors start with a BOM, which is no JSON: replay refused line 1 as invalid."""
    log, marked = flow.tmp_path / "log.dsjson", flow.tmp_path / "bom.dsjson"
    flow.cli("log", "export", "--store", str(flow.store), "-o", str(log))
    marked.write_text("\ufeff" + log.read_text(), encoding="utf-8")
    rules, marked_rules = flow.tmp_path / "rules.json", flow.tmp_path / "bom-rules.json"
    rules.write_text(json.dumps(RULES))
    marked_rules.write_text("\ufeff" + json.dumps(RULES), encoding="utf-8")

    def replayed(path: Path, policy: Path) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(flow.cli("replay", str(path), "--policy", str(policy), "--estimator=snips",
                                                     "--json").output)["estimators"]  # fmt: skip
        return report

    assert replayed(marked, marked_rules) == replayed(log, rules)


def test_replay_refuses_an_edited_export_line_by_its_key_and_never_reads_it_as_another_decision(flow: Flow) -> None:
    log = flow.tmp_path / "log.dsjson"
    flow.cli("log", "export", "--store", str(flow.store), "-o", str(log))
    lines = log.read_text().splitlines()
    line = json.loads(lines[6])
    edits: list[tuple[str, Any, str]] = [
        ("_labelIndex", -1, "line 7: not a Brein DSJSON export line (_labelIndex: Input should be greater than or equal to 0)"),
        ("_labelIndex", True, "line 7: not a Brein DSJSON export line (_labelIndex: Input should be a valid integer)"),
        ("_actions", [line["_actions"][0]] * len(line["_actions"]), "_actions: an action id appears more than once"),
        ("_features", [1, 2], "line 7: not a Brein DSJSON export line (_features: Input should be an object)"),
        ("_time", "2026", "line 7: not a Brein DSJSON export line (_time: Input should be a valid number)"),
        ("_reward", math.nan, "line 7: not a Brein DSJSON export line (_reward: Input should be a finite number)"),
        ("_reward", 1e308, "reward: expected numbers within ±1e+15, got 1e+308 in row 6"),  # overflowed in the intervals
        ("_label_probability", 1e-300, "propensity: expected probabilities in [1e-12, 1], got 1e-300 in row 6"),
        ("_shadow", {"x": [1.0]}, f"_shadow.x: 1 probabilities for {len(line['_actions'])} actions"),
        # Two overlapping exports put together: the decisions twice, an estimate on 60 read as a reliable one on 180.
        ("EventId", (third := json.loads(lines[2])["EventId"]), f"line 7: EventId {third!r} is line 3's too"),
    ]
    for key, value, message in edits:
        edited = flow.tmp_path / "edited.dsjson"
        edited.write_text("\n".join([*lines[:6], json.dumps({**line, key: value}), *lines[7:]]) + "\n")
        refused = flow.cli("replay", str(edited), "--policy", "uniform", ok=False)
        assert refused.exit_code == 1 and refused.output.startswith("Error: "), (key, refused.output)
        assert message in refused.output, (key, refused.output)


# --- A rule policy serves; a policy that does not load is refused ---------------------------------------


def test_a_rule_policy_serves_and_a_champion_that_does_not_load_is_refused(flow: Flow, start_server: Any) -> None:
    rules = flow.tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    flow.cli("policy", "register", "--id", "rules", "--kind", "rules", "--file", str(rules), "--note", "holiday rules")
    junk = flow.tmp_path / "junk.vw"
    junk.write_bytes(b"not a VW model")
    bad_file = flow.cli("policy", "register", "--id", "broken", "--kind", "vw", "--file", str(junk), ok=False)
    assert bad_file.exit_code == 1 and "broken: not a VW model for --cb_explore_adf" in bad_file.output
    typo = flow.tmp_path / "typo.json"
    typo.write_text(json.dumps([{"action": "renewal/pigeon/evening"}]))
    assert (
        "rules[0].action: expected an action of the catalog"
        in flow.cli("policy", "register", "--id", "typo", "--kind", "rules", "--file", str(typo), ok=False).output
    )

    server = start_server()
    load = Load(server.port, "rules")
    try:
        promoted_at = time.monotonic()
        flow.cli("policy", "promote", "rules", "--force", "--reason", "holiday season")
        load.wait_for("rules", promoted_at)
        # An artifact that does not load gets into the registry behind the CLI's checks (an edited
        # database, a model built for other arguments): the server refuses it and keeps serving.
        with flow.registry() as registry:
            registry.register("broken", "vw", artifact=b"not a VW model", args=vw_arguments(flow.config.learner), actor="test")
            forced = flow.cli("policy", "promote", "broken", "--force", "--reason", "hotfix", ok=False)
            assert forced.exit_code == 1 and "policy broken: its VW model does not load" in forced.output
            registry.make_champion("broken", replacing="rules", actor="test", reason="behind the CLI's back")
        broken_at = time.monotonic()
        deadline = broken_at + 10
        while not server.messages("refused to switch to champion broken") and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # several more background rounds: still refused, logged once
        rolled_at = time.monotonic()
        flow.cli("policy", "rollback", "--reason", "broken artifact")
        time.sleep(0.5)
    finally:
        load.stop()
    assert server.messages("refused to switch to champion broken") == [
        "refused to switch to champion broken: it does not load; rules keeps serving"
    ]
    assert not load.errors, load.errors[:5]
    assert set(load.served_after(broken_at)) == {"rules"}  # the old champion answered all along
    assert load.served_after(rolled_at)
    served = [r for r in load.responses if r.policy_id == "rules"]
    assert len(served) > 20
    for response in served:  # the first rule whose condition holds, always (probability 1)
        expected = "renewal/sms/evening" if response.months <= 3 else "data_upsell/app_push/morning"
        assert (response.action, response.probability) == (expected, 1.0)
    assert flow.states() == {"champion": "retired", "rules": "champion", "broken": "retired"}


# --- The gate's window, and actions that left the catalog -------------------------------------------


@pytest.mark.parametrize("flow", ["sqlite", "postgres"], indirect=True)
def test_the_gate_takes_its_evidence_from_its_own_window_never_from_one_an_operator_chose(flow: Flow) -> None:
    """A trained candidate evaluated on the data it learned from looked twice as good as on the held-out
    days, and that evaluation, the newest, was the gate's evidence; so was a passing window found by
    sliding --since/--until. Both are shown and recorded, marked as chosen; the gate reads the newest
    evaluation on its window: the decisions after the candidate's training data."""
    flow.cli("policy", "train", "--id", "cand", "--until", _utc(SPLIT), "--json")
    in_sample = json.loads(flow.cli("policy", "evaluate", "cand", "--until", _utc(SPLIT), "--json").output)
    assert in_sample["decisions"] == 1500
    with flow.registry() as registry:
        assert registry.get("cand").trained_until == SPLIT
        chosen, held_out = registry.evaluations("cand")
    assert (chosen.gate_window, chosen.until < SPLIT) == (False, True)
    assert (held_out.gate_window, held_out.since >= SPLIT, held_out.decisions) == (True, True, 1500)
    strict = flow.write_config("strict.toml", min_lift=1000.0)
    refused = flow.cli("policy", "promote", "cand", config=strict, ok=False).output
    assert f"the lower bound of the snips lift is {held_out.lift_lower:+.3f} per decision" in refused
    assert chosen.lift_lower != held_out.lift_lower

    # By default `policy evaluate` evaluates on the gate's window: after the training data.
    assert json.loads(flow.cli("policy", "evaluate", "cand", "--json").output)["decisions"] == 1500
    shown = flow.cli("policy", "show", "cand").output
    assert shown.count("│ gate: ") == 2 and shown.count("│ chosen: ") == 1
    assert json.loads(flow.cli("policy", "show", "cand", "--json").output)["trained_until"] == SPLIT

    # A rule file may have been built from every decision logged before its registration (rules copying the
    # rewarded logged choices "beat" the champion by +34 on them): its window is the log after, and a window
    # chosen is no evidence.
    rules = flow.tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    flow.cli("policy", "register", "--id", "rules", "--kind", "rules", "--file", str(rules))
    with flow.registry() as registry:
        logged_until = registry.get("rules").trained_until
    assert logged_until is not None and T0 + (DAYS - 1) * DAY < logged_until < T0 + (DAYS + 40) * DAY
    shown = flow.cli("policy", "show", "rules").output
    assert f"learned from (or registered after) the decisions before {_utc(logged_until)[:16].replace('T', ' ')}" in shown
    before = " ".join(flow.cli("policy", "evaluate", "rules", "--json", ok=False).output.split())
    assert "the log holds 0 joined decision(s) after it yet: shadow it first (`brein policy shadow rules`)" in before
    flow.cli("policy", "evaluate", "rules", "--since", _utc(T0 + 10 * DAY), "--until", _utc(T0 + 40 * DAY), "--json")
    chosen_by_hand = ("evaluations are all on windows chosen by hand (`policy evaluate --since/--until`, `policy train "
                      "--holdout-until`), which the gate does not take as evidence: run `brein policy evaluate {}` without "
                      "a window\n")  # fmt: skip
    assert flow.cli("policy", "promote", "rules", ok=False).output == f"Error: rules's {chosen_by_hand.format('rules')}"
    # Held out with --holdout-until, which is a window chosen too: the message names it (not only --since/--until).
    flow.cli("policy", "train", "--id", "h1", "--until", _utc(SPLIT), "--holdout-until", _utc(SPLIT + 5 * DAY))
    assert flow.cli("policy", "promote", "h1", ok=False).output == f"Error: h1's {chosen_by_hand.format('h1')}"
    log_more(flow)
    with closing(open_store(str(flow.store))) as store:
        after = store.examples.count(since=logged_until)
    # After the latest event logged at registration: an outcome reported two days after the last decision then.
    assert 1000 < after < MORE_DAYS * 50
    assert json.loads(flow.cli("policy", "evaluate", "rules", "--json").output)["decisions"] == after
    uniform = flow.cli("policy", "register", "--id", "explore", "--kind", "uniform")  # learned nothing: the whole log
    assert uniform.exit_code == 0
    assert json.loads(flow.cli("policy", "evaluate", "explore", "--json").output)["decisions"] == (DAYS + MORE_DAYS) * 50
    with flow.registry() as registry:
        assert [e.gate_window for e in registry.evaluations("rules")] == [True, False]


def test_a_candidate_trained_on_the_whole_log_is_registered_and_says_why_it_was_not_evaluated(flow: Flow) -> None:
    """It printed 'Error: the log holds 0 joined decisions in that range' and exited 1 with the candidate
    registered all the same: a retry then found the id taken."""
    said = flow.cli("policy", "train", "--id", "whole", "--until", _utc(T0 + 400 * DAY)).output
    assert "registered candidate whole, trained on 3,000 joined examples" in said, said
    flat = " ".join(said.split())
    assert (f"not evaluated on the held-out decisions: whole is judged only on the decisions logged after "
            f"{_utc(T0 + 400 * DAY).replace('T', ' ')} UTC (it learned from those before, or was registered after them: no "
            f"evidence about it), and the log holds 0 joined decision(s) after it yet: shadow it first (`brein policy shadow "
            f"whole`)") in flat, said  # fmt: skip
    with flow.registry() as registry:
        assert registry.has("whole") and registry.evaluations("whole") == []


def test_a_file_evaluated_right_after_its_registration_is_told_to_shadow_it_and_evaluate_it_once_decisions_are_joined(
    flow: Flow,
) -> None:
    """A hand-registered file is judged only on the decisions logged after its registration: evaluated at
    once, it got 'the log holds 0 joined decisions in that range', which told the operator neither why
    nor what to do. Following what it says now works."""
    rules = flow.tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    flow.cli("policy", "register", "--id", "rules", "--kind", "rules", "--file", str(rules))
    with flow.registry() as registry:
        registered_after = registry.get("rules").trained_until
    assert registered_after is not None
    refused = flow.cli("policy", "evaluate", "rules", ok=False)
    assert refused.exit_code == 1
    days = max(flow.config.credit_windows_days().values()) + flow.config.joiner.allowed_lateness_days
    assert " ".join(refused.output.split()) == (
        f"Error: rules is judged only on the decisions logged after {_utc(registered_after).replace('T', ' ')} UTC (it "
        f"learned from those before, or was registered after them: no evidence about it), and the log holds 0 joined "
        f"decision(s) after it yet: shadow it first (`brein policy shadow rules`), so that it scores every live decision "
        f"beside the champion, and evaluate it (`brein policy evaluate rules`) once decisions logged from now on are "
        f"joined, each {days:g} days after it was made (when its outcomes' attribution windows have closed)"
    )
    flow.cli("policy", "shadow", "rules")
    log_more(flow)
    report = json.loads(flow.cli("policy", "evaluate", "rules", "--json").output)
    with closing(open_store(str(flow.store))) as store:
        assert report["decisions"] == store.examples.count(since=registered_after) > 1000


def test_each_look_at_a_candidate_on_the_gates_window_is_judged_at_a_stricter_level(flow: Flow) -> None:
    """Evaluated again as the log grows and promoted at the first pass, a candidate no better than the
    champion passed sooner or later at a fixed level: its k-th look against one champion on the gate's
    window (a log not judged before) is at 1 - alpha / k², alpha its rank's among the candidates judged
    against the champion (0.05·6/π² for the first: 96.96%). The same log evaluated again is the same look
    (the same answer); a window chosen with --since/--until, no evidence, is at 95% and is not counted."""
    rules = flow.tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    flow.cli("policy", "register", "--id", "rules", "--kind", "rules", "--file", str(rules))
    log_more(flow)

    def alpha(*args: str) -> float:
        report = json.loads(flow.cli("policy", "evaluate", "rules", *args, "--json").output)
        return float(report["estimators"]["snips"]["candidate"]["alpha"])

    assert alpha() == Spending(1).alpha == pytest.approx(0.05 * 6 / math.pi**2)
    assert alpha() == Spending(1).alpha  # the same log: the same look
    assert alpha("--since", _utc(T0 + 10 * DAY)) == 0.05
    with flow.registry() as registry:
        first = registry.evaluations("rules")[-1]
        # A look at the log as it was a week before (the log has grown since).
        registry.record_evaluation(replace(first, until=first.until - 7 * DAY, decisions=first.decisions - 300))
    assert alpha() == Spending(1, 2).alpha == Spending(1).alpha / 4
    table = flow.cli("policy", "evaluate", "rules").output  # still the second look: the same log
    assert "99.24%" in table and "The gate's level: 99.24%: its 2nd look as the 1st candidate judged against champion" in table
    with flow.registry() as registry:
        second = registry.evaluations("rules")[0]
    assert (second.gate_window, second.lift, second.decisions) == (True, first.lift, first.decisions)
    assert second.lift_lower < first.lift_lower  # the same log, a wider interval


def test_the_same_file_registered_under_another_id_continues_its_looks(flow: Flow) -> None:
    """One rules file registered as cand-a and cand-b: cand-b's first look was at 95% on the log cand-a had
    been looked at on, a fresh chance for the same policy. The looks are counted over every entry of its
    artifact, and it is one candidate against the champion; another file's looks are its own, and it is
    the next candidate. (An evaluation nobody recorded, say a notebook's on an export, cannot be counted.)"""
    rules, upsell = flow.tmp_path / "rules.json", flow.tmp_path / "upsell.json"
    rules.write_text(json.dumps(RULES))
    upsell.write_text(json.dumps(RULES[1:]))
    for name, file in (("cand-a", rules), ("cand-b", rules), ("other", upsell)):
        flow.cli("policy", "register", "--id", name, "--kind", "rules", "--file", str(file))
    log_more(flow)

    def alpha(policy_id: str) -> float:
        report = json.loads(flow.cli("policy", "evaluate", policy_id, "--json").output)
        return float(report["estimators"]["snips"]["candidate"]["alpha"])

    assert alpha("cand-a") == Spending(1).alpha
    with flow.registry() as registry:
        first = registry.evaluations("cand-a")[0]
        # cand-a looked at the log as it was a week before, too.
        registry.record_evaluation(replace(first, until=first.until - 7 * DAY, decisions=first.decisions - 300))
    assert alpha("cand-b") == Spending(1, 2).alpha  # its second look: the log cand-a was judged on is the same look
    assert alpha("other") == Spending(2).alpha  # the second candidate judged against the champion


@pytest.mark.parametrize("flow", ["sqlite", "postgres"], indirect=True)
def test_each_candidate_judged_against_a_champion_is_judged_at_a_stricter_level_until_the_champion_changes(
    flow: Flow,
) -> None:
    """Candidates tried in turn against one champion were each judged at its own first look at 95%: one of a
    grid no better than the champion passed sooner or later (bench/estimators.py, "candidates in turn"). The
    i-th candidate judged against one champion is judged at 1 - 0.05·6/(π² i²); another id for the same
    file is the same candidate (the same rank), its own later looks keep its rank; a new champion is a
    new question (its first candidate at the first level again), and the champion rolled back to takes
    up its count where it was."""
    files = {"renew": RULES, "upsell": RULES[1:], "calls": DISCOUNT_CALLS, "nothing": [{"action": "do_nothing"}]}
    for name, rules in files.items():
        (flow.tmp_path / f"{name}.json").write_text(json.dumps(rules))
        flow.cli("policy", "register", "--id", name, "--kind", "rules", "--file", str(flow.tmp_path / f"{name}.json"))
    flow.cli("policy", "register", "--id", "renew-copy", "--kind", "rules", "--file", str(flow.tmp_path / "renew.json"))
    log_more(flow)

    def judged(policy_id: str, *args: str) -> dict[str, Any]:
        report = json.loads(flow.cli("policy", "evaluate", policy_id, "--estimator", "snips", "--json", *args).output)
        assert report["estimators"]["snips"]["candidate"]["alpha"] == report["spending"]["alpha"]
        spending: dict[str, Any] = report["spending"]
        return spending

    assert judged("renew") == {"rank": 1, "look": 1, "selected_among": 1, "alpha": pytest.approx(0.05 * 6 / math.pi**2)}
    assert judged("upsell") == {"rank": 2, "look": 1, "selected_among": 1, "alpha": pytest.approx(0.05 * 6 / math.pi**2 / 4)}
    assert judged("renew-copy")["rank"] == 1  # the same file under another id: the same candidate
    assert judged("renew")["rank"] == 1  # its own later looks keep its rank
    calls = flow.cli("policy", "evaluate", "calls", "--estimator", "snips").output
    assert "The gate's level: 99.662%: its 1st look as the 3rd candidate judged against champion" in calls
    loose = flow.write_config("loose.toml", min_ess=1.0, max_weight_share=1.0, min_decisions=10)
    refused = flow.cli("policy", "promote", "calls", config=loose, ok=False).output
    assert refused.startswith("Error: calls does not beat champion with confidence: the lower bound of the snips lift is ")
    assert refused.endswith(" (at 99.662%: its 1st look as the 3rd candidate judged against champion)\n")
    with flow.registry() as registry:
        stored = [Spending.read(e.report.get("spending")) for e in registry.evaluations("calls")]
    assert stored == [Spending(3)]

    flow.cli("policy", "promote", "upsell", "--force", "--reason", "the business wants upsell first")
    assert judged("nothing")["rank"] == 1  # the first candidate against upsell
    assert judged("renew")["rank"] == 2
    flow.cli("policy", "rollback", "--reason", "upsell annoyed customers")
    assert judged("nothing") == {"rank": 4, "look": 1, "selected_among": 1, "alpha": pytest.approx(0.05 * 6 / math.pi**2 / 16)}
    shown = flow.cli("policy", "show", "nothing").output
    assert "│ 4, 1: 99.81% " in shown and "│ 1, 1: 96.96% " in shown  # its looks, against champion and against upsell
    with flow.registry() as registry:  # operators' candidates leave their evaluations, no trial of a tuning run
        assert [e.against for e in registry.evaluations("nothing")] == ["champion", "upsell"]
    with closing(open_store(str(flow.store))) as store:
        assert store.audit.entries(TRIAL_ACTION) == []


def _without_evenings(flow: Flow) -> Path:
    """The config after the business dropped evening sends."""
    data = _config_data(flow.store)
    del data["slots"]["evening"]
    for combination in data["combinations"]:
        combination["slots"] = [s for s in combination["slots"] if s != "evening"]
    path = flow.tmp_path / "no-evenings.toml"
    path.write_text(tomli_w.dumps(data))
    return path


def test_a_rule_policy_whose_action_left_the_catalog_is_refused_at_evaluate_and_promote(flow: Flow) -> None:
    """Registered before the evening slot was dropped, a rule policy whose first rule sends in the evening
    was still evaluated (on the logged eligible sets, the dropped action rebuilt at cost 0), credited for
    it, and promoted; serving, it could only fall back to its second rule."""
    rules = flow.tmp_path / "rules.json"
    rules.write_text(json.dumps(RULES))
    (flow.tmp_path / "upsell.json").write_text(json.dumps(RULES[1:]))
    flow.cli("policy", "register", "--id", "renew-evening", "--kind", "rules", "--file", str(rules))
    flow.cli("policy", "evaluate", "renew-evening", "--since", _utc(T0), "--json")
    no_evenings = _without_evenings(flow)
    refusal = (
        "Error: renew-evening: rules[0].action: expected an action of the catalog like 'offer/channel/slot', "
        "got 'renewal/sms/evening'\n"
    )
    evaluated = flow.cli("policy", "evaluate", "renew-evening", config=no_evenings, ok=False)
    assert (evaluated.exit_code, evaluated.output) == (1, refusal)
    # As a baseline too: a rules file whose first rule cannot be served was judged as the rules after it.
    against = flow.cli("policy", "evaluate", "champion", "--against", str(rules), config=no_evenings, ok=False)
    assert (against.exit_code, against.output) == (1, refusal.replace("renew-evening:", "rules.json:"))
    assert flow.cli("policy", "promote", "renew-evening", config=no_evenings, ok=False).output == refusal
    forced = flow.cli("policy", "promote", "renew-evening", "--force", "--reason", "x", config=no_evenings, ok=False)
    assert forced.output == refusal
    again = flow.cli("policy", "register", "--id", "renew-evening-again", "--kind", "rules", "--file", str(rules),
                     config=no_evenings, ok=False)  # fmt: skip
    assert again.output == refusal.replace("renew-evening:", "renew-evening-again:")
    assert flow.states() == {"champion": "champion", "renew-evening": "candidate"}
    # Promoted while evenings were sent, then replaced: no rollback to it once they are not.
    flow.cli("policy", "promote", "renew-evening", "--force", "--reason", "x")
    flow.cli("policy", "register", "--id", "upsell", "--kind", "rules", "--file", str(flow.tmp_path / "upsell.json"))
    flow.cli("policy", "promote", "upsell", "--force", "--reason", "y")
    rolled = flow.cli("policy", "rollback", config=no_evenings, ok=False)
    assert rolled.output == refusal and flow.states()["upsell"] == "champion"


def test_every_policy_is_evaluated_on_the_actions_the_catalog_has_today(flow: Flow) -> None:
    """With the evening slot dropped, no policy gets probability for an evening action: a rule naming one
    is valued as the rules after it (what it would serve), and a decision whose logged action was an
    evening send weighs 0 for every policy (it stays in n)."""
    config = parse_config(tomllib.loads(_without_evenings(flow).read_text()))
    with closing(open_store(str(flow.store))) as store:
        logged = load_logged(config, store.examples)
    encoder = FeatureEncoder(config)
    evenings = [[k for k, action in enumerate(actions) if action.slot == "evening"] for actions in logged.actions]
    named = RulePolicy(parse_rules(json.dumps(RULES)), version="named")
    after_it = RulePolicy(parse_rules(json.dumps(RULES[1:])), version="after-it")
    assert np.array_equal(distribution("named", named, encoder, logged), distribution("after-it", after_it, encoder, logged))
    uniform = distribution("uniform", UniformPolicy(), encoder, logged)
    assert any(evenings) and all(not uniform[i, gone].any() for i, gone in enumerate(evenings))
    assert uniform.sum(axis=1) == pytest.approx(np.ones(len(logged)))
    taken = [i for i, gone in enumerate(evenings) if logged.chosen[i] in gone]
    assert len(taken) > 100 and not uniform[taken, logged.chosen[taken]].any()
    uniform_target = Target("uniform", UniformPolicy())
    report = evaluate_on(logged, encoder, uniform_target, None, ["ips"], reliability=gate_reliability(config.gate))
    assert report.decisions == len(logged) == 3000
