"""TLS, mutual TLS, callers with roles, rate limits and message size, against live servers on
loopback with real certificates made here; the plaintext rule, also as a real `brein serve`."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from click.testing import CliRunner
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import CollectorRegistry

from bandit.config import BreinConfig, parse_config
from bandit.errors import ConfigError
from brain.core import Brain
from serving import converters
from serving.cli import main
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.security import Callers, TokenBucket, is_loopback, key_hash
from serving.server import create_server
from store import open_store
from tests.certs import CertificateAuthority, Pair
from tests.conftest import EXAMPLE, T0, LiveServer, example_data, sqlite_count

KEYS = {
    "shop": "brein_shop-key-for-tests-0123456789abcdef",
    "analyst": "brein_analyst-key-0123456789abcdef",
    "admin": "brein_admin-key-0123456789abcdef",
    "campaigns": "brein_campaign-key-0123456789abcdef",
}
ROLES = {"shop": ["channel"], "analyst": ["analyst"], "admin": ["admin"], "campaigns": ["channel"]}


def secured_data(directory: Path, ca: CertificateAuthority, server: Pair, *, mutual: bool) -> dict[str, Any]:
    data = example_data()
    data["tls"] = {"cert_file": str(server.cert_file), "key_file": str(server.key_file)}
    if mutual:
        data["tls"]["client_ca_file"] = str(ca.cert_file)
    callers: dict[str, Any] = {name: {"roles": ROLES[name], "api_key_sha256": key_hash(key)} for name, key in KEYS.items()}
    callers["campaigns"].update(rate_per_second=0.5, burst=3)
    callers["ops-desk"] = {"roles": ["analyst", "admin"], "client_cert_names": ["ops-desk.brein.test"]}
    data["security"] = {"callers": callers, "rate_per_second": 1000.0, "burst": 1000}
    data["limits"] = {"max_message_bytes": 64 * 1024}
    return data


class SecureServer:
    def __init__(self, directory: Path, mutual: bool) -> None:
        self.directory = directory
        self.ca = CertificateAuthority(directory / "pki")
        self.config = parse_config(secured_data(directory, self.ca, self.ca.server(), mutual=mutual))
        self.metrics = Metrics(CollectorRegistry())
        self.brain = Brain(self.config, open_store(str(directory / "brein.db")), clock=lambda: T0 + 60)
        self.live = LiveServer(self.brain, self.metrics)
        self.channels: list[grpc.Channel] = []

    def channel(self, key: str | None = None, client: Pair | None = None, ca: CertificateAuthority | None = None) -> grpc.Channel:
        ca = ca or self.ca
        credentials = grpc.ssl_channel_credentials(
            ca.cert_file.read_bytes(), client.key if client else None, client.cert if client else None
        )
        if key is not None:  # gRPC's own call credentials: 'authorization: Bearer <key>' on every call
            credentials = grpc.composite_channel_credentials(credentials, grpc.access_token_call_credentials(key))
        channel = grpc.secure_channel(self.live.address, credentials)
        self.channels.append(channel)
        return channel

    def stub(self, *args: Any, **kwargs: Any) -> pb_grpc.DecisionServiceStub:
        return pb_grpc.DecisionServiceStub(self.channel(*args, **kwargs))

    def sample(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.live.sample(name, labels)

    def close(self) -> None:
        for channel in self.channels:
            channel.close()
        self.live.stop()


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    server = SecureServer(tmp_path_factory.mktemp("tls"), mutual=False)
    yield server
    server.close()


@pytest.fixture(scope="module")
def mtls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureServer]:
    server = SecureServer(tmp_path_factory.mktemp("mtls"), mutual=True)
    yield server
    server.close()


def decide(customer: str = "c1", request_id: str = "", **kwargs: Any) -> pb.DecideRequest:
    kwargs.setdefault("context", pb.Context(numeric={"months_to_contract_end": 2.0}))
    return pb.DecideRequest(
        request_id=request_id, customer_id=customer, channel="app", event_time=converters.timestamp(T0), **kwargs
    )


def call(stub: pb_grpc.DecisionServiceStub, method: str, decision_id: str, tag: str) -> None:
    """One valid call of each DecisionService method (a fresh customer per call, so calls do not interact)."""
    if method == "Decide":
        stub.Decide(decide(f"m-{tag}"), timeout=5)
    elif method == "DecideBatch":
        results = [
            r
            for response in stub.DecideBatch(iter([pb.DecideBatchRequest(items=[decide(f"b-{tag}")])]), timeout=5)
            for r in response.results
        ]
        assert results[0].HasField("decision")
    elif method == "ReportOutcome":
        stub.ReportOutcome(
            pb.ReportOutcomeRequest(
                outcome_id=f"o-{tag}", customer_id=f"m-{tag}", type="complaint", event_time=converters.timestamp(T0)
            ),
            timeout=5,
        )
    elif method == "Activate":
        stub.Activate(pb.ActivateRequest(decision_id=decision_id, event_time=converters.timestamp(T0)), timeout=5)
    elif method == "Explain":
        stub.Explain(pb.ExplainRequest(decision_id=decision_id), timeout=5)
    elif method == "Forget":
        stub.Forget(pb.ForgetRequest(customer_id=f"nobody-{tag}"), timeout=5)
    else:
        raise AssertionError(method)


METHODS = ["Decide", "DecideBatch", "ReportOutcome", "Activate", "Explain", "Forget"]
ALLOWED = {"channel": {"Decide", "DecideBatch", "ReportOutcome", "Activate"}, "analyst": {"Explain"}, "admin": {"Forget"}}
CALLERS = {"channel": "shop", "analyst": "analyst", "admin": "admin"}
MATRIX = [(who, method) for who in [*CALLERS, "no credentials", "unknown key", "malformed key"] for method in METHODS]


@pytest.mark.parametrize(("who", "method"), MATRIX, ids=[f"{w}-{m}" for w, m in MATRIX])
def test_auth_matrix_role_by_rpc(tls_server: SecureServer, who: str, method: str) -> None:
    decision = tls_server.brain.decider.decide_and_wait(converters.decision_request(decide(f"seed-{who}-{method}")))
    key = {"no credentials": None, "unknown key": "brein_not-a-configured-key-0123456789", "malformed key": " "}.get(
        who, KEYS.get(CALLERS.get(who, ""), "")
    )
    stub = tls_server.stub(key)
    tag = f"{who}-{method}".replace(" ", "_")
    if who in ALLOWED and method in ALLOWED[who]:
        call(stub, method, decision.record.decision_id, tag)
        return
    expected = grpc.StatusCode.PERMISSION_DENIED if who in ALLOWED else grpc.StatusCode.UNAUTHENTICATED
    before = tls_server.sample("brein_rpc_errors_total", {"method": method, "code": expected.name})
    with pytest.raises(grpc.RpcError) as refused:
        call(stub, method, decision.record.decision_id, tag)
    assert refused.value.code() == expected, refused.value.details()
    assert tls_server.sample("brein_rpc_errors_total", {"method": method, "code": expected.name}) == before + 1
    if expected is grpc.StatusCode.PERMISSION_DENIED:
        assert (
            f"lacks the {'channel' if method in ALLOWED['channel'] else 'analyst' if method == 'Explain' else 'admin'} role"
            in (refused.value.details() or "")
        )
    # Nothing of a refused call reached the store.
    store = tls_server.brain.store
    assert sqlite_count(store, "decisions", "WHERE customer_id IN (?, ?)", (f"m-{tag}", f"b-{tag}")) == 0
    assert sqlite_count(store, "outcomes", "WHERE outcome_id = ?", (f"o-{tag}",)) == 0


def test_health_and_reflection_stay_open(tls_server: SecureServer) -> None:
    channel = tls_server.channel()  # TLS, no credentials
    health = health_pb2_grpc.HealthStub(channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest(service="brein.v1.DecisionService"), timeout=5).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
    (listing,) = list(reflect.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5))
    assert "brein.v1.DecisionService" in {s.name for s in listing.list_services_response.service}


def test_plaintext_clients_cannot_talk_to_a_tls_port(tls_server: SecureServer) -> None:
    with grpc.insecure_channel(tls_server.live.address) as channel:
        with pytest.raises(grpc.RpcError) as error:
            pb_grpc.DecisionServiceStub(channel).Decide(
                decide(), timeout=3, metadata=[("authorization", f"Bearer {KEYS['shop']}")]
            )
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE


def test_explain_and_forget_are_audited_with_the_caller_name(tls_server: SecureServer) -> None:
    decision = tls_server.stub(KEYS["shop"]).Decide(decide("audited-customer"), timeout=5)
    tls_server.stub(KEYS["analyst"]).Explain(pb.ExplainRequest(decision_id=decision.decision_id), timeout=5)
    forgot = tls_server.stub(KEYS["admin"]).Forget(pb.ForgetRequest(customer_id="audited-customer"), timeout=5)
    assert forgot.decisions == 1
    rows = [e for e in tls_server.brain.store.audit.entries() if e.subject in (decision.decision_id, "audited-customer")]
    assert [(e.actor, e.action, e.subject) for e in rows] == [("analyst", "explain", decision.decision_id), ("admin", "forget", "audited-customer")]
    assert rows[0].detail.startswith("policy ")


def test_rate_limit_per_caller_is_resource_exhausted(tls_server: SecureServer) -> None:
    campaigns, shop = tls_server.stub(KEYS["campaigns"]), tls_server.stub(KEYS["shop"])
    for i in range(3):  # the burst
        campaigns.Decide(decide(f"rl-{i}"), timeout=5)
    with pytest.raises(grpc.RpcError) as limited:
        campaigns.Decide(decide("rl-3"), timeout=5)
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "campaigns is over its rate limit" in (
        limited.value.details() or ""
    )
    shop.Decide(decide("rl-other-caller"), timeout=5)  # one caller's bucket is not another's
    chunk = pb.DecideBatchRequest(items=[decide(f"rl-batch-{i}") for i in range(3)])  # a batch pays one token per item
    with pytest.raises(grpc.RpcError) as batch:
        list(campaigns.DecideBatch(iter([chunk]), timeout=5))
    assert batch.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert tls_server.sample("brein_rate_limited_total", {"caller": "campaigns"}) == 2
    assert sqlite_count(tls_server.brain.store, "decisions", "WHERE customer_id LIKE 'rl-batch-%'") == 0


def test_a_chunk_over_the_burst_is_invalid_argument_saying_to_split_it(tls_server: SecureServer) -> None:
    """A chunk of more items than the caller's burst was RESOURCE_EXHAUSTED "retry later": no wait lets it pass."""
    campaigns = tls_server.stub(KEYS["campaigns"])
    limited = tls_server.sample("brein_rate_limited_total", {"caller": "campaigns"})
    chunk = pb.DecideBatchRequest(items=[decide(f"over-burst-{i}") for i in range(4)])  # campaigns' burst is 3
    with pytest.raises(grpc.RpcError) as error:
        list(campaigns.DecideBatch(iter([chunk]), timeout=5))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == (
        "items: 4 items in one chunk, more than caller campaigns's rate-limit burst of 3: such a chunk never passes; "
        "split it into chunks of at most 3 items"
    )
    assert tls_server.sample("brein_rate_limited_total", {"caller": "campaigns"}) == limited  # not a rate limit
    assert sqlite_count(tls_server.brain.store, "decisions", "WHERE customer_id LIKE 'over-burst-%'") == 0


