"""The family of worlds Brein is measured on: generated worlds, one per seed, and the hand-built
telecom world as one member.

Seeds. Figures that choose anything (learner defaults, encodings, credit, exploration) come from
``CHOOSING_SEEDS``; figures that report come from ``HELD_OUT_SEEDS``, which nobody looks at while
choosing. ``TEST_SEEDS`` are the small family of ``make test``. The three sets are disjoint.

Calibration. ``generate(seed)`` draws a world definition and then sets its effect-size scale by a
short search: on a sample of decisions of its first 60 days (a calibration population, before
anyone is contacted) the best single action must capture the spec's target share (drawn in
0.25-0.45) of the oracle's gain over do-nothing, and at least 0.22 and at most 0.48 of it. A world
whose knobs allow no such scale is drawn again (the next attempt). All deterministic for the seed.

    python -m policies.simulation.family 101 102 --write configs/     # what the worlds are, their configs
"""

from __future__ import annotations

import argparse
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.table import Table

from bandit.config import BreinConfig, parse_config
from policies.simulation.base import DAY, MONTH
from policies.simulation.baselines import Calibration, DecisionPoint, calibrate, decision_points
from policies.simulation.draw import draw_spec
from policies.simulation.generated import MAX_CONVERSION, GeneratedWorld
from policies.simulation.interface import SimulatedWorld
from policies.simulation.population import WorldParams
from policies.simulation.user_config import user_config, write_config
from policies.simulation.world import World
from policies.simulation.worldspec import WorldSpec

CHOOSING_SEEDS: tuple[int, ...] = tuple(range(101, 131))
HELD_OUT_SEEDS: tuple[int, ...] = tuple(range(201, 221))
TEST_SEEDS: tuple[int, ...] = (11, 12, 13)
TELECOM = "telecom"
TELECOM_CONFIG = Path(__file__).resolve().parents[2] / "examples" / "telecom.toml"

CALIBRATION_DRAW = 1_000  # the population calibration samples; never one a figure is measured on
CALIBRATION_CUSTOMERS = 3_000
CALIBRATION_POINTS = 3_000
CALIBRATION_DAYS = 60.0
SHARE_BOUNDS = (0.22, 0.48)
SCALES = np.geomspace(0.5, 2.0, 17)  # a short search: effect sizes at most halved or doubled
MAX_ATTEMPTS = 60
SIZE_MARGIN = 1.05  # customers for a number of decisions: a little more than the mean visit rate asks


class Member(Protocol):
    """A member of the family: a config and worlds of any size and draw (population) for it."""

    @property
    def name(self) -> str: ...

    @property
    def seed(self) -> int:
        """The seed of runs in it (their draws of what contacts cause)."""
        ...

    @property
    def evaluated_draw(self) -> int:
        """The population figures are measured on."""
        ...

    @property
    def training_draws(self) -> tuple[int, ...]:
        """Other populations of the same world, for models that must not see the evaluated one."""
        ...

    @property
    def visits_per_day(self) -> float:
        """Mean decisions per customer per day."""
        ...

    def config_data(self) -> dict[str, Any]:
        """The Brein config of the member as TOML data."""
        ...

    def world(self, config: BreinConfig, customers: int, draw: int) -> SimulatedWorld: ...


@dataclass(frozen=True)
class GeneratedMember:
    """A generated world and its calibration (on ``CALIBRATION_DRAW``)."""

    spec: WorldSpec
    calibration: Calibration
    evaluated_draw: int = 0
    training_draws: tuple[int, ...] = (1, 2)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def seed(self) -> int:
        return self.spec.seed

    @property
    def visits_per_day(self) -> float:
        return self.spec.visits_per_day

    def config_data(self) -> dict[str, Any]:
        return user_config(self.spec)

    def world(self, config: BreinConfig, customers: int, draw: int) -> GeneratedWorld:
        return GeneratedWorld(self.spec, config, customers, draw)


@dataclass(frozen=True)
class TelecomMember:
    """The hand-built telecom world with its own config (``examples/telecom.toml``); its draws are
    World seeds, as ``brein simulate --seed`` and ``policies.simulation.ceiling`` use them."""

    seed: int = 1
    training_draws: tuple[int, ...] = (11, 12)
    name: str = TELECOM

    @property
    def evaluated_draw(self) -> int:
        return self.seed

    @property
    def visits_per_day(self) -> float:
        return WorldParams().visits_per_month / (MONTH / DAY)

    def config_data(self) -> dict[str, Any]:
        return tomllib.loads(TELECOM_CONFIG.read_text(encoding="utf-8"))

    def world(self, config: BreinConfig, customers: int, draw: int) -> World:
        return World(config, customers, draw)


def _scale_shares(world: GeneratedWorld, points: Sequence[DecisionPoint], scales: np.ndarray) -> np.ndarray:
    """The best single action's share of the oracle's gain on ``points`` at each effect scale,
    from the world's unscaled conversion chances (vectorised: one pass over the points)."""
    offer, channel, slot, cost = world.action_parts()
    position = {a.id: k for k, a in enumerate(world.actions)}
    n = len(points)
    rows = [world.components(p.customer, p.event_time, scaled=False) for p in points]
    chance = np.array([r.offer_p for r in rows])
    response = np.array([r.channel for r in rows])[:, channel] * np.array([r.slot for r in rows])[:, slot]
    harm = np.array([r.harm for r in rows])[:, channel] + cost
    value = np.asarray(rows[0].offer_value)[offer]
    eligible = np.zeros((n, len(world.actions)), dtype=bool)
    for i, point in enumerate(points):
        eligible[i, [position[a.id] for a in point.eligible]] = True
    shares = np.empty(len(scales))
    for k, scale in enumerate(scales):
        gains = np.minimum(MAX_CONVERSION, scale * chance)[:, offer] * value * response - harm
        oracle = np.where(eligible, gains, -np.inf).max(axis=1).clip(0.0).mean()
        fixed = np.where(eligible, gains, 0.0).mean(axis=0).max()
        shares[k] = fixed / oracle if oracle > 0 else -math.inf
    return shares


