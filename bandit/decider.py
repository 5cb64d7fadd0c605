"""The decision: rules, contact policy and consent narrow the catalog; the policy gives a pmf over
what is left; a seeded draw picks one action; the decision goes to the log.

``decide`` does the CPU work and queues the log write; the caller answers only once the write's
future resolves (durable). Decisions still in flight count in their customer's history, so two
concurrent requests for one customer cannot both pass a contact cap.

``decide_many`` decides several requests (a DecideBatch chunk) as ``decide`` would one after the
other, with one read of the store for all of them and one write to the log: the request-id check
and the histories of every customer in one statement each. Decisions are made one call at a time
(a lock), so a call sees every decision made before it, logged or in flight. Several calls may share
one write (a HeldWrite: a DecideBatch chunk decided in slices), submitted once the last has decided.

Another process may decide for the same customer between this one's read and its write (replicas
on a shared store). The store then refuses that customer's decisions as StaleHistory (see
DecisionLog.submit_decisions), writing the others', and they are made again here, on the history
read afresh, up to MAX_TRIES times, before the caller hears of it: ``committed`` resolves once every
try is durable, and ``record`` is the try's that wrote it. A decision still refused at the last try,
when others of its write were written, resolves ``committed`` all the same and is ``refused`` alone.
Another replica may also log the same request id meanwhile (a retry that a load balancer sent to
it): the store refuses the write (StaleHistory, or Conflict for the id), and the request found
logged on the second read is answered as a replay of that decision, or refused as the request id
reused when the requests differ (``refused``). On SQLite one serving process writes: neither happens.
A Forget of the customer committed between the read and the write makes the write stale too, on
every store: the decisions are made again on the history the Forget left.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from dataclasses import dataclass, field
from typing import cast

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig
from bandit.contact_policy import ContactPolicy
from bandit.errors import CustomerBusy, InvalidRequest, excerpt
from bandit.exclusions import Exclusions
from bandit.features import FeatureEncoder, local_hour_weekday
from bandit.history import history_features, lookback_days
from bandit.in_place import errors_in_place
from bandit.keyed_locks import KeyedLocks
from bandit.policies import Policy, UniformPolicy
from bandit.requests import DecisionRequest, validate_decision_request
from bandit.rules import MEMO_SIZE, EligibilityRules
from bandit.sampling import finite_pmf, floored, new_request_id, sample_index, uniform_draw
from store.errors import Conflict, StaleHistory
from store.ports import DecisionLog
from store.records import Contact, CustomerHistory, CustomerLog, DecisionRecord, Head, decision_id_for

log = logging.getLogger("brein.decider")

MAX_TRIES = 3
"""Times decisions are made (each on the history read afresh) before StaleHistory reaches the caller."""
MAX_IN_FLIGHT = 100
"""Decisions a customer may have in flight (made, not yet logged); one more is refused (CustomerBusy).
Each decision counts the customer's decisions in flight in its history, so a DecideBatch chunk of
2,000 decisions for one customer cost each 1.2 ms, against 42 µs for 2,000 customers, and 5,000 took
12.4 s: a cost that grows as the square of a chunk, which 4 MiB of request lets hold some 42,000 items
(its answer, serving.servicer's bound, some 1,800 with the example's catalog)."""


@dataclass(frozen=True, slots=True)
class ServingPolicy:
    """The policy that serves, swapped as one reference so a request sees one consistent policy."""

    policy_id: str
    model: Policy


@dataclass(slots=True)
class Made:
    """A decision as made; replaced when it is made again on a fresh history, or by the decision
    another process logged for its request id meanwhile (``elsewhere``), whose request may differ
    (``refused``: why this one is refused; also why it could not be written, when others made with
    it were)."""

    record: DecisionRecord
    elsewhere: bool = False
    refused: Exception | None = None


@dataclass(slots=True)
class PendingDecision:
    made: Made
    committed: Future[None]
    repeat: bool = False
    """Answered with the decision of an earlier request with this request id (logged or in flight)."""

    @property
    def record(self) -> DecisionRecord:
        """The decision; read it once ``committed`` has resolved (it may be made again before that)."""
        return self.made.record

    @property
    def replayed(self) -> bool:
        """Whether the decision was made for an earlier request with this request id, here or in
        another process; final once ``committed`` has resolved."""
        return self.repeat or self.made.elsewhere

    @property
    def refused(self) -> Exception | None:
        """Why the request is refused although ``committed`` resolved: another process logged its
        request id first, for a request that differs (Conflict), or its decision could not be written
        while others made with it were (StaleHistory at every try, say). Read it once ``committed``
        has resolved."""
        return self.made.refused


class _Commit(Future[None]):
    """The commit of decisions made together, across the tries a stale history forces: resolves when
    they are durable, fails with the last try's error (see _give_up). Cancelling it cancels the
    current try's write, and succeeds only if that write has not begun and no try wrote any of them."""

    def __init__(self) -> None:
        super().__init__()
        self.write: Future[None] | None = None
        self.written = False
        """Some of its decisions are written (a try refused only some customers' as stale)."""

    def cancel(self) -> bool:
        write = self.write
        if self.written or (write is not None and not write.cancel()):
            return False
        return super().cancel()


