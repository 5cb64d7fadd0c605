"""What a policy on Brein's features can reach: a model trained with full information.

Brein learns from one delayed, shared, yes/no outcome of the action it chose. This measures what
the same view of the customer allows when none of that is in the way: a gradient-boosted model
(LightGBM) learns the true expected gain of *every* eligible action at the decisions of training
worlds (other draws of the same world: other customer populations, driven by the oracle with some
random choices so that every action is seen), and its greedy choice is then run through the
evaluated world like any reference policy. Its share of the oracle's gain is a yardstick for
Brein's. It is not a proof of a ceiling: the model errs too (``--hidden`` shows it the hidden traits
as well, and it still falls short of the oracle).

    python -m policies.simulation.ceiling --customers 10000 --days 180 --train-seeds 11 12 13 --seeds 1 2 3 4
    python -m policies.simulation.ceiling --world 101 --customers 3000 --days 120 --train-seeds 1 2 --seeds 0

The view is Brein's: the context features only with personalisation consent (the config's
non-personal ones always), the history features of its log, the local hour and weekday. Not the
touchpoint, which reference policies are not given. Needs LightGBM: ``pip install -e '.[ceiling]'``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from bandit.catalog import Action, Catalog
from bandit.config import BreinConfig, parse_config
from bandit.features import FeatureEncoder
from bandit.history import history_feature_names, history_features
from policies.simulation.baselines import Policy, oracle_policy
from policies.simulation.family import TELECOM, Member, member
from policies.simulation.harness import Progress as Advance
from policies.simulation.harness import ReferenceDriver, WorldFactory, gain_share, run
from policies.simulation.interface import SimulatedWorld

if TYPE_CHECKING:
    import lightgbm


def _codes(values: set[str]) -> dict[str, int]:
    return {value: code for code, value in enumerate(sorted(values))}


class FeatureView:
    """A decision as one row of numbers: what Brein would see of the customer, then the action
    (offer, channel, slot) as category codes in the last three columns. ``categories``: the levels
    of each categorical field (``SimulatedWorld.categories``); ``hidden``: the world's hidden traits
    as extra columns (a diagnostic)."""

    def __init__(self, config: BreinConfig, categories: Mapping[str, tuple[str, ...]], *, hidden: bool = False) -> None:
        self._hidden = hidden
        self._categories = categories
        self._encoder = FeatureEncoder(config)
        catalog = Catalog(config)
        self._channels = catalog.channels
        self._outcome_types = tuple(config.outcomes)
        self._offers = _codes({a.offer for a in catalog.actions})
        self._channel_codes = _codes({a.channel for a in catalog.actions})
        self._slot_codes = _codes({a.slot for a in catalog.actions})
        self._history_names = history_feature_names(self._channels, self._outcome_types)

    def customer(self, world: SimulatedWorld, customer: int, t: float) -> list[float]:
        """Brein's shared features (``FeatureEncoder.shared_features``, so consent hides what it
        hides there) as fixed columns: context, consent, history, hour and weekday; NaN where hidden."""
        numeric, categorical = world.context(customer, t)
        personal = world.consent(customer, t).personalisation
        history = history_features(world.history(customer, t), t, self._channels, self._outcome_types) if personal else {}
        shared = self._encoder.shared_features(
            touchpoint="", event_time=t, numeric=numeric, categorical=categorical, history=history, personalised=personal
        )
        seen = {**shared["n"], **shared.get("u", {})}
        row = [float(seen.get(name, math.nan)) for name in numeric]
        row += [float(self._categories[name].index(str(seen[name]))) if name in seen else math.nan for name in categorical]
        row.append(float(personal))
        if personal:
            row += [history.get(name, 0.0 if name.startswith("contacts") else math.nan) for name in self._history_names]
        else:
            row += [math.nan] * len(self._history_names)
        row += [float(seen["hour"]), float(seen["weekday"])]
        if self._hidden:
            row += list(world.traits(customer).values())
        return row

    def action(self, action: Action) -> list[float]:
        return [
            float(self._offers[action.offer]),
            float(self._channel_codes[action.channel]),
            float(self._slot_codes[action.slot]),
        ]

    def rows(self, world: SimulatedWorld, customer: int, t: float, actions: Sequence[Action]) -> npt.NDArray[np.float64]:
        shared = self.customer(world, customer, t)
        return np.asarray([shared + self.action(a) for a in actions], dtype=np.float64)


def full_information(
    make_world: WorldFactory,
    view: FeatureView,
    seed: int,
    days: float,
    *,
    sample: float,
    random_share: float,
    progress: Advance | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(rows, true gains) of every eligible action at a ``sample`` of the decisions of a world driven
    by the oracle, which chooses at random ``random_share`` of the time."""
    world = make_world()
    rows: list[npt.NDArray[np.float64]] = []
    gains: list[npt.NDArray[np.float64]] = []

    def collect(world: SimulatedWorld, customer: int, t: float, eligible: Sequence[Action], rng: np.random.Generator) -> Action:
        true_gains = world.expected_gains(customer, t, eligible)
        if rng.random() < sample:
            rows.append(view.rows(world, customer, t, eligible))
            gains.append(true_gains)
        if rng.random() < random_share:
            return eligible[int(rng.integers(len(eligible)))]
        return eligible[int(np.argmax(true_gains))]

    run(world, ReferenceDriver("collect", world, collect, world.config, seed), days, seed=seed, progress=progress)
    return np.concatenate(rows), np.concatenate(gains)


