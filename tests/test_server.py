"""DecisionService on a live server on loopback: the contract, health, reflection, bad input."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.descriptor_pb2 import FileDescriptorProto
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from bandit.config import parse_config
from bandit.decider import MAX_IN_FLIGHT
from bandit.errors import InvalidRequest
from brain.core import Brain
from brain.worker import Worker
from reward.ingest import OutcomeReport
from serving import converters
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.servicer import BATCH_SLICE
from store.records import decision_id_for
from tests.conftest import T0, Clock, LiveServer, example_data, sqlite_count

DAY = 86_400.0


def decide_request(customer: str = "c1", request_id: str = "r1", **overrides: Any) -> pb.DecideRequest:
    message = pb.DecideRequest(
        request_id=request_id,
        customer_id=customer,
        channel="app",
        event_time=converters.timestamp(T0),
        context=pb.Context(numeric={"months_to_contract_end": 2.0}, categorical={"plan": "basic", "has_app": "yes"}),
        consent=pb.Consent(personalisation=pb.CONSENT_STATE_GRANTED),
    )
    for name, value in overrides.items():
        if isinstance(value, pb.Context | pb.Consent | Timestamp):
            getattr(message, name).CopyFrom(value)
        elif name == "candidate_actions":
            message.candidate_actions[:] = value
        else:
            setattr(message, name, value)
    return message


def test_decide_returns_a_logged_decision(live: LiveServer) -> None:
    writes_before = live.sample("brein_store_committed_writes_total")
    response = live.stub.Decide(decide_request())
    assert response.decision_id and response.policy_id == "champion"
    assert response.action.id in {r.action_id for r in response.ranking}
    assert sum(r.probability for r in response.ranking) == pytest.approx(1.0)
    assert [r.probability for r in response.ranking] == sorted((r.probability for r in response.ranking), reverse=True)
    assert response.probability == pytest.approx(next(r.probability for r in response.ranking if r.action_id == response.action.id))
    if not response.action.do_nothing:
        assert response.action.send_at.seconds >= int(T0)
    again = live.stub.Decide(decide_request())
    assert again.replayed and again.decision_id == response.decision_id and again.action == response.action
    record = live.running.brain.store.decisions.decision(response.decision_id)
    assert record is not None and record.customer_id == "c1"
    assert live.sample("brein_decide_latency_seconds_count") == 2
    assert live.sample("brein_decisions_total", {"action": response.action.id, "channel": response.action.channel, "policy": "champion"}) == 1
    assert live.sample("brein_store_committed_writes_total") == writes_before + 1


def test_outcome_activation_and_explain(live: LiveServer) -> None:
    decision = live.stub.Decide(decide_request())
    outcome = pb.ReportOutcomeRequest(outcome_id="o1", customer_id="c1", type="contract_renewal", decision_id=decision.decision_id,
                                      event_time=converters.timestamp(T0 + 3 * DAY))  # fmt: skip
    first = live.stub.ReportOutcome(outcome)
    assert not first.duplicate and first.value == 240.0
    assert live.stub.ReportOutcome(outcome).duplicate
    outcome.value = 100.0
    with pytest.raises(grpc.RpcError) as conflict:
        live.stub.ReportOutcome(outcome)
    assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert live.sample("brein_outcomes_total", {"type": "contract_renewal"}) == 1
    activation = pb.ActivateRequest(decision_id=decision.decision_id, event_time=converters.timestamp(T0 + 60))
    assert not live.stub.Activate(activation).duplicate
    assert live.stub.Activate(activation).duplicate
    explanation = live.stub.Explain(pb.ExplainRequest(decision_id=decision.decision_id))
    assert explanation.action == decision.action and explanation.probability == decision.probability
    assert explanation.personalised and explanation.customer_id == "c1"
    assert {f.name for f in explanation.features} >= {"months_to_contract_end", "plan", "touchpoint", "hour"}
    assert len(explanation.eligible) + len(explanation.removed) == len(live.running.brain.catalog)
    assert "cold start" in explanation.contributions_note


def test_an_outcome_names_a_decision_of_its_customer_made_before_it(live: LiveServer) -> None:
    """Any other decision id would be stored and never credited (the joiner credits a named decision
    of the outcome's customer, in its window): refused, and nothing is stored."""
    decision = live.stub.Decide(decide_request(event_time=converters.timestamp(T0)))
    other = live.stub.Decide(decide_request(customer_id="c2", request_id="r2", event_time=converters.timestamp(T0)))
    named = {"customer_id": "c1", "type": "contract_renewal", "event_time": converters.timestamp(T0 + DAY)}
    refused = [
        ({"decision_id": "nope"}, grpc.StatusCode.NOT_FOUND, "no decision 'nope' for this customer_id"),
        ({"decision_id": other.decision_id}, grpc.StatusCode.NOT_FOUND, "for this customer_id"),
        ({"decision_id": decision.decision_id, "event_time": converters.timestamp(T0 - 60)}, grpc.StatusCode.INVALID_ARGUMENT,
         "event_time: the outcome is dated 60.000 s before the decision it names"),
        ({"decision_id": decision.decision_id, "event_time": converters.timestamp(T0)}, grpc.StatusCode.INVALID_ARGUMENT,
         "dated 0.000 s before the decision it names"),
    ]  # fmt: skip
    for i, (fields, code, details) in enumerate(refused):
        with pytest.raises(grpc.RpcError) as error:
            live.stub.ReportOutcome(pb.ReportOutcomeRequest(**{**named, "outcome_id": f"o{i}", **fields}))
        assert error.value.code() == code and details in error.value.details()
    assert live.running.brain.store.joins.outcome_horizon() == 0
    accepted = live.stub.ReportOutcome(pb.ReportOutcomeRequest(**named, outcome_id="o", decision_id=decision.decision_id))
    assert not accepted.duplicate


def test_a_direct_outcome_must_name_its_decision(make_brain: Callable[..., Brain]) -> None:
    data = example_data()
    data["outcomes"]["sim_activation"]["attribution"] = "direct"
    brain = make_brain(parse_config(data))
    with pytest.raises(InvalidRequest, match="decision_id: required: outcome type 'sim_activation' is credited only to"):
        brain.report_outcome(OutcomeReport("o", "c1", "sim_activation"))


def test_a_retried_report_is_a_duplicate_whatever_the_servers_clock_says(live: LiveServer, clock: Clock) -> None:
    """A client resends the same bytes a second later, without value or event time (the server fills
    them in): a duplicate, not ALREADY_EXISTS. Other content it sends is refused."""
    decision = live.stub.Decide(decide_request())
    report = pb.ReportOutcomeRequest(outcome_id="o-retry", customer_id="c1", type="contract_renewal").SerializeToString()
    activate = pb.ActivateRequest(decision_id=decision.decision_id).SerializeToString()

    def send(method: str, body: bytes, answer: Any) -> Any:  # the bytes as they are, not a message built again
        return live.channel.unary_unary(f"/brein.v1.DecisionService/{method}", response_deserializer=answer.FromString)(body)

    first = send("ReportOutcome", report, pb.ReportOutcomeResponse)
    assert not first.duplicate and not send("Activate", activate, pb.ActivateResponse).duplicate
    clock.now += 1.0
    again = send("ReportOutcome", report, pb.ReportOutcomeResponse)
    assert again.duplicate and again.value == first.value
    assert send("Activate", activate, pb.ActivateResponse).duplicate
    same = {"outcome_id": "o-retry", "customer_id": "c1", "type": "contract_renewal"}
    # the value the server filled in, sent; the time it filled in, sent; a decision named
    for changed in ({"value": 240.0}, {"event_time": converters.timestamp(clock.now)}, {"decision_id": decision.decision_id}):
        other = pb.ReportOutcomeRequest(**same, **changed)
        with pytest.raises(grpc.RpcError) as conflict:
            live.stub.ReportOutcome(other)
        assert conflict.value.code() == grpc.StatusCode.ALREADY_EXISTS, changed
    assert live.sample("brein_outcomes_total", {"type": "contract_renewal"}) == 1 and live.sample("brein_activations_total") == 1


@pytest.mark.parametrize("make_brain", ["sqlite", "postgres"], indirect=True)
def test_decide_batch_streams_results_in_order_with_item_errors(live: LiveServer) -> None:
    chunks = [
        pb.DecideBatchRequest(items=[decide_request(f"c{i}", f"b{i}") for i in range(50)]),
        pb.DecideBatchRequest(items=[decide_request("c-bad", "bad", channel="fax"), decide_request("c60", "b60")]),
    ]
    responses = list(live.stub.DecideBatch(iter(chunks)))
    assert [len(r.results) for r in responses] == [50, 2]
    assert all(r.HasField("decision") for r in responses[0].results)
    bad, good = responses[1].results
    assert bad.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "unknown touchpoint 'fax'" in bad.error.message
    assert good.decision.decision_id
    assert live.running.brain.store.decisions.decision_count() == 51
    assert live.sample("brein_rpc_errors_total", {"method": "DecideBatch", "code": "INVALID_ARGUMENT"}) == 1


def test_a_customer_past_its_decisions_in_flight_is_refused_per_item_and_served_again_once_they_are_logged(
    live: LiveServer,
) -> None:
    # One chunk asks for more decisions of one customer than it may have in flight: those past the
    # bound are refused (RESOURCE_EXHAUSTED, saying to send them again), the others are made; once
    # the chunk is answered they are logged, and the customer is served again.
    chunk = pb.DecideBatchRequest(items=[decide_request("loop", f"l{i}") for i in range(MAX_IN_FLIGHT + 5)])
    (response,) = live.stub.DecideBatch(iter([chunk]))
    made, refused = response.results[:MAX_IN_FLIGHT], response.results[MAX_IN_FLIGHT:]
    assert all(r.HasField("decision") for r in made)
    busy = f"the customer has {MAX_IN_FLIGHT} decisions in flight, the most one may have"
    exhausted = grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert {(r.error.code, r.error.message.split(":")[0]) for r in refused} == {(exhausted, busy)}
    assert live.sample("brein_rpc_errors_total", {"method": "DecideBatch", "code": "RESOURCE_EXHAUSTED"}) == 5
    assert live.stub.Decide(decide_request("loop", "after")).decision_id
    assert live.running.brain.store.decisions.decision_count() == MAX_IN_FLIGHT + 1


@pytest.mark.parametrize("make_brain", ["sqlite", "postgres"], indirect=True)
def test_decide_batch_answers_chunks_in_order_and_a_cancelled_stream_leaves_the_server_serving(live: LiveServer) -> None:
    def chunks(tag: str) -> list[pb.DecideBatchRequest]:
        items = [[decide_request(f"{tag}{c}-{i}", f"{tag}{c}-{i}") for i in range(120)] for c in range(6)]
        return [pb.DecideBatchRequest(items=chunk) for chunk in items]

    responses = list(live.stub.DecideBatch(iter(chunks("k"))))
    assert [[r.decision.decision_id for r in response.results] for response in responses] == [
        [decision_id_for(f"k{c}-{i}") for i in range(120)] for c in range(6)
    ]
    stream = live.stub.DecideBatch(iter(chunks("x")))
    next(stream)
    stream.cancel()  # the caller goes away with chunks decided and not answered yet
    assert live.stub.Decide(decide_request("after", "after")).decision_id
    logged = live.running.brain.store.decisions.decisions_by_request([f"k{c}-{i}" for c in range(6) for i in range(120)])
    assert len(logged) == 720


@pytest.mark.parametrize("make_brain", ["sqlite", "postgres"], indirect=True)
def test_a_decide_batch_chunk_is_one_write(live: LiveServer) -> None:
    """On PostgreSQL a chunk is decided in one call in the decide pool (one read, one write); on
    SQLite in slices of BATCH_SLICE on the event loop, whose decisions are held for one write."""
    chunk = pb.DecideBatchRequest(items=[decide_request(f"w{i}", f"w{i}") for i in range(2 * BATCH_SLICE + 20)])
    before = live.sample("brein_store_committed_writes_total")
    (response,) = live.stub.DecideBatch(iter([chunk]))
    assert all(r.HasField("decision") for r in response.results) and len(response.results) == 2 * BATCH_SLICE + 20
    assert live.sample("brein_store_committed_writes_total") - before == 1


GRANTED, DENIED = pb.CONSENT_STATE_GRANTED, pb.CONSENT_STATE_DENIED
REUSED = [
    ({"customer": "c2"}, "customer_id"),
    ({"channel": "web"}, "channel"),
    ({"event_time": converters.timestamp(T0 + 60)}, "event_time"),
    ({"candidate_actions": ["renewal/sms/morning"]}, "candidate_actions"),
    ({"consent": pb.Consent(personalisation=DENIED)}, "consent.personalisation"),
    ({"consent": pb.Consent(personalisation=GRANTED, contact={"email": DENIED})}, "consent.contact"),
    ({"context": pb.Context(numeric={"months_to_contract_end": 3.0}, categorical={"plan": "basic", "has_app": "yes"})},
     "context"),
    ({"channel": "web", "candidate_actions": ["renewal/sms/morning"]}, "channel, candidate_actions"),
]  # fmt: skip


@pytest.mark.parametrize("make_brain", ["sqlite", "postgres"], indirect=True)
def test_a_request_id_reused_for_another_request_is_already_exists_naming_what_differs(live: LiveServer, clock: Clock) -> None:
    """A logged request id sent with another channel, consent or candidates replayed its decision
    (an e-mail to a customer whose e-mail consent the second request denied); only another customer
    was refused. The same request sent again, with or without the time the server filled in, replays."""
    first = live.stub.Decide(decide_request())
    for change, fields in REUSED:
        with pytest.raises(grpc.RpcError) as error:
            live.stub.Decide(decide_request(**change))
        message = f"request_id 'r1' was already used for a decision with another {fields}: a request id names one request"
        assert error.value.code() == grpc.StatusCode.ALREADY_EXISTS and error.value.details().startswith(message)
        (response,) = live.stub.DecideBatch(iter([pb.DecideBatchRequest(items=[decide_request(**change)])]))
        assert response.results[0].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]
        assert response.results[0].error.message.startswith(message)
    again = live.stub.Decide(decide_request())
    assert again.replayed and again.decision_id == first.decision_id
    untimed = decide_request("c3", "r3")
    untimed.ClearField("event_time")
    made = live.stub.Decide(untimed)
    clock.now += 60
    chunk = pb.DecideBatchRequest(items=[untimed, decide_request("c4", "r4"), decide_request("c5", "r4")])
    (retried,) = live.stub.DecideBatch(iter([chunk]))
    assert retried.results[0].decision.replayed and retried.results[0].decision.decision_id == made.decision_id
    assert retried.results[2].error.code == grpc.StatusCode.ALREADY_EXISTS.value[0]  # against an item of the same chunk
    assert "another customer_id" in retried.results[2].error.message
    assert live.running.brain.store.decisions.decision_count() == 3


