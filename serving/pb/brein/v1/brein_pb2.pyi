import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ConsentState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_STATE_UNSPECIFIED: _ClassVar[ConsentState]
    CONSENT_STATE_GRANTED: _ClassVar[ConsentState]
    CONSENT_STATE_DENIED: _ClassVar[ConsentState]
CONSENT_STATE_UNSPECIFIED: ConsentState
CONSENT_STATE_GRANTED: ConsentState
CONSENT_STATE_DENIED: ConsentState

class Consent(_message.Message):
    __slots__ = ("personalisation", "contact")
    class ContactEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ConsentState
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ConsentState, str]] = ...) -> None: ...
    PERSONALISATION_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    personalisation: ConsentState
    contact: _containers.ScalarMap[str, ConsentState]
    def __init__(self, personalisation: _Optional[_Union[ConsentState, str]] = ..., contact: _Optional[_Mapping[str, ConsentState]] = ...) -> None: ...

class Context(_message.Message):
    __slots__ = ("numeric", "categorical")
    class NumericEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class CategoricalEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NUMERIC_FIELD_NUMBER: _ClassVar[int]
    CATEGORICAL_FIELD_NUMBER: _ClassVar[int]
    numeric: _containers.ScalarMap[str, float]
    categorical: _containers.ScalarMap[str, str]
    def __init__(self, numeric: _Optional[_Mapping[str, float]] = ..., categorical: _Optional[_Mapping[str, str]] = ...) -> None: ...

class DecideRequest(_message.Message):
    __slots__ = ("request_id", "customer_id", "channel", "event_time", "context", "candidate_actions", "consent")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ACTIONS_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    customer_id: str
    channel: str
    event_time: _timestamp_pb2.Timestamp
    context: Context
    candidate_actions: _containers.RepeatedScalarFieldContainer[str]
    consent: Consent
    def __init__(self, request_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., channel: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., context: _Optional[_Union[Context, _Mapping]] = ..., candidate_actions: _Optional[_Iterable[str]] = ..., consent: _Optional[_Union[Consent, _Mapping]] = ...) -> None: ...

class Action(_message.Message):
    __slots__ = ("id", "offer", "channel", "send_slot", "send_at", "do_nothing")
    ID_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    SEND_SLOT_FIELD_NUMBER: _ClassVar[int]
    SEND_AT_FIELD_NUMBER: _ClassVar[int]
    DO_NOTHING_FIELD_NUMBER: _ClassVar[int]
    id: str
    offer: str
    channel: str
    send_slot: str
    send_at: _timestamp_pb2.Timestamp
    do_nothing: bool
    def __init__(self, id: _Optional[str] = ..., offer: _Optional[str] = ..., channel: _Optional[str] = ..., send_slot: _Optional[str] = ..., send_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., do_nothing: _Optional[bool] = ...) -> None: ...

class RankedAction(_message.Message):
    __slots__ = ("action_id", "probability")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    probability: float
    def __init__(self, action_id: _Optional[str] = ..., probability: _Optional[float] = ...) -> None: ...

class DecideResponse(_message.Message):
    __slots__ = ("decision_id", "action", "probability", "policy_id", "ranking", "exploratory", "model_version", "replayed")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    RANKING_FIELD_NUMBER: _ClassVar[int]
    EXPLORATORY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REPLAYED_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    action: Action
    probability: float
    policy_id: str
    ranking: _containers.RepeatedCompositeFieldContainer[RankedAction]
    exploratory: bool
    model_version: str
    replayed: bool
    def __init__(self, decision_id: _Optional[str] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., probability: _Optional[float] = ..., policy_id: _Optional[str] = ..., ranking: _Optional[_Iterable[_Union[RankedAction, _Mapping]]] = ..., exploratory: _Optional[bool] = ..., model_version: _Optional[str] = ..., replayed: _Optional[bool] = ...) -> None: ...

class DecideBatchRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[DecideRequest]
    def __init__(self, items: _Optional[_Iterable[_Union[DecideRequest, _Mapping]]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class DecideBatchResult(_message.Message):
    __slots__ = ("decision", "error")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    decision: DecideResponse
    error: ItemError
    def __init__(self, decision: _Optional[_Union[DecideResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class DecideBatchResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[DecideBatchResult]
    def __init__(self, results: _Optional[_Iterable[_Union[DecideBatchResult, _Mapping]]] = ...) -> None: ...

class ReportOutcomeRequest(_message.Message):
    __slots__ = ("outcome_id", "customer_id", "type", "value", "event_time", "decision_id")
    OUTCOME_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    outcome_id: str
    customer_id: str
    type: str
    value: float
    event_time: _timestamp_pb2.Timestamp
    decision_id: str
    def __init__(self, outcome_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., type: _Optional[str] = ..., value: _Optional[float] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., decision_id: _Optional[str] = ...) -> None: ...

class ReportOutcomeResponse(_message.Message):
    __slots__ = ("duplicate", "value")
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    value: float
    def __init__(self, duplicate: _Optional[bool] = ..., value: _Optional[float] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("decision_id", "event_time")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    event_time: _timestamp_pb2.Timestamp
    def __init__(self, decision_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ActivateResponse(_message.Message):
    __slots__ = ("duplicate",)
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    duplicate: bool
    def __init__(self, duplicate: _Optional[bool] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("decision_id",)
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    def __init__(self, decision_id: _Optional[str] = ...) -> None: ...

class RemovedAction(_message.Message):
    __slots__ = ("action_id", "reason")
    ACTION_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    action_id: str
    reason: str
    def __init__(self, action_id: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class Feature(_message.Message):
    __slots__ = ("namespace", "name", "value", "category")
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    namespace: str
    name: str
    value: float
    category: str
    def __init__(self, namespace: _Optional[str] = ..., name: _Optional[str] = ..., value: _Optional[float] = ..., category: _Optional[str] = ...) -> None: ...

class FeatureContribution(_message.Message):
    __slots__ = ("feature", "contribution")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    feature: str
    contribution: float
    def __init__(self, feature: _Optional[str] = ..., contribution: _Optional[float] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("decision_id", "customer_id", "event_time", "channel", "action", "probability", "exploratory", "eligible", "removed", "features", "personalised", "policy_id", "model_version", "contributions", "contributions_note", "encoding")
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EXPLORATORY_FIELD_NUMBER: _ClassVar[int]
    ELIGIBLE_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PERSONALISED_FIELD_NUMBER: _ClassVar[int]
    POLICY_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_NOTE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    decision_id: str
    customer_id: str
    event_time: _timestamp_pb2.Timestamp
    channel: str
    action: Action
    probability: float
    exploratory: bool
    eligible: _containers.RepeatedCompositeFieldContainer[RankedAction]
    removed: _containers.RepeatedCompositeFieldContainer[RemovedAction]
    features: _containers.RepeatedCompositeFieldContainer[Feature]
    personalised: bool
    policy_id: str
    model_version: str
    contributions: _containers.RepeatedCompositeFieldContainer[FeatureContribution]
    contributions_note: str
    encoding: _containers.RepeatedCompositeFieldContainer[FieldEncoding]
    def __init__(self, decision_id: _Optional[str] = ..., customer_id: _Optional[str] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., channel: _Optional[str] = ..., action: _Optional[_Union[Action, _Mapping]] = ..., probability: _Optional[float] = ..., exploratory: _Optional[bool] = ..., eligible: _Optional[_Iterable[_Union[RankedAction, _Mapping]]] = ..., removed: _Optional[_Iterable[_Union[RemovedAction, _Mapping]]] = ..., features: _Optional[_Iterable[_Union[Feature, _Mapping]]] = ..., personalised: _Optional[bool] = ..., policy_id: _Optional[str] = ..., model_version: _Optional[str] = ..., contributions: _Optional[_Iterable[_Union[FeatureContribution, _Mapping]]] = ..., contributions_note: _Optional[str] = ..., encoding: _Optional[_Iterable[_Union[FieldEncoding, _Mapping]]] = ...) -> None: ...

class FieldEncoding(_message.Message):
    __slots__ = ("field", "kind", "edges", "namespace")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    EDGES_FIELD_NUMBER: _ClassVar[int]
    NAMESPACE_FIELD_NUMBER: _ClassVar[int]
    field: str
    kind: str
    edges: _containers.RepeatedCompositeFieldContainer[Edges]
    namespace: str
    def __init__(self, field: _Optional[str] = ..., kind: _Optional[str] = ..., edges: _Optional[_Iterable[_Union[Edges, _Mapping]]] = ..., namespace: _Optional[str] = ...) -> None: ...

class Edges(_message.Message):
    __slots__ = ("edges",)
    EDGES_FIELD_NUMBER: _ClassVar[int]
    edges: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, edges: _Optional[_Iterable[float]] = ...) -> None: ...

class ForgetRequest(_message.Message):
    __slots__ = ("customer_id",)
    CUSTOMER_ID_FIELD_NUMBER: _ClassVar[int]
    customer_id: str
    def __init__(self, customer_id: _Optional[str] = ...) -> None: ...

class ForgetResponse(_message.Message):
    __slots__ = ("decisions", "outcomes", "activations", "joined_examples")
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    JOINED_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    decisions: int
    outcomes: int
    activations: int
    joined_examples: int
    def __init__(self, decisions: _Optional[int] = ..., outcomes: _Optional[int] = ..., activations: _Optional[int] = ..., joined_examples: _Optional[int] = ...) -> None: ...