def fit(
    rows: npt.NDArray[np.float64],
    gains: npt.NDArray[np.float64],
    *,
    rounds: int,
    leaves: int,
    learning_rate: float = 0.05,
    threads: int = 0,
) -> lightgbm.Booster:
    """The gradient-boosted model of the gain (``threads`` 0: LightGBM's default, every core)."""
    import lightgbm

    width = rows.shape[1]
    params = {
        "objective": "regression",
        "num_leaves": leaves,
        "learning_rate": learning_rate,
        "min_data_in_leaf": 40,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 1,
        "seed": 1,
        "deterministic": True,
        "num_threads": threads,
        "verbose": -1,
    }
    data = lightgbm.Dataset(rows, gains, categorical_feature=[width - 3, width - 2, width - 1])
    return lightgbm.train(params, data, num_boost_round=rounds)


def greedy_policy(model: lightgbm.Booster, view: FeatureView) -> Policy:
    """The eligible action of highest predicted gain."""

    def choose(world: SimulatedWorld, customer: int, t: float, eligible: Sequence[Action], rng: np.random.Generator) -> Action:
        return eligible[int(np.argmax(model.predict(view.rows(world, customer, t, eligible), num_threads=1)))]

    return choose


@dataclass(frozen=True, slots=True)
class YardstickSettings:
    """How the yardstick learns: the share of training decisions recorded, the share of random
    choices in them, boosting rounds, leaves and learning rate, LightGBM threads (0: all)."""

    sample: float = 0.3
    random_share: float = 0.2
    rounds: int = 1500
    leaves: int = 255
    learning_rate: float = 0.05
    threads: int = 0


def train(
    member: Member,
    config: BreinConfig,
    customers: int,
    days: float,
    draws: Sequence[int],
    settings: YardstickSettings,
    *,
    hidden: bool = False,
    progress: Advance | None = None,
) -> Policy:
    """The yardstick's greedy policy, trained on ``draws`` of ``member`` (each run with its draw as
    the seed): never the draw it is judged on. ``progress`` is told the share of the training done."""
    view = FeatureView(config, member.world(config, 1, draws[0]).categories(), hidden=hidden)
    parts = []
    for k, draw in enumerate(draws):

        def advance(share: float, done: int = k) -> None:
            if progress is not None:
                progress((done + share) / len(draws))

        parts.append(
            full_information(
                partial(member.world, config, customers, draw),
                view,
                draw,
                days,
                sample=settings.sample,
                random_share=settings.random_share,
                progress=advance,
            )
        )
    rows, gains = np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    model = fit(
        rows,
        gains,
        rounds=settings.rounds,
        leaves=settings.leaves,
        learning_rate=settings.learning_rate,
        threads=settings.threads,
    )
    return greedy_policy(model, view)


