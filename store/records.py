"""The plain records that go into a store and come out of it: frozen dataclasses, NamedTuples and,
where a run holds a million of them, plain tuples of plain values (the garbage collector stops
tracking those; a NamedTuple or dataclass instance it would walk at every collection).

Times are event times in epoch seconds. Nothing here knows a database: a record is what every
backend takes and gives back, whatever it stores it as.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, NamedTuple

DAY = 86_400.0

SharedFeatures = dict[str, dict[str, float | str]]
"""Namespace letter -> feature name -> a number, or a string for a categorical feature."""

Head = int | None
"""Opaque: what a backend read as the newest state of one customer's decisions (see
CustomerLog.head and DecisionLog.submit_decisions). Only ever handed back to the store. Every
backend gives every customer a head, also a customer without decisions: a Forget moves it (on
SQLite only a Forget does, store/sqlite/forgets.py). None: not checked."""

Cursor = tuple[int, float, str]
"""A position in the joined examples' learning order: (join run, event time, decision id)."""
START: Cursor = (0, 0.0, "")


# -- the decision log ---------------------------------------------------------------------------


def decision_id_for(request_id: str) -> str:
    """Decision ids follow from request ids, so a replayed request stream gives the same decisions
    (and a store may find a request's decision by its id: store/sqlite/decisions.py)."""
    return hashlib.blake2b(request_id.encode("utf-8"), digest_size=16, person=b"brein-decision").hexdigest()


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    decision_id: str
    request_id: str
    customer_id: str
    touchpoint: str
    event_time: float
    action_id: str
    offer: str
    channel: str
    slot: str
    send_at: float | None
    probability: float
    exploratory: bool
    policy_id: str
    model_version: str
    personalised: bool
    features: SharedFeatures
    eligible: tuple[str, ...]
    pmf: tuple[float, ...]
    exclusions: dict[str, Any] = field(default_factory=dict)
    contact_consent: dict[str, str] = field(default_factory=dict)
    # Shadow policy id -> its pmf over ``eligible``: logged for evaluation, never served.
    shadow: dict[str, tuple[float, ...]] = field(default_factory=dict)
    # The shared features in VW text, as the serving model saw them.
    shared_line: str = ""
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """An outcome as stored. ``value_sent`` and ``event_time_sent`` say whether the client sent the
    value and the event time or the server filled them in (the type's default value, its clock):
    a repeated outcome_id is a duplicate when what the client sent is the same, whatever the
    server's clock said the second time."""

    outcome_id: str
    customer_id: str
    type: str
    value: float
    event_time: float
    decision_id: str = ""
    received_at: float = 0.0
    value_sent: bool = True
    event_time_sent: bool = True

    def sent(self) -> tuple[str, str, float | None, float | None, str]:
        """What the client sent: the content two reports of one outcome_id must share."""
        return (self.customer_id, self.type, self.value if self.value_sent else None,
                self.event_time if self.event_time_sent else None, self.decision_id)  # fmt: skip


@dataclass(frozen=True, slots=True)
class ActivationRecord:
    decision_id: str
    event_time: float
    received_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Contact:
    decision_id: str
    event_time: float
    channel: str
    offer: str


@dataclass(frozen=True, slots=True)
class CustomerHistory:
    """Contacts (non-do-nothing decisions) inside the lookback, newest last; last time of each outcome type.

    ``later`` and ``next_outcome`` are what the log holds at or after the decision's own time (the
    contacts within the lookback after it, oldest first; the first time of each outcome type): a
    decision or outcome that reached the log before one with an earlier event time. Features never
    see them (a model learns from the past only); the contact policy counts them, so that decisions
    arriving out of event-time order cannot both pass a cap or a quiet period."""

    contacts: tuple[Contact, ...] = ()
    last_contact: float | None = None
    last_outcome: dict[str, float] = field(default_factory=dict)
    later: tuple[Contact, ...] = ()
    next_outcome: dict[str, float] = field(default_factory=dict)

    def contacts_since(self, since: float) -> int:
        if not self.contacts:
            return 0
        return sum(1 for c in self.contacts if c.event_time >= since)

    def contacts_before(self, until: float) -> int:
        """Contacts logged at or after the decision's time and before ``until``."""
        if not self.later:
            return 0
        return sum(1 for c in self.later if c.event_time < until)

    def contacts_by_channel(self, since: float, until: float | None = None) -> dict[str, int]:
        """Channel -> its contacts since ``since`` and, given ``until``, those logged at or after the
        decision's time before it (``contacts_since`` plus ``contacts_before`` a channel): one pass, not
        one a channel. Channels without a contact are absent."""
        counts: dict[str, int] = {}
        for contact in self.contacts:
            if contact.event_time >= since:
                counts[contact.channel] = counts.get(contact.channel, 0) + 1
        if until is not None:
            for contact in self.later:
                if contact.event_time < until:
                    counts[contact.channel] = counts.get(contact.channel, 0) + 1
        return counts


