"""Protobuf messages to core requests and core results to protobuf messages; nothing else."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from bandit.decider import PendingDecision
from bandit.errors import InvalidRequest, excerpt
from bandit.explain import Explanation
from bandit.requests import ConsentValue, DecisionRequest
from reward.ingest import ActivationReport, OutcomeReport
from serving.pb.brein.v1 import brein_pb2 as pb
from store.records import DecisionRecord

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


def epoch(message: object, field: str) -> float | None:
    """A Timestamp field as epoch seconds, or None when the field is absent."""
    if not message.HasField(field):  # type: ignore[attr-defined]
        return None
    ts: Timestamp = getattr(message, field)
    return float(ts.seconds + ts.nanos / 1e9)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    _set_timestamp(ts, seconds)
    return ts


def _set_timestamp(ts: Timestamp, seconds: float) -> None:
    whole = int(seconds // 1)
    ts.seconds, ts.nanos = whole, int(round((seconds - whole) * 1e9)) % 1_000_000_000


def decision_request(message: pb.DecideRequest) -> DecisionRequest:
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
        numeric=dict(context.numeric),
        categorical=dict(context.categorical),
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
            pb.FieldEncoding(field=name, kind=str(spec["kind"]), edges=[pb.Edges(edges=e) for e in spec["edges"]])
            for name, spec in explanation.encoding.items()
        ],
    )