@dataclass(frozen=True, slots=True)
class CeilingResult:
    seed: int
    share: float  # of the oracle's gain over do-nothing, last 30 days
    gain: float  # per decision, last 30 days
    oracle_gain: float
    contacts: int
    oracle_contacts: int


def evaluate(make_world: WorldFactory, policy: Policy, seed: int, days: float) -> CeilingResult:
    """Run the yardstick's greedy choice, then the oracle, through fresh worlds of ``make_world``."""
    world = make_world()
    learned = run(world, ReferenceDriver("full information", world, policy, world.config, seed), days, seed=seed)
    world = make_world()
    oracle = run(world, ReferenceDriver("oracle", world, oracle_policy, world.config, seed), days, seed=seed)
    return CeilingResult(
        seed,
        gain_share(learned, oracle, 30),
        learned.value_per_decision(30),
        oracle.value_per_decision(30),
        learned.contacts,
        oracle.contacts,
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", default=TELECOM, help="'telecom' or a generated world's seed (policies.simulation.family)")
    parser.add_argument(
        "--config",
        default="examples/telecom.toml",
        help="telecom only: Brein config (TOML) whose catalog and rules the worlds use",
    )
    parser.add_argument("--customers", type=int, default=10_000, help="population size of every world")
    parser.add_argument("--days", type=float, default=180.0, help="simulated days of every world")
    parser.add_argument(
        "--train-seeds", type=int, nargs="+", default=[11, 12, 13], help="draws (populations) the model learns from"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4], help="draws it is run through")
    parser.add_argument("--sample", type=float, default=0.3, help="share of the training decisions recorded")
    parser.add_argument("--random-share", type=float, default=0.2, help="share of random choices while training")
    parser.add_argument("--rounds", type=int, default=1500, help="boosting rounds")
    parser.add_argument("--leaves", type=int, default=255, help="leaves per tree")
    parser.add_argument("--learning-rate", type=float, default=0.05, help="boosting learning rate")
    parser.add_argument("--hidden", action="store_true", help="show the model the hidden traits too (its own error)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if not 0.0 < args.sample <= 1.0 or not 0.0 <= args.random_share <= 1.0:
        parser.error("--sample must be in (0, 1] and --random-share in [0, 1]")
    if set(args.train_seeds) & set(args.seeds):
        parser.error("--train-seeds and --seeds must differ: the model would be judged on the worlds it learned")
    if importlib.util.find_spec("lightgbm") is None:
        parser.error("needs LightGBM: pip install -e '.[ceiling]'")

    chosen = member(args.world)
    data = tomllib.loads(Path(args.config).read_text(encoding="utf-8")) if args.world == TELECOM else chosen.config_data()
    config = parse_config(data)
    settings = YardstickSettings(args.sample, args.random_share, args.rounds, args.leaves, args.learning_rate)
    with Progress(disable=args.json, transient=True) as bar:
        task = bar.add_task("learning from full information", total=1.0 + len(args.seeds))
        policy = train(
            chosen,
            config,
            args.customers,
            args.days,
            args.train_seeds,
            settings,
            hidden=args.hidden,
            progress=lambda share: bar.update(task, completed=share),
        )
        results = []
        for k, seed in enumerate(args.seeds):
            bar.update(task, completed=1.0 + k, description=f"running the model through draw {seed}")
            results.append(evaluate(partial(chosen.world, config, args.customers, seed), policy, seed, args.days))
    if args.json:
        print(json.dumps([asdict(r) for r in results]))
        return
    table = Table(title=f"Greedy on a model trained with full information ({chosen.name}): last 30 days")
    for column in ("draw", "share of the oracle's gain", "gain/decision", "oracle's", "contacts", "oracle's contacts"):
        table.add_column(column, justify="right")
    for r in results:
        table.add_row(
            str(r.seed), f"{r.share:.3f}", f"{r.gain:+.3f}", f"{r.oracle_gain:+.3f}", f"{r.contacts:,}", f"{r.oracle_contacts:,}"
        )
    Console().print(table)
    print(f"mean share: {np.mean([r.share for r in results]):.3f}")


if __name__ == "__main__":
    main()