def test_messages_over_the_size_limit_are_refused(tls_server: SecureServer) -> None:
    big = decide("big", context=pb.Context(categorical={f"k{i}": "v" * 500 for i in range(200)}))  # ~100 KB > 64 KiB
    with pytest.raises(grpc.RpcError) as error:
        tls_server.stub(KEYS["shop"]).Decide(big, timeout=5)
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_mutual_tls_identity_maps_to_a_caller(mtls_server: SecureServer) -> None:
    ops = mtls_server.ca.issue("ops desk", dns=("ops-desk.brein.test",))
    stranger = mtls_server.ca.issue("stranger", dns=("stranger.brein.test",))
    decision = mtls_server.brain.decider.decide_and_wait(converters.decision_request(decide("mtls-customer")))
    explained = mtls_server.stub(client=ops).Explain(pb.ExplainRequest(decision_id=decision.record.decision_id), timeout=5)
    assert explained.decision_id == decision.record.decision_id
    assert [e.actor for e in mtls_server.brain.store.audit.entries("explain")] == ["ops-desk"]
    with pytest.raises(grpc.RpcError) as denied:  # ops-desk is analyst and admin, not a channel
        mtls_server.stub(client=ops).Decide(decide("mtls-2"), timeout=5)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as unknown:  # a valid certificate that maps to no caller
        mtls_server.stub(client=stranger).Decide(decide("mtls-3"), timeout=5)
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED and "stranger.brein.test" in (unknown.value.details() or "")
    # An API key over a mutual-TLS connection names the caller.
    assert mtls_server.stub(KEYS["shop"], client=stranger).Decide(decide("mtls-4"), timeout=5).decision_id


