"""The promotion gate: a candidate serves only after it has been shown, on logged decisions, to
beat the champion with confidence."""

from __future__ import annotations

from bandit.config import GateConfig
from bandit.errors import BreinError
from store.records import EvaluationRecord


class GateRefused(BreinError):
    """Promotion refused; the message is the reason in one sentence."""


def check_gate(gate: GateConfig, evaluation: EvaluationRecord | None, candidate: str, champion: str, now: float) -> None:
    if evaluation is None:
        raise GateRefused(f"{candidate} has no evaluation against the champion {champion}: run `brein policy evaluate {candidate}` first")
    if evaluation.against != champion:
        raise GateRefused(f"{candidate}'s latest evaluation is against {evaluation.against}, not the champion {champion}: evaluate it again")
    if evaluation.estimator != gate.estimator:
        raise GateRefused(f"{candidate}'s latest evaluation used {evaluation.estimator}, not the gate's {gate.estimator}: evaluate it again")
    age_hours = (now - evaluation.at) / 3600
    if age_hours > gate.max_age_hours:
        raise GateRefused(f"{candidate}'s evaluation is {age_hours:.1f} hours old, more than the {gate.max_age_hours:g} allowed")
    if evaluation.decisions < gate.min_decisions:
        raise GateRefused(f"{candidate} was evaluated on {evaluation.decisions} decisions, fewer than the {gate.min_decisions} required")
    if evaluation.ess < gate.min_ess:
        raise GateRefused(f"{candidate}'s effective sample size is {evaluation.ess:.0f}, below the {gate.min_ess:g} required")
    if evaluation.lift_lower <= gate.min_lift:
        raise GateRefused(
            f"{candidate} does not beat {champion} with confidence: the lower bound of the {evaluation.estimator} lift is "
            f"{evaluation.lift_lower:+.3f} per decision, not above the required {gate.min_lift:+g}"
        )