def test_a_decide_batch_chunk_whose_answer_might_not_fit_is_refused_before_anything_is_decided(
    make_brain: Any, metrics: Metrics
) -> None:
    """A chunk whose answer was over limits.max_message_bytes was decided and logged in full, and its
    caller got RESOURCE_EXHAUSTED and none of the decisions (8,000 items at 4 MiB). Now a chunk is
    refused when its answer could be over the limit: each item's answer is bounded (it ranks at most
    every action of the catalog), so a chunk of up to limit // bound items is answered."""
    data = example_data()
    data["limits"] = {"max_message_bytes": 64 * 1024}
    brain = make_brain(parse_config(data), on_commit=metrics.on_commit)
    bound = converters.largest_result_bytes(brain.catalog)
    most = 64 * 1024 // bound
    live = LiveServer(brain, metrics)
    try:
        full = pb.DecideBatchRequest(items=[decide_request(f"f{i}", f"f{i}") for i in range(most)])
        (answer,) = live.stub.DecideBatch(iter([full]))
        assert [r.HasField("decision") for r in answer.results] == [True] * most
        assert max(pb.DecideBatchResponse(results=[r]).ByteSize() for r in answer.results) <= bound
        long_error = pb.DecideBatchResult(error=converters.item_error(3, "é" * 5000))  # clipped on a character
        assert pb.DecideBatchResponse(results=[long_error]).ByteSize() <= bound and long_error.error.message == "é" * 256
        over = pb.DecideBatchRequest(items=[decide_request(f"o{i}", f"o{i}") for i in range(most + 1)])
        with pytest.raises(grpc.RpcError) as error:
            list(live.stub.DecideBatch(iter([over])))
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details() == (
            f"items: {most + 1} items in one chunk, more than the {most} whose answer fits in limits.max_message_bytes "
            f"(65,536 bytes; up to {bound:,} bytes an item): split it into chunks of at most {most} items"
        )
        assert brain.store.decisions.decision_count() == most
    finally:
        live.stop()


