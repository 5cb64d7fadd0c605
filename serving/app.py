"""Brein's core assembled from a config: store, catalog, serving policy, decider. No gRPC here."""

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
from bandit.store import CommitListener, SQLiteStore
from reward.ingest import ActivationReport, OutcomeReport, record_activation, record_outcome

log = logging.getLogger("brein")


def load_serving_policy(config: BreinConfig, store: SQLiteStore) -> ServingPolicy:
    """The configured model file if there is one, else a cold start (uniform exploration)."""
    args = vw_arguments(config.learner)
    data: bytes | None = None
    if config.learner.model is not None and Path(config.learner.model).exists():
        data = Path(config.learner.model).read_bytes()
    try:
        model = VWPolicy(args, data)
    except Exception as error:
        raise ConfigError(f"learner.model: {config.learner.model} is not a VW model for {' '.join(args)}: {error}") from None
    if data is not None:
        store.save_model(model.version, args, data)
    return ServingPolicy(config.learner.policy_id, model)


class Brain:
    def __init__(
        self,
        config: BreinConfig,
        store_path: str | Path | None = None,
        *,
        clock: Callable[[], float] = time.time,
        on_commit: CommitListener | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.store = SQLiteStore(store_path or config.server.store, on_commit=on_commit)
        self.decider = Decider(config, self.store, load_serving_policy(config, self.store), clock=clock)
        self.catalog = self.decider.catalog
        self._encoder = FeatureEncoder(config)

    def decide(self, request: DecisionRequest) -> PendingDecision:
        return self.decider.decide(request)

    def report_outcome(self, report: OutcomeReport) -> tuple[OutcomeRecord, Future[bool]]:
        return record_outcome(report, self.config, self.store, self.clock())

    def activate(self, report: ActivationReport) -> Future[bool]:
        return record_activation(report, self.store, self.clock())

    def explain(self, decision_id: str) -> Explanation:
        return explain(decision_id, self.store, self.catalog, self._encoder)

    def close(self) -> None:
        self.store.close()