HISTORY_CONTACTS = 1000
"""The most contacts a customer's log is read with: the latest in its span. A customer decided for in
a loop made every Decide for it read, and count, all of its contacts (20,000 in 30 days: 36 ms a
Decide against 0.45); a contact cap is checked exactly below this many (bandit.config.CapConfig)."""


@dataclass(frozen=True, slots=True)
class CustomerLog:
    """What the log holds about a customer for its history as of any time in a span [first, last]:
    its latest HISTORY_CONTACTS contacts in [first - days, last + days) (oldest first), the time of
    its last contact before ``first - days``, the last time of each outcome type before ``first``,
    every outcome in [first, last] and the first time of each type after ``last`` (what a history as
    of a time in the span needs: outcomes reported ahead of a Decide's time, or a whole future's in a
    replay, are not read).
    ``head`` is the backend's token for the newest decision of the customer it read (see
    DecisionLog.submit_decisions).

    One read gives the histories of many decisions (a DecideBatch chunk) made at different times."""

    days: float
    contacts: tuple[Contact, ...] = ()
    contact_before: float | None = None
    outcomes: tuple[tuple[str, float], ...] = ()
    head: Head = None

    def at(self, now: float) -> CustomerHistory:
        """The history as of ``now`` (in [first, last]): contacts in the ``days`` before ``now``, and
        those logged in the ``days`` from ``now`` on, with the outcomes from ``now`` on (see CustomerHistory)."""
        since, until = now - self.days * DAY, now + self.days * DAY
        last_contact = self.contact_before
        contacts = []
        later = []
        for contact in self.contacts:
            if contact.event_time >= now:
                if contact.event_time >= until:
                    break
                later.append(contact)
            else:
                last_contact = contact.event_time
                if contact.event_time >= since:
                    contacts.append(contact)
        last_outcome: dict[str, float] = {}
        next_outcome: dict[str, float] = {}
        for kind, at in self.outcomes:
            if at < now:
                if kind not in last_outcome or at > last_outcome[kind]:
                    last_outcome[kind] = at
            elif kind not in next_outcome or at < next_outcome[kind]:
                next_outcome[kind] = at
        return CustomerHistory(tuple(contacts), last_contact, last_outcome, tuple(later), next_outcome)


# -- joining ------------------------------------------------------------------------------------

JoinDecision = tuple[str, float, str, str, str, float | None]
"""A decision of a customer being joined: (decision id, event time, offer, channel, action id,
activation time or None). A plain tuple: a run reads a million of them."""


class OutcomeFacts(NamedTuple):
    outcome_id: str
    type: str
    value: float
    event_time: float
    decision_id: str


class ClosingCustomer(NamedTuple):
    """What crediting one customer's closed decisions needs, read together: those decisions (by
    time, then id), the customer's other decisions up to the watermark (they share credit), and its
    outcomes up to the outcome horizon (by time, then id)."""

    customer_id: str
    closed: list[JoinDecision]
    others: list[JoinDecision]
    outcomes: list[OutcomeFacts]