@pytest.mark.parametrize("client", ["no certificate", "another CA"])
def test_mutual_tls_refuses_connections_without_a_trusted_client_certificate(
    mtls_server: SecureServer, tmp_path: Path, client: str
) -> None:
    other = CertificateAuthority(tmp_path / "other", name="Other CA")
    pair = None if client == "no certificate" else other.issue("intruder", dns=("ops-desk.brein.test",))
    with pytest.raises(grpc.RpcError) as error:
        mtls_server.stub(KEYS["shop"], client=pair).Decide(decide("intruder"), timeout=3)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake fails: no RPC at all


def test_client_commands_speak_tls_and_api_keys(mtls_server: SecureServer) -> None:
    ops = mtls_server.ca.issue("cli ops", dns=("ops-desk.brein.test",))
    decision = mtls_server.brain.decider.decide_and_wait(converters.decision_request(decide("cli-customer")))
    tls = ["--ca-file", str(mtls_server.ca.cert_file), "--cert-file", str(ops.cert_file), "--key-file", str(ops.key_file)]
    explained = CliRunner().invoke(
        main, [*tls, "explain", decision.record.decision_id, "--json", "--address", mtls_server.live.address]
    )
    assert explained.exit_code == 0, explained.output
    refused = CliRunner().invoke(
        main, [*tls, "decide", "--customer", "x", "--channel", "app", "--address", mtls_server.live.address]
    )
    assert refused.exit_code == 1 and "PERMISSION_DENIED" in refused.output
    keyed = CliRunner().invoke(
        main,
        [*tls, "decide", "--customer", "x", "--channel", "app", "--json", "--address", mtls_server.live.address],
        env={"BREIN_API_KEY": KEYS["shop"]},
    )
    assert keyed.exit_code == 0, keyed.output


