"""The worker: joins closed decisions with their outcomes, learns the champion from the joined
examples (storing snapshots that every server follows) and applies retention, on one store.

Exactly one worker works on a store at a time: the one holding the store's worker lease
(store.ports.WorkerLease). Others stand by and ask for the lease every LEASE_POLL_SECONDS; when the
holder dies its lease goes with it and a standby takes over. Every write of the joiner is exactly
once and the learner starts from the newest snapshot's position, so a takeover at any moment joins
and learns what an uninterrupted worker would have.

``work`` is the loop, for `brein worker` and for the worker `brein serve` starts beside itself
(brain/worker_process.py). It reports what it did as events; a round that fails is logged,
reported and tried again at the next one.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from bandit.config import BreinConfig
from bandit.learner import VWPolicy
from brain.champion import bootstrap_champion
from brain.probe import Prober
from brain.tuning import ScheduledTuning, TuningRun
from policies.loading import PolicyLoadError, load_policy
from policies.registry import Registry
from reward.joiner import WRITE_ROWS, Joiner, JoinReport
from reward.online import LearnRun, OnlineLearner
from reward.retention import apply_retention
from store import Store
from store.errors import LeaseLost
from store.records import RetentionReport

log = logging.getLogger("brein.worker")

LEASE_POLL_SECONDS = 1.0
BESIDE_A_SERVER_WRITE_ROWS = 250
"""Joined examples per write while servers share the store: each write holds SQLite's write lock,
and a server's Decide writes wait for it (50,000 rows, the joiner's own default, hold it about a second)."""
BESIDE_A_SERVER_COMMIT_PAUSE = 0.01
"""Seconds the worker's writer rests after each commit: a server's writer, trying every
millisecond, takes the lock in between."""


@dataclass(frozen=True, slots=True)
class RoundReport:
    join: JoinReport
    learned: int
    tuned: TuningRun | None = None
    set_aside: int = 0
    """Joined examples the learner set aside: learning them left a model the probe refuses."""


class Worker:
    """One worker's state on a store: its joiner, and a learner for the registry's champion."""

    def __init__(
        self, config: BreinConfig, store: Store, *, clock: Callable[[], float] = time.time, join_write_rows: int = WRITE_ROWS
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.registry = Registry(store.registry)
        self.joiner = Joiner(config, store.joins, write_rows=join_write_rows)
        self._prober = Prober(config)
        self._learning: str | None = None
        self._learner: OnlineLearner | None = None
        self._retained_at: float | None = None
        self.tuning = ScheduledTuning(config, store) if config.tuning.enabled else None

    def round(self, until: float | None = None) -> RoundReport:
        """Join every decision whose window has closed by ``until`` (default: the latest event time
        seen), learn the champion from what is joined and not learned yet, and tune when ``[tuning]``
        is due (in event time)."""
        report = self.joiner.run(until)
        learner = self.learner() if self.config.learner.online else None
        run = learner.step() if learner is not None else LearnRun(0)
        return RoundReport(report, run.learned, self.tune(until), len(run.set_aside))

    def tune(self, until: float | None = None) -> TuningRun | None:
        """The scheduled tuning run, if ``[tuning]`` is on and one is due at ``until`` (default: the latest event time seen)."""
        now = until if until is not None else self.store.joins.watermark()
        if self.tuning is None or now is None or not self.tuning.due(now):
            return None
        return self.tuning.run(now, joined_until=now - self.joiner.rules.close_after)

    def learner(self) -> OnlineLearner | None:
        """The online learner of the registry's champion, from its newest snapshot that loads and
        passes the probe (brain/probe.py), and the position that snapshot had learned to; a new one
        when the champion changes. None for a champion that is not a VW model (or does not load:
        logged once)."""
        champion = bootstrap_champion(self.config, self.registry)
        if champion.id != self._learning:
            self._learning, self._learner = champion.id, None
            try:
                # Never learn on from a snapshot that scores non-finite: every one after it would too.
                policy, learned = load_policy(champion, self.store.models, accept=self._prober.check)
            except PolicyLoadError:
                log.exception("champion %s does not load: nothing is learned until the registry changes", champion.id)
                return None
            if isinstance(policy, VWPolicy):
                data = None if policy.cold else policy.serialize()
                self._learner = OnlineLearner(self.config, self.store.examples, self.store.models, policy.args, data,
                                              decisions=self.store.decisions, policy_id=champion.id, after=learned,
                                              encoding=policy.encoding, probe=self._prober.check)  # fmt: skip
        return self._learner

    def retention_due(self) -> bool:
        """Retention is configured and has not run for ``privacy.retention_interval_seconds``."""
        privacy = self.config.privacy
        if privacy.retention_days is None:
            return False
        return self._retained_at is None or time.monotonic() - self._retained_at >= privacy.retention_interval_seconds

    def retain(self) -> RetentionReport:
        """Delete what is older than ``privacy.retention_days`` now."""
        days = self.config.privacy.retention_days
        if days is None:
            raise ValueError("privacy.retention_days is not set")
        self._retained_at = time.monotonic()
        return apply_retention(self.store.privacy, self.store.audit, days, now=self.clock())


# -- what the loop reports --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Joined:
    """A round of joining and learning is done."""

    joined: int
    unactivated: int
    late_outcomes: int
    pending: int
    learned: int
    clamped: int = 0
    provisional: int = 0
    set_aside: int = 0


@dataclass(frozen=True, slots=True)
class Failed:
    """A round failed (logged by the worker); the next one tries again."""

    error: str


@dataclass(frozen=True, slots=True)
class Retained:
    """A retention run deleted this many rows of each kind."""

    deleted: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RetentionFailed:
    error: str


@dataclass(frozen=True, slots=True)
class ThreadFailed:
    """A supervised background thread of the worker (store/threads.py) failed; it runs again."""

    thread: str
    error: str


@dataclass(frozen=True, slots=True)
class StandingBy:
    """Another worker holds the lease; this one asks for it every LEASE_POLL_SECONDS."""


WorkerEvent = Joined | Failed | Retained | RetentionFailed | ThreadFailed | StandingBy
EVENTS: dict[str, type[WorkerEvent]] = {
    kind.__name__: kind for kind in (Joined, Failed, Retained, RetentionFailed, ThreadFailed, StandingBy)
}


def event_line(event: WorkerEvent) -> str:
    """One event as a line of JSON (how a worker process tells its server)."""
    return json.dumps({"event": type(event).__name__, **asdict(event)})


def parse_event(line: str) -> WorkerEvent:
    fields = json.loads(line)
    kind = EVENTS.get(fields.pop("event", None))
    if kind is None:
        raise ValueError(f"expected a worker event, got {line.strip()[:80]!r}")
    return kind(**fields)


Report = Callable[[WorkerEvent], None]
Stop = Callable[[float], bool]
"""Waits up to the given seconds; True when the worker is to stop."""


def work(config: BreinConfig, store: Store, report: Report, stop: Stop, *, clock: Callable[[], float] = time.time) -> None:
    """Rounds every ``joiner.interval_seconds`` (and retention when due) while ``store`` holds the
    worker lease; without it, ask again every LEASE_POLL_SECONDS. Returns once ``stop`` says so."""
    worker: Worker | None = None
    standing_by = False
    while True:
        if not store.lease.try_acquire():
            worker = None  # whoever holds the lease now moves the store on: start afresh from it
            if not standing_by:
                standing_by = True
                log.info("another worker holds the store's worker lease; standing by")
                report(StandingBy())
            if stop(LEASE_POLL_SECONDS):
                return
            continue
        if worker is None:
            log.info(
                "holding the store's worker lease: joining, learning%s",
                " and applying retention" if config.privacy.retention_days else "",
            )
            standing_by = False
            for warning in store.joins.maintenance_warnings():
                log.warning(warning)
            worker = Worker(config, store, clock=clock, join_write_rows=BESIDE_A_SERVER_WRITE_ROWS)
        started = time.monotonic()
        report(_round(worker))
        if worker.retention_due():
            report(_retention(worker))
        if stop(max(0.0, config.joiner.interval_seconds - (time.monotonic() - started))):
            return


def _round(worker: Worker) -> WorkerEvent:
    try:
        done = worker.round()
    except LeaseLost as error:  # not a failure of the round's work: another worker goes on with it
        log.warning("%s; standing by", error)
        return Failed(f"{type(error).__name__}: {error}")
    except Exception as error:
        log.exception("join/learn round failed; trying again in %.0f s", worker.config.joiner.interval_seconds)
        return Failed(f"{type(error).__name__}: {error}")
    join = done.join
    if join.clamped:
        log.warning(
            "%d credited values were not finite or past their outcome type's max_value: clamped before learning",
            join.clamped, extra={"clamped": join.clamped},
        )  # fmt: skip
    if done.learned:
        log.info("learned %d examples", done.learned,
                 extra={"joined": join.joined, "provisional": join.provisional, "late_outcomes": join.late_outcomes})  # fmt: skip
    return Joined(join.joined, join.unactivated, join.late_outcomes, join.pending, done.learned, join.clamped, join.provisional,
                  done.set_aside)  # fmt: skip


def _retention(worker: Worker) -> WorkerEvent:
    try:
        retained = worker.retain()
    except Exception as error:
        log.exception("retention run failed; trying again in %.0f s", worker.config.privacy.retention_interval_seconds)
        return RetentionFailed(f"{type(error).__name__}: {error}")
    if any(retained.deleted.values()):
        log.info("retention deleted data older than %g days", worker.config.privacy.retention_days, extra=retained.deleted)
    return Retained(retained.deleted)