JoinStatus = Literal["joined", "unactivated"]
JoinedExample = tuple[str, str, float, int, JoinStatus, float, float, Mapping[str, float], Sequence[str], int]
"""One closed decision made into a learning example, as the joiner writes it: (decision id, customer
id, event time, run, status, reward, cost, credit by outcome type, the outcome ids credited, the
outcome horizon of the run: outcomes with a larger seq were not seen). A plain tuple: a run makes a
million, and as NamedTuples (made by a Python-level constructor) they cost a run 5% more instructions."""
ProvisionalExample = tuple[str, int, str, float, int, JoinStatus, float]
"""A decision's example at the close of one of its shorter windows (reward/provisional.py): (decision
id, stage key (``JoinState.stages``), customer id, event time, run, status, reward). Learned from,
never evaluated; in the learning order its position's third part is ``<decision id>#<stage key>``."""


@dataclass(frozen=True, slots=True)
class JoinRun:
    """One join run. ``late_checked`` is the outcome horizon up to which late outcomes have been
    looked for; None until the run has finished."""

    run: int
    watermark: float
    cutoff: float
    horizon: int
    joined: int = 0
    unactivated: int = 0
    late_outcomes: int = 0
    late_checked: int | None = None
    finished_at: float | None = None


LateOutcome = tuple[str, str]
"""(outcome id, decision id): an outcome credited to a decision that was joined before it arrived."""


class WrittenExamples(NamedTuple):
    """What one write of joined examples wrote (JoinState.write_examples), by status: the examples of
    the decisions it took out of the join queue, not those another run or a Forget took first."""

    joined: int
    unactivated: int


class StoredStage(NamedTuple):
    """A provisional stage as the store keeps it: its key, and the cutoff up to which its examples
    have been written (-inf before any)."""

    key: int
    staged_until: float


class LateCustomer(NamedTuple):
    """A customer with outcomes that arrived after a decision that may share their credit was
    joined: those outcomes (by time, then id, each with its seq), every decision of the customer in
    their windows (by time, then id) and the outcome horizon each joined one was joined at. Whether
    an outcome is late for a decision is for the credit rules to say: one credited only to the
    latest contact before it, not joined yet, is credited when that contact is joined."""

    customer_id: str
    outcomes: list[tuple[OutcomeFacts, int]]
    decisions: list[JoinDecision]
    joined: dict[str, int]


class LearningRow(NamedTuple):
    """A joined example as the online learner reads it: its position and what VW learns from, the
    shared features as the serving model saw them (``shared_line``), and the policy and model
    version that decided (a line logged under another encoding is re-encoded). ``features_json``,
    the raw shared features as stored JSON: parsed only when the line cannot be used (a dict per row
    would make the garbage collector walk it at every collection while a page of rows is read). A
    NamedTuple for the same reason: the learner reads one per example."""

    run: int
    event_time: float
    decision_id: str
    reward: float
    eligible: tuple[str, ...]
    action_id: str
    probability: float
    shared_line: str
    features_json: str
    policy_id: str
    model_version: str

    @property
    def position(self) -> Cursor:
        return (self.run, self.event_time, self.decision_id)


class LoggedExample(NamedTuple):
    """A joined example with everything a replay, an export or an evaluation reads: the fields of
    a LearningRow (a NamedTuple cannot extend another's fields) with the raw features always, then
    credit, pmf and shadow pmfs."""

    run: int
    event_time: float
    decision_id: str
    reward: float
    eligible: tuple[str, ...]
    action_id: str
    probability: float
    shared_line: str
    features: SharedFeatures
    credit: dict[str, float]
    pmf: tuple[float, ...]
    shadow: dict[str, tuple[float, ...]]
    policy_id: str = ""
    model_version: str = ""

    @property
    def position(self) -> Cursor:
        return (self.run, self.event_time, self.decision_id)


# -- model snapshots and the policy registry ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ModelSnapshot:
    version: str
    args: list[str]
    data: bytes
    policy_id: str = ""
    # How far into the joined examples the model has learned.
    learned: Cursor | None = None
    # The numeric encoding learned for the model's lineage (bandit/encoding.py, as JSON), fixed for
    # the lineage; None: the data-free ``auto`` (a cold start, or a snapshot stored before encodings).
    encoding: dict[str, Any] | None = None


