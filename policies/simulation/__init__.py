"""Simulated worlds that know the true value of every action: the yardstick for Brein.

``SimulatedWorld`` is what a harness needs of a world; ``World`` is the hand-built telecom world,
``GeneratedWorld`` one drawn from a seed (``family``: the family of worlds Brein is measured on);
``Eligibility`` computes the actions Brein's own rules and contact policy allow; ``baselines``
holds the oracle, do-nothing, best-fixed-action and uniform-random references and ``calibrate``.
"""

from policies.simulation.base import DAY, DEFAULT_START, MONTH, Arrival, Consent, Outcome, Schedule, customer_key
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
from policies.simulation.interface import SimulatedWorld
from policies.simulation.population import WorldParams
from policies.simulation.world import World

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
    "SimulatedWorld",
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
