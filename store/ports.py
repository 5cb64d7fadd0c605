"""The store as ports: one small interface per concern, plain records in and out (store.records).

Brein's core is typed to these, never to a backend. A backend (store/sqlite/ now, PostgreSQL
later) implements every port and passes the contract tests (tests/test_store_contract.py).

Promises every backend keeps:
  * A write returns a ``concurrent.futures.Future`` that resolves once the write is durable
    (committed; a backend may commit many concurrent writes together). A write fails alone: one
    refused write does not fail the others committed with it. A future cancelled before its write
    began is never written.
  * A write that fails raises a store error (store.errors) through its future: StoreUnavailable
    when the store cannot commit, Conflict when the write contradicts what is stored.
  * A read sees every write whose future has resolved, in this process or another.
  * Reads return fresh records; the caller may keep them. Sequences come back in the documented order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Protocol

from store.records import (
    START,
    ActivationRecord,
    AuditEntry,
    ClosingCustomer,
    Cursor,
    CustomerLog,
    DecisionRecord,
    DeletedDecisions,
    EvaluationRecord,
    ForgetReport,
    Head,
    JoinedExample,
    JoinRun,
    LateCustomer,
    LateOutcome,
    LearningRow,
    Leftovers,
    LoggedExample,
    ModelSnapshot,
    OutcomeRecord,
    PolicyEntry,
    PolicyEvent,
    ProvisionalExample,
    SharedFeatures,
    State,
    StoredStage,
    WrittenExamples,
)

CommitListener = Callable[[float, int, bool], None]
"""Called after every commit with (seconds, writes committed together, succeeded)."""


class DecisionLog(Protocol):
    """The hot path: decisions, outcomes and activations in, decisions and customer histories out."""

    def submit_decisions(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head] | None = None) -> Future[None]:
        """Log decisions in one write (all or none, but for the customers StaleHistory names) and
        queue each for the joiner (JoinState).

        ``heads`` maps each customer of ``records`` to the ``CustomerLog.head`` its decision was
        made on. A backend shared by several processes refuses the decisions of a customer with
        StaleHistory when another process (another store instance) committed a decision for that
        customer after that head: the decision rests on a history that is no longer the customer's,
        so a contact cap could be passed twice. Every backend refuses them so when a Forget of the
        customer committed after that head: the decision rests on what the Forget deleted, and
        nothing derived from a forgotten history is logged after its Forget (SQLite refuses the
        whole write then: StaleHistory.customers None). The caller then reads the history again and
        decides again (see ``may_refuse``). The other customers' decisions are written all the same
        (StaleHistory.customers names those that were not): a DecideBatch chunk is not held up by
        one customer another replica decides for meanwhile. A head None is not checked; ``heads``
        None: the decisions were not made on a history (imports, tests): no check. A decision id or
        request id already logged fails the whole write with Conflict."""
        ...

    def may_refuse(self, heads: Mapping[str, Head]) -> bool:
        """Whether a write of decisions made on ``heads``, submitted already, may yet be refused as
        StaleHistory (never when every head is None). When not, its caller needs no second try: a
        backend written by one process (SQLite) says so unless a Forget was called since the heads
        were read; one shared by several processes says it may whenever a head is not None."""
        ...

    def submit_outcome(self, record: OutcomeRecord) -> Future[bool]:
        """Store an outcome under the next outcome sequence number (see JoinState.outcome_horizon).
        Resolves to True when its outcome_id is stored already with the same client-sent content
        (``OutcomeRecord.sent``): a duplicate, nothing written. Other content: Conflict."""
        ...

    def submit_activation(self, record: ActivationRecord) -> Future[bool]:
        """Store that a decision's action was delivered. Resolves to True when the decision was
        activated before: the first activation is kept, a repeat is a duplicate whatever it says."""
        ...

    def decision(self, decision_id: str) -> DecisionRecord | None: ...

    def decisions_by_request(self, request_ids: Collection[str]) -> dict[str, DecisionRecord]:
        """The logged decisions of those request ids that have one."""
        ...

    def features_before(self, until: float | None, limit: int) -> list[tuple[str, SharedFeatures]]:
        """The customer id and raw shared features of the newest ``limit`` decisions with event time <
        ``until`` (None: all), newest first: what a new model lineage learns its numeric encoding from."""
        ...

    def customer_logs(
        self, customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> dict[str, CustomerLog]:
        """Every customer's log (a key for each id asked, known or not) for histories as of any time in
        [first, last], looking back ``lookback_days`` before ``first`` and ahead as far after ``last``
        (see CustomerLog); read as one snapshot."""
        ...

    def deciding_reads(
        self, request_ids: Collection[str], customer_ids: Collection[str], first: float, last: float, lookback_days: float
    ) -> tuple[dict[str, DecisionRecord], dict[str, CustomerLog]]:
        """``decisions_by_request(request_ids)`` and ``customer_logs(customer_ids, ...)``: what deciding
        needs, read together (in one statement where the backend can: a Decide's one read)."""
        ...

    def decision_count(self) -> int:
        """Decisions logged: for operators and benchmarks, not the hot path."""
        ...


class JoinState(Protocol):
    """What the delayed-reward joiner reads and writes. The joiner's logic (crediting, batching) is
    in reward/joiner.py; here is only what it asks the store. Decisions wait in a join queue (filled
    in the write that logged them) until a run writes their joined example."""

    def watermark(self) -> float | None:
        """The latest event time of any decision or outcome; None for an empty store."""
        ...

    def outcome_horizon(self) -> int:
        """An outcome sequence number S such that every outcome with seq <= S is committed and
        visible to this store's reads, and none that commits later will get a seq <= S."""
        ...

    def closed_count(self, cutoff: float) -> int:
        """Queued decisions with event time <= cutoff (closed)."""
        ...

    def closing(self, cutoff: float, watermark: float, horizon: int) -> Generator[ClosingCustomer, None, None]:
        """Every customer with closed decisions (queued, event time <= cutoff), in customer id order:
        those decisions and their activations, the customer's other decisions with event time <=
        watermark, its outcomes with seq <= horizon. Read as the caller goes (a run's backlog may be a
        million decisions); close the iterator when stopping early."""
        ...

    def staging(
        self, stage: int, since: float, cutoff: float, watermark: float, horizon: int
    ) -> Generator[ClosingCustomer, None, None]:
        """As ``closing``, for a provisional stage: the customers whose queued decisions with since <
        event time <= cutoff have no provisional example yet of ``stage`` (a key from ``stages``)
        or of a stage with a longer age, those decisions closing."""
        ...

    def start_run(self, watermark: float, cutoff: float, horizon: int) -> Future[int]:
        """Record that a run begins; resolves to its run number, issued by the store (larger than
        any run before, finished or not)."""
        ...

    def write_examples(self, examples: Sequence[JoinedExample]) -> Future[WrittenExamples]:
        """Write joined examples and take their decisions out of the join queue, in one write. Only
        decisions still in the queue get an example (one forgotten meanwhile is not brought back,
        one joined by an earlier write, of this run or another's at once, is not joined twice):
        exactly once, whatever is killed when. Resolves to what it wrote: what a run reports."""
        ...

    def stages(self, ages: Sequence[float]) -> list[StoredStage]:
        """Each provisional stage in the store, by its age in seconds: an age registered before keeps
        its key and progress, a new one gets the next free key. Under changed windows (a shorter one
        added, one removed) every stage written before keeps its key and age, so none is written twice;
        a restarted joiner stages from where the last one got to, not from the queue's start."""
        ...

    def write_provisional(self, examples: Sequence[ProvisionalExample], staged: tuple[int, float] | None = None) -> Future[None]:
        """Write provisional examples of decisions still in the join queue, in one write; a decision's
        stage written before is kept as it was: exactly once. ``staged``: (key, cutoff), recorded in
        the same write: that stage's examples are written up to cutoff (its progress never goes back)."""
        ...

    def recent_credit(self, limit: int) -> list[tuple[str, dict[str, float]]]:
        """(action id, credit by outcome type) of the newest ``limit`` examples learned from, oldest first."""
        ...

    def late_checked(self) -> int:
        """The outcome horizon up to which finished runs have looked for late outcomes (0 if none)."""
        ...

    def late_candidates(self, after: int, horizon: int, window: float) -> list[LateCustomer]:
        """The customers with outcomes with after < seq <= horizon who have a decision in the
        ``window`` (seconds) before one of them that was joined with a horizon smaller than the
        newest one's seq: those outcomes, and the customer's decisions from ``window`` before the
        earliest of them up to the latest. Each is read once, whatever a customer's numbers of
        decisions and outcomes: the credit rules pair them (reward/credit.py)."""
        ...

    def finish_run(self, run: JoinRun, late: Sequence[LateOutcome]) -> Future[None]:
        """Record a run's counts and its late outcomes (a pair recorded before is kept once)."""
        ...

    def pending_count(self) -> int:
        """Decisions still in the join queue."""
        ...

    def maintenance_warnings(self) -> list[str]:
        """What the database does not do that the joiner's speed relies on, said for an operator
        (empty when nothing is missing)."""
        ...

    def runs(self) -> list[JoinRun]:
        """Every run recorded, oldest first."""
        ...


class JoinedExamples(Protocol):
    """Joined examples that were learned from (status 'joined'), in learning order: by run, event
    time, decision id. Read from a cursor, a page at a time: no read stays open between calls."""

    def learning(self, after: Cursor, limit: int) -> list[LearningRow]:
        """Up to ``limit`` examples after ``after``, the provisional ones among them, with what online
        learning needs (the raw features only where no shared line was logged)."""
        ...

    def logged(self, after: Cursor, limit: int, *, since: float | None = None, until: float | None = None) -> list[LoggedExample]:
        """Up to ``limit`` examples after ``after`` with since <= event time < until, whole."""
        ...

    def count(
        self, *, after: Cursor = START, since: float | None = None, until: float | None = None, choices: bool = False
    ) -> int:
        """Examples after ``after`` with since <= event time < until; with ``choices``, only those whose
        decision was logged with a choice of action (its probability below 1: what the gate counts)."""
        ...


class ModelSnapshots(Protocol):
    """Learned models, each with the position its learner had reached."""

    def save(self, snapshot: ModelSnapshot) -> Future[None]:
        """Store a snapshot; one whose (policy, version) is stored already is kept as it was (two
        policies whose models have the same bytes each keep their own snapshot)."""
        ...

    def get(self, policy_id: str, version: str) -> ModelSnapshot | None: ...

    def newest_version(self, policy_id: str) -> str | None:
        """The version of the policy's newest snapshot: a cheap read, for servers that follow."""
        ...

    def newest_first(self, policy_id: str) -> Iterator[ModelSnapshot]:
        """The policy's snapshots, newest first, read one at a time."""
        ...


class RegistryStorage(Protocol):
    """The policy registry's rows. The state machine (which change is allowed) is in
    policies/registry.py; writes here are compare-and-set: a write that finds the registry other
    than the caller read it fails with Conflict and changes nothing. Every write appends its
    events to the history and its entries to the audit trail in the same transaction."""

    def policy(self, policy_id: str) -> PolicyEntry | None: ...

    def policies(self, state: State | None = None) -> list[PolicyEntry]:
        """Every policy (in ``state``), by creation time then id."""
        ...

    def champion(self) -> PolicyEntry | None: ...

    def events(self, policy_id: str | None = None) -> list[PolicyEvent]:
        """The history (of one policy), in the order it was written."""
        ...

    def evaluations(self, policy_id: str) -> list[EvaluationRecord]:
        """The policy's evaluations, the last recorded first (whatever the clocks that dated them said)."""
        ...

    def register(
        self,
        entry: PolicyEntry,
        event: PolicyEvent,
        audit: Sequence[AuditEntry],
        evidence: Sequence[EvaluationRecord] = (),
        snapshot: ModelSnapshot | None = None,
    ) -> Future[Leftovers]:
        """Add a policy with the evaluations it was registered with (a tuning's) and its model's first
        snapshot (a trained model's: how far it has learned), all in one transaction, which the entry's
        row claims the id in: Conflict when the id is taken (by a registration committed first, however
        close), or when it would be a second champion; then nothing of it is written, its snapshot
        neither. Whatever that write finds stored under the id that no entry holds (``Leftovers``: a
        killed registration's) it removes before adding its own, with an audit entry (LEFTOVERS_ACTION)
        saying what; it resolves to what it removed."""
        ...

    def transition(self, events: Sequence[PolicyEvent], audit: Sequence[AuditEntry]) -> Future[None]:
        """Move each event's policy from ``from_state`` to ``to_state``, all or none. Conflict when
        a policy is not in its ``from_state`` (or is unknown), or the result has two champions."""
        ...

    def record_evaluation(self, record: EvaluationRecord) -> Future[None]: ...


class AuditTrail(Protocol):
    """Append-only: who did what, when."""

    def record(self, entry: AuditEntry) -> Future[None]: ...

    def entries(self, action: str | None = None) -> list[AuditEntry]:
        """Every entry (of one action), in the order written."""
        ...


class Privacy(Protocol):
    """Deleting customer data: one customer on request, everything old by retention."""

    def forget(self, customer_id: str, *, actor: str, at: float) -> Future[ForgetReport]:
        """Delete every decision, outcome, activation, join-queue entry, late-outcome mark and joined
        example of the customer, and append an audit entry ('forget', the customer id,
        ForgetReport.detail()), in one transaction."""
        ...

    def delete_decisions_before(self, cutoff: float, limit: int) -> Future[DeletedDecisions]:
        """One small transaction: up to ``limit`` of the oldest decisions with event time < cutoff,
        with their activations, join-queue entries, late-outcome marks and joined examples."""
        ...

    def delete_outcomes_before(self, cutoff: float, limit: int) -> Future[int]:
        """One small transaction: up to ``limit`` of the oldest outcomes with event time < cutoff
        (and their late-outcome marks); resolves to how many went."""
        ...


class WorkerLease(Protocol):
    """At most one worker (joiner, learner, retention) works on a store at a time: the one whose
    store holds the lease. A holder that dies loses it without anyone's help."""

    def try_acquire(self) -> bool:
        """True when this store instance holds the lease now (taken now or held already)."""
        ...

    def release(self) -> None:
        """Let the lease go (a no-op when not held); closing the store releases it too."""
        ...


class Store(Protocol):
    """A store opened from a URL (store.open_store): every port, and close()."""

    @property
    def url(self) -> str:
        """The URL it was opened from, normalised."""
        ...

    @property
    def decisions(self) -> DecisionLog: ...

    @property
    def joins(self) -> JoinState: ...

    @property
    def examples(self) -> JoinedExamples: ...

    @property
    def models(self) -> ModelSnapshots: ...

    @property
    def registry(self) -> RegistryStorage: ...

    @property
    def audit(self) -> AuditTrail: ...

    @property
    def privacy(self) -> Privacy: ...

    @property
    def lease(self) -> WorkerLease: ...

    def close(self) -> None:
        """Commit what is queued, release the lease and every connection. Writes after this fail
        with StoreUnavailable."""
        ...