State = Literal["candidate", "shadow", "champion", "retired"]
Kind = Literal["vw", "rules", "uniform", "do_nothing"]
STATES: tuple[State, ...] = ("candidate", "shadow", "champion", "retired")
KINDS: tuple[Kind, ...] = ("vw", "rules", "uniform", "do_nothing")


@dataclass(frozen=True, slots=True)
class PolicyEntry:
    id: str
    kind: Kind
    artifact: bytes | None
    artifact_hash: str
    args: list[str]
    features: dict[str, Any]
    parent: str
    created: float
    state: State
    note: str
    trained_until: float | None = None
    """A trained or tuned model's: the end of the event-time range it learned from; the log after it
    is the window the promotion gate evaluates it on. None: it learned from no logged decision."""
    selected_among: int = 1
    """How many set-ups competed on one log when this one was picked as the best (a tuning's), else 1:
    every look at it shares its alpha among them (``policies.spending.look_alpha``)."""


@dataclass(frozen=True, slots=True)
class PolicyEvent:
    """One change of a policy's state; ``from_state`` is '' when it was registered."""

    policy_id: str
    at: float
    actor: str
    from_state: str
    to_state: str
    reason: str


@dataclass(frozen=True, slots=True)
class EvaluationRecord:
    policy_id: str
    against: str
    at: float
    since: float
    until: float
    decisions: int
    estimator: str
    lift: float
    lift_lower: float
    lift_upper: float
    ess: float
    report: dict[str, Any]
    gate_window: bool = False
    """Made on the window the gate fixes (every joined decision after the policy's training data, or
    tuning's held-out decisions), so it may be the gate's evidence; False: a window someone chose."""


# -- audit and privacy --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """Who did what to which subject (a decision id, a customer id, a policy id), and when."""

    at: float
    actor: str
    action: str
    subject: str
    detail: str


LEFTOVERS_ACTION = "policy_leftovers"
"""The audit action of a registration that removed what no entry held under its new id (``Leftovers``)."""


@dataclass(frozen=True, slots=True)
class Leftovers:
    """What a registration found under its new id and removed in the write that registered it: the
    evaluations and model snapshots of no entry that a registration killed before its entry left (one
    made before a registration wrote its snapshot and evidence with its entry). The new entry inherits
    none of them: neither evidence for the gate nor a model that ``load_policy`` would serve."""

    evaluations: int = 0
    snapshots: tuple[str, ...] = ()
    """The removed snapshots' versions, oldest first."""

    def __bool__(self) -> bool:
        return bool(self.evaluations or self.snapshots)

    def audit(self, event: PolicyEvent) -> list[AuditEntry]:
        """The audit row of the registration ``event`` that removed these, or none when nothing was found."""
        return [AuditEntry(event.at, event.actor, LEFTOVERS_ACTION, event.policy_id, self.detail())] if self else []

    def detail(self) -> str:
        """The audit row's detail: what was removed, counted, and the snapshots' versions."""
        versions = f" ({', '.join(self.snapshots)})" if self.snapshots else ""
        return (f"removed {self.evaluations} evaluation(s) and {len(self.snapshots)} model snapshot(s){versions} of no "
                f"registered policy (left by an interrupted registration) before registering the id")  # fmt: skip


@dataclass(frozen=True, slots=True)
class ForgetReport:
    decisions: int
    outcomes: int
    activations: int
    joined_examples: int

    def detail(self) -> str:
        """The audit row's detail: what was deleted, counted (never what it held)."""
        return (f"deleted {self.decisions} decisions, {self.outcomes} outcomes, {self.activations} activations, "
                f"{self.joined_examples} joined examples")  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeletedDecisions:
    """What one retention batch of decisions took with it."""

    decisions: int
    activations: int
    joined_examples: int


@dataclass(frozen=True, slots=True)
class RetentionReport:
    cutoff: float
    decisions: int = 0
    outcomes: int = 0
    activations: int = 0
    joined_examples: int = 0
    seconds: float = 0.0

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    @property
    def deleted(self) -> dict[str, int]:
        return {"decisions": self.decisions, "outcomes": self.outcomes, "activations": self.activations,
                "joined_examples": self.joined_examples}  # fmt: skip
