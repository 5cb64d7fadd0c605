"""Customer data: pseudonymised ids (never a raw id in the store, the logs or the metrics), no customer
ids or feature values in metrics labels or log lines, and retention (background task and CLI)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from prometheus_client import generate_latest

from bandit.config import BreinConfig, parse_config
from bandit.errors import ConfigError
from bandit.pseudonyms import PREFIX, Pseudonyms
from bandit.requests import DecisionRequest
from bandit.security_config import PrivacyConfig
from brain.core import Brain, open_brain
from brain.logs import JsonFormatter
from brain.worker import Worker
from reward.ingest import OutcomeReport
from reward.retention import apply_retention
from serving import converters
from serving.cli import main
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from store import Store, open_store
from store.opening import sqlite_path
from store.ports import Privacy
from store.records import DeletedDecisions, ForgetReport
from tests.conftest import EXAMPLE, T0, Clock, LiveServer, example_data, sqlite_count, sqlite_rows
from tests.test_store_contract import decision

DAY = 86_400.0
RAW = "cust-RAW-4242"
SECRET_VALUE = "plan-SECRET-77"
SECRET_NUMBER = 1234.5678
KEY_ENV = "BREIN_TEST_PSEUDONYM_KEY"


def pseudonymised(**privacy: Any) -> BreinConfig:
    return parse_config({**example_data(), "privacy": {"pseudonymise": True, "key_env": KEY_ENV, **privacy}})


def traffic(live: LiveServer, customer: str) -> pb.DecideResponse:
    """Every RPC that carries a customer id or features, a bad one included; returns the first decision."""
    context = pb.Context(numeric={"months_to_contract_end": 2.0, "monthly_spend": SECRET_NUMBER},
                         categorical={"plan": SECRET_VALUE, "has_app": "yes"})  # fmt: skip
    request = pb.DecideRequest(request_id="p-1", customer_id=customer, channel="app", event_time=converters.timestamp(T0),
                               context=context, consent=pb.Consent(personalisation=pb.CONSENT_STATE_GRANTED))  # fmt: skip
    decision = live.stub.Decide(request)
    assert live.stub.Decide(request).replayed
    batch = pb.DecideBatchRequest(items=[pb.DecideRequest(request_id="p-2", customer_id=customer, channel="web", context=context,
                                                          event_time=converters.timestamp(T0 + 60))])  # fmt: skip
    assert list(live.stub.DecideBatch(iter([batch])))[0].results[0].HasField("decision")
    live.stub.ReportOutcome(pb.ReportOutcomeRequest(outcome_id="p-o1", customer_id=customer, type="contract_renewal",
                                                    event_time=converters.timestamp(T0 + DAY)))  # fmt: skip
    live.stub.Activate(pb.ActivateRequest(decision_id=decision.decision_id, event_time=converters.timestamp(T0 + 60)))
    with pytest.raises(grpc.RpcError):
        live.stub.Decide(pb.DecideRequest(customer_id=customer, channel="fax", context=context))
    with pytest.raises(grpc.RpcError):  # the same request id for another customer
        live.stub.Decide(pb.DecideRequest(request_id="p-1", customer_id=customer + "-other", channel="app", context=context))
    return decision


def stored_bytes(brain: Brain) -> bytes:
    path = sqlite_path(brain.store.url)
    assert path is not None
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal")) if p.exists())


def rendered_logs(records: list[logging.LogRecord]) -> str:
    formatter = JsonFormatter()
    return "\n".join(formatter.format(r) for r in records)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    with caplog.at_level(logging.DEBUG):
        yield caplog


def test_pseudonymised_ids_never_reach_the_store_logs_or_metrics(
    make_brain: Callable[..., Brain], metrics: Metrics, monkeypatch: pytest.MonkeyPatch, all_logs: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(KEY_ENV, "k" * 32)
    brain = make_brain(pseudonymised(), on_commit=metrics.on_commit)
    live = LiveServer(brain, metrics)
    try:
        decision = traffic(live, RAW)
        pseudonym = brain.pseudonyms.customer_id(RAW)
        assert pseudonym.startswith(PREFIX) and RAW not in pseudonym
        # Explain answers with the pseudonym: the store has nothing else.
        explained = live.stub.Explain(pb.ExplainRequest(decision_id=decision.decision_id))
        assert explained.customer_id == pseudonym
        # Same customer, same pseudonym: history and contact caps still work across channels.
        assert sqlite_count(brain.store, "decisions", "WHERE customer_id = ?", (pseudonym,)) == 2
        history = brain.store.decisions.customer_logs([pseudonym], T0 + 2 * DAY, T0 + 2 * DAY, 30)[pseudonym].at(T0 + 2 * DAY)
        assert history.contacts or decision.action.do_nothing
        Worker(brain.config, brain.store).joiner.run(until=T0 + 60 * DAY)
        assert RAW.encode() not in stored_bytes(brain)
        for table in ("decisions", "outcomes", "joined_examples", "audit"):
            rows = sqlite_rows(brain.store, f"SELECT * FROM {table}")
            assert RAW not in json.dumps([list(r) for r in rows], default=str), table
        # Forget takes the raw id.
        forgot = live.stub.Forget(pb.ForgetRequest(customer_id=RAW))
        assert (forgot.decisions, forgot.outcomes, forgot.joined_examples) == (2, 1, 2)
        audit = brain.store.audit.entries()
        assert [(e.action, e.subject) for e in audit if e.action != "policy"] == [("explain", decision.decision_id), ("forget", pseudonym)]
        with pytest.raises(grpc.RpcError) as empty:  # an empty id is refused, not hashed
            live.stub.Forget(pb.ForgetRequest(customer_id=""))
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert RAW.encode() not in stored_bytes(brain)
        exposition = generate_latest(metrics.registry).decode()
    finally:
        live.stop()
    logs = rendered_logs(all_logs.records)
    for secret in (RAW, SECRET_VALUE, str(SECRET_NUMBER)):
        assert secret not in logs and secret not in exposition


def test_metrics_and_logs_carry_no_customer_ids_or_feature_values(
    live: LiveServer, metrics: Metrics, all_logs: pytest.LogCaptureFixture
) -> None:
    """Without pseudonymisation too: the store holds the raw id, the logs and metrics never."""
    decision = traffic(live, RAW)
    live.stub.Explain(pb.ExplainRequest(decision_id=decision.decision_id))
    Worker(live.running.brain.config, live.running.brain.store).joiner.run(until=T0 + 60 * DAY)
    live.stub.Forget(pb.ForgetRequest(customer_id=RAW))
    exposition = generate_latest(metrics.registry).decode()
    assert "brein_decisions_total" in exposition and "brein_rpc_errors_total" in exposition
    logs = rendered_logs(all_logs.records)
    assert "forgot a customer" in logs
    for secret in (RAW, SECRET_VALUE, str(SECRET_NUMBER)):
        assert secret not in exposition, secret
        assert secret not in logs, secret


def test_pseudonyms_are_keyed_and_stable(tmp_path: Path) -> None:
    key_file = tmp_path / "pseudonym.key"
    key_file.write_text("a-file-key-of-enough-bytes\n")
    from_file = Pseudonyms.from_config(PrivacyConfig(pseudonymise=True, key_file=str(key_file)))
    from_env = Pseudonyms.from_config(PrivacyConfig(pseudonymise=True, key_env="K"), environ={"K": "a-file-key-of-enough-bytes"})
    other = Pseudonyms.from_config(PrivacyConfig(pseudonymise=True, key_env="K"), environ={"K": "another-key-of-enough-bytes"})
    assert from_file.customer_id("c1") == from_env.customer_id("c1") != other.customer_id("c1")
    assert from_file.customer_id("c1") != from_file.customer_id("c2")
    request = from_file.request(DecisionRequest(customer_id="c1", touchpoint="app"))
    assert request.customer_id == from_file.customer_id("c1") and request.touchpoint == "app"
    assert from_file.request(OutcomeReport("o", "c1", "complaint")).customer_id == from_file.customer_id("c1")
    off = Pseudonyms.from_config(PrivacyConfig())
    assert not off.enabled and off.customer_id("c1") == "c1"


@pytest.mark.parametrize(("privacy", "environ", "message"), [
    ({"pseudonymise": True}, {}, "pseudonymise needs key_file or key_env"),
    ({"pseudonymise": True, "key_env": "K", "key_file": "f"}, {}, "set one of key_file and key_env"),
    ({"pseudonymise": True, "key_env": "K"}, {}, "environment variable K: expected a key of at least 16 bytes, got 0"),
    ({"pseudonymise": True, "key_env": "K"}, {"K": "short"}, "expected a key of at least 16 bytes, got 5"),
    ({"pseudonymise": True, "key_file": "/nonexistent/brein.key"}, {}, "privacy.key_file: cannot read /nonexistent/brein.key"),
    ({"retention_days": 20}, {}, "privacy.retention_days: 20 deletes decisions before they are joined"),
    ({"pseudonymise": True, "key": "in-the-config"}, {}, "privacy.key: Extra inputs are not permitted"),
])  # fmt: skip
def test_bad_privacy_settings_are_refused(privacy: dict[str, Any], environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        config = parse_config({**example_data(), "privacy": privacy})
        Pseudonyms.from_config(config.privacy, environ)


def test_the_server_does_not_start_without_its_pseudonym_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    config = pseudonymised()
    with pytest.raises(ConfigError, match=KEY_ENV):
        open_brain(config.model_copy(update={"server": config.server.model_copy(update={"store": str(tmp_path / "brein.db")})}))
    assert not (tmp_path / "brein.db").exists()


def test_pseudonym_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "k" * 32)
    config = tmp_path / "brein.toml"
    config.write_text(EXAMPLE.read_text() + f'\n[privacy]\npseudonymise = true\nkey_env = "{KEY_ENV}"\n')
    result = CliRunner().invoke(main, ["pseudonym", RAW, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == Pseudonyms(b"k" * 32).customer_id(RAW)


# -- retention -----------------------------------------------------------------------------------


def seed_old_and_new(brain: Brain, now: float) -> None:
    """Two customers with decisions 100 days old (joined, one activated, one outcome) and one recent each."""
    old, recent = now - 100 * DAY, now - DAY
    for customer in ("c-a", "c-b"):
        for when, tag in ((old, "old"), (recent, "new")):
            pending = brain.decide(
                DecisionRequest(customer_id=customer, touchpoint="web", request_id=f"{customer}-{tag}", event_time=when)
            )
            pending.committed.result()
            if customer == "c-a" and tag == "old":
                brain.activate(converters.activation_report(pb.ActivateRequest(decision_id=pending.record.decision_id))).result()
    brain.report_outcome(OutcomeReport("o-old", "c-a", "complaint", event_time=old + DAY))[1].result()
    brain.report_outcome(OutcomeReport("o-new", "c-a", "complaint", event_time=recent + 60))[1].result()
    Worker(brain.config, brain.store).joiner.run(until=now)
    assert sqlite_count(brain.store, "joined_examples") == 2


def counts(brain: Brain) -> dict[str, int]:
    tables = ("decisions", "outcomes", "activations", "joined_examples", "join_queue")
    return {t: sqlite_count(brain.store, t) for t in tables}


def test_retention_runs_in_the_background_and_is_counted(
    make_brain: Callable[..., Brain], metrics: Metrics, clock: Clock
) -> None:
    clock.now = time.time()
    config = parse_config({**example_data(), "privacy": {"retention_days": 40, "retention_interval_seconds": 0.1}})
    brain = make_brain(config, on_commit=metrics.on_commit)
    seed_old_and_new(brain, clock.now)
    live = LiveServer(brain, metrics, background=True)
    try:
        deadline = time.monotonic() + 10
        while live.sample("brein_retention_deleted_total", {"kind": "decisions"}) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counts(brain) == {"decisions": 2, "outcomes": 1, "activations": 0, "joined_examples": 0, "join_queue": 2}
        deleted = {
            k: live.sample("brein_retention_deleted_total", {"kind": k})
            for k in ("decisions", "outcomes", "activations", "joined_examples")
        }
        assert deleted == {"decisions": 2, "outcomes": 1, "activations": 1, "joined_examples": 2}
        assert live.sample("brein_retention_runs_total", {"result": "ok"}) >= 1
        audit = brain.store.audit.entries("retention")
        assert {(e.actor, e.action) for e in audit} == {("brein retention", "retention")}
        assert audit[0].detail == "started: deleting decisions, outcomes and joined examples older than 40 days"
        assert [e.detail for e in audit if not e.detail.startswith("started")] == [
            "deleted 2 decisions, 1 activations, 2 joined examples older than 40 days", "deleted 1 outcomes older than 40 days"
        ]
        assert live.stub.Decide(pb.DecideRequest(customer_id="c-a", channel="web")).decision_id  # still serving
    finally:
        live.stop()


def test_retention_run_command(tmp_path: Path, config: BreinConfig) -> None:
    store = tmp_path / "brein.db"
    opened = open_store(str(store))
    try:
        seed_old_and_new(Brain(config, opened), time.time())
    finally:
        opened.close()
    config_file = tmp_path / "brein.toml"
    config_file.write_text(EXAMPLE.read_text() + "\n[privacy]\nretention_days = 60\n")
    result = CliRunner().invoke(main, ["retention", "run", "--config", str(config_file), "--store", str(store), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert {k: report[k] for k in ("decisions", "outcomes", "activations", "joined_examples")} == {
        "decisions": 2, "outcomes": 1, "activations": 1, "joined_examples": 2}  # fmt: skip
    again = CliRunner().invoke(main, ["retention", "run", "--config", str(config_file), "--store", str(store)])
    assert again.exit_code == 0 and "older than 60 days" in again.output and "│ 0 " in again.output
    unset = CliRunner().invoke(main, ["retention", "run", "--config", str(EXAMPLE), "--store", str(store)])
    assert unset.exit_code == 1 and "privacy.retention_days is not set" in unset.output
    # --days is held to the config's rule: 0.0001 deleted every decision of a live store before it was joined.
    early = CliRunner().invoke(main, ["retention", "run", "--config", str(config_file), "--store", str(store), "--days", "1e-4"])
    assert early.exit_code == 1 and "--days: 0.0001 deletes decisions before they are joined" in early.output, early.output


class Stopped(Exception):
    """What stops a retention run midway in a test: SIGTERM, a crash."""


class StoppedAfter:
    """A store's Privacy whose retention run is stopped once ``batches`` batches of it committed."""

    def __init__(self, privacy: Privacy, batches: int) -> None:
        self.privacy = privacy
        self.batches = batches

    def forget(self, customer_id: str, *, actor: str, at: float) -> Future[ForgetReport]:
        return self.privacy.forget(customer_id, actor=actor, at=at)

    def delete_decisions_before(self, cutoff: float, limit: int) -> Future[DeletedDecisions]:
        if not self.batches:
            raise Stopped
        self.batches -= 1
        return self.privacy.delete_decisions_before(cutoff, limit)

    def delete_outcomes_before(self, cutoff: float, limit: int) -> Future[int]:
        return self.privacy.delete_outcomes_before(cutoff, limit)


def test_a_retention_run_stopped_midway_has_audited_what_it_deleted(store: Store) -> None:
    """The run's one audit entry was written after its last batch: one stopped after its first
    deleted 2,000 decisions and left no entry."""
    store.decisions.submit_decisions([decision(f"d{i}", f"c{i}", T0 + i) for i in range(3)]).result()
    with pytest.raises(Stopped):
        apply_retention(StoppedAfter(store.privacy, 2), store.audit, 30, now=T0 + 100 * DAY, actor="test", batch=1)
    assert store.decisions.decision_count() == 1
    assert [e.detail for e in store.audit.entries("retention")] == [
        "started: deleting decisions, outcomes and joined examples older than 30 days",
        *["deleted 1 decisions, 0 activations, 0 joined examples older than 30 days"] * 2,
    ]
