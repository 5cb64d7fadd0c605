"""Learning set-ups side by side on the same choosing worlds, for choosing defaults.

    python -m bench.variants --worlds 8 --days 120 --decisions 20000 base.toml equal.toml floor.toml

Each overrides file (a TOML merged into every world's config, its ``[benchmark]`` table saying
``purpose = "choosing"``) is one variant, named by its file's stem. Per world the oracle and the best
single action run once and Brein once per variant, through the same customers and arrivals, so
a world's references are paid once however many variants there are (no yardstick: the variants are
compared with each other; ``python -m bench.learning`` reports the full table). Only choosing seeds:
held-out worlds are never used to choose anything. Printed: each variant's share of the oracle's
gain in the last 30 days per world, and per variant the median share, the worlds where it beats
the best single action by >= 0.10 of the oracle's gain, and those whose weekly gain fell below
do-nothing's after day 60; with ``--json`` each variant's ``[tuning]`` runs per world too (the audit
trail's: outcome, candidate, reason), and per variant how many promoted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bandit.config import parse_config
from bandit.errors import ConfigError
from bench.learning import AFTER_DAY, LAST_DAYS, MARGIN, held_out, read_overrides, resolve, tuning_runs, weekly_gains
from policies.simulation.baselines import best_single_action, fixed_policy, oracle_policy
from policies.simulation.family import CHOOSING_SEEDS, customers_for, member, with_overrides
from policies.simulation.harness import ReferenceDriver, gain_share, run
from serving.simulate import brein_driver


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any]


def measure(name: str, variants: list[Variant], days: float, decisions: int) -> dict[str, Any]:
    """One world: the oracle, the best single action and Brein under every variant."""
    began = time.perf_counter()
    world_member = member(name)
    customers = customers_for(world_member, decisions, days)
    seed = world_member.seed
    datas = [with_overrides(world_member.config_data(), v.overrides) for v in variants]
    base = parse_config(datas[0], source=f"{name} config")

    def reference(policy: Any) -> Any:
        world = world_member.world(base, customers, world_member.evaluated_draw)
        return run(world, ReferenceDriver("reference", world, policy, world.config, seed), days, seed=seed)

    best = best_single_action(world_member.world(base, customers, world_member.evaluated_draw), seed)
    oracle, single = reference(oracle_policy), reference(fixed_policy(best))
    shares: dict[str, float] = {}
    below: dict[str, bool] = {}
    contacts: dict[str, int] = {}
    tuning: dict[str, list[dict[str, Any]]] = {}
    for variant, data in zip(variants, datas, strict=True):
        config = parse_config(data, source=f"{name} config, {variant.name}")
        world = world_member.world(config, customers, world_member.evaluated_draw)
        with brein_driver(data, in_process=True) as driver:
            brein = run(world, driver, days, seed=seed)
            tuning[variant.name] = tuning_runs(driver)
        shares[variant.name] = gain_share(brein, oracle, LAST_DAYS)
        below[variant.name] = any(w < 0.0 for w in weekly_gains(brein, AFTER_DAY))
        contacts[variant.name] = brein.contacts
    return {
        "world": name,
        "decisions": len(oracle.times),
        "best_single": gain_share(single, oracle, LAST_DAYS),
        "oracle_contacts": oracle.contacts,
        "share": shares,
        "below_do_nothing_after_day_60": below,
        "contacts": contacts,
        "tuning": tuning,
        "seconds": time.perf_counter() - began,
    }


def summary(worlds: list[dict[str, Any]], variants: list[Variant]) -> dict[str, dict[str, Any]]:
    return {
        v.name: {
            "median_share": statistics.median(w["share"][v.name] for w in worlds),
            "mean_share": statistics.fmean(w["share"][v.name] for w in worlds),
            "beats_best_single_by_margin": sum(w["share"][v.name] - w["best_single"] >= MARGIN for w in worlds),
            "below_do_nothing_after_day_60": sum(w["below_do_nothing_after_day_60"][v.name] for w in worlds),
            "contacts": sum(w["contacts"][v.name] for w in worlds),
            "promotions": sum(run["outcome"] == "promoted" for w in worlds for run in w["tuning"][v.name]),
        }
        for v in variants
    }


def load_variants(paths: list[Path]) -> list[Variant]:
    variants = []
    for path in paths:
        overrides, purpose = read_overrides(path)
        if purpose != "choosing":
            raise ConfigError(f'{path}: expected [benchmark] purpose = "choosing" (variants choose), got {purpose!r}')
        variants.append(Variant(path.stem, overrides))
    if len({v.name for v in variants}) != len(variants):
        raise ConfigError("variants: expected files with distinct names (a variant is named by its file's stem)")
    return variants


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", nargs="+", type=Path, help="overrides files, one per variant")
    parser.add_argument("--seeds", nargs="+", default=["choosing"], help="choosing (default), or choosing seeds / telecom[:SEED]")
    parser.add_argument("--worlds", type=int, default=8, help="the first N worlds of the seeds")
    parser.add_argument("--days", type=float, default=120.0, help="simulated days of every world")
    parser.add_argument("--decisions", type=int, default=20_000, help="decisions each world makes, at least about")
    parser.add_argument("--jobs", type=int, default=2, help="worlds in parallel processes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    if args.days <= LAST_DAYS or args.decisions < 1 or args.jobs < 1 or args.worlds < 1:
        parser.error(f"--days must exceed {LAST_DAYS:g}; --decisions, --jobs and --worlds must be positive")
    try:
        variants = load_variants(args.variants)
        names = resolve(args.seeds, args.worlds)
        choosing = {f"g{s}" for s in CHOOSING_SEEDS}
        others = [n for n in names if n.startswith("g") and n not in choosing]
        if others:
            raise ValueError(f"--seeds: variants choose, so only choosing worlds and telecom; got {', '.join(others)}"
                             + (" (held out)" if held_out(others) else ""))  # fmt: skip
        for v in variants:  # fail here, not in every worker
            parse_config(with_overrides(member(names[0]).config_data(), v.overrides), source=f"{names[0]} config, {v.name}")
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    began = time.perf_counter()
    finished: dict[str, dict[str, Any]] = {}
    with ProcessPoolExecutor(max_workers=min(args.jobs, len(names)), mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(measure, name, variants, args.days, args.decisions) for name in names]
        for future in as_completed(futures):
            world = future.result()
            finished[world["world"]] = world
            shares = ", ".join(f"{v}: {share:.2f}" for v, share in world["share"].items())
            print(f"{world['world']} ({len(finished)}/{len(names)}, {world['seconds']:.0f} s): {shares}", file=sys.stderr)
    worlds = [finished[n] for n in names]
    totals = summary(worlds, variants)
    if args.json:
        print(json.dumps({"worlds": worlds, "summary": totals, "seconds": time.perf_counter() - began}, indent=2))
        return
    console = Console()
    title = f"share of the oracle's gain, last {LAST_DAYS:g} days"
    table = Table("world", "best single", *(v.name for v in variants), title=title)
    for w in worlds:
        table.add_row(w["world"], f"{w['best_single']:.2f}", *(f"{w['share'][v.name]:.2f}" for v in variants))
    console.print(table)
    for v in variants:
        t = totals[v.name]
        console.print(f"{v.name}: median {t['median_share']:.3f}, mean {t['mean_share']:.3f}, "
                      f"beats best single by >= {MARGIN} in "
                      f"{t['beats_best_single_by_margin']}/{len(worlds)}, below do-nothing after day {AFTER_DAY:g} in "
                      f"{t['below_do_nothing_after_day_60']}/{len(worlds)}, contacts {t['contacts']:,}, "
                      f"[tuning] promotions {t['promotions']}")  # fmt: skip
    console.print(f"{time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main(sys.argv[1:])
