"""The Brain: Brein's serving core on a store. It decides, takes outcomes and activations, explains,
forgets and audits, and follows what the store says should serve: the registry's champion, the
newest snapshot of it, and the shadows. It learns nothing itself: the worker (brain/worker.py)
does, in a process of its own, and stores snapshots that every Brain on the store follows."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from bandit.config import BreinConfig
from bandit.decider import Decider, HeldWrite, PendingDecision, ServingPolicy
from bandit.encoding import encoding_from_json
from bandit.errors import BreinError
from bandit.explain import Explanation, explain
from bandit.in_place import errors_in_place
from bandit.learner import VWPolicy
from bandit.pseudonyms import Pseudonyms
from bandit.requests import DecisionRequest
from brain.champion import bootstrap_champion
from brain.probe import Prober
from policies.loading import PolicyLoadError, load_policy
from policies.registry import MAX_SHADOWS, Registry
from reward.forget import forget_customer
from reward.ingest import ActivationReport, OutcomeReport, record_activation, record_outcome
from store import Store, open_store
from store.ports import CommitListener
from store.records import AuditEntry, ForgetReport, OutcomeRecord
from store.threads import ThreadFailure

log = logging.getLogger("brein")

ModelListener = Callable[[ServingPolicy], None]
UnusableListener = Callable[[str], None]
"""Hears of a model that scored a distribution that is not finite: "probe" when a snapshot was
refused before serving, "serving" for each request answered uniform instead."""


class Brain:
    def __init__(
        self,
        config: BreinConfig,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        on_model: ModelListener | None = None,
        on_unusable: UnusableListener | None = None,
    ) -> None:
        """``on_model`` hears of every change of the serving policy or model; ``on_unusable`` of
        every model that scores a distribution that is not finite (brain/probe.py)."""
        self.config = config
        self.store = store
        self.clock = clock
        # Customer ids enter the core here (decide, report_outcome, forget) and nowhere else: pseudonymised once.
        self.pseudonyms = Pseudonyms.from_config(config.privacy)
        self.registry = Registry(store.registry)
        self._on_model = on_model
        self._refused_champion: str | None = None
        self._refused_snapshot: str | None = None
        self._refused_shadows: set[str] = set()
        self._too_many_shadows: set[str] = set()
        self._serving = threading.Lock()  # one change of the serving model at a time
        self._on_unusable = on_unusable
        self._prober = Prober(config)
        champion = bootstrap_champion(config, self.registry)
        policy, _ = load_policy(champion, store.models, accept=self._probe)  # the newest snapshot that passes the probe
        serving = ServingPolicy(champion.id, policy)
        self.decider = Decider(config, store.decisions, serving, clock=clock, on_fallback=lambda: self._unusable("serving"))
        self.catalog = self.decider.catalog
        self.refresh_shadows()

    # -- following the store ------------------------------------------------------------------

    def follow(self, snapshot: bool = True) -> bool:
        """Serve what the store says now: the registry's champion, at its newest snapshot that loads
        (without ``snapshot``, a champion already serving keeps its model), scored alongside the
        registry's shadows. True when the serving model changed."""
        with self._serving:
            changed = self._follow_champion() or (snapshot and self._follow_snapshot())
        self.refresh_shadows()
        return changed

    def _serve(self, policy: ServingPolicy) -> None:
        self.decider.swap_policy(policy)
        if self._on_model:
            self._on_model(policy)

    def _follow_champion(self) -> bool:
        """Serve the registry's champion if it changed; a policy that fails to load is refused and
        the current one keeps serving (logged once: the registry has to change to try again)."""
        champion = self.registry.champion()
        if champion is None or champion.id == self.decider.policy.policy_id:
            self._refused_champion = None
            return False
        if champion.id == self._refused_champion:
            return False
        try:
            policy, _ = load_policy(champion, self.store.models, accept=self._probe)
        except PolicyLoadError:
            self._refused_champion = champion.id
            log.exception(
                "refused to switch to champion %s: it does not load; %s keeps serving", champion.id, self.decider.policy.policy_id
            )
            return False
        self._refused_champion = None
        self._serve(ServingPolicy(champion.id, policy))
        log.info("now serving champion %s (%s)", champion.id, policy.version)
        return True

    def _follow_snapshot(self) -> bool:
        """Serve the champion's newest snapshot if it is not the serving one: one cheap read of its
        version, the model itself only when that changed."""
        current = self.decider.policy
        if not isinstance(current.model, VWPolicy):
            return False
        version = self.store.models.newest_version(current.policy_id)
        if version is None or version in (current.model.version, self._refused_snapshot):
            return False
        return self._serve_snapshot(current.policy_id, version)

    def serve_snapshot(self, policy_id: str, version: str) -> bool:
        """Serve a stored snapshot of the champion; one that does not load is refused (logged once)
        and the current model keeps serving. True when it now serves."""
        with self._serving:
            return self._serve_snapshot(policy_id, version)

    def _serve_snapshot(self, policy_id: str, version: str) -> bool:
        current = self.decider.policy
        if current.policy_id != policy_id or current.model.version == version:
            return False
        snapshot = self.store.models.get(policy_id, version)
        if snapshot is None:
            log.error("refused snapshot %s of %s: it is not in the store", version, policy_id)
            return False
        try:
            model = VWPolicy(snapshot.args, snapshot.data, encoding_from_json(snapshot.encoding))
        except Exception:
            self._refused_snapshot = version
            log.exception(
                "refused snapshot %s of %s: it does not load; %s keeps serving", version, policy_id, current.model.version
            )
            return False
        problem = self._probe(model)
        if problem is not None:
            self._refused_snapshot = version
            log.error("refused snapshot %s of %s: %s; %s keeps serving", version, policy_id, problem, current.model.version)
            return False
        self._serve(ServingPolicy(policy_id, model))
        log.info("now serving snapshot %s of %s", version, policy_id)
        return True

    def _probe(self, model: VWPolicy) -> str | None:
        """Why ``model`` must not serve (brain/probe.py), or None (counted)."""
        problem = self._prober.check(model)
        if problem is not None:
            self._unusable("probe")
        return problem

    def _unusable(self, stage: str) -> None:
        if self._on_unusable:
            self._on_unusable(stage)

    def refresh_shadows(self) -> None:
        """Score with the registry's shadows, the first MAX_SHADOWS that load (in the registry's order);
        one already loaded is kept, one that does not load is left out (logged once while it stays a
        shadow), and so is one past MAX_SHADOWS (logged once while it stays left out): the registry
        refuses more, but another process may add one meanwhile."""
        entries = self.registry.in_state("shadow")
        loaded = {s.policy_id: s for s in self.decider.shadows}
        shadows: list[ServingPolicy] = []
        too_many = set()
        for entry in entries:
            if entry.id in self._refused_shadows:
                continue
            if len(shadows) == MAX_SHADOWS:
                too_many.add(entry.id)
                if entry.id not in self._too_many_shadows:
                    log.error("shadow policy %s is left out: %d shadows score every decision already, the most allowed",
                              entry.id, MAX_SHADOWS)  # fmt: skip
                continue
            if entry.id in loaded:
                shadows.append(loaded[entry.id])
                continue
            try:
                shadows.append(ServingPolicy(entry.id, load_policy(entry, self.store.models, accept=self._probe)[0]))
            except PolicyLoadError:
                self._refused_shadows.add(entry.id)
                log.exception("shadow policy %s does not load; it is left out", entry.id)
        self._refused_shadows &= {e.id for e in entries}
        self._too_many_shadows = too_many
        self.decider.set_shadows(tuple(shadows))

    # -- requests -----------------------------------------------------------------------------

    def decide(self, request: DecisionRequest) -> PendingDecision:
        return self.decider.decide(self.pseudonyms.request(request))

    def decide_many(
        self, requests: Sequence[DecisionRequest], held: HeldWrite | None = None
    ) -> list[PendingDecision | Exception]:
        """Each request's decision or the error that refused it, in order (see Decider.decide_many)."""
        decide = functools.partial(self.decider.decide_many, held=held)
        return errors_in_place(requests, self.pseudonyms.request, decide, refused=BreinError)

    def hold_decisions(self) -> HeldWrite:
        """One write for the decisions of several ``decide_many`` calls, submitted by its ``release``."""
        return HeldWrite(self.store.decisions)

    def report_outcome(self, report: OutcomeReport) -> tuple[OutcomeRecord, Future[bool]]:
        return record_outcome(self.pseudonyms.request(report), self.config, self.store.decisions, self.clock())

    def activate(self, report: ActivationReport) -> Future[bool]:
        return record_activation(report, self.store.decisions, self.clock())

    def explain(self, decision_id: str) -> Explanation:
        return explain(decision_id, self.store.decisions, self.store.models, self.catalog, self.config)

    def forget(self, customer_id: str, actor: str) -> Future[ForgetReport]:
        return forget_customer(self.store.privacy, self.pseudonyms.customer_id(customer_id), actor=actor, now=self.clock())

    def audit(self, actor: str, action: str, subject: str, detail: str) -> Future[None]:
        """Record who did what (an Explain, an admin action) in the audit trail."""
        return self.store.audit.record(AuditEntry(self.clock(), actor, action, subject, detail))


def open_brain(
    config: BreinConfig,
    *,
    on_commit: CommitListener | None = None,
    on_model: ModelListener | None = None,
    on_unusable: UnusableListener | None = None,
    on_thread_failure: ThreadFailure | None = None,
) -> Brain:
    """A Brain on the store at ``server.store`` (for `brein serve`). The pseudonym key is checked
    before the store is opened: a server that cannot start changes nothing on disk."""
    Pseudonyms.from_config(config.privacy)
    store = open_store(config.server.store, on_commit=on_commit, on_thread_failure=on_thread_failure, serving=True)
    try:
        return Brain(config, store, on_model=on_model, on_unusable=on_unusable)
    except BaseException:
        store.close()
        raise
