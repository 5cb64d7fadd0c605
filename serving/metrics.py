"""Prometheus metrics on a registry that is passed in (never the global one)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
MODEL_CHANGE_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.decide_latency = Histogram(
            "brein_decide_latency_seconds", "Decide latency inside the server, commit included", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.decisions = Counter("brein_decisions", "Decisions logged", ["action", "channel", "policy"], registry=registry)
        self._decided: dict[tuple[str, str, str], Counter] = {}
        self.rpc_errors = Counter("brein_rpc_errors", "RPCs answered with an error, by method and status code", ["method", "code"], registry=registry)
        refused = "Request values refused as out of range (not finite, past their bound, too long), by kind"
        self.refused_values = Counter("brein_refused_values", refused, ["kind"], registry=registry)
        self.outcomes = Counter("brein_outcomes", "Outcomes stored, by type", ["type"], registry=registry)
        self.activations = Counter("brein_activations", "Activations stored", registry=registry)
        self.store_commit = Histogram(
            "brein_store_commit_seconds", "Duration of one group commit to the store", buckets=LATENCY_BUCKETS, registry=registry
        )
        self.store_commit_writes = Counter("brein_store_committed_writes", "Writes committed to the store", registry=registry)
        self.store_commit_failures = Counter("brein_store_commit_failures", "Group commits that failed", registry=registry)
        self.joined = Counter("brein_joined_examples", "Decisions joined with their outcomes, by status", ["status"], registry=registry)
        late = "Outcomes that arrived after a decision they are credited to was joined"
        self.late_outcomes = Counter("brein_late_outcomes", late, registry=registry)
        self.join_pending = Gauge("brein_join_pending", "Decisions whose attribution window is still open", registry=registry)
        clamped = "Credited values the joiner clamped to their outcome type's max_value (or dropped: not finite)"
        self.clamped_rewards = Counter("brein_clamped_rewards", clamped, registry=registry)
        provisional = "Provisional examples to learn from: a decision at the close of one of its shorter windows"
        self.provisional = Counter("brein_provisional_examples", provisional, registry=registry)
        self.learned = Counter("brein_learned_examples", "Joined and provisional examples learned online", registry=registry)
        set_aside = (
            "Joined examples the online learner set aside: learning them left a model the probe refuses "
            "(the worker logs their decision ids)"
        )
        self.set_aside = Counter("brein_set_aside_examples", set_aside, registry=registry)
        failures = (
            "Background failures by thread: join/learn rounds (brein-worker), retention runs (brein-retention), worker "
            "processes (brein-worker-process), following the store (brein-follow), the store's writers and checkpointers "
            "(brein-store-writer, brein-store-checkpointer; SQLite's worker file: brein-worker-file-writer, -checkpointer)"
        )
        self.background_failures = Counter("brein_background_failures", failures, ["thread"], registry=registry)
        unusable = "Models scoring a non-finite distribution: refused before serving (probe), requests answered uniform (serving)"
        self.unusable_models = Counter("brein_unusable_models", unusable, ["stage"], registry=registry)
        self.model_version = Gauge("brein_model_info", "The serving policy and model version (value 1)", ["policy", "version"], registry=registry)
        changes = (
            "Changes of the serving model (a new champion or a newer snapshot), each timed from reading the store to serving: "
            "the model's load and probe hold a core, mostly under the GIL"
        )
        self.model_changes = Histogram("brein_model_change_seconds", changes, buckets=MODEL_CHANGE_BUCKETS, registry=registry)
        # Security and faults. Labels name callers (configured backends), kinds and codes: never customers or features.
        up = (
            "1 when the last group commit succeeded (or a read, after the store was unreachable); 0 when it failed, "
            "a write did not commit by its caller's deadline, or a call or the follow loop could not reach the store"
        )
        self.store_up = Gauge("brein_store_up", up, registry=registry)
        abandoned = "Writes given up at their deadline before they began, one per request they held; never written"
        self.store_abandoned = Counter("brein_store_abandoned_writes", abandoned, registry=registry)
        self.rate_limited = Counter("brein_rate_limited", "Calls refused past the rate limit", ["caller"], registry=registry)
        self.retention_deleted = Counter("brein_retention_deleted", "Rows deleted by retention", ["kind"], registry=registry)
        self.retention_runs = Counter("brein_retention_runs", "Retention runs, by result", ["result"], registry=registry)

    def decided(self, action: str, channel: str, policy: str) -> None:
        """Count a decision logged; its labels' child is looked up once (``labels()`` per Decide was
        a few per cent of a Decide's own work)."""
        key = (action, channel, policy)
        child = self._decided.get(key)
        if child is None:
            child = self._decided[key] = self.decisions.labels(action, channel, policy)
        child.inc()

    def on_commit(self, seconds: float, writes: int, succeeded: bool) -> None:
        self.store_commit.observe(seconds)
        self.store_up.set(1 if succeeded else 0)
        if succeeded:
            self.store_commit_writes.inc(writes)
        else:
            self.store_commit_failures.inc()

    def unusable(self, stage: str) -> None:
        self.unusable_models.labels(stage).inc()

    def not_in_time(self, abandoned: int) -> None:
        """A caller was answered UNAVAILABLE because its write did not commit in time: the store is
        down for it now, not only once the writer gives up waiting for the lock (seconds later)."""
        self.store_up.set(0)
        self.store_abandoned.inc(abandoned)

    def joined_round(
        self, joined: int, unactivated: int, late: int, pending: int, learned: int, clamped: int, provisional: int, set_aside: int
    ) -> None:
        self.joined.labels("joined").inc(joined)
        self.provisional.inc(provisional)
        self.joined.labels("unactivated").inc(unactivated)
        self.late_outcomes.inc(late)
        self.join_pending.set(pending)
        self.learned.inc(learned)
        self.clamped_rewards.inc(clamped)
        self.set_aside.inc(set_aside)

    def serving(self, policy_id: str, version: str) -> None:
        self.model_version.clear()
        self.model_version.labels(policy_id, version).set(1)