class HeldWrite(_Commit):
    """The decisions of several ``decide_many`` calls, logged in one write when ``release`` is called:
    a DecideBatch chunk decided in slices pays for one write (one multi-row insert, one commit)
    instead of one a slice. Held decisions count in flight like any others, and their callers wait
    on commits that resolve with this write (or with the tries after it, see Decider._log).
    Cancelled before the write begins (before ``release``, or while the write is queued), none of
    them is written, and their commits are cancelled."""

    def __init__(self, log: DecisionLog) -> None:
        super().__init__()
        self._log = log
        self._records: list[DecisionRecord] = []
        self._heads: dict[str, Head] = {}

    def hold(self, records: Sequence[DecisionRecord], heads: Mapping[str, Head]) -> Future[None]:
        """Hold decisions for the write; each customer keeps the head of the first call that decided
        for them (a head moved since then makes the write stale, and the calls decide again)."""
        if self.write is not None:
            raise RuntimeError("expected decisions held before release, got them after")
        self._records += records
        for customer, head in heads.items():
            self._heads.setdefault(customer, head)
        return self

    def release(self) -> None:
        """Submit the held decisions in one write; nothing when none are held or when cancelled."""
        if self.cancelled() or not self._records:
            return
        self.write = self._log.submit_decisions(self._records, self._heads)
        self.write.add_done_callback(self._written)

    def _written(self, write: Future[None]) -> None:
        if write.cancelled():
            super().cancel()
            return
        error = write.exception()
        with suppress(InvalidStateError):
            if error is None:
                self.set_result(None)
            else:
                self.set_exception(error)


