"""Protobuf messages to core requests and core results to protobuf messages; nothing else."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from bandit.catalog import Catalog
from bandit.decider import PendingDecision
from bandit.errors import InvalidRequest, excerpt
from bandit.explain import Explanation
from bandit.requests import ConsentValue, DecisionRequest
from reward.ingest import ActivationReport, OutcomeReport
from serving.pb.brein.v1 import brein_pb2 as pb
from store.records import DecisionRecord, decision_id_for

CONSENT: dict[int, ConsentValue] = {
    pb.CONSENT_STATE_UNSPECIFIED: "unspecified",
    pb.CONSENT_STATE_GRANTED: "granted",
    pb.CONSENT_STATE_DENIED: "denied",
}


def _consent(field: str, value: int) -> ConsentValue:
    try:
        return CONSENT[value]
    except KeyError:
        raise InvalidRequest(field, f"unknown consent state {value}") from None


NANOS = 1_000_000_000


def epoch(message: object, field: str) -> float | None:
    """A Timestamp field as epoch seconds, or None when the field is absent. Its nanos must be a
    fraction of a second (0 to 999,999,999, as Timestamp defines them): others would move the time."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: Timestamp = getattr(message, field)
    if not 0 <= ts.nanos < NANOS:
        raise InvalidRequest(f"{field}.nanos", f"expected 0 to {NANOS - 1:,}, got {ts.nanos:,}")
    return float(ts.seconds + ts.nanos / 1e9)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    _set_timestamp(ts, seconds)
    return ts


