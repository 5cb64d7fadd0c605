"""Brein's core assembled from a config: store, catalog, serving policy, decider, joiner, online
learner. No gRPC here: the server, the CLI and the tests all build on this."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path

from bandit.config import BreinConfig
from bandit.decider import Decider, PendingDecision, ServingPolicy
from bandit.errors import ConfigError
from bandit.explain import Explanation, explain
from bandit.features import FeatureEncoder
from bandit.learner import VWPolicy, vw_arguments
from bandit.records import OutcomeRecord
from bandit.requests import DecisionRequest
from bandit.store import CommitListener, ModelSnapshot, SQLiteStore
from reward.forget import ForgetReport, forget_customer
from reward.ingest import ActivationReport, OutcomeReport, record_activation, record_outcome
from reward.joiner import Joiner, JoinReport
from reward.online import START, Cursor, OnlineLearner

log = logging.getLogger("brein")

ModelListener = Callable[[ServingPolicy], None]


def load_serving_policy(config: BreinConfig, store: SQLiteStore) -> tuple[ServingPolicy, Cursor]:
    """The policy's latest stored snapshot, else the configured model file, else a cold start."""
    policy_id = config.learner.policy_id
    snapshot = store.latest_model(policy_id)
    if snapshot is not None:
        learned = snapshot.learned
        cursor: Cursor = (int(learned[0]), float(learned[1]), str(learned[2])) if learned else START
        return ServingPolicy(policy_id, VWPolicy(snapshot.args, snapshot.data)), cursor
    args = vw_arguments(config.learner)
    path = config.learner.model
    if path is None or not Path(path).exists():
        return ServingPolicy(policy_id, VWPolicy(args)), START
    data = Path(path).read_bytes()
    try:
        model = VWPolicy(args, data)
    except Exception as error:
        raise ConfigError(f"learner.model: {path} is not a VW model for {' '.join(args)}: {error}") from None
    store.save_model(ModelSnapshot(model.version, args, data, policy_id))
    return ServingPolicy(policy_id, model), START


class Brain:
    def __init__(
        self,
        config: BreinConfig,
        store_path: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_commit: CommitListener | None = None,
        on_model: ModelListener | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = SQLiteStore(store_path or config.server.store, on_commit=on_commit)
        policy, learned = load_serving_policy(config, self.store)
        self.decider = Decider(config, self.store, policy, clock=clock)
        self.catalog = self.decider.catalog
        self.joiner = Joiner(config, self.store)
        self._on_model = on_model
        self.learner = OnlineLearner(config, self.store, policy.model.copy(), self._publish, after=learned)
        self._encoder = FeatureEncoder(config)

    def _publish(self, model: VWPolicy) -> None:
        policy = ServingPolicy(self.config.learner.policy_id, model)
        self.decider.swap_policy(policy)
        if self._on_model:
            self._on_model(policy)

    def decide(self, request: DecisionRequest) -> PendingDecision:
        return self.decider.decide(request)

    def report_outcome(self, report: OutcomeReport) -> tuple[OutcomeRecord, Future[bool]]:
        return record_outcome(report, self.config, self.store, self.clock())

    def activate(self, report: ActivationReport) -> Future[bool]:
        return record_activation(report, self.store, self.clock())

    def explain(self, decision_id: str) -> Explanation:
        return explain(decision_id, self.store, self.catalog, self._encoder)

    def forget(self, customer_id: str, actor: str) -> Future[ForgetReport]:
        return forget_customer(self.store, customer_id, actor=actor, now=self.clock())

    def join_and_learn(self, until: float | None = None) -> tuple[JoinReport, int]:
        """One round of the background work: join what has closed, then learn it online."""
        report = self.joiner.run(until)
        learned = self.learner.step() if self.config.learner.online else 0
        return report, learned

    def close(self) -> None:
        self.store.close()