BAD_INPUT = [
    ("Decide", decide_request(customer=""), grpc.StatusCode.INVALID_ARGUMENT, "customer_id: is required"),
    ("Decide", decide_request(channel="fax"), grpc.StatusCode.INVALID_ARGUMENT, "channel: unknown touchpoint 'fax'"),
    ("Decide", decide_request(candidate_actions=["x/y/z"]), grpc.StatusCode.INVALID_ARGUMENT, "candidate_actions: unknown action id 'x/y/z'"),
    ("Decide", decide_request(context=pb.Context(numeric={"a": float("nan")})), grpc.StatusCode.INVALID_ARGUMENT, "context.numeric['a']"),
    ("Decide", decide_request(context=pb.Context(numeric={"a": float("-inf")})), grpc.StatusCode.INVALID_ARGUMENT, "finite"),
    ("Decide", decide_request(context=pb.Context(numeric={f"f{i}": 1.0 for i in range(1001)})), grpc.StatusCode.INVALID_ARGUMENT,
     "at most 1000 allowed"),
    ("Decide", decide_request(context=pb.Context(categorical={"k": "v" * 1025})), grpc.StatusCode.INVALID_ARGUMENT, "longer than 1024 bytes"),
    ("Decide", decide_request(context=pb.Context(numeric={"plan": 2.0}, categorical={"plan": "basic"})),
     grpc.StatusCode.INVALID_ARGUMENT, "context: 'plan' is both context.numeric['plan'] and context.categorical['plan']"),
    ("Decide", decide_request(event_time=converters.timestamp(T0 + 400 * DAY)), grpc.StatusCode.INVALID_ARGUMENT,
     "s ahead of the server's clock, at most 300 s allowed"),
    ("Decide", decide_request(event_time=converters.timestamp(900_000_000)), grpc.StatusCode.INVALID_ARGUMENT, "event_time: before 2000"),
    ("Decide", decide_request(event_time=Timestamp(seconds=int(T0), nanos=-1)), grpc.StatusCode.INVALID_ARGUMENT,
     "event_time.nanos: expected 0 to 999,999,999, got -1"),
    ("Decide", decide_request(event_time=Timestamp(seconds=int(T0), nanos=2**31 - 1)), grpc.StatusCode.INVALID_ARGUMENT,
     "event_time.nanos: expected 0 to 999,999,999, got 2,147,483,647"),
    ("ReportOutcome", pb.ReportOutcomeRequest(outcome_id="o", customer_id="c", type="complaint",
                                              event_time=Timestamp(seconds=int(T0), nanos=1_000_000_000)),
     grpc.StatusCode.INVALID_ARGUMENT, "event_time.nanos: expected 0 to 999,999,999, got 1,000,000,000"),
    ("Activate", pb.ActivateRequest(decision_id="d", event_time=Timestamp(seconds=int(T0), nanos=-999_999_999)),
     grpc.StatusCode.INVALID_ARGUMENT, "event_time.nanos"),
    ("Decide", decide_request(consent=pb.Consent(personalisation=7)), grpc.StatusCode.INVALID_ARGUMENT, "consent.personalisation"),
    ("ReportOutcome", pb.ReportOutcomeRequest(outcome_id="o", customer_id="c", type="party"), grpc.StatusCode.INVALID_ARGUMENT,
     "type: unknown outcome type 'party'"),
    ("ReportOutcome", pb.ReportOutcomeRequest(outcome_id="o", customer_id="c", type="contract_renewal", value=-5.0),
     grpc.StatusCode.INVALID_ARGUMENT, "does not allow a negative value"),
    ("ReportOutcome", pb.ReportOutcomeRequest(outcome_id="o", customer_id="c", type="complaint", value=float("nan")),
     grpc.StatusCode.INVALID_ARGUMENT, "value: must be a finite number"),
    ("ReportOutcome", pb.ReportOutcomeRequest(outcome_id="", customer_id="c", type="complaint"), grpc.StatusCode.INVALID_ARGUMENT,
     "outcome_id: is required"),
    ("Activate", pb.ActivateRequest(decision_id="nope"), grpc.StatusCode.NOT_FOUND, "no decision 'nope'"),
    ("Explain", pb.ExplainRequest(decision_id="nope"), grpc.StatusCode.NOT_FOUND, "no decision 'nope'"),
]  # fmt: skip