def _set_timestamp(ts: Timestamp, seconds: float) -> None:
    whole = int(seconds // 1)
    ts.seconds, ts.nanos = whole, int(round((seconds - whole) * 1e9)) % NANOS


def decision_request(message: pb.DecideRequest) -> DecisionRequest:
    """The request as the core takes it; the context's features in the order of their names: protobuf
    iterates a map in an order of its own in each process, and the stored features, the VW line and so
    a replay's sums followed it (the same request on two replicas: exports differing byte for byte, and
    values trained on them in the eighth digit)."""
    consent, context = message.consent, message.context
    contact = {k: CONSENT.get(v) for k, v in consent.contact.items()}
    for k, v in contact.items():
        if v is None:
            _consent(f"consent.contact[{excerpt(k)}]", consent.contact[k])  # raises, naming the channel
    return DecisionRequest(
        customer_id=message.customer_id,
        touchpoint=message.channel,
        request_id=message.request_id,
        event_time=epoch(message, "event_time"),
        numeric=dict(sorted(context.numeric.items())),
        categorical=dict(sorted(context.categorical.items())),
        candidate_actions=tuple(message.candidate_actions),
        personalisation=_consent("consent.personalisation", consent.personalisation),
        contact_consent=contact,  # type: ignore[arg-type]  # no None left
    )


def action(record: DecisionRecord) -> pb.Action:
    message = pb.Action(id=record.action_id, offer=record.offer, channel=record.channel, send_slot=record.slot)
    message.do_nothing = record.action_id == "do_nothing"
    if record.send_at is not None:
        message.send_at.CopyFrom(timestamp(record.send_at))
    return message


def ranking(record: DecisionRecord) -> list[pb.RankedAction]:
    order = sorted(range(len(record.pmf)), key=lambda i: -record.pmf[i])
    return [pb.RankedAction(action_id=record.eligible[i], probability=record.pmf[i]) for i in order]


def decide_response(pending: PendingDecision) -> pb.DecideResponse:
    message = pb.DecideResponse()
    fill_decide_response(message, pending)
    return message


def fill_decide_response(message: pb.DecideResponse, pending: PendingDecision) -> None:
    """Set an empty DecideResponse's fields in place (a DecideBatch result's, say): no sub-message
    is built and then copied, on the path every decision takes."""
    record = pending.record
    message.decision_id = record.decision_id
    message.probability = record.probability
    message.policy_id = record.policy_id
    message.exploratory = record.exploratory
    message.model_version = record.model_version
    message.replayed = pending.replayed
    chosen = message.action
    chosen.id, chosen.offer, chosen.channel, chosen.send_slot = record.action_id, record.offer, record.channel, record.slot
    chosen.do_nothing = record.action_id == "do_nothing"
    if record.send_at is not None:
        _set_timestamp(chosen.send_at, record.send_at)
    pmf, eligible, ranked = record.pmf, record.eligible, message.ranking
    for i in sorted(range(len(pmf)), key=pmf.__getitem__, reverse=True):  # stable: ties keep their order
        entry = ranked.add()
        entry.action_id, entry.probability = eligible[i], pmf[i]


ERROR_MESSAGE_BYTES = 512
"""The most of its error message a DecideBatch item's error carries: an item's answer has a bound
(``largest_result_bytes``). Messages quote what a caller sent by an excerpt, so they are shorter."""
ANSWER_ID_CHARS = 64
"""The longest policy id (policies.registry.POLICY_ID) and model version an answer names: a served
model's version is 12 characters of its hash, or a built-in name ("cold-start")."""
LATEST_SECONDS = 2**35 - 1
"""A send time's seconds up to the year 3058, in as many bytes as these."""


def item_error(code: int, message: str) -> pb.ItemError:
    """A DecideBatch item's error, its message clipped to ERROR_MESSAGE_BYTES (on a character)."""
    clipped = message.encode("utf-8")[:ERROR_MESSAGE_BYTES].decode("utf-8", "ignore")
    return pb.ItemError(code=code, message=clipped)


def largest_result_bytes(catalog: Catalog) -> int:
    """The most bytes one DecideBatch result adds to its response: an error with the longest message,
    or a decision of the longest action fields that ranks every action of ``catalog`` and names the
    longest ids (a decision id is a 32-character hash)."""
    action_id, offer, channel, slot = (max((getattr(a, name) for a in catalog.actions), key=_utf8_length)
                                       for name in ("id", "offer", "channel", "slot"))  # fmt: skip
    send_at = Timestamp(seconds=LATEST_SECONDS, nanos=NANOS - 1)
    chosen = pb.Action(id=action_id, offer=offer, channel=channel, send_slot=slot, send_at=send_at, do_nothing=True)
    decision = pb.DecideResponse(
        decision_id=decision_id_for(""), action=chosen, probability=0.5, policy_id="x" * ANSWER_ID_CHARS,
        ranking=[pb.RankedAction(action_id=a.id, probability=0.5) for a in catalog.actions], exploratory=True,
        model_version="x" * ANSWER_ID_CHARS, replayed=True,
    )  # fmt: skip
    error = pb.ItemError(code=16, message="x" * ERROR_MESSAGE_BYTES)  # 16: the largest google.rpc.Code
    results = (pb.DecideBatchResult(decision=decision), pb.DecideBatchResult(error=error))
    return max(int(pb.DecideBatchResponse(results=[result]).ByteSize()) for result in results)


def _utf8_length(text: str) -> int:
    return len(text.encode("utf-8"))


def outcome_report(message: pb.ReportOutcomeRequest) -> OutcomeReport:
    return OutcomeReport(
        outcome_id=message.outcome_id,
        customer_id=message.customer_id,
        type=message.type,
        value=message.value if message.HasField("value") else None,
        event_time=epoch(message, "event_time"),
        decision_id=message.decision_id,
    )


def activation_report(message: pb.ActivateRequest) -> ActivationReport:
    return ActivationReport(decision_id=message.decision_id, event_time=epoch(message, "event_time"))


def _features(record: DecisionRecord) -> list[pb.Feature]:
    features = []
    for namespace, values in record.features.items():
        for name, value in values.items():
            if isinstance(value, str):
                features.append(pb.Feature(namespace=namespace, name=name, value=1.0, category=value))
            else:
                features.append(pb.Feature(namespace=namespace, name=name, value=value))
    return features


def explain_response(explanation: Explanation) -> pb.ExplainResponse:
    record = explanation.record
    return pb.ExplainResponse(
        decision_id=record.decision_id,
        customer_id=record.customer_id,
        event_time=timestamp(record.event_time),
        channel=record.touchpoint,
        action=action(record),
        probability=record.probability,
        exploratory=record.exploratory,
        eligible=ranking(record),
        removed=[pb.RemovedAction(action_id=a, reason=r) for a, r in explanation.removed],
        features=_features(record),
        personalised=record.personalised,
        policy_id=record.policy_id,
        model_version=record.model_version,
        contributions=[pb.FeatureContribution(feature=f, contribution=c) for f, c in explanation.contributions],
        contributions_note=explanation.contributions_note,
        encoding=[
            pb.FieldEncoding(
                namespace=namespace, field=name, kind=str(spec["kind"]), edges=[pb.Edges(edges=e) for e in spec["edges"]]
            )
            for namespace, fields in explanation.encoding.items()
            for name, spec in fields.items()
        ],
    )