@dataclass(slots=True)
class _InFlight:
    """Decisions whose write has not committed (or failed) yet."""

    by_request: dict[str, PendingDecision] = field(default_factory=dict)
    by_customer: dict[str, list[DecisionRecord]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def remove(self, records: Sequence[DecisionRecord], *, requests: bool = True) -> None:  # under the lock
        """Take the records out of their customers' histories and, with ``requests``, out of the request index."""
        for record in records:
            if requests:
                self.by_request.pop(record.request_id, None)
            same = self.by_customer.get(record.customer_id)
            if same is not None:
                same.remove(record)
                if not same:
                    del self.by_customer[record.customer_id]


def _done(value: None = None) -> Future[None]:
    future: Future[None] = Future()
    future.set_result(value)
    return future


class Decider:
    def __init__(
        self,
        config: BreinConfig,
        store: DecisionLog,
        policy: ServingPolicy,
        *,
        clock: Callable[[], float] = time.time,
        on_fallback: Callable[[], None] | None = None,
    ) -> None:
        """``on_fallback`` hears of every request whose model scored a distribution that is not
        finite, and that was served uniform over its eligible actions instead."""
        self.config = config
        self.catalog = Catalog(config)
        self.store = store
        self.policy = policy
        # Shadow policies score every decision alongside the champion; their pmfs are logged, never served.
        self.shadows: tuple[ServingPolicy, ...] = ()
        self._clock = clock
        self._seed = config.server.seed
        self._min_probability = config.learner.min_probability
        self._rules = EligibilityRules(config)
        self._contact_policy = ContactPolicy(config.contact_policy, self.catalog.channels)
        # Encoding key -> its encoder: the champion and each shadow encode with their own lineage's.
        self._encoders: dict[str, FeatureEncoder] = {"": FeatureEncoder(config)}
        self._outcome_types = tuple(config.outcomes)
        self._personalise_by_default = config.consent.personalisation_default == "granted"
        self._contact_by_default = config.consent.contact_default == "granted"
        self._lookback = lookback_days(self._contact_policy.lookback_days)
        self._inflight = _InFlight()
        self._deciding = KeyedLocks()
        self._eligible_memo: dict[tuple[object, ...], tuple[tuple[Action, ...], tuple[str, ...]]] = {}
        self._on_fallback = on_fallback
        self._uniform = UniformPolicy()
        self._unusable: set[tuple[str, str]] = set()  # models that scored non-finite (logged once each)

    def swap_policy(self, policy: ServingPolicy) -> None:
        self.policy = policy

    def set_shadows(self, shadows: tuple[ServingPolicy, ...]) -> None:
        self.shadows = shadows

    def decide(self, request: DecisionRequest) -> PendingDecision:
        (result,) = self.decide_many((request,))
        if isinstance(result, Exception):
            raise result
        return result

    def decide_many(
        self, requests: Sequence[DecisionRequest], held: HeldWrite | None = None
    ) -> list[PendingDecision | Exception]:
        """Each request's decision (or the error that refused it), in order, as ``decide`` would make
        them one after the other: a request sees the decisions of those before it. The new decisions
        are one log write (all or none), or join ``held``; their ``committed`` is that write's future.
        Calls about other customers (and request ids) are decided meanwhile; calls about the same ones wait."""
        keys = [r.customer_id for r in requests] + [r.request_id for r in requests if r.request_id]
        with self._deciding.holding(keys):
            decide = functools.partial(self._decide_accepted, held=held)
            return errors_in_place(requests, self._accept, decide, refused=InvalidRequest)

    def _accept(self, request: DecisionRequest) -> _Accepted:
        now = self._clock()
        event_time = validate_decision_request(request, self.config, self.catalog, now)
        return _Accepted(request, request.request_id or new_request_id(), event_time, now)

    def _decide_accepted(self, accepted: list[_Accepted], held: HeldWrite | None) -> list[PendingDecision | Exception]:
        if not accepted:
            return []
        inflight = self._inflight
        request_ids = {a.request_id for a in accepted}
        customers = {a.request.customer_id for a in accepted}
        # In flight first, then the store: a decision committed in between is in both (and
        # deduplicated), never in neither. Nothing else decides for these customers or request ids
        # meanwhile (self._deciding).
        with inflight.lock:
            in_flight = {r: inflight.by_request[r] for r in request_ids if r in inflight.by_request}
            pending = {c: list(inflight.by_customer[c]) for c in customers if c in inflight.by_customer}
        # Only ids a caller sent can have been used before (an id made here is a fresh UUID).
        asked = {a.request_id for a in accepted if a.request.request_id and a.request_id not in in_flight}
        times = [a.event_time for a in accepted]
        logged, logs = self.store.deciding_reads(asked, customers, min(times), max(times), self._lookback)

        made: dict[str, Made] = {}  # request id -> decided by this call
        fresh: list[tuple[_Accepted, Made]] = []
        decided: list[tuple[int, Made]] = []
        repeated: list[tuple[int, Made]] = []  # a request id decided earlier in this call
        results: list[PendingDecision | Exception | None] = [None] * len(accepted)
        for index, a in enumerate(accepted):
            customer = a.request.customer_id
            earlier = made.get(a.request_id)
            replay = in_flight.get(a.request_id)
            record = earlier.record if earlier is not None else logged.get(a.request_id)
            record = record or (replay.record if replay is not None else None)
            if record is not None:
                if reused := self._reused(a, record):
                    results[index] = reused
                elif replay is not None:
                    results[index] = PendingDecision(replay.made, replay.committed, repeat=True)
                elif earlier is not None:
                    repeated.append((index, earlier))
                else:
                    results[index] = PendingDecision(Made(record), _done(), repeat=True)
                continue
            if len(pending.get(customer, ())) >= MAX_IN_FLIGHT:
                results[index] = CustomerBusy(f"the customer has {MAX_IN_FLIGHT} decisions in flight, the most one may have: "
                                              "send this request again once they are logged (their answers have come)")
                continue
            history = _with_pending(logs[customer].at(a.event_time), pending.get(customer, ()), a.event_time)
            try:
                record = self._decide(a.request, a.request_id, a.event_time, a.now, history)
            except Exception as error:  # this request fails alone
                results[index] = error
                continue
            made[a.request_id] = Made(record)
            fresh.append((a, made[a.request_id]))
            decided.append((index, made[a.request_id]))
            pending.setdefault(customer, []).append(record)
        if fresh:
            committed = self._log(fresh, logs, held=held)
            for index, holder in decided:
                results[index] = PendingDecision(holder, committed)
            for index, holder in repeated:
                results[index] = PendingDecision(holder, committed, repeat=True)
        return cast("list[PendingDecision | Exception]", results)  # every place is filled by now

    def decide_and_wait(self, request: DecisionRequest) -> PendingDecision:
        pending = self.decide(request)
        pending.committed.result()
        return pending

    def _personalised(self, request: DecisionRequest) -> bool:
        return request.personalisation == "granted" or (request.personalisation == "unspecified" and self._personalise_by_default)

    def _reused(self, accepted: _Accepted, record: DecisionRecord) -> Conflict | None:
        """The refusal of a request whose request id names ``record``, decided for a request that differs."""
        differing = self._differences(accepted.request, record)
        if not differing:
            return None
        return Conflict(
            f"request_id {excerpt(accepted.request_id)} was already used for a decision with another "
            f"{', '.join(differing)}: a request id names one request; send this one with a new request_id"
        )

    def _differences(self, request: DecisionRequest, record: DecisionRecord) -> list[str]:
        """The fields in which ``request`` differs from the request ``record`` was decided for, as far
        as the record holds them: a replay for a request that differs would answer a decision made
        against another channel, consent or set of candidates. What the server fills in is not
        compared: a request without an event time is decided at the server's clock, which an honest
        retry cannot repeat. The context is compared as the record holds it: the features the config
        marks non-personal, and the others only with personalisation."""
        candidates = sorted(set(request.candidate_actions)) if request.candidate_actions else None
        context = self._encoders[""].shared_features(
            touchpoint=record.touchpoint, event_time=record.event_time, numeric=request.numeric,
            categorical=request.categorical, history={}, personalised=record.personalised,
        )  # fmt: skip
        same = {
            "customer_id": request.customer_id == record.customer_id,
            "channel": request.touchpoint == record.touchpoint,
            "event_time": request.event_time is None or request.event_time == record.event_time,
            "candidate_actions": candidates == record.exclusions.get("candidates"),
            "consent.personalisation": self._personalised(request) == record.personalised,
            "consent.contact": request.contact_consent == record.contact_consent,
            "context": context == {k: v for k, v in record.features.items() if k != "h"},  # h: history, read by the server
        }
        return [name for name, equal in same.items() if not equal]

    def _decide(
        self, request: DecisionRequest, request_id: str, event_time: float, now: float, history: CustomerHistory
    ) -> DecisionRecord:
        policy = self.policy
        personalised = self._personalised(request)
        history_values = history_features(history, event_time, self.catalog.channels, self._outcome_types)
        hour, weekday = local_hour_weekday(event_time, self.config.zone)

        exclusions = Exclusions(candidates=frozenset(request.candidate_actions) if request.candidate_actions else None)
        for channel in self.catalog.channels:
            consent = request.contact_consent.get(channel, "unspecified")
            if consent == "denied" or (consent == "unspecified" and not self._contact_by_default):
                exclusions.exclude_channels({channel: f"no contact consent for {channel}"})
        verdict = self._rules.evaluate(
            {
                "numeric": dict(request.numeric),
                "categorical": dict(request.categorical),
                "history": history_values,
                "touchpoint": request.touchpoint,
                "hour": hour,
                "weekday": weekday,
            }
        )
        exclusions.exclude_channels(verdict.channels)
        exclusions.exclude_offers(verdict.offers)
        self._contact_policy.apply(history, event_time, exclusions)
        eligible, eligible_ids = self._eligible(exclusions)

        encoder = self.encoder_for(policy.model)
        features = encoder.shared_features(
            touchpoint=request.touchpoint,
            event_time=event_time,
            numeric=request.numeric,
            categorical=request.categorical,
            history=history_values,
            personalised=personalised,
        )
        shared_line = encoder.shared_line(features)
        floor = self._min_probability
        pmf = policy.model.pmf(shared_line, eligible, features)
        pmf = floored(pmf, floor) if finite_pmf(pmf) else self._fallback(policy, shared_line, eligible, pmf)
        shadow = {}
        for other in self.shadows:
            if other.policy_id == policy.policy_id:
                continue
            other_encoder = self.encoder_for(other.model)
            line = shared_line if other_encoder is encoder else other_encoder.shared_line(features)
            scored = other.model.pmf(line, eligible, features)
            if finite_pmf(scored):  # else not logged: an evaluation scores it itself
                shadow[other.policy_id] = tuple(floored(scored, floor))
        decision_id = decision_id_for(request_id)
        chosen = sample_index(pmf, uniform_draw(self._seed, decision_id))
        action = eligible[chosen]
        return DecisionRecord(
            decision_id=decision_id,
            request_id=request_id,
            customer_id=request.customer_id,
            touchpoint=request.touchpoint,
            event_time=event_time,
            action_id=action.id,
            offer=action.offer,
            channel=action.channel,
            slot=action.slot,
            send_at=self.catalog.send_at(action, event_time),
            probability=pmf[chosen],
            exploratory=policy.model.cold or pmf[chosen] < max(pmf),
            policy_id=policy.policy_id,
            model_version=policy.model.version,
            personalised=personalised,
            features=features,
            eligible=eligible_ids,
            pmf=tuple(pmf),
            exclusions=exclusions.to_json(),
            contact_consent=dict(request.contact_consent),
            shadow=shadow,
            shared_line=shared_line,
            received_at=now,
        )

    def encoder_for(self, model: Policy) -> FeatureEncoder:
        """The encoder of ``model``'s numeric encoding (made once per encoding)."""
        learned = model.encoding
        key = "" if learned is None else learned.key
        encoder = self._encoders.get(key)
        if encoder is None:
            encoder = self._encoders[key] = FeatureEncoder(self.config, learned)
        return encoder

    def _fallback(self, policy: ServingPolicy, shared_line: str, eligible: Sequence[Action], pmf: Sequence[float]) -> list[float]:
        """Uniform over the eligible actions, for a model that scored a distribution one cannot
        sample from (NaN, infinite): the request is answered, never failed (logged once per model)."""
        model = (policy.policy_id, policy.model.version)
        if model not in self._unusable:
            self._unusable.add(model)
            log.error(
                "model %s of %s scored a distribution that is not finite (%s for %r): serving uniform over the eligible actions "
                "for every such request", policy.model.version, policy.policy_id, list(pmf)[:4], shared_line[:120],
            )  # fmt: skip
        if self._on_fallback:
            self._on_fallback()
        return self._uniform.pmf(shared_line, eligible)

    def _eligible(self, exclusions: Exclusions) -> tuple[tuple[Action, ...], tuple[str, ...]]:
        """The eligible actions and their ids; remembered per distinct set of exclusions (few recur)."""
        key = (bool(exclusions.all_contacts), frozenset(exclusions.offers), frozenset(exclusions.channels), exclusions.candidates)
        found = self._eligible_memo.get(key)
        if found is None:
            actions = tuple(exclusions.eligible(self.catalog.actions))
            found = (actions, tuple(a.id for a in actions))
            if len(self._eligible_memo) >= MEMO_SIZE:
                self._eligible_memo.clear()
            self._eligible_memo[key] = found
        return found

    def _log(
        self,
        fresh: list[tuple[_Accepted, Made]],
        logs: dict[str, CustomerLog],
        commit: _Commit | None = None,
        tries: int = 1,
        held: HeldWrite | None = None,
    ) -> Future[None]:
        """One write for the decisions, made on the heads of ``logs``; they count as in flight until
        it has committed (or failed). A write the store may not refuse as stale (``may_refuse``:
        SQLite's, where one serving process writes, unless a Forget was called since the read)
        finds no request id another process logged either, and the write is what the caller waits
        on (a commit future between them cost 50-80 µs of CPU a Decide). Otherwise the caller waits
        on a commit that outlives a write the store refused as stale or for a request id logged
        meanwhile: the decisions are then made again, or settled by the other process's
        (``_decide_again``). With ``held``, the decisions join its write instead of one of their own."""
        records = [holder.record for _, holder in fresh]
        heads = {r.customer_id: logs[r.customer_id].head for r in records}
        write = self.store.submit_decisions(records, heads) if held is None else held.hold(records, heads)
        # A held write is submitted later: a Forget may come first, whatever may_refuse says now.
        refusable = self.store.may_refuse(heads) if held is None else any(head is not None for head in heads.values())
        if commit is None and not refusable:
            self._in_flight(fresh, write)
            write.add_done_callback(lambda _: self._settled(records))
            return write
        commit = commit or _Commit()
        commit.write = write
        self._in_flight(fresh, commit)
        write.add_done_callback(lambda _: self._settle_try(fresh, records, write, commit, tries))
        return commit

    def _in_flight(self, fresh: list[tuple[_Accepted, Made]], committed: Future[None]) -> None:
        with self._inflight.lock:
            for _, holder in fresh:
                record = holder.record
                self._inflight.by_request[record.request_id] = PendingDecision(holder, committed)
                self._inflight.by_customer.setdefault(record.customer_id, []).append(record)

    def _settled(self, records: list[DecisionRecord], *, requests: bool = True) -> None:
        with self._inflight.lock:
            self._inflight.remove(records, requests=requests)

    def _settle_try(
        self, fresh: list[tuple[_Accepted, Made]], records: list[DecisionRecord], write: Future[None], commit: _Commit, tries: int
    ) -> None:
        """One try's write is done: resolve the commit, or make the decisions again if the store
        found their histories stale or one of their request ids logged (on a thread of its own: this
        one is the store's, and deciding again reads the store). Of a write refused for some
        customers only (StaleHistory naming them), only theirs are made again: the rest are written."""
        error = None if write.cancelled() else write.exception()
        stale = error.customers if isinstance(error, StaleHistory) else None
        if stale is not None and any(r.customer_id not in stale for r in records):
            commit.written = True
            self._settled([r for r in records if r.customer_id not in stale])
            fresh = [(a, made) for a, made in fresh if a.request.customer_id in stale]
            records = [made.record for _, made in fresh]
        again = isinstance(error, (StaleHistory, Conflict)) and tries < MAX_TRIES and not commit.cancelled()
        self._settled(records, requests=not again)  # a request made again stays in flight
        if write.cancelled():  # a held write cancelled: so is every commit waiting on it
            commit.cancel()
            return
        if again:
            retry = threading.Thread(target=self._decide_again, args=(fresh, commit, tries), name="brein-decide-again")
            retry.daemon = True
            retry.start()
            return
        if error is None:
            with suppress(InvalidStateError):  # the caller may have cancelled it meanwhile
                commit.set_result(None)
        else:
            _give_up(fresh, commit, error)

    def _decide_again(self, fresh: list[tuple[_Accepted, Made]], commit: _Commit, tries: int) -> None:
        """Make the decisions of a refused write again, on their customers' histories read afresh;
        those whose request id another process logged meanwhile are settled by its decision instead."""
        customers = {a.request.customer_id for a, _ in fresh}
        try:
            with self._deciding.holding(customers):
                with self._inflight.lock:
                    pending = {c: list(self._inflight.by_customer[c]) for c in customers if c in self._inflight.by_customer}
                times = [a.event_time for a, _ in fresh]
                asked = {a.request_id for a, _ in fresh if a.request.request_id}
                logged, logs = self.store.deciding_reads(asked, customers, min(times), max(times), self._lookback)
                again = self._logged_elsewhere(fresh, logged)
                for a, holder in again:
                    customer = a.request.customer_id
                    history = _with_pending(logs[customer].at(a.event_time), pending.get(customer, ()), a.event_time)
                    holder.record = self._decide(a.request, a.request_id, a.event_time, a.now, history)
                    pending.setdefault(customer, []).append(holder.record)
                if again:
                    self._log(again, logs, commit, tries + 1)
                else:
                    with suppress(InvalidStateError):  # the caller may have cancelled it meanwhile
                        commit.set_result(None)
        except Exception as error:  # the store cannot be read: the caller hears of it, and may ask again
            with self._inflight.lock:
                for _, holder in fresh:
                    self._inflight.by_request.pop(holder.record.request_id, None)
            _give_up(fresh, commit, error)

    def _logged_elsewhere(
        self, fresh: list[tuple[_Accepted, Made]], logged: Mapping[str, DecisionRecord]
    ) -> list[tuple[_Accepted, Made]]:
        """Settle each decision whose request id is ``logged`` (by another process: this one's are
        in flight until written) as a replay of that decision, or refused when its request differs;
        out of flight. The others, to be made again."""
        again = []
        for a, holder in fresh:
            record = logged.get(a.request_id)
            if record is None:
                again.append((a, holder))
                continue
            holder.record, holder.elsewhere, holder.refused = record, True, self._reused(a, record)
            with self._inflight.lock:
                self._inflight.by_request.pop(a.request_id, None)
        return again


def _give_up(fresh: list[tuple[_Accepted, Made]], commit: _Commit, error: BaseException) -> None:
    """The decisions of ``fresh`` are not written: ``commit`` fails with ``error``, or, when an
    earlier try wrote others of its decisions, resolves with each of these ``refused`` alone."""
    with suppress(InvalidStateError):  # the caller may have cancelled it meanwhile
        if commit.written and isinstance(error, Exception):
            for _, made in fresh:
                made.refused = error
            commit.set_result(None)
        else:
            commit.set_exception(error)


@dataclass(frozen=True, slots=True)
class _Accepted:
    """A request that passed validation, with its resolved request id and times."""

    request: DecisionRequest
    request_id: str
    event_time: float
    now: float


def _with_pending(stored: CustomerHistory, pending: Sequence[DecisionRecord], now: float) -> CustomerHistory:
    """The stored history with the customer's decisions that are not logged yet: those before ``now``
    as contacts, those at or after it as later contacts (for the contact policy only)."""
    if not pending:
        return stored
    known = {c.decision_id for c in stored.contacts} | {c.decision_id for c in stored.later}
    extra = [
        Contact(r.decision_id, r.event_time, r.channel, r.offer)
        for r in pending
        if r.action_id != "do_nothing" and r.decision_id not in known
    ]
    if not extra:
        return stored
    before = [c for c in extra if c.event_time < now]
    after = [c for c in extra if c.event_time >= now]
    contacts = tuple(sorted(stored.contacts + tuple(before), key=_contact_time)) if before else stored.contacts
    later = tuple(sorted(stored.later + tuple(after), key=_contact_time)) if after else stored.later
    times = [c.event_time for c in before] + ([stored.last_contact] if stored.last_contact is not None else [])
    last_contact = max(times, default=None)
    return CustomerHistory(contacts, last_contact, stored.last_outcome, later, stored.next_outcome)


def _contact_time(contact: Contact) -> float:
    return contact.event_time