@pytest.mark.parametrize(("method", "message", "code", "details"), BAD_INPUT, ids=[f"{m}:{d}" for m, _, _, d in BAD_INPUT])
def test_bad_input_is_refused_counted_and_harmless(live: LiveServer, method: str, message: Any, code: grpc.StatusCode, details: str) -> None:
    with pytest.raises(grpc.RpcError) as error:
        getattr(live.stub, method)(message)
    assert error.value.code() == code
    assert details in error.value.details()
    assert live.sample("brein_rpc_errors_total", {"method": method, "code": code.name}) == 1
    store = live.running.brain.store
    assert store.decisions.decision_count() == 0 and store.joins.outcome_horizon() == 0
    assert live.stub.Decide(decide_request()).decision_id  # still serving


def test_health_and_reflection(live: LiveServer) -> None:
    health = health_pb2_grpc.HealthStub(live.channel)
    for service in ("", "brein.v1.DecisionService"):
        assert health.Check(health_pb2.HealthCheckRequest(service=service)).status == health_pb2.HealthCheckResponse.SERVING
    reflect = reflection_pb2_grpc.ServerReflectionStub(live.channel)
    responses = list(reflect.ServerReflectionInfo(iter([
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="brein.v1.DecisionService"),
    ])))  # fmt: skip
    services = {s.name for s in responses[0].list_services_response.service}
    assert {"brein.v1.DecisionService", "grpc.health.v1.Health"} <= services
    descriptor = FileDescriptorProto.FromString(responses[1].file_descriptor_response.file_descriptor_proto[0])
    assert descriptor.package == "brein.v1"
    assert "Decide" in {m.name for m in descriptor.service[0].method}


