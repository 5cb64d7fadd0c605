"""Brein's core assembled from a config: store, registry, serving and shadow policies, decider,
joiner, online learner. No gRPC here: the server, the CLI and the tests all build on this."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from pathlib import Path

from bandit.config import BreinConfig
from bandit.decider import Decider, PendingDecision, ServingPolicy
from bandit.errors import BreinError, ConfigError
from bandit.explain import Explanation, explain
from bandit.features import FeatureEncoder
from bandit.in_place import errors_in_place
from bandit.learner import VWPolicy, vw_arguments
from bandit.policies import Policy
from bandit.pseudonyms import Pseudonyms
from bandit.records import OutcomeRecord
from bandit.requests import DecisionRequest
from bandit.store import CommitListener, ModelSnapshot, SQLiteStore
from policies.loading import PolicyLoadError, load_policy
from policies.registry import InvalidTransition, PolicyEntry, Registry
from reward.audit import audit
from reward.forget import ForgetReport, forget_customer
from reward.ingest import ActivationReport, OutcomeReport, record_activation, record_outcome
from reward.joiner import WRITE_ROWS, Joiner, JoinReport
from reward.online import Cursor, OnlineLearner

log = logging.getLogger("brein")

ModelListener = Callable[[ServingPolicy], None]
SnapshotListener = Callable[[ModelSnapshot], None]


def bootstrap_champion(config: BreinConfig, registry: Registry) -> PolicyEntry:
    """The registry's champion; on a new store, the config's VW policy (its model file, or cold)."""
    champion = registry.champion()
    if champion is not None:
        return champion
    args = vw_arguments(config.learner)
    path = config.learner.model
    data = Path(path).read_bytes() if path is not None and Path(path).exists() else None
    if data is not None:
        try:
            VWPolicy(args, data)
        except Exception as error:
            raise ConfigError(f"learner.model: {path} is not a VW model for {' '.join(args)}: {error}") from None
    try:
        return registry.register(
            config.learner.policy_id, "vw", artifact=data, args=args, features=config.features.model_dump(), actor="brein",
            state="champion", note=f"bootstrapped from the config ({'model ' + str(path) if data else 'cold start'})",
        )  # fmt: skip
    except InvalidTransition:
        champion = registry.champion()  # another process on this store bootstrapped one first: serve that
        if champion is None:
            raise
        return champion


class Brain:
    def __init__(
        self,
        config: BreinConfig,
        store_path: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_commit: CommitListener | None = None,
        on_model: ModelListener | None = None,
        on_snapshot: SnapshotListener | None = None,
        join_write_rows: int = WRITE_ROWS,
        commit_pause: float = 0.0,
    ) -> None:
        """``on_snapshot`` makes a Brain that learns for a server in another process (the join/learn
        worker): each snapshot it stores goes to ``on_snapshot`` instead of being loaded to serve,
        and it scores with no shadows. ``join_write_rows`` and ``commit_pause`` make room for that
        other process's writes: see reward.joiner.WRITE_ROWS and SQLiteStore."""
        self.config = config
        self.clock = clock
        # Customer ids enter the core here (decide, report_outcome, forget) and nowhere else: pseudonymised once.
        self.pseudonyms = Pseudonyms.from_config(config.privacy)
        self.store = SQLiteStore(store_path or config.server.store, on_commit=on_commit, commit_pause=commit_pause)
        self.registry = Registry(self.store)
        self.joiner = Joiner(config, self.store, write_rows=join_write_rows)
        self._on_model = on_model
        self._on_snapshot = on_snapshot
        self._encoder = FeatureEncoder(config)
        self._refused_champion: str | None = None
        self._refused_shadows: set[str] = set()
        self._serving = threading.Lock()  # one change of the serving model at a time
        champion = bootstrap_champion(config, self.registry)
        policy, learned = load_policy(champion, self.store)
        self.decider = Decider(config, self.store, ServingPolicy(champion.id, policy), clock=clock)
        self.catalog = self.decider.catalog
        self._learns_from: tuple[str, Policy, Cursor] | None = (champion.id, policy, learned)
        self._learner: OnlineLearner | None = None
        if on_snapshot is None:
            self.refresh_shadows()

    @property
    def learner(self) -> OnlineLearner | None:
        """The champion's online learner, made when first asked for: a server whose worker learns
        never pays for one (it serializes the model)."""
        if self._learns_from is not None:
            policy_id, policy, learned = self._learns_from
            self._learns_from = None
            if isinstance(policy, VWPolicy):
                data = None if policy.cold else policy.serialize()
                self._learner = OnlineLearner(
                    self.config, self.store, policy.args, data, self._publisher(policy_id), policy_id=policy_id, after=learned
                )
            else:
                self._learner = None
        return self._learner

    def _publisher(self, policy_id: str) -> SnapshotListener:
        def publish(snapshot: ModelSnapshot) -> None:
            if self._on_snapshot is not None:
                self._on_snapshot(snapshot)
            elif self.decider.policy.policy_id == policy_id:  # else promoted away while learning: the new champion serves
                self._serve(ServingPolicy(policy_id, VWPolicy(snapshot.args, snapshot.data)))

        return publish

    def _serve(self, policy: ServingPolicy) -> None:
        self.decider.swap_policy(policy)
        if self._on_model:
            self._on_model(policy)

    def follow_registry(self) -> None:
        """Serve the registry's champion and score with its shadows, as they are now."""
        self.refresh_champion()
        self.refresh_shadows()

    def follow_snapshot(self, policy_id: str, version: str) -> bool:
        """Serve a snapshot of the champion that a learner in another process stored; one that does
        not load is refused and the current model keeps serving. True when it now serves."""
        with self._serving:
            current = self.decider.policy
            if current.policy_id != policy_id or current.model.version == version:
                return False
            snapshot = self.store.model(version)
            if snapshot is None:
                log.error("refused snapshot %s of %s: it is not in the store", version, policy_id)
                return False
            try:
                model = VWPolicy(snapshot.args, snapshot.data)
            except Exception:
                log.exception("refused snapshot %s of %s: it does not load; %s keeps serving", version, policy_id, current.model.version)
                return False
            self._serve(ServingPolicy(policy_id, model))
            return True

    def refresh_champion(self) -> bool:
        """Serve the registry's champion if it changed; a policy that fails to load is refused and
        the current one keeps serving. True when the champion changed."""
        with self._serving:
            return self._refresh_champion()

    def _refresh_champion(self) -> bool:
        champion = self.registry.champion()
        if champion is None or champion.id == self.decider.policy.policy_id:
            self._refused_champion = None
            return False
        if champion.id == self._refused_champion:
            return False
        try:
            policy, learned = load_policy(champion, self.store)
        except PolicyLoadError:
            # Logged once, not every round: the registry has to change (promote, rollback) to try again.
            self._refused_champion = champion.id
            log.exception("refused to switch to champion %s: it does not load; %s keeps serving", champion.id, self.decider.policy.policy_id)
            return False
        self._refused_champion = None
        self._learns_from = (champion.id, policy, learned)
        self._serve(ServingPolicy(champion.id, policy))
        log.info("now serving champion %s (%s)", champion.id, policy.version)
        return True

    def refresh_shadows(self) -> None:
        """Score with the registry's shadows; one already loaded is kept, one that does not load is
        left out (and logged once while it stays a shadow)."""
        entries = self.registry.in_state("shadow")
        loaded = {s.policy_id: s for s in self.decider.shadows}
        shadows = []
        for entry in entries:
            if entry.id in loaded:
                shadows.append(loaded[entry.id])
                continue
            if entry.id in self._refused_shadows:
                continue
            try:
                shadows.append(ServingPolicy(entry.id, load_policy(entry, self.store)[0]))
            except PolicyLoadError:
                self._refused_shadows.add(entry.id)
                log.exception("shadow policy %s does not load; it is left out", entry.id)
        self._refused_shadows &= {e.id for e in entries}
        self.decider.set_shadows(tuple(shadows))

    def decide(self, request: DecisionRequest) -> PendingDecision:
        return self.decider.decide(self.pseudonyms.request(request))

    def decide_many(self, requests: Sequence[DecisionRequest]) -> list[PendingDecision | Exception]:
        """Each request's decision or the error that refused it, in order (see Decider.decide_many)."""
        return errors_in_place(requests, self.pseudonyms.request, self.decider.decide_many, refused=BreinError)

    def report_outcome(self, report: OutcomeReport) -> tuple[OutcomeRecord, Future[bool]]:
        return record_outcome(self.pseudonyms.request(report), self.config, self.store, self.clock())

    def activate(self, report: ActivationReport) -> Future[bool]:
        return record_activation(report, self.store, self.clock())

    def explain(self, decision_id: str) -> Explanation:
        return explain(decision_id, self.store, self.catalog, self._encoder)

    def forget(self, customer_id: str, actor: str) -> Future[ForgetReport]:
        return forget_customer(self.store, self.pseudonyms.customer_id(customer_id), actor=actor, now=self.clock())

    def audit(self, actor: str, action: str, subject: str, detail: str) -> Future[None]:
        """Record who did what (an Explain, an admin action) in the audit table."""
        return audit(self.store, actor=actor, action=action, subject=subject, detail=detail, now=self.clock())

    def join_and_learn(self, until: float | None = None) -> tuple[JoinReport, int]:
        """One round of the background work: follow the registry, join what has closed, learn it."""
        if self._on_snapshot is None:
            self.follow_registry()
        else:
            self.refresh_champion()
        report = self.joiner.run(until)
        learner = self.learner
        learned = learner.step() if learner is not None and self.config.learner.online else 0
        return report, learned

    def close(self) -> None:
        self.store.close()
