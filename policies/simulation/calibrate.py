"""Measure the world's difficulty: the reference policies valued statically (true expected values on
a sample of decisions) and, optionally, run through the world over a horizon with Brein's
eligibility and contact policy (what a harness will see).

    python -m policies.simulation.calibrate --customers 20000 --points 6000 --seed 1
    python -m policies.simulation.calibrate --simulate --customers 3000 --days 120
    python -m policies.simulation.calibrate --trait-cells --customers 20000 --points 40000 --days 180
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from bandit.config import BreinConfig, load_config
from policies.simulation.base import DAY, Arrival
from policies.simulation.baselines import (
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
from policies.simulation.population import DISCOUNT, HANDSET, SIM_ONLY, UPSELL
from policies.simulation.world import World

Numeric = Mapping[str, float]
Categorical = Mapping[str, str]
Profile = Mapping[str, object]
TRAIT_CELLS: dict[str, tuple[str, Callable[[Numeric, Categorical], bool], Callable[[Profile], bool]]] = {
    HANDSET: (
        "iOS, spend >= 35, contract ends within 1.5 months",
        lambda n, c: c["device"] == "ios" and n["monthly_spend"] >= 35 and n["months_to_contract_end"] <= 1.5,
        lambda p: float(p["gadget"]) > 0.05,  # type: ignore[arg-type]
    ),
    SIM_ONLY: (
        "spend < 25, tenure >= 60 months",
        lambda n, c: n["monthly_spend"] < 25 and n["tenure_months"] >= 60,
        lambda p: float(p["frugal"]) > 0.05,  # type: ignore[arg-type]
    ),
    DISCOUNT: (
        "spend < 28, tenure < 36 months, contract ends within 1.5 months",
        lambda n, c: n["monthly_spend"] < 28 and n["tenure_months"] < 36 and n["months_to_contract_end"] <= 1.5,
        lambda p: bool(p["price_sensitive"]),
    ),
    UPSELL: ("data use >= 1.1 of the bundle", lambda n, c: n["data_usage_ratio"] >= 1.1, lambda p: True),
}
"""For each side offer, the visible cell where its hidden trait is commonest (the thresholds that
population.py draws the traits from), the trait, and for the upsell (no hidden trait: a noisy usage
ratio) everyone."""


@dataclass(frozen=True, slots=True)
class TraitCell:
    """What a policy that sees only the features could take from a side offer: in the visible cell
    where its trait is commonest, the offer's true gain on each customer's best channel and slot
    (which no feature shows either: a generous bound), against the oracle's where it picks the offer."""

    offer: str
    cell: str
    decisions: int
    trait_share: float
    mean_gain: float
    oracle_picks: int
    oracle_gain: float


def trait_cells(world: World, points: Sequence[DecisionPoint]) -> list[TraitCell]:
    cells: dict[str, list[tuple[float, bool]]] = {offer: [] for offer in TRAIT_CELLS}
    picked: dict[str, list[float]] = {offer: [] for offer in TRAIT_CELLS}
    for point in points:
        gains = world.expected_gains(point.customer, point.event_time, point.eligible)
        best = int(np.argmax(gains))
        if point.eligible[best].offer in picked:
            picked[point.eligible[best].offer].append(float(gains[best]))
        numeric, categorical = world.context(point.customer, point.event_time)
        profile = world.profile(point.customer)
        for offer, (_, visible, trait) in TRAIT_CELLS.items():
            offered = [float(g) for a, g in zip(point.eligible, gains, strict=True) if a.offer == offer]
            if offered and visible(numeric, categorical):
                cells[offer].append((max(offered), trait(profile)))
    return [
        TraitCell(
            offer=offer,
            cell=TRAIT_CELLS[offer][0],
            decisions=len(cells[offer]),
            trait_share=float(np.mean([t for _, t in cells[offer]])) if cells[offer] else float("nan"),
            mean_gain=float(np.mean([g for g, _ in cells[offer]])) if cells[offer] else float("nan"),
            oracle_picks=len(picked[offer]),
            oracle_gain=float(np.mean(picked[offer])) if picked[offer] else float("nan"),
        )
        for offer in TRAIT_CELLS
    ]


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """One policy run through the world. ``expected``: mean true expected value per decision of the
    chosen action; ``realised``: mean realised value per decision whose windows closed in the run
    (later decisions' outcomes inside a window count too, as Brein's joiner credits them);
    ``net_per_customer``: money of all outcomes in the run minus all costs, per customer."""

    policy: str
    decisions: int
    contacts: int
    expected: float
    realised: float
    net_per_customer: float
    outcomes: dict[str, int]