# -- pieces, without a server ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("127.1.2.3:0", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("unix:/tmp/brein.sock", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        (":50051", False),
        ("10.0.0.5:50051", False),
        ("brein.example.com:443", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


@pytest.mark.parametrize(
    ("address", "allow", "refused"), [("0.0.0.0:0", False, True), ("[::]:0", False, True), ("127.0.0.1:0", False, False)]
)
def test_plaintext_off_loopback_is_refused_unless_allowed(address: str, allow: bool, refused: bool, tmp_path: Path) -> None:
    data = example_data()
    data["server"]["allow_plaintext"] = allow
    brain = Brain(parse_config(data), open_store(str(tmp_path / "brein.db")))

    async def start() -> None:
        running = await create_server(brain, Metrics(CollectorRegistry()), address)
        await running.stop(0)

    try:
        if refused:
            with pytest.raises(ConfigError, match="plaintext gRPC is allowed only on loopback"):
                asyncio.run(start())
        else:
            asyncio.run(start())
    finally:
        brain.store.close()


def test_brein_serve_refuses_plaintext_on_all_interfaces(tmp_path: Path) -> None:
    (tmp_path / "brein.toml").write_text(
        EXAMPLE.read_text().replace("127.0.0.1:50051", "0.0.0.0:0").replace("127.0.0.1:9464", "127.0.0.1:0")
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "serving", "serve", "--config", "brein.toml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "server.address 0.0.0.0:0: plaintext gRPC is allowed only on loopback" in done.stderr
    assert not (tmp_path / "var" / "brein.db").exists()  # refused before anything started
    assert time.monotonic() - started < 30


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"security": {"callers": {}}}, "security.callers"),
        ({"security": {"callers": {"x": {"roles": ["channel"]}}}}, "a caller needs api_key_sha256 or client_cert_names"),
        ({"security": {"callers": {"x": {"roles": ["root"], "api_key_sha256": "0" * 64}}}}, "security.callers.x.roles.0"),
        (
            {"security": {"callers": {"x": {"roles": ["channel"], "api_key_sha256": "not-a-hash"}}}},
            "security.callers.x.api_key_sha256",
        ),
        (
            {
                "security": {
                    "callers": {
                        "x": {"roles": ["channel"], "api_key_sha256": "a" * 64},
                        "y": {"roles": ["admin"], "api_key_sha256": "a" * 64},
                    }
                }
            },
            "callers x and y share the api key",
        ),
        (
            {"security": {"callers": {"x": {"roles": ["channel"], "api_key": "plain"}}}},
            "security.callers.x.api_key: Extra inputs",
        ),
        ({"tls": {"cert_file": "a.crt"}}, "tls.key_file: Field required"),
    ],
)
def test_bad_security_config_is_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config({**example_data(), **change})


def test_missing_certificate_files_are_named(tmp_path: Path) -> None:
    from serving.security import transport

    config = parse_config(
        {**example_data(), "tls": {"cert_file": str(tmp_path / "nope.crt"), "key_file": str(tmp_path / "nope.key")}}
    )
    with pytest.raises(ConfigError, match="tls.cert_file: cannot read .*nope.crt"):
        transport(config, "127.0.0.1:0")


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token back
    assert bucket.take() and not bucket.take()
    now[0] += 100.0  # never more than the burst
    assert bucket.take(3) and not bucket.take()