def test_a_plain_reflection_client_needs_no_generated_code(live: LiveServer) -> None:
    from grpc_requests import Client  # the README tour's "plain gRPC client via reflection"

    client = Client.get_by_endpoint(live.address)
    assert "brein.v1.DecisionService" in client.service_names
    response = client.request("brein.v1.DecisionService", "Decide", {"customer_id": "c7", "channel": "web"})
    assert response["decision_id"] and response["ranking"]


def test_forget_deletes_the_customer_and_serves_them_as_new(live: LiveServer) -> None:
    brain = live.running.brain
    first = live.stub.Decide(decide_request("c1", "f1", candidate_actions=["sim_only/sms/morning"]))
    live.stub.Decide(decide_request("c2", "other"))
    live.stub.ReportOutcome(pb.ReportOutcomeRequest(outcome_id="o1", customer_id="c1", type="complaint", event_time=converters.timestamp(T0)))
    live.stub.Activate(pb.ActivateRequest(decision_id=first.decision_id, event_time=converters.timestamp(T0)))
    Worker(brain.config, brain.store).joiner.run(until=T0 + 60 * DAY)
    response = live.stub.Forget(pb.ForgetRequest(customer_id="c1"))
    assert (response.decisions, response.outcomes, response.activations, response.joined_examples) == (1, 1, 1, 1)
    with pytest.raises(grpc.RpcError) as error:
        live.stub.Explain(pb.ExplainRequest(decision_id=first.decision_id))
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    later = brain.decider.decide_and_wait(converters.decision_request(decide_request("c1", "f2", event_time=converters.timestamp(T0 + DAY))))
    assert "h" not in later.record.features  # no history: a new customer, no quiet period after the forgotten complaint
    assert len(later.record.eligible) > 1
    assert [(e.action, e.subject) for e in brain.store.audit.entries("forget")] == [("forget", "c1")]
    assert sqlite_count(brain.store, "decisions", "WHERE customer_id = 'c2'") == 1
    with pytest.raises(grpc.RpcError) as missing:
        live.stub.Forget(pb.ForgetRequest(customer_id=""))
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT



