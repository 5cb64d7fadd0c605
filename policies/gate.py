"""The promotion gate: a candidate serves only after it has been shown, on logged decisions, to
beat the champion with confidence — by an evaluation that is itself reliable, made on the window
the gate fixes: every joined decision after the candidate's training data (the whole log for a
policy that learned from none), or tuning's held-out decisions. An evaluation on a window someone
chose (``--since``/``--until``) is recorded for people to read, never taken as evidence: with
enough windows tried, one of them shows a lift that is not there."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bandit.config import GateConfig
from bandit.errors import BreinError
from policies.estimators import ALPHA, MAX_RESAMPLES, Diagnostics, Reliability
from store.records import EvaluationRecord

CLOCK_TOLERANCE = 300.0
"""Seconds an evaluation may be dated ahead of the promoting host's clock (hosts' clocks differ a little):
one dated further ahead was recorded by a host whose clock is wrong, and would never age."""


class GateRefused(BreinError):
    """Promotion refused; the message is the reason in one sentence."""


def gate_reliability(gate: GateConfig) -> Reliability:
    """The gate's thresholds as the rule every evaluation marks its estimates with."""
    return Reliability(min_ess=gate.min_ess, max_weight_share=gate.max_weight_share)


Window = tuple[float, float, int]
"""The log an evaluation judged: its first and last decision times and its number of decisions."""


def look_alpha(look: int, selected_among: int = 1) -> float:
    """The alpha of a candidate's ``look``-th look against one champion on the gate's window (1 for
    the first): ALPHA / look². Evaluated again as the log grows and promoted at the first pass, a
    candidate no better than the champion passes some look sooner or later at a fixed 95% (a
    sequential test read as a single one); at 1 - ALPHA / k² the chance that it ever passes is at
    most ALPHA·π²/6 (8.2%), and its first look is judged at 95% as before. A candidate picked as the
    best of ``selected_among`` set-ups on a log its window keeps (``PolicyEntry.selected_among``: a
    tuning's) shares ALPHA among them at every look, as tuning did: evaluated again at 95% on that
    log, the one picked would pass on the error that made it look best."""
    return ALPHA / (max(1, selected_among) * look**2)


def resamples(alpha: float, n_bootstrap: int) -> int:
    """The bootstrap resamples that leave as many beyond a bound at ``alpha`` as ``n_bootstrap`` leave at
    ALPHA, at most MAX_RESAMPLES (a bound on an evaluation's time: past it the analytic interval, which
    the gate takes where it is wider, carries the tail)."""
    return min(MAX_RESAMPLES, math.ceil(n_bootstrap * ALPHA / alpha))


def look(evaluations: Sequence[EvaluationRecord], champion: str, window: Window) -> int:
    """Which look at the candidate an evaluation of ``window`` against ``champion`` is: 1 + the other
    logs its evaluations (``Registry.looks``: under every id it is registered under) on the gate's window
    against that champion judged. Evaluated again on the same log, it is the same look: the evaluation
    is deterministic, and gives the same answer."""
    seen = {(e.since, e.until, e.decisions) for e in evaluations if e.gate_window and e.against == champion}
    return 1 + len(seen - {window})


def gate_evidence(evaluations: Sequence[EvaluationRecord]) -> EvaluationRecord | None:
    """The newest of a policy's evaluations (given newest first) made on the gate's window."""
    return next((e for e in evaluations if e.gate_window), None)


def check_gate(gate: GateConfig, evaluations: Sequence[EvaluationRecord], candidate: str, champion: str, now: float) -> None:
    """Refuse unless the newest evaluation on the gate's window lets the candidate through (``evaluations``:
    the candidate's, newest first)."""
    evaluation = gate_evidence(evaluations)
    if evaluation is None and evaluations:
        raise GateRefused(f"{candidate}'s evaluations are all on windows chosen by hand (`policy evaluate --since/--until`, "
                          f"`policy train --holdout-until`), which the gate does not take as evidence: run `brein policy "
                          f"evaluate {candidate}` without a window")  # fmt: skip
    if evaluation is None:
        raise GateRefused(f"{candidate} has no evaluation against the champion {champion}: run `brein policy evaluate {candidate}` first")
    if evaluation.against != champion:
        raise GateRefused(f"{candidate}'s latest evaluation is against {evaluation.against}, not the champion {champion}: evaluate it again")
    if evaluation.estimator != gate.estimator:
        raise GateRefused(f"{candidate}'s latest evaluation used {evaluation.estimator}, not the gate's {gate.estimator}: evaluate it again")
    if evaluation.at > now + CLOCK_TOLERANCE:
        ahead = (evaluation.at - now) / 3600
        raise GateRefused(f"{candidate}'s evaluation is dated {ahead:.1f} hours ahead of this host's clock: the host that "
                          f"recorded it has a wrong clock; evaluate it again")  # fmt: skip
    age_hours = (now - evaluation.at) / 3600
    if age_hours > gate.max_age_hours:
        raise GateRefused(f"{candidate}'s evaluation is {age_hours:.1f} hours old, more than the {gate.max_age_hours:g} allowed")
    what = f"{candidate}'s {evaluation.estimator} evaluation against {champion}"
    sides = _sides(evaluation, candidate, champion)
    missing = next((name for name, diagnostics in sides if diagnostics is None), None)
    if missing is not None:
        raise GateRefused(f"{what} is unreliable: it holds no diagnostics for {missing} (it was made before estimates carried "
                          f"them): evaluate it again")  # fmt: skip
    choices = min(diagnostics.choices for _, diagnostics in sides if diagnostics is not None)
    if choices < gate.min_decisions:
        raise GateRefused(f"{candidate} was evaluated on {evaluation.decisions} decisions, {choices} of them with a choice of "
                          f"action, fewer than the {gate.min_decisions} required")  # fmt: skip
    rule = gate_reliability(gate)
    reasons = [f"for {name}, {reason}" for name, diagnostics in sides if diagnostics is not None
               for reason in rule.reasons(diagnostics)]  # fmt: skip
    if reasons:
        raise GateRefused(f"{what} is unreliable: {'; '.join(reasons)}")
    if evaluation.lift_lower <= gate.min_lift:
        raise GateRefused(
            f"{candidate} does not beat {champion} with confidence: the lower bound of the {evaluation.estimator} lift is "
            f"{evaluation.lift_lower:+.3f} per decision, not above the required {gate.min_lift:+g}"
        )


def _sides(evaluation: EvaluationRecord, candidate: str, champion: str) -> list[tuple[str, Diagnostics | None]]:
    """The diagnostics the stored report holds for both sides of the lift, by name (whatever the estimator:
    they are those of the unclipped weights on the decisions with a choice), which the gate judges under its
    thresholds now; None for a side whose report lacks them."""
    row = evaluation.report.get("estimators", {}).get(evaluation.estimator, {})
    return [(name, _diagnostics(row.get(side))) for side, name in (("candidate", candidate), ("baseline", champion))]


def _diagnostics(estimate: Mapping[str, Any] | None) -> Diagnostics | None:
    if not estimate:
        return None
    try:
        return Diagnostics(ess=float(estimate["ess"]), largest_weight_share=float(estimate["largest_weight_share"]),
                           never_taken_share=float(estimate["never_taken_share"]), choices=int(estimate["choices"]))  # fmt: skip
    except (KeyError, TypeError, ValueError):
        return None
