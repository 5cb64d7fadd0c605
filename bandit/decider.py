"""The decision: rules, contact policy and consent narrow the catalog; the policy gives a pmf over
what is left; a seeded draw picks one action; the decision goes to the log.

``decide`` does the CPU work and queues the log write; the caller answers only once the write's
future resolves (durable). Decisions still in flight count in their customer's history, so two
concurrent requests for one customer cannot both pass a contact cap.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from bandit.contact_policy import ContactPolicy
from bandit.errors import InvalidRequest
from bandit.exclusions import Exclusions
from bandit.features import FeatureEncoder, local_hour_weekday
from bandit.history import Contact, CustomerHistory, history_features
from bandit.policies import Policy
from bandit.records import DecisionRecord
from bandit.requests import DecisionRequest, validate_decision_request
from bandit.rules import EligibilityRules
from bandit.sampling import decision_id_for, new_request_id, sample_index, uniform_draw
from bandit.store import DecisionLog


@dataclass(frozen=True, slots=True)
class ServingPolicy:
    """The policy that serves, swapped as one reference so a request sees one consistent policy."""

    policy_id: str
    model: Policy


@dataclass(slots=True)
class PendingDecision:
    record: DecisionRecord
    committed: Future[None]
    replayed: bool = False


@dataclass(slots=True)
class _InFlight:
    by_request: dict[str, PendingDecision] = field(default_factory=dict)
    by_customer: dict[str, list[DecisionRecord]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


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
    ) -> None:
        self.config = config
        self.catalog = Catalog(config)
        self.store = store
        self.policy = policy
        # Shadow policies score every decision alongside the champion; their pmfs are logged, never served.
        self.shadows: tuple[ServingPolicy, ...] = ()
        self._clock = clock
        self._seed = config.server.seed
        self._rules = EligibilityRules(config)
        self._contact_policy = ContactPolicy(config.contact_policy, self.catalog.channels)
        self._encoder = FeatureEncoder(config)
        self._outcome_types = tuple(config.outcomes)
        self._personalise_by_default = config.consent.personalisation_default == "granted"
        self._contact_by_default = config.consent.contact_default == "granted"
        self._inflight = _InFlight()

    def swap_policy(self, policy: ServingPolicy) -> None:
        self.policy = policy

    def set_shadows(self, shadows: tuple[ServingPolicy, ...]) -> None:
        self.shadows = shadows

    def decide(self, request: DecisionRequest) -> PendingDecision:
        now = self._clock()
        event_time = validate_decision_request(request, self.config, self.catalog, now)
        request_id = request.request_id or new_request_id()
        replay = self._replay(request_id, request.customer_id)
        if replay is not None:
            return replay
        record = self._decide(request, request_id, event_time, now)
        return self._log(record)

    def decide_and_wait(self, request: DecisionRequest) -> PendingDecision:
        pending = self.decide(request)
        pending.committed.result()
        return pending

    def _replay(self, request_id: str, customer_id: str) -> PendingDecision | None:
        with self._inflight.lock:
            pending = self._inflight.by_request.get(request_id)
        if pending is None:
            record = self.store.decision_by_request(request_id)
            pending = None if record is None else PendingDecision(record, _done())
        if pending is None:
            return None
        if pending.record.customer_id != customer_id:
            raise InvalidRequest("request_id", "already used for a decision about another customer")
        return PendingDecision(pending.record, pending.committed, replayed=True)

    def _history(self, customer_id: str, now: float) -> CustomerHistory:
        # In-flight first, then the store: a decision committed in between is in both (and deduplicated),
        # never in neither.
        with self._inflight.lock:
            pending = list(self._inflight.by_customer.get(customer_id, ()))
        stored = self.store.history(customer_id, now, self._contact_policy.lookback_days)
        if not pending:
            return stored
        known = {c.decision_id for c in stored.contacts}
        extra = [
            Contact(r.decision_id, r.event_time, r.channel, r.offer)
            for r in pending
            if r.action_id != "do_nothing" and r.event_time < now and r.decision_id not in known
        ]
        if not extra:
            return stored
        contacts = tuple(sorted(stored.contacts + tuple(extra), key=lambda c: c.event_time))
        last = max(c.event_time for c in contacts)
        return CustomerHistory(contacts, max(last, stored.last_contact or last), stored.last_outcome)

    def _decide(self, request: DecisionRequest, request_id: str, event_time: float, now: float) -> DecisionRecord:
        policy = self.policy
        personalised = request.personalisation == "granted" or (
            request.personalisation == "unspecified" and self._personalise_by_default
        )
        history = self._history(request.customer_id, event_time)
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
        eligible = exclusions.eligible(self.catalog.actions)

        features = self._encoder.shared_features(
            touchpoint=request.touchpoint,
            event_time=event_time,
            numeric=request.numeric,
            categorical=request.categorical,
            history=history_values,
            personalised=personalised,
        )
        shared_line = self._encoder.shared_line(features)
        pmf = policy.model.pmf(shared_line, eligible, features)
        shadow = {s.policy_id: tuple(s.model.pmf(shared_line, eligible, features)) for s in self.shadows if s.policy_id != policy.policy_id}
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
            eligible=tuple(a.id for a in eligible),
            pmf=tuple(pmf),
            exclusions=exclusions.to_json(),
            contact_consent=dict(request.contact_consent),
            shadow=shadow,
            shared_line=shared_line,
            received_at=now,
        )

    def _log(self, record: DecisionRecord) -> PendingDecision:
        inflight = self._inflight
        future = self.store.submit_decision(record)
        pending = PendingDecision(record, future)
        with inflight.lock:
            inflight.by_request[record.request_id] = pending
            inflight.by_customer.setdefault(record.customer_id, []).append(record)

        def settle(_: Future[None]) -> None:
            with inflight.lock:
                inflight.by_request.pop(record.request_id, None)
                same = inflight.by_customer.get(record.customer_id)
                if same is not None:
                    same.remove(record)
                    if not same:
                        del inflight.by_customer[record.customer_id]

        future.add_done_callback(settle)
        return pending
