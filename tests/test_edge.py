"""Issue 15 at the serving edge, against live servers: values past their bounds, corrupt request
bytes, and input echoed in error messages. Each test failed on the code before the fix."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest

from brain.core import Brain
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from tests.conftest import CREDENTIALS, LiveServer, store_rows
from tests.test_online import config_with, join_and_learn, simulate
from tests.test_server import decide_request

GARBAGE = bytes.fromhex("ff ff ff ff")
DECIDE = "/brein.v1.DecisionService/Decide"
DECIDE_BATCH = "/brein.v1.DecisionService/DecideBatch"


def _error(call: Callable[..., Any], *args: Any, **kwargs: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        result = call(*args, **kwargs)
        if isinstance(result, Iterator):
            list(result)  # a stream: its error comes while reading it
    return error.value


def _stored(live: LiveServer) -> int:
    [(count,)] = store_rows(live.running.brain.store, "SELECT (SELECT COUNT(*) FROM decisions) + (SELECT COUNT(*) FROM outcomes)")
    return int(count)


# -- 1. an outcome value beyond its type's bound ---------------------------------------------------

OUT_OF_RANGE_OUTCOMES = [
    ("sim_activation", 1e308, "within ±8000 (outcomes.sim_activation.max_value), got 1e+308"),
    ("sim_activation", 1e40, "got 1e+40"),
    ("contract_renewal", 24_000.5, "within ±24000"),
    ("complaint", -1e308, "within ±5000"),
    ("complaint", float("inf"), "got inf"),
]


@pytest.mark.parametrize(
    ("type_", "value", "details"), OUT_OF_RANGE_OUTCOMES, ids=[f"{t}:{v:g}" for t, v, _ in OUT_OF_RANGE_OUTCOMES]
)
def test_an_outcome_value_beyond_its_bound_is_refused_and_counted(
    live: LiveServer, type_: str, value: float, details: str
) -> None:
    report = pb.ReportOutcomeRequest(outcome_id="o1", customer_id="c1", type=type_, value=value)
    error = _error(live.stub.ReportOutcome, report)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("value: must be a finite number within ±") and details in error.details()
    assert live.sample("brein_refused_values_total", {"kind": "outcome_value"}) == 1
    assert live.sample("brein_rpc_errors_total", {"method": "ReportOutcome", "code": "INVALID_ARGUMENT"}) == 1
    assert _stored(live) == 0


def test_an_outcome_value_at_its_bound_is_stored(live: LiveServer) -> None:
    report = pb.ReportOutcomeRequest(outcome_id="o1", customer_id="c1", type="sim_activation", value=8000.0)
    response = live.stub.ReportOutcome(report)
    assert response.value == 8000.0 and _stored(live) == 1


# -- 2. a numeric feature VW cannot hold, known or unknown, on a trained model -------------------

OUT_OF_RANGE_FEATURES = [
    ("lifetime_spend", 3.5e38),  # not in the config, so encoded raw: INTERNAL before the bound
    ("months_to_contract_end", 3.5e38),  # configured (binned)
    ("lifetime_spend", -1e13),
    ("lifetime_spend", float("-inf")),
]


def test_numeric_features_beyond_the_bound_are_refused_on_a_trained_model(
    make_brain: Callable[..., Brain], metrics: Metrics
) -> None:
    brain = make_brain(config_with(snapshot_every=50), on_commit=metrics.on_commit)
    simulate(brain)
    join_and_learn(brain)
    assert not brain.decider.policy.model.cold
    live = LiveServer(brain, metrics)
    try:
        before = _stored(live)
        for i, (name, value) in enumerate(OUT_OF_RANGE_FEATURES):
            error = _error(live.stub.Decide, decide_request(f"f{i}", f"f{i}", context=pb.Context(numeric={name: value})))
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (name, value, error.details())
            assert error.details() == f"context.numeric[{name!r}]: must be a finite number within ±1e+12, got {value:g}"
        refused = len(OUT_OF_RANGE_FEATURES)
        assert live.sample("brein_refused_values_total", {"kind": "numeric_feature"}) == refused
        assert live.sample("brein_rpc_errors_total", {"method": "Decide", "code": "INVALID_ARGUMENT"}) == refused
        at_bound = live.stub.Decide(decide_request("edge", "edge", context=pb.Context(numeric={"lifetime_spend": -1e12})))
        assert sum(r.probability for r in at_bound.ranking) == pytest.approx(1.0)
        # DecideBatch: the item is refused, the others decided.
        contexts = [pb.Context(numeric={"lifetime_spend": v}) for v in (1.0, 3.5e38, 2.0)]
        chunk = [decide_request(f"b{i}", f"b{i}", context=context) for i, context in enumerate(contexts)]
        (response,) = live.stub.DecideBatch(iter([pb.DecideBatchRequest(items=chunk)]))
        first, bad, last = response.results
        assert first.HasField("decision") and last.HasField("decision")
        assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert bad.error.message.startswith("context.numeric['lifetime_spend']: must be a finite number within ±1e+12")
        assert live.sample("brein_refused_values_total", {"kind": "numeric_feature"}) == refused + 1
        assert _stored(live) == before + 3
    finally:
        live.stop()


# -- 3. corrupt request bytes: authenticated callers first, one WARNING line -----------------------


def test_corrupt_request_bytes_are_invalid_argument_for_callers_unauthenticated_for_others(
    secured_live: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    decide = secured_live.channel.unary_unary(DECIDE)
    batch = secured_live.channel.stream_stream(DECIDE_BATCH)
    with caplog.at_level(logging.INFO):
        codes = [_error(decide, GARBAGE, metadata=CREDENTIALS, timeout=5).code() for _ in range(500)]
        streamed = _error(batch, iter([GARBAGE]), metadata=CREDENTIALS, timeout=5)
        stranger = _error(decide, GARBAGE, timeout=5)
        stranger_stream = _error(batch, iter([GARBAGE]), timeout=5)
    assert set(codes) == {grpc.StatusCode.INVALID_ARGUMENT}
    assert _error(decide, GARBAGE, metadata=CREDENTIALS).details() == "request body: not a valid DecideRequest"
    assert streamed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert streamed.details() == "request body: not a valid DecideBatchRequest"
    assert stranger.code() == stranger_stream.code() == grpc.StatusCode.UNAUTHENTICATED
    assert secured_live.sample("brein_rpc_errors_total", {"method": "Decide", "code": "INVALID_ARGUMENT"}) == 501
    assert secured_live.sample("brein_rpc_errors_total", {"method": "DecideBatch", "code": "INVALID_ARGUMENT"}) == 1
    assert secured_live.sample("brein_rpc_errors_total", {"method": "Decide", "code": "UNAUTHENTICATED"}) == 1
    lines = [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert lines == [
        ("brein.security", "WARNING", "Decide request body of 4 bytes from tester does not decode"),
        ("brein.security", "WARNING", "DecideBatch request body of 4 bytes from tester does not decode"),
    ]
    assert secured_live.stub.Decide(decide_request(), metadata=CREDENTIALS).decision_id


# -- 6. no input echoed whole -----------------------------------------------------------------------


@pytest.mark.parametrize("length", [16 * 1024, 64 * 1024])
def test_an_overlong_explain_id_is_invalid_argument_with_a_short_message(live: LiveServer, length: int) -> None:
    error = _error(live.stub.Explain, pb.ExplainRequest(decision_id="x" * length))
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "decision_id: longer than 1024 bytes")
    assert live.sample("brein_refused_values_total", {"kind": "text"}) == 1


LONG = "y" * 1000
INVALID, NOT_FOUND = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
ECHOES = [
    ("Explain", pb.ExplainRequest(decision_id=LONG), NOT_FOUND, "decision_id: no decision"),
    ("Activate", pb.ActivateRequest(decision_id=LONG), NOT_FOUND, "decision_id: no decision"),
    ("Decide", decide_request(channel=LONG), INVALID, "channel: unknown touchpoint"),
    ("Decide", decide_request(candidate_actions=[LONG]), INVALID, "candidate_actions: unknown action id"),
    ("Decide", decide_request(context=pb.Context(numeric={LONG: float("nan")})), INVALID, "context.numeric["),
    ("Decide", decide_request(context=pb.Context(categorical={LONG: "z" * 1025})), INVALID, "context.categorical["),
    ("Decide", decide_request(consent=pb.Consent(contact={LONG: 9})), INVALID, "consent.contact["),
    ("Decide", decide_request(consent=pb.Consent(contact={LONG: 1})), INVALID, "consent.contact: unknown channel"),
    ("ReportOutcome", pb.ReportOutcomeRequest(outcome_id="o", customer_id="c", type=LONG), INVALID,
     "type: unknown outcome type"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "message", "code", "details"), ECHOES, ids=[f"{m}:{d}" for m, _, _, d in ECHOES])
def test_error_messages_quote_input_by_its_start_and_length(
    live: LiveServer, method: str, message: Any, code: grpc.StatusCode, details: str
) -> None:
    error = _error(getattr(live.stub, method), message)
    assert error.code() == code and details in error.details()
    assert f"'{'y' * 64}'... (1000 characters)" in error.details() and len(error.details()) < 250


def test_a_short_unknown_id_is_quoted_whole(live: LiveServer) -> None:
    error = _error(live.stub.Explain, pb.ExplainRequest(decision_id="nope"))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "decision_id: no decision 'nope' in the log")


# -- 7. text no store can keep ---------------------------------------------------------------------

NUL = "a\x00b"


@pytest.mark.parametrize("make_brain", ["sqlite", "postgres"], indirect=True)
def test_text_with_a_nul_character_is_invalid_argument_on_every_backend(live: LiveServer) -> None:
    """PostgreSQL's text cannot hold NUL (psycopg raised DataError: an internal error, nothing
    stored); SQLite's can. Both refuse it at the edge, so a request means the same on either."""
    calls = [
        (live.stub.Decide, decide_request(customer=NUL), "customer_id"),
        (live.stub.Decide, decide_request(request_id=NUL), "request_id"),
        (live.stub.Decide, decide_request(context=pb.Context(categorical={"plan": NUL})), "context.categorical['plan']"),
        (live.stub.Decide, decide_request(context=pb.Context(numeric={NUL: 1.0})), "context.numeric key"),
        (live.stub.ReportOutcome, pb.ReportOutcomeRequest(outcome_id=NUL, customer_id="c1", type="complaint"), "outcome_id"),
        (live.stub.ReportOutcome, pb.ReportOutcomeRequest(outcome_id="o1", customer_id=NUL, type="complaint"), "customer_id"),
        (live.stub.Activate, pb.ActivateRequest(decision_id=NUL), "decision_id"),
        (live.stub.Explain, pb.ExplainRequest(decision_id=NUL), "decision_id"),
        (live.stub.Forget, pb.ForgetRequest(customer_id=NUL), "customer_id"),
    ]
    for call, request, field in calls:
        error = _error(call, request, timeout=10)
        assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, f"{field}: contains a NUL character")
    assert _stored(live) == 0
    assert live.stub.Decide(decide_request()).decision_id
