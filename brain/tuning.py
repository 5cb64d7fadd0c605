"""The worker's opt-in ``[tuning]``: every ``every_days`` of event time, tune learning set-ups on the
log (policies/tuning.py), register the best reliable winner as a candidate and promote it through
the gate; a candidate the gate refuses is retired with the gate's reason. Every run is in the audit
trail (action ``policy_tuning``, its outcome as JSON), which is also where the schedule is read
from: a restarted worker tunes when the last run is ``every_days`` old, not at once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass

from bandit.config import BreinConfig
from policies import operations
from policies.gate import GateRefused
from policies.registry import Registry
from policies.tuning import (
    ACTOR,
    Setup,
    TooFewExamples,
    TuningError,
    check_log,
    cut_holding,
    default_setups,
    known_by,
    load_setups,
    register_best,
    tune,
)
from store import Store
from store.records import DAY, AuditEntry

log = logging.getLogger("brein.tuning")
AUDIT_ACTION = "policy_tuning"


@dataclass(frozen=True, slots=True)
class TuningRun:
    """What one scheduled run did: at which event time, on which cut, what it registered and whether
    the gate promoted it (``outcome``: promoted, refused, nothing registered, skipped) and why; or
    ``waiting`` (not a run: too few joined examples yet, nothing recorded)."""

    event_time: float
    cut: float
    outcome: str
    candidate: str | None
    reason: str


class ScheduledTuning:
    """The ``[tuning]`` schedule on one store. The set-ups are read (and checked) when it is made."""

    def __init__(self, config: BreinConfig, store: Store) -> None:
        self.config = config
        self.store = store
        path = config.tuning.setups
        self.setups: list[Setup] = load_setups(path) if path else default_setups(config)
        for setup in self.setups:
            setup.config(config)  # a set-up VW refuses stops the worker at start, not a week later
        self._last: float | None = self._last_run()

    def _last_run(self) -> float | None:
        entries = self.store.audit.entries(AUDIT_ACTION)
        return float(json.loads(entries[-1].detail)["event_time"]) if entries else None

    def due(self, now: float) -> bool:
        return self._last is None or now - self._last >= self.config.tuning.every_days * DAY

    def run(self, now: float, joined_until: float) -> TuningRun:
        """Tune on the joined examples before ``joined_until`` (everything that closed by event time
        ``now``), the last ``holdout_days`` of them held out, or more when those hold fewer than the
        gate's ``min_decisions``; promote the best through the gate. Until the log holds enough on
        both sides of the cut the run waits ("waiting"): nothing is recorded and the schedule does not
        move, so the first run is the first one that can promote (not one skipped every ``every_days``)."""
        latest = joined_until - self.config.tuning.holdout_days * DAY
        cut = cut_holding(self.store, self.config.gate.min_decisions, latest, joined_until)
        try:  # counts only: a waiting worker asks at every round
            check_log(self.config, self.store, cut, joined_until)
            known_by(self.config, self.store, cut)  # what a set-up learns against the champion as served
        except TooFewExamples as error:
            log.debug("tuning waits: %s", error)
            return TuningRun(now, cut, "waiting", None, str(error))
        try:
            tuning = tune(self.config, self.store, cut=cut, until=joined_until, setups=self.setups)
        except TuningError as error:
            done = TuningRun(now, cut, "skipped", None, str(error))
        else:
            entry = register_best(self.config, self.store, tuning, actor=ACTOR)
            if entry is None:
                done = TuningRun(now, cut, "nothing registered", None, tuning.verdict)
            else:
                done = self._promote(entry.id, now, cut, tuning.verdict)
        audit = AuditEntry(time.time(), ACTOR, AUDIT_ACTION, done.candidate or "", json.dumps(asdict(done)))
        self.store.audit.record(audit).result()
        self._last = now
        log.info("tuning: %s%s: %s", done.outcome, f" {done.candidate}" if done.candidate else "", done.reason)
        return done

    def _promote(self, candidate: str, now: float, cut: float, verdict: str) -> TuningRun:
        try:
            operations.promote(self.config, self.store, candidate, actor=ACTOR, reason=f"tuning passed the gate: {verdict}")
        except GateRefused as error:
            reason = f"the gate refused it: {error}"
            Registry(self.store.registry).set_state(candidate, "retired", actor=ACTOR, reason=f"tuning: {reason}")
            return TuningRun(now, cut, "refused", candidate, reason)
        return TuningRun(now, cut, "promoted", candidate, verdict)