def generate(seed: int) -> GeneratedMember:
    """The world of ``seed``, calibrated (see the module docstring). Raises RuntimeError if no
    attempt calibrates, which the seeds in use never do."""
    for attempt in range(MAX_ATTEMPTS):
        spec = draw_spec(seed, attempt)
        config = parse_config(user_config(spec), source=spec.name)
        world = GeneratedWorld(spec, config, CALIBRATION_CUSTOMERS, CALIBRATION_DRAW)
        points = decision_points(world, CALIBRATION_POINTS, seed, days=CALIBRATION_DAYS)
        shares = _scale_shares(world, points, SCALES)
        inside = (shares >= SHARE_BOUNDS[0]) & (shares <= SHARE_BOUNDS[1])
        if not inside.any():
            continue
        best = int(np.argmin(np.where(inside, np.abs(shares - spec.target_share), np.inf)))
        spec = replace(spec, effect_scale=round(float(SCALES[best]), 4))
        calibration = calibrate(GeneratedWorld(spec, config, CALIBRATION_CUSTOMERS, CALIBRATION_DRAW), points)
        if SHARE_BOUNDS[0] <= calibration.best_fixed_share <= SHARE_BOUNDS[1]:
            return GeneratedMember(spec, calibration)
    raise RuntimeError(f"seed {seed}: no calibrated world in {MAX_ATTEMPTS} attempts")


def member(name: str | int) -> Member:
    """``"telecom"`` (or ``"telecom:SEED"``) or a generated world's seed (``101`` or ``"g101"``)."""
    text = str(name)
    if text == TELECOM or text.startswith(TELECOM + ":"):
        return TelecomMember(int(text.split(":", 1)[1])) if ":" in text else TelecomMember()
    digits = text[1:] if text.startswith("g") else text
    if not digits.isdigit():
        raise ValueError(f"member: expected 'telecom', 'telecom:SEED' or a world seed like 101 or g101, got {name!r}")
    return generate(int(digits))


def customers_for(member: Member, decisions: int, days: float) -> int:
    """Customers whose visits make at least about ``decisions`` decisions in ``days``."""
    return max(1, math.ceil(decisions * SIZE_MARGIN / (member.visits_per_day * days)))


def with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``data`` with ``overrides`` merged in: tables merge key by key, anything else replaces."""
    merged = dict(data)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = with_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe(generated: GeneratedMember) -> dict[str, Any]:
    """What a generated world is, in a few numbers and names (``--json`` of the CLI)."""
    spec, calibration = generated.spec, generated.calibration
    return {
        "name": spec.name,
        "domain": spec.domain,
        "attempt": spec.attempt,
        "offers": [f"{o.name}->{o.outcome}" for o in spec.offers],
        "channels": [c.name for c in spec.channels],
        "slots": sorted({s for c in spec.channels for s in c.slots}),
        "actions": len(generated.world(parse_config(generated.config_data()), 1, 0).actions),
        "outcomes": {o.name: {"value": o.value, "window_days": o.window_days} for o in spec.outcomes},
        "numeric": [f.name for f in spec.numeric],
        "categorical": [f.name for f in spec.categorical],
        "irrelevant": list(spec.irrelevant),
        "decisions_per_customer_per_longest_window": spec.visits_per_day * spec.longest_window,
        "effect_scale": spec.effect_scale,
        "best_single_action": calibration.best_fixed_action,
        "best_single_share": calibration.best_fixed_share,
        "target_share": spec.target_share,
        "oracle_gain": calibration.oracle_gain,
    }


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "seeds", type=int, nargs="*", default=list(CHOOSING_SEEDS[:5]), help="world seeds (default: 5 choosing seeds)"
    )
    parser.add_argument("--write", type=Path, help="write each world's config as DIR/<name>.toml")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    held_out = sorted(set(args.seeds) & set(HELD_OUT_SEEDS))
    if held_out:
        parser.error(f"seeds {held_out} are held out for reporting: look at them only through python -m bench.learning")
    worlds = [generate(seed) for seed in args.seeds]
    if args.write:
        args.write.mkdir(parents=True, exist_ok=True)
        for generated in worlds:
            write_config(generated.spec, args.write / f"{generated.name}.toml")
    described = [describe(g) for g in worlds]
    if args.json:
        print(json.dumps(described, indent=2))
        return
    table = Table(
        "world",
        "domain",
        "offers -> outcomes",
        "channels",
        "slots",
        "actions",
        "windows (days)",
        "visits/window",
        "best single action",
        "share",
        title="generated worlds",
    )
    for d in described:
        windows = ", ".join(f"{name} {o['window_days']:g}" for name, o in d["outcomes"].items())
        table.add_row(
            d["name"],
            d["domain"],
            "\n".join(d["offers"]),
            ", ".join(d["channels"]),
            ", ".join(d["slots"]),
            str(d["actions"]),
            windows,
            f"{d['decisions_per_customer_per_longest_window']:.1f}",
            d["best_single_action"],
            f"{d['best_single_share']:.2f}",
        )
    Console().print(table)


if __name__ == "__main__":
    main()
