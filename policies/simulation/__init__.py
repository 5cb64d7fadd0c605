"""A simulated telecom world that knows the true value of every action: the yardstick for Brein.

``World`` is the population, its arrivals, contexts, consent, true expected values and outcomes;
``Eligibility`` computes the actions Brein's own rules and contact policy allow; ``baselines``
holds the oracle, do-nothing, best-fixed-action and uniform-random references and ``calibrate``.
"""

from policies.simulation.baselines import (
    Calibration,
    DecisionPoint,
    Policy,
    calibrate,
    decision_points,
    do_nothing_policy,
    fixed_policy,
    oracle_policy,
    uniform_policy,
)
from policies.simulation.eligibility import Eligibility
from policies.simulation.population import DAY, MONTH, WorldParams
from policies.simulation.world import DEFAULT_START, Arrival, Consent, Outcome, Schedule, World, customer_key

__all__ = [
    "DAY",
    "DEFAULT_START",
    "MONTH",
    "Arrival",
    "Calibration",
    "Consent",
    "DecisionPoint",
    "Eligibility",
    "Outcome",
    "Policy",
    "Schedule",
    "World",
    "WorldParams",
    "calibrate",
    "customer_key",
    "decision_points",
    "do_nothing_policy",
    "fixed_policy",
    "oracle_policy",
    "uniform_policy",
]