def _contact(live: LiveServer, customer: str, at: float, action: str) -> None:
    """Decide with one candidate (and do-nothing) at times from ``at`` on until the contact is made."""
    for i in range(60):
        response = live.stub.Decide(decide_request(customer, f"{customer}-{at}-{i}", event_time=converters.timestamp(at + i),
                                                   candidate_actions=[action]))  # fmt: skip
        if not response.action.do_nothing:
            return
    raise AssertionError(f"no {action} in 60 tries")


def test_contact_policy_holds_for_decisions_arriving_out_of_event_time_order(live: LiveServer) -> None:
    """A channel logs later decisions first: an earlier one still counts them under the caps (2
    contacts in 7 days), and a complaint reported with a later time starts a quiet period for it."""
    _contact(live, "c7", T0 + 5 * 3600, "renewal/email/morning")
    _contact(live, "c7", T0 + 3 * DAY, "renewal/sms/morning")
    earlier = live.stub.Decide(decide_request("c7", "earlier", event_time=converters.timestamp(T0)))
    assert [r.action_id for r in earlier.ranking] == ["do_nothing"]
    explained = live.stub.Explain(pb.ExplainRequest(decision_id=earlier.decision_id))
    assert "contact cap: at most 2 contact(s) per 7 days" in {r.reason for r in explained.removed}
    complaint = pb.ReportOutcomeRequest(outcome_id="late-complaint", customer_id="c8", type="complaint",
                                        event_time=converters.timestamp(T0 + DAY))  # fmt: skip
    live.stub.ReportOutcome(complaint)
    quiet = live.stub.Decide(decide_request("c8", "quiet", event_time=converters.timestamp(T0)))
    assert [r.action_id for r in quiet.ranking] == ["do_nothing"]
    reasons = {r.reason for r in live.stub.Explain(pb.ExplainRequest(decision_id=quiet.decision_id)).removed}
    assert "quiet period: complaint 1.0 days after this decision's time, no contact for 30 days" in reasons


@pytest.mark.parametrize("make_brain", ["postgres"], indirect=True)
def test_a_stopped_server_on_postgresql_leaves_no_decide_thread(brain: Brain, metrics: Metrics) -> None:
    """On PostgreSQL Decides run in a pool of threads; stopping the server lets them go (they were left
    idle for the process's life, one pool a server started)."""
    before = set(threading.enumerate())
    server = LiveServer(brain, metrics)
    assert server.stub.Decide(decide_request()).decision_id
    started = {t for t in set(threading.enumerate()) - before if t.name.startswith("brein-decide")}
    assert started
    server.stop()
    assert not [t for t in started if t.is_alive()]
