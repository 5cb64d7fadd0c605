"""The delayed-reward joiner: every decision whose window has closed becomes one joined example.

Time is event time. The watermark is the latest event time seen (or ``until``); a decision closes
at its time + the longest attribution window + the allowed lateness (before that, at the close of
each shorter window, it gets a provisional example: reward/provisional.py). Decisions wait in the join
queue (filled in the transaction that logged them); a batch of joined examples is written in the
same transaction that takes its decisions out of the queue (and only for decisions still in it, so
one forgotten during the run is not brought back), so a joiner killed at any point and restarted
writes each example exactly once. Outcomes are read at close time, so an outcome that
arrived before its decision was logged is credited all the same; one that arrives after a decision
the credit rules give it to was joined is stored and counted as late, never credited twice.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from contextlib import closing
from dataclasses import asdict, dataclass
from operator import attrgetter
from types import MappingProxyType
from typing import Any, TypeVar

from bandit.catalog import Catalog
from bandit.config import BreinConfig
from reward.credit import Credit, CreditRules, DecisionFacts
from reward.provisional import OpenMeans, Stages
from store.ports import JoinState
from store.records import (
    DAY,
    ClosingCustomer,
    JoinedExample,
    JoinRun,
    LateCustomer,
    LateOutcome,
    ProvisionalExample,
    StoredStage,
    WrittenExamples,
)

T = TypeVar("T")

PROGRESS_EVERY = 5000
"""Decisions between two calls of a run's progress callback (called first after the first customer)."""
WRITE_ROWS = 50_000
"""Examples a write commits. Each write rewrites most pages of the joined_examples and join_queue
indexes, whose keys (decision ids, event times) are random in customer order: few large writes
rewrite them far fewer times than many small ones. Large enough for that, small enough that a
write holds SQLite's write lock (and the Decide writes waiting on it) about a second (two cores)."""
IN_FLIGHT_WRITES = 1
STATUS, PROVISIONAL_STATUS = 4, 5
"""Where a JoinedExample and a ProvisionalExample hold their status."""
RECENT_CREDIT = 50_000
"""Joined examples a joiner's first run reads the open types' means from (reward/provisional.py)."""
NOTHING_CREDITED: MappingProxyType[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class JoinReport:
    """What a run did; ``run`` is 0 when there was nothing to do (no run was recorded)."""

    run: int
    watermark: float
    cutoff: float
    joined: int
    unactivated: int
    late_outcomes: int
    pending: int
    seconds: float
    clamped: int = 0
    """Credited values that were not finite (dropped) or past their outcome type's max_value (clamped)."""
    provisional: int = 0
    """Provisional examples to learn from (reward/provisional.py)."""

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


Progress = Callable[[int, int], None]
"""Called with (decisions done, decisions to do) as the run goes."""


class Joiner:
    def __init__(self, config: BreinConfig, store: JoinState, *, write_rows: int = WRITE_ROWS) -> None:
        """``write_rows``: examples a write commits (see WRITE_ROWS)."""
        if write_rows < 1:
            raise ValueError(f"write_rows: expected at least 1, got {write_rows}")
        self.config = config
        self.store = store
        self.write_rows = write_rows
        self.rules = CreditRules(config)
        self._bounds = {name: kind.value_bound for name, kind in self.rules.types.items()}
        self._costs = {a.id: a.cost for a in Catalog(config).actions}
        self._offer_costs = {o: c.cost for o, c in config.offers.items()}
        self._channel_costs = {c: cfg.cost for c, cfg in config.channels.items()}
        self.stages = Stages(self.rules.windows if config.joiner.provisional else {})
        self._lateness = config.joiner.allowed_lateness_days * DAY
        self._open_means: OpenMeans | None = None
        """Read from the store at the first run that has stages to write."""
        self._stored: list[StoredStage] | None = None
        """Per stage, its key in the store (by its age) and the cutoff up to which its provisional
        examples are written: a run reads only the decisions past it (the store keeps each stage
        exactly once whatever it reads). Read from the store when first needed, then kept here."""

    def _cost(self, action_id: str, offer: str, channel: str) -> float:
        """The action's cost now; an action dropped from the catalog costs what its parts cost."""
        cost = self._costs.get(action_id)
        return cost if cost is not None else self._offer_costs.get(offer, 0.0) + self._channel_costs.get(channel, 0.0)

    def run(self, until: float | None = None, progress: Progress | None = None) -> JoinReport:
        started = time.perf_counter()
        store = self.store
        watermark = until if until is not None else store.watermark()
        if watermark is None:
            return JoinReport(0, 0.0, 0.0, 0, 0, 0, 0, time.perf_counter() - started)
        cutoff = watermark - self.rules.close_after
        horizon = store.outcome_horizon()
        checked = store.late_checked()
        total = store.closed_count(cutoff)
        if not total and horizon <= checked and not self._staging_due(watermark):
            # Nothing closed and no new outcome: no run is recorded (the server runs one every few seconds).
            return JoinReport(0, watermark, cutoff, 0, 0, 0, store.pending_count(), time.perf_counter() - started)
        run = store.start_run(watermark, cutoff, horizon).result()
        if self.stages.ages:
            self._means()  # before this run's whole examples are written: they are added as they are made
        done = clamped = 0
        writing: deque[Future[WrittenExamples]] = deque()
        written: list[WrittenExamples] = []  # what the store wrote: not a decision another run joined first
        rows: list[JoinedExample] = []
        reported = 0
        with closing(store.closing(cutoff, watermark, horizon)) as customers:
            for customer in customers:
                batch, bounded = self._join_customer(customer, horizon, run)
                clamped += bounded
                done += len(batch)
                rows += batch
                while len(rows) >= self.write_rows:
                    written += self._write(writing, self.store.write_examples, rows[: self.write_rows])
                    rows = rows[self.write_rows :]
                if progress and (not reported or done - reported >= PROGRESS_EVERY):
                    progress(done, total)
                    reported = done
        written += self._write(writing, self.store.write_examples, rows)
        written += [write.result() for write in writing]
        joined, unactivated = sum(w.joined for w in written), sum(w.unactivated for w in written)
        provisional = self._provisional(watermark, horizon, run)
        late = self._late(store.late_candidates(checked, horizon, self.rules.longest_window_days * DAY))
        late_count = len({outcome_id for outcome_id, _ in late})
        finished = JoinRun(run, watermark, cutoff, horizon, joined, unactivated, late_count, late_checked=horizon)
        store.finish_run(finished, late).result()
        return JoinReport(run, watermark, cutoff, joined, unactivated, late_count, store.pending_count(),
                          time.perf_counter() - started, clamped, provisional)  # fmt: skip

    def _stages(self) -> list[StoredStage]:
        if self._stored is None:
            self._stored = self.store.stages(self.stages.ages) if self.stages.ages else []
        return self._stored

    def _staging_due(self, watermark: float) -> bool:
        """Whether a stage has queued decisions that passed its age since it was last written."""
        for age, (_, done) in zip(self.stages.ages, self._stages(), strict=True):
            cutoff = watermark - age - self._lateness
            if cutoff > done and self.store.closed_count(cutoff) > self.store.closed_count(done):
                return True
        return False

    def _provisional(self, watermark: float, horizon: int, run: int) -> int:
        """Write every stage's provisional examples of the queued decisions whose stage has closed
        by ``watermark``; how many are to be learned from."""
        learned = 0
        writing: deque[Future[None]] = deque()
        stored = self._stages()
        for stage, age in enumerate(self.stages.ages):
            key, done = stored[stage]
            cutoff = watermark - age - self._lateness
            if cutoff <= done:
                continue
            rows: list[ProvisionalExample] = []
            with closing(self.store.staging(key, done, cutoff, watermark, horizon)) as customers:
                for customer in customers:
                    batch = self._stage_customer(customer, stage, key, age, run)
                    learned += sum(1 for row in batch if row[PROVISIONAL_STATUS] == "joined")
                    rows += batch
                    if len(rows) >= self.write_rows:
                        self._write(writing, self.store.write_provisional, rows)
                        rows = []
            writing.append(self.store.write_provisional(rows, staged=(key, cutoff)))  # its progress, with the last rows
            while writing:
                writing.popleft().result()
            stored[stage] = StoredStage(key, cutoff)
        return learned

    def _stage_customer(self, customer: ClosingCustomer, stage: int, key: int, age: float, run: int) -> list[ProvisionalExample]:
        """The provisional examples of one customer's decisions at ``stage`` (``key`` in the store):
        what the types closed by then credited each, less its cost, plus the open types' mean for its action."""
        closed, credits = self._credited(customer)
        means = self._means()
        rows: list[ProvisionalExample] = []
        for decision, (*_, action_id, _) in zip(closed, customer.closed, strict=True):
            decision_id, event_time = decision.decision_id, decision.event_time
            if not self.rules.shown(decision, event_time + age):
                rows.append((decision_id, key, customer.customer_id, event_time, run, "unactivated", 0.0))
                continue
            credit = credits.get(decision_id)
            earned = 0.0
            if credit is not None:
                self._bound(credit)
                earned = self.stages.closed_value(credit.by_type, stage)
            reward = earned - decision.cost + means.mean(action_id, stage)
            rows.append((decision_id, key, customer.customer_id, event_time, run, "joined", reward))
        return rows

    def _means(self) -> OpenMeans:
        """The open types' means, first read from the newest joined examples in the store."""
        if self._open_means is None:
            self._open_means = OpenMeans(len(self.stages.ages))
            for action_id, by_type in self.store.recent_credit(RECENT_CREDIT):
                self._open_means.add(action_id, self.stages.open_values(by_type))
        return self._open_means

    @staticmethod
    def _write(writing: deque[Future[T]], write: Callable[[Sequence[Any]], Future[T]], rows: Sequence[Any]) -> list[T]:
        """Queue ``write`` of ``rows`` (all or nothing) and wait for the one before it: the next rows
        are computed while these are written. The results of the writes waited for."""
        if rows:
            writing.append(write(rows))
        return [writing.popleft().result() for _ in range(len(writing) - IN_FLIGHT_WRITES)]

    def _join_customer(self, customer: ClosingCustomer, horizon: int, run: int) -> tuple[list[JoinedExample], int]:
        """The customer's joined examples, and how many credited values had to be bounded."""
        closed, credits = self._credited(customer)
        clamped = sum(self._bound(credits[d.decision_id]) for d in closed if d.decision_id in credits)
        examples = [self._example(customer.customer_id, d, credits.get(d.decision_id), horizon, run) for d in closed]
        if self._open_means is not None:
            for example, (*_, action_id, _) in zip(examples, customer.closed, strict=True):
                if example[STATUS] == "joined":
                    credit = credits.get(example[0])
                    self._open_means.add(action_id, self.stages.open_values(credit.by_type if credit else NOTHING_CREDITED))
        return examples, clamped

    def _credited(self, customer: ClosingCustomer) -> tuple[list[DecisionFacts], dict[str, Credit]]:
        """The customer's closing decisions and what its outcomes credit them (and its other decisions)."""
        cost = self._cost
        closed = [DecisionFacts(d, t, o, ch, cost(a, o, ch), at) for d, t, o, ch, a, at in customer.closed]
        others = [DecisionFacts(d, t, o, ch, cost(a, o, ch), at) for d, t, o, ch, a, at in customer.others]
        return closed, self.rules.credit(_merged(closed, others), customer.outcomes)

    def _late(self, customers: Sequence[LateCustomer]) -> list[LateOutcome]:
        """(outcome, decision) for each outcome credited, by the credit rules, to a decision joined
        before it arrived: credit that came too late."""
        late: list[LateOutcome] = []
        for customer in customers:
            facts = [DecisionFacts(d, t, o, ch, 0.0, at) for d, t, o, ch, _, at in customer.decisions]  # crediting reads no cost
            arrived = {outcome.outcome_id: seq for outcome, seq in customer.outcomes}
            joined = customer.joined
            for outcome, credited in self.rules.credited(facts, [outcome for outcome, _ in customer.outcomes]):
                seq = arrived[outcome.outcome_id]
                late += [(outcome.outcome_id, d.decision_id) for d in credited if joined.get(d.decision_id, seq) < seq]
        return late

    def _bound(self, credit: Credit) -> int:
        """Keep each credited value within its outcome type's ±max_value and finite, whatever the
        store holds (an outcome stored before the bound existed, or written past the API): a value
        past the bound is clamped to it, one that is not a number is dropped. Rewards entering the
        learner are then finite by construction. How many values were changed."""
        changed = 0
        for kind, value in credit.by_type.items():
            bound = self._bounds[kind]
            bounded = 0.0 if math.isnan(value) else min(max(value, -bound), bound)
            if bounded != value:  # also when value is NaN
                credit.by_type[kind] = bounded
                changed += 1
        return changed

    def _example(self, customer: str, decision: DecisionFacts, credit: Credit | None, horizon: int, run: int) -> JoinedExample:
        """The joined example of one closed decision."""
        decision_id, event_time, cost = decision.decision_id, decision.event_time, decision.cost
        if not self.rules.shown(decision, event_time + self.rules.close_after):
            return (decision_id, customer, event_time, run, "unactivated", 0.0, 0.0, NOTHING_CREDITED, (), horizon)
        if credit is None:
            return (decision_id, customer, event_time, run, "joined", 0.0 - cost, cost, NOTHING_CREDITED, (), horizon)
        reward = credit.total - cost
        return (decision_id, customer, event_time, run, "joined", reward, cost, credit.by_type, credit.outcomes, horizon)


def _merged(closed: list[DecisionFacts], others: list[DecisionFacts]) -> list[DecisionFacts]:
    """One customer's decisions in time order (then by id, as the log orders them)."""
    if not others:
        return closed
    ids = {d.decision_id for d in closed}
    return sorted(closed + [d for d in others if d.decision_id not in ids], key=attrgetter("event_time", "decision_id"))
