"""Arbitrary requests at a live server: every one is answered OK or INVALID_ARGUMENT."""

from __future__ import annotations

import hashlib

import grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from serving.pb.brein.v1 import brein_pb2 as pb
from tests.conftest import T0, LiveServer

text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
long_or_short_text = st.one_of(text, st.text(alphabet="ab", min_size=1020, max_size=1030))
channel = st.one_of(st.sampled_from(["web", "app", "call_centre", "campaign"]), text)
action = st.one_of(st.sampled_from(["do_nothing", "renewal/email/morning", "sim_only/sms/evening"]), text)
number = st.floats(allow_nan=True, allow_infinity=True)
seconds = st.one_of(st.none(), st.integers(min_value=-(2**40), max_value=2**40), st.floats(T0 - 1e8, T0 + 4e7))
consent = st.integers(min_value=-3, max_value=5)


@st.composite
def decide_requests(draw: st.DrawFn) -> pb.DecideRequest:
    request = pb.DecideRequest(
        request_id=draw(text),
        customer_id=draw(long_or_short_text),
        channel=draw(channel),
        context=pb.Context(
            numeric=draw(st.dictionaries(text, number, max_size=8)),
            categorical=draw(st.dictionaries(text, long_or_short_text, max_size=4)),
        ),
        candidate_actions=draw(st.lists(action, max_size=3)),
        consent=pb.Consent(
            personalisation=draw(consent),
            contact=draw(st.dictionaries(st.one_of(st.sampled_from(["email", "sms"]), text), consent, max_size=3)),
        ),
    )
    at = draw(seconds)
    if at is not None:
        request.event_time.seconds = int(at)
    return request


@st.composite
def outcome_requests(draw: st.DrawFn) -> pb.ReportOutcomeRequest:
    request = pb.ReportOutcomeRequest(
        outcome_id=draw(text),
        customer_id=draw(text),
        type=draw(st.one_of(st.sampled_from(["contract_renewal", "complaint"]), text)),
        decision_id=draw(text),
    )
    value = draw(st.one_of(st.none(), number))
    if value is not None:
        request.value = value
    at = draw(seconds)
    if at is not None:
        request.event_time.seconds = int(at)
    return request


ACCEPTABLE = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT}


def _call(method: object, request: object) -> grpc.StatusCode:
    try:
        method(request)  # type: ignore[operator]
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=decide_requests())
def test_any_decide_request_gets_ok_or_invalid_argument(live: LiveServer, request: pb.DecideRequest) -> None:
    assert _call(live.stub.Decide, request) in ACCEPTABLE


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=outcome_requests())
def test_any_outcome_report_gets_ok_or_invalid_argument(live: LiveServer, request: pb.ReportOutcomeRequest) -> None:
    # A repeated outcome_id with other content is a conflict, not bad input: give each example its own id.
    if request.outcome_id:
        request.outcome_id += hashlib.sha256(request.SerializeToString()).hexdigest()
    assert _call(live.stub.ReportOutcome, request) in ACCEPTABLE
