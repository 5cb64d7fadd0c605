"""The promotion gate: a candidate serves only after it has been shown, on logged decisions, to
beat the champion with confidence — by an evaluation that is itself reliable, made on the window
the gate fixes: every joined decision after the candidate's training data (the whole log for a
policy that learned from none), or tuning's held-out decisions. An evaluation on a window someone
chose (``--since``/``--until``) is recorded for people to read, never taken as evidence: with
enough windows tried, one of them shows a lift that is not there. Its intervals are at the level the
gate spends on each look at each candidate judged against one champion (policies/spending.py)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from bandit.config import GateConfig
from bandit.errors import BreinError
from policies.estimators import ALPHA, MAX_RESAMPLES, Diagnostics, Reliability, level
from policies.spending import KEY, Spending, ordinal
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


def resamples(alpha: float, n_bootstrap: int) -> int:
    """The bootstrap resamples that leave as many beyond a bound at ``alpha`` as ``n_bootstrap`` leave at
    ALPHA, at most MAX_RESAMPLES (a bound on an evaluation's time: past it the analytic interval, which
    the gate takes where it is wider, carries the tail)."""
    return min(MAX_RESAMPLES, math.ceil(n_bootstrap * ALPHA / alpha))


def look(evaluations: Sequence[EvaluationRecord], champion: str, window: Window) -> int:
    """Which look at the candidate an evaluation of ``window`` against ``champion`` is: 1 + the other
    logs its evaluations (``Registry.looks``: under every id it is registered under) on the gate's window
    against that champion judged. Evaluated again on the same log, it is the same look: the evaluation
    is deterministic, and gives the same answer. Its level is ``Spending``'s: the k-th look at the i-th
    candidate against a champion at ALPHA·6/(π² i²) / k² (policies/spending.py)."""
    seen = {(e.since, e.until, e.decisions) for e in evaluations if e.gate_window and e.against == champion}
    return 1 + len(seen - {window})


def gate_evidence(evaluations: Sequence[EvaluationRecord]) -> EvaluationRecord | None:
    """The newest of a policy's evaluations (given newest first) made on the gate's window."""
    return next((e for e in evaluations if e.gate_window), None)


def check_gate(
    gate: GateConfig, evaluations: Sequence[EvaluationRecord], candidate: str, champion: str, now: float,
    rank: int | None = None, selected_among: int = 1,
) -> None:  # fmt: skip
    """Refuse unless the newest evaluation on the gate's window lets the candidate through (``evaluations``:
    the candidate's, newest first). ``rank``: the candidate's among those judged against the champion
    (``policies.spending.rank``: promote's), and ``selected_among``, the set-ups it was picked among: the
    evaluation must have been judged at the level they give its look (``check_level``); None: not checked."""
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
    judged = Spending.read(evaluation.report.get(KEY))
    if evaluation.lift_lower <= gate.min_lift:
        at = "" if judged is None else f" (at {judged.describe(champion)})"
        raise GateRefused(
            f"{candidate} does not beat {champion} with confidence: the lower bound of the {evaluation.estimator} lift is "
            f"{evaluation.lift_lower:+.3f} per decision, not above the required {gate.min_lift:+g}{at}"
        )
    if rank is not None:
        check_level(evaluation, candidate, champion, rank, selected_among)


def check_level(evaluation: EvaluationRecord, candidate: str, champion: str, rank: int, selected_among: int = 1) -> None:
    """Refuse an evaluation whose intervals are wider-open than its look allows the ``rank``-th candidate
    judged against the champion (picked among ``selected_among`` set-ups): one recorded before the gate
    spent its alpha across candidates, or judged at a rank its candidate no longer holds (another's first
    look was recorded at once, at the same rank: ``policies.spending.rank``)."""
    judged = Spending.read(evaluation.report.get(KEY))
    if judged is None:
        raise GateRefused(f"{candidate}'s evaluation was made before the gate shared its alpha among the candidates judged "
                          f"against a champion, at a level it does not say: evaluate it again")  # fmt: skip
    required = Spending(rank, judged.look, selected_among)
    alpha = _alpha(evaluation, judged)
    if alpha <= required.alpha * (1 + 1e-9):
        return
    if rank != judged.rank:
        raise GateRefused(f"{candidate}'s evaluation was judged at {judged.describe(champion)}, and it is the "
                          f"{ordinal(rank)} now (another's first look against {champion} was recorded at the same time), "
                          f"judged at {level(required.alpha)}: evaluate it again")  # fmt: skip
    raise GateRefused(f"{candidate}'s evaluation has its intervals at {level(alpha)}, wider than those of "
                      f"{required.describe(champion)}: evaluate it again")  # fmt: skip


def _alpha(evaluation: EvaluationRecord, judged: Spending) -> float:
    """The level the stored report's gate-estimator row was computed at (the intervals the gate reads);
    the recorded spending's when the row does not say."""
    row = evaluation.report.get("estimators", {}).get(evaluation.estimator, {})
    try:
        return float(row["candidate"]["alpha"])
    except (KeyError, TypeError, ValueError):
        return judged.alpha


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