def test_keys_are_checked_by_hash_and_credentials_are_exact(config: BreinConfig) -> None:
    from bandit.errors import Unauthenticated
    from bandit.security_config import SecurityConfig

    callers = Callers(
        SecurityConfig.model_validate(
            {
                "callers": {
                    "shop": {"roles": ["channel"], "api_key_sha256": key_hash("s3cret-key")},
                    "ops": {"roles": ["admin"], "client_cert_names": ["ops.example"]},
                }
            }
        )
    )
    assert callers.authenticate([("authorization", "Bearer s3cret-key")], None).name == "shop"
    assert callers.authenticate([("authorization", "bearer s3cret-key")], None).name == "shop"
    assert callers.authenticate([], [b"ops.example"]).name == "ops"
    for metadata, identities in [
        ([("authorization", "Bearer s3cret-KEY")], None),
        ([("authorization", "Basic s3cret-key")], None),
        ([("authorization", "Bearer wrong")], [b"ops.example"]),
        ([], [b"OPS.example"]),
        ([], None),
    ]:
        with pytest.raises(Unauthenticated):
            callers.authenticate(metadata, identities)


def test_key_new_prints_a_key_whose_hash_matches() -> None:
    import json

    made = CliRunner().invoke(main, ["key", "new", "--json"])
    assert made.exit_code == 0
    pair = json.loads(made.output)
    assert (
        pair["api_key"].startswith("brein_") and len(pair["api_key"]) > 40 and key_hash(pair["api_key"]) == pair["api_key_sha256"]
    )
    hashed = CliRunner().invoke(main, ["key", "hash"], input=pair["api_key"] + "\n")
    assert hashed.exit_code == 0 and hashed.output.strip() == pair["api_key_sha256"]


def test_the_readme_production_config_is_valid() -> None:
    import re
    import tomllib

    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    section = readme.split("## Running it in production", 1)[1]
    snippet = tomllib.loads(re.search(r"```toml\n(.*?)```", section, re.S).group(1))  # type: ignore[union-attr]
    data = example_data()
    data["server"].update(snippet.pop("server"))
    config = parse_config({**data, **snippet})
    assert config.tls is not None and config.security is not None and config.privacy.pseudonymise
    assert set(config.security.callers) == {"webshop", "ops-desk"}


def _broken_files(directory: Path) -> dict[str, tuple[str, str]]:
    """Configs `brein serve` cannot start with, by the files they name, and what is said."""
    ca = CertificateAuthority(directory / "pki")
    server, other = ca.server(), CertificateAuthority(directory / "other", name="Other CA").server()
    tls = '[tls]\ncert_file = "{}"\nkey_file = "{}"\n'
    not_a_pair = "are not a certificate and its unencrypted private key"
    return {
        "another certificate's key": (tls.format(server.cert_file, other.key_file), not_a_pair),
        "certificate and key swapped": (tls.format(server.key_file, server.cert_file), not_a_pair),
        "a key as the client CA": (tls.format(server.cert_file, server.key_file) + f'client_ca_file = "{server.key_file}"\n',
                                   f"tls.client_ca_file: {server.key_file} holds no CA certificate"),
        "no pseudonymisation key file": ('[privacy]\npseudonymise = true\nkey_file = "/nonexistent/brein.key"\n',
                                         "privacy.key_file: cannot read /nonexistent/brein.key"),
    }  # fmt: skip


@pytest.mark.parametrize("case", ["another certificate's key", "certificate and key swapped", "a key as the client CA",
                                  "no pseudonymisation key file"])  # fmt: skip
def test_check_refuses_the_files_serve_cannot_start_with_and_serve_refuses_them_first(tmp_path: Path, case: str) -> None:
    """`brein check` said OK; `brein serve` created the store and then blamed the address ("gRPC
    could not bind it") for a key that is not the certificate's or a CA file that holds a key."""
    section, said = _broken_files(tmp_path)[case]
    config = tmp_path / "brein.toml"
    config.write_text(EXAMPLE.read_text().replace("127.0.0.1:50051", "127.0.0.1:0").replace("127.0.0.1:9464", "127.0.0.1:0")
                      + "\n" + section)  # fmt: skip
    checked = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert checked.exit_code == 1 and said in checked.output
    serve = [sys.executable, "-m", "serving", "serve", "--config", "brein.toml"]
    served = subprocess.run(serve, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert served.returncode == 1 and said in served.stderr
    assert not (tmp_path / "var" / "brein.db").exists()  # refused before anything started