def simulate(config: BreinConfig, customers: int, seed: int, policy: Policy, name: str, days: float) -> SimulationResult:
    """Run ``policy`` on a fresh world (same seed: the same customers and arrivals for every policy)."""
    world = World(config, customers, seed)
    eligibility = Eligibility(config)
    rng = np.random.default_rng([seed, 0xAC7])
    end = world.start + days * DAY
    decisions: list[tuple[int, float, str, float]] = []
    net = 0.0
    counts: dict[str, int] = {}
    for event in world.events(world.start, days):
        if isinstance(event, Arrival):
            eligible = eligibility.eligible(world, event.customer, event.event_time, event.touchpoint)
            action = policy(world, event.customer, event.event_time, eligible, rng)
            expected = float(world.expected_values(event.customer, event.event_time, [action])[0])
            world.act(event.customer, event.event_time, action, rng)
            decisions.append((event.customer, event.event_time, action.id, expected))
            net -= action.cost
        elif event.event_time <= end:
            net += event.value
            counts[event.type] = counts.get(event.type, 0) + 1
    closed = [d for d in decisions if d[1] + 30 * DAY <= end]
    realised = [world.realised_value(c, t, world.catalog.by_id[a]) for c, t, a, _ in closed]
    return SimulationResult(
        policy=name,
        decisions=len(decisions),
        contacts=sum(1 for d in decisions if d[2] != "do_nothing"),
        expected=float(np.mean([d[3] for d in decisions])) if decisions else 0.0,
        realised=float(np.mean(realised)) if realised else float("nan"),
        net_per_customer=net / customers,
        outcomes=counts,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="examples/telecom.toml", help="Brein config (TOML) whose catalog the world uses")
    parser.add_argument("--customers", type=int, default=20_000, help="population size")
    parser.add_argument("--seed", type=int, default=1, help="world seed")
    parser.add_argument("--points", type=int, default=6000, help="decisions sampled for the static calibration")
    parser.add_argument("--days", type=float, default=60.0, help="window the decisions (or the simulation) span")
    parser.add_argument("--simulate", action="store_true", help="also run each reference policy through the world")
    parser.add_argument("--trait-cells", action="store_true", help="also value each side offer in its trait's best visible cell")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    config = load_config(args.config)
    began = time.perf_counter()
    world = World(config, args.customers, args.seed)
    points = decision_points(world, args.points, args.seed, days=args.days)
    result = calibrate(world, points)
    report: dict[str, object] = {
        "static": {
            **asdict(result),
            "oracle_gain": result.oracle_gain,
            "best_fixed_share": result.best_fixed_share,
            "uniform_share": result.uniform_share,
        }
    }
    if not args.json:
        print("static:", result.summary(), f"[{time.perf_counter() - began:.1f}s]")
    if args.trait_cells:
        found = trait_cells(world, points)
        report["trait_cells"] = [asdict(c) for c in found]
        if not args.json:
            for c in found:
                print(
                    f"{c.offer} in its best visible cell ({c.cell}): {c.decisions} decisions, trait share "
                    f"{c.trait_share:.2f}, mean gain on the best channel and slot {c.mean_gain:+.2f}; "
                    f"where the oracle picks it ({c.oracle_picks} decisions) {c.oracle_gain:+.2f}"
                )
    if args.simulate:
        runs: list[SimulationResult] = []
        policies: list[tuple[str, Policy]] = [
            ("do_nothing", do_nothing_policy),
            ("oracle", oracle_policy),
            (f"fixed {result.best_fixed_action}", fixed_policy(result.best_fixed_action)),
            ("uniform_random", uniform_policy),
        ]
        for name, policy in policies:
            began = time.perf_counter()
            run = simulate(config, args.customers, args.seed, policy, name, args.days)
            runs.append(run)
            if not args.json:
                print(
                    f"simulated {name}: {run.decisions} decisions, {run.contacts} contacts, "
                    f"expected/decision {run.expected:.2f}, "
                    f"realised/decision {run.realised:.2f}, net/customer {run.net_per_customer:.2f}, outcomes {run.outcomes} "
                    f"[{time.perf_counter() - began:.1f}s]"
                )
        nets = {r.policy: r.net_per_customer for r in runs}
        base = nets["do_nothing"]
        gain = nets["oracle"] - base
        shares = {name: (value - base) / gain for name, value in nets.items()} if gain else {}
        report["simulated"] = [asdict(r) for r in runs]
        report["simulated_share_of_oracle_net_gain"] = shares
        if not args.json:
            print("share of the oracle's net gain over do-nothing:", {k: round(v, 3) for k, v in shares.items()})
    if args.json:
        print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
