"""The family benchmark: how much of the oracle's gain Brein captures across generated worlds.

    python -m bench.learning                                   # the 20 held-out worlds: the figures we report
    python -m bench.learning --seeds choosing --worlds 10      # worlds to choose learning set-ups by
    python -m bench.learning --seeds choosing --config-overrides variant.toml --plot curves/
    python -m bench.learning --seeds 101 telecom --days 120 --decisions 20000 --json

Each world (``policies.simulation.family``) runs in-process with the config its generator writes
(``--config-overrides``: a TOML merged into every config, to compare learning set-ups without code
changes), through the same customers and arrivals as its references: do-nothing, the best single
action, uniform random, the oracle and the full-information yardstick (``policies.simulation.
ceiling``, trained on two other populations of the same world). Printed per world: Brein's share of
the oracle's gain over do-nothing in the last 30 days, the yardstick's, the best single action's,
do-nothing's money per decision, the oracle's gain per decision, Brein's and the oracle's contacts,
and whether Brein's weekly mean gain per decision fell below do-nothing's after day 60 (and, for
reference, whether the yardstick's did). Then the summary against issue 13's targets. With
``[tuning]`` on in the overrides, each world's scheduled tuning runs (the audit trail's outcome,
candidate and reason; in the JSON) and the promotions. Worlds run in ``--jobs`` processes.

Seeds. Held-out worlds report; choosing worlds choose. An overrides file says what it is for in a
``[benchmark]`` table (``purpose = "choosing"`` or ``"report"``, removed before merging): the
benchmark refuses to run held-out worlds with overrides marked "choosing", and flags held-out runs
whose overrides say nothing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue
import re
import statistics
import sys
import time
import tomllib
from collections import Counter
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bandit.config import parse_config
from bandit.errors import ConfigError
from brain.tuning import AUDIT_ACTION as TUNING_AUDIT
from policies.simulation.base import DAY
from policies.simulation.baselines import best_single_action
from policies.simulation.ceiling import YardstickSettings, train
from policies.simulation.family import CHOOSING_SEEDS, HELD_OUT_SEEDS, TEST_SEEDS, customers_for, member, with_overrides
from policies.simulation.harness import Progress as Advance
from policies.simulation.harness import RunResult, gain_share, run, run_references
from policies.simulation.interface import SimulatedWorld
from serving.simulate import GrpcDriver, InProcessDriver, brein_driver, plot_curves

LAST_DAYS = 30.0
AFTER_DAY = 60.0
MARGIN = 0.10  # Brein must beat the best single action by this share of the oracle's gain
RATIO_TARGET = 0.85  # Brein's median share over the yardstick's
SEED_SETS = {"held-out": HELD_OUT_SEEDS, "choosing": CHOOSING_SEEDS, "tests": TEST_SEEDS}
PURPOSES = ("choosing", "report")
# Cheap enough to train next to the rest of a world in a few minutes on one core.
YARDSTICK = YardstickSettings(sample=0.25, random_share=0.2, rounds=300, leaves=63, learning_rate=0.1, threads=1)
# Stages of a world and the share of its time each takes (measured roughly): the bar's steps.
STAGES = {"yardstick": 0.25, "references": 0.30, "brein": 0.45}


@dataclass(frozen=True)
class Settings:
    days: float
    decisions: int
    overrides: dict[str, Any] = field(default_factory=dict)
    plot_dir: str | None = None


def weekly_gains(result: RunResult, since_day: float) -> list[float]:
    """Mean gain per decision in each whole week from ``since_day`` on, weeks counted back from the
    run's end (so the last week is whole)."""
    times, values = np.asarray(result.times), np.asarray(result.values)
    weeks = []
    end = result.end
    while end - 7 * DAY >= result.start + since_day * DAY:
        inside = (times >= end - 7 * DAY) & (times < end)
        if inside.any():
            weeks.append(float(values[inside].mean()))
        end -= 7 * DAY
    return weeks[::-1]


def offer_counts(result: RunResult, last_days: float) -> dict[str, int]:
    """How often each offer was chosen in the run's last days (do-nothing included)."""
    since = result.end - last_days * DAY
    return dict(sorted(Counter(o for t, o in zip(result.times, result.offers, strict=True) if t >= since).items()))


def tuning_runs(driver: GrpcDriver | InProcessDriver) -> list[dict[str, Any]]:
    """The ``[tuning]`` runs of an in-process run, from its audit trail (outcome, candidate, reason)."""
    assert isinstance(driver, InProcessDriver)
    return [json.loads(entry.detail) for entry in driver.store.audit.entries(TUNING_AUDIT)]


def measure(name: str, settings: Settings, report: Any = None) -> dict[str, Any]:
    """Run one member of the family and its references; ``report`` (a queue) is sent
    (name, share of the world done) as it goes."""
    began, cpu_began = time.perf_counter(), time.process_time()

    def stage(start: float, weight: float) -> Advance:
        def progress(share: float) -> None:
            if report is not None:
                report.put((name, start + weight * share))

        return progress

    def runs(start: float, weight: float, count: int) -> Advance:
        """One progress for ``count`` runs in a row, each reporting its own share from 0 to 1."""
        done = [0]

        def progress(share: float) -> None:
            stage(start, weight)((done[0] + share) / count)
            if share >= 1.0:
                done[0] += 1

        return progress

    world_member = member(name)
    data = with_overrides(world_member.config_data(), settings.overrides)
    config = parse_config(data, source=f"{name} config with overrides")
    customers = customers_for(world_member, settings.decisions, settings.days)

    def make_world() -> SimulatedWorld:
        return world_member.world(config, customers, world_member.evaluated_draw)

    seed, days = world_member.seed, settings.days
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(what: str) -> None:
        now = time.perf_counter()
        seconds[what] = now - clock[0]
        clock[0] = now

    best = best_single_action(make_world(), seed)
    yardstick = train(
        world_member, config, customers, days, world_member.training_draws, YARDSTICK, progress=stage(0.0, STAGES["yardstick"])
    )
    lap("yardstick_training")
    references = run_references(
        make_world,
        seed,
        days,
        best,
        runs(STAGES["yardstick"], STAGES["references"], 5),
        extra=[("full-information yardstick", yardstick)],
    )
    nothing, single, uniform, oracle, full = references
    lap("references")
    with brein_driver(data, in_process=True) as driver:
        brein = run(make_world(), driver, days, seed=seed, progress=stage(1.0 - STAGES["brein"], STAGES["brein"]))
        tuning = tuning_runs(driver)
    lap("brein")
    weeks = weekly_gains(brein, AFTER_DAY)
    if settings.plot_dir:
        path = Path(settings.plot_dir) / f"{name}.png"
        plot_curves([brein, full, single, oracle], path, title=f"Brein learning in world {name}")
    return {
        "world": name,
        "customers": customers,
        "decisions": len(brein.times),
        "actions": len(make_world().actions),
        "longest_window_days": max(o.window_days for o in config.outcomes.values()),
        "best_single_action": best,
        "share": {
            r: gain_share(result, oracle, LAST_DAYS)
            for r, result in (("brein", brein), ("yardstick", full), ("best_single", single), ("uniform", uniform))
        },
        "gain_per_decision": {
            r: result.value_per_decision(LAST_DAYS)
            for r, result in (("brein", brein), ("yardstick", full), ("best_single", single), ("oracle", oracle))
        },
        "do_nothing_money_per_decision": nothing.net_per_decision(LAST_DAYS),
        "contacts": {
            "brein": brein.contacts,
            "oracle": oracle.contacts,
            "yardstick": full.contacts,
            "best_single": single.contacts,
        },
        "weekly_gain_after_day_60": weeks,
        "below_do_nothing_after_day_60": any(w < 0.0 for w in weeks),
        # A reference, not a target: whether a full-information model on the same features stays above do-nothing.
        "yardstick_below_do_nothing_after_day_60": any(w < 0.0 for w in weekly_gains(full, AFTER_DAY)),
        "tuning": tuning,
        "gain_by_offer": {"brein": brein.gain_by_offer(LAST_DAYS), "oracle": oracle.gain_by_offer(LAST_DAYS)},
        "offers_chosen": {"brein": offer_counts(brein, LAST_DAYS), "oracle": offer_counts(oracle, LAST_DAYS)},
        "seconds": time.perf_counter() - began,
        "seconds_by_stage": seconds,
        "cpu_seconds": time.process_time() - cpu_began,  # this process, all its threads: the machine's load aside
    }


def summary(worlds: list[dict[str, Any]]) -> dict[str, Any]:
    brein = [w["share"]["brein"] for w in worlds]
    yardstick = [w["share"]["yardstick"] for w in worlds]
    beats = [w["world"] for w in worlds if w["share"]["brein"] - w["share"]["best_single"] >= MARGIN]
    below = [w["world"] for w in worlds if w["below_do_nothing_after_day_60"]]
    median_brein, median_yardstick = statistics.median(brein), statistics.median(yardstick)
    ratio = median_brein / median_yardstick if median_yardstick > 0 else float("nan")
    return {
        "worlds": len(worlds),
        "median_share_brein": median_brein,
        "median_share_yardstick": median_yardstick,
        "ratio": ratio,
        "ratio_target": RATIO_TARGET,
        "beats_best_single_by_margin": len(beats),
        "margin": MARGIN,
        "below_do_nothing_after_day_60": below,
        "yardstick_below_do_nothing_after_day_60": [w["world"] for w in worlds if w["yardstick_below_do_nothing_after_day_60"]],
        "tuning_promotions": sum(run["outcome"] == "promoted" for w in worlds for run in w["tuning"]),
        "targets_met": {
            "ratio": ratio >= RATIO_TARGET,
            "beats_best_single": len(beats) >= 0.9 * len(worlds),
            "never_below_do_nothing": not below,
        },
    }


def read_overrides(path: Path | None) -> tuple[dict[str, Any], str | None]:
    """(the overrides to merge, their declared purpose) from ``path``."""
    if path is None:
        return {}, None
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"--config-overrides {path}: {error}") from None
    meta = data.pop("benchmark", {})
    purpose = meta.get("purpose") if isinstance(meta, dict) else None
    if purpose is not None and purpose not in PURPOSES:
        raise ConfigError(f"--config-overrides {path}: benchmark.purpose: expected one of {', '.join(PURPOSES)}, got {purpose!r}")
    return data, purpose


def resolve(seeds: list[str], worlds: int | None) -> list[str]:
    """The members to run: a named seed set or explicit seeds (``telecom`` too), the first ``worlds``."""
    if len(seeds) == 1 and seeds[0] in SEED_SETS:
        names = [f"g{s}" for s in SEED_SETS[seeds[0]]]
    else:
        names = []
        for text in seeds:
            if not re.fullmatch(r"g?\d+|telecom(:\d+)?", text):
                raise ValueError(f"--seeds: expected held-out, choosing, tests, world seeds or telecom[:SEED], got {text!r}")
            names.append(text if text.startswith(("g", "telecom")) else f"g{text}")
    return names[:worlds] if worlds else names


def seed_hygiene(held_out: list[str], overridden: bool, purpose: str | None) -> str | None:
    """Refuse held-out worlds with overrides marked for choosing (ValueError); a warning for
    held-out worlds with overrides that say nothing of their purpose."""
    if held_out and purpose == "choosing":
        raise ValueError(
            f"held-out worlds ({', '.join(held_out)}) with overrides marked for choosing: choose on --seeds choosing, "
            'then mark the overrides purpose = "report" to report them'
        )
    if held_out and overridden and purpose is None:
        return (
            "held-out worlds with overrides that do not say what they are for (no [benchmark] purpose): if these figures "
            "choose anything, the held-out seeds are spent"
        )
    return None


def held_out(names: list[str]) -> list[str]:
    return [n for n in names if n.startswith("g") and int(n[1:]) in HELD_OUT_SEEDS]


def run_family(names: list[str], settings: Settings, jobs: int, console: Console, *, quiet: bool) -> list[dict[str, Any]]:
    """Every world in ``jobs`` processes, with a progress bar per world and one for all."""
    results: dict[str, dict[str, Any]] = {}
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        reports = manager.Queue()
        futures: dict[Future[dict[str, Any]], str] = {pool.submit(measure, n, settings, reports): n for n in names}
        columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn())
        with Progress(*columns, console=console, disable=quiet) as bar:
            overall = bar.add_task(f"{len(names)} worlds", total=len(names))
            tasks = {n: bar.add_task(f"  {n}", total=1.0, visible=False) for n in names}
            while len(results) < len(names):
                try:
                    name, share = reports.get(timeout=0.5)
                    bar.update(tasks[name], completed=share, visible=True)
                except queue.Empty:
                    pass
                for future in [f for f in futures if f.done()]:
                    name = futures.pop(future)
                    results[name] = future.result()
                    bar.update(tasks[name], completed=1.0, visible=False)
                    bar.advance(overall)
    return [results[n] for n in names]


def print_tables(worlds: list[dict[str, Any]], totals: dict[str, Any], console: Console, *, by_offer: bool) -> None:
    table = Table(
        "world",
        "decisions",
        "Brein",
        "yardstick",
        "best single",
        "do-nothing money/dec",
        "oracle gain/dec",
        "Brein contacts",
        "oracle contacts",
        "weekly < 0 after day 60",
        title=f"share of the oracle's gain over do-nothing, last {LAST_DAYS:g} days",
    )
    for w in worlds:
        share = w["share"]
        table.add_row(
            w["world"],
            f"{w['decisions']:,}",
            f"{share['brein']:.2f}",
            f"{share['yardstick']:.2f}",
            f"{share['best_single']:.2f}",
            f"{w['do_nothing_money_per_decision']:+.2f}",
            f"{w['gain_per_decision']['oracle']:+.2f}",
            f"{w['contacts']['brein']:,}",
            f"{w['contacts']['oracle']:,}",
            "[red]yes[/red]" if w["below_do_nothing_after_day_60"] else "no",
        )
    console.print(table)
    if by_offer:
        for w in worlds:
            gains, counts = w["gain_by_offer"], w["offers_chosen"]
            offers = sorted(set(counts["brein"]) | set(counts["oracle"]))
            detail = Table(
                "offer",
                "Brein chose",
                "oracle chose",
                "Brein's gain/dec",
                "oracle's gain/dec",
                title=f"{w['world']}: by offer, last {LAST_DAYS:g} days",
            )
            for offer in offers:
                detail.add_row(
                    offer,
                    f"{counts['brein'].get(offer, 0):,}",
                    f"{counts['oracle'].get(offer, 0):,}",
                    f"{gains['brein'].get(offer, 0.0):+.3f}",
                    f"{gains['oracle'].get(offer, 0.0):+.3f}",
                )
            console.print(detail)
    met = totals["targets_met"]

    def mark(ok: bool) -> str:
        return "[green]met[/green]" if ok else "[red]not met[/red]"

    console.print(
        f"median share: Brein {totals['median_share_brein']:.3f}, yardstick {totals['median_share_yardstick']:.3f}, "
        f"ratio {totals['ratio']:.2f} (target >= {RATIO_TARGET}: {mark(met['ratio'])})\n"
        f"Brein beats the best single action by >= {MARGIN} of the oracle's gain in {totals['beats_best_single_by_margin']} "
        f"of {totals['worlds']} worlds ({mark(met['beats_best_single'])})\n"
        f"weekly gain below do-nothing's after day {AFTER_DAY:g}: {', '.join(totals['below_do_nothing_after_day_60']) or 'none'} "
        f"({mark(met['never_below_do_nothing'])}); the yardstick's: "
        f"{', '.join(totals['yardstick_below_do_nothing_after_day_60']) or 'none'}"
    )
    runs = [(w["world"], run) for w in worlds for run in w["tuning"]]
    if runs:
        promoted = [f"{world}: {run['candidate']}" for world, run in runs if run["outcome"] == "promoted"]
        console.print(f"[tuning] {len(runs)} runs, {len(promoted)} promoted: {', '.join(promoted) or 'none'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--seeds", nargs="+", default=["held-out"], help="held-out (default), choosing, tests, or world seeds / telecom[:SEED]"
    )
    parser.add_argument("--worlds", type=int, help="run only the first N worlds of the set")
    parser.add_argument("--days", type=float, default=180.0, help="simulated days of every world")
    parser.add_argument("--decisions", type=int, default=50_000, help="decisions each world makes, at least about")
    parser.add_argument("--config-overrides", type=Path, help="TOML merged into every world's config")
    parser.add_argument("--jobs", type=int, default=2, help="worlds in parallel processes")
    parser.add_argument("--plot", type=Path, help="write a learning-curve PNG per world into this directory")
    parser.add_argument("--by-offer", action="store_true", help="also print, per world, what Brein and the oracle chose by offer")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--quick", action="store_true", help="two choosing worlds, 100 days, 8,000 decisions")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.worlds, args.days, args.decisions = ["choosing"], 2, 100.0, 8_000
    if args.days <= LAST_DAYS or args.decisions < 1 or args.jobs < 1 or (args.worlds is not None and args.worlds < 1):
        parser.error(f"--days must exceed {LAST_DAYS:g}; --decisions, --jobs and --worlds must be positive")
    console = Console(stderr=args.json)
    try:
        overrides, purpose = read_overrides(args.config_overrides)
        names = resolve(args.seeds, args.worlds)
        reported = held_out(names)
        warning = seed_hygiene(reported, bool(overrides), purpose)
        if overrides:  # fail here, not in every worker
            parse_config(with_overrides(member(names[0]).config_data(), overrides), source=f"{names[0]} config with overrides")
    except (ConfigError, ValueError) as error:
        parser.error(str(error))
    if warning:
        console.print(f"[bold red]WARNING:[/bold red] {warning}")
    if args.plot:
        args.plot.mkdir(parents=True, exist_ok=True)
    settings = Settings(args.days, args.decisions, overrides, str(args.plot) if args.plot else None)
    began = time.perf_counter()
    worlds = run_family(names, settings, min(args.jobs, len(names)), console, quiet=args.json)
    totals = summary(worlds)
    totals["seconds"] = time.perf_counter() - began
    totals["cpu_seconds"] = sum(w["cpu_seconds"] for w in worlds)
    if args.json:
        print(
            json.dumps(
                {
                    "settings": {
                        **asdict(settings),
                        "seeds": args.seeds,
                        "jobs": args.jobs,
                        "purpose": purpose,
                        "held_out": reported,
                        "warning": warning,
                    },
                    "worlds": worlds,
                    "summary": totals,
                },
                indent=2,
            )
        )
        return
    print_tables(worlds, totals, console, by_offer=args.by_offer)
    console.print(
        f"{len(worlds)} worlds, {args.days:g} days, about {args.decisions:,} decisions each, {args.jobs} jobs: "
        f"{totals['seconds'] / 60:.1f} minutes; the worlds' CPU time {totals['cpu_seconds'] / 60:.1f} minutes"
    )
    if warning:
        console.print(f"[bold red]WARNING:[/bold red] {warning}")


if __name__ == "__main__":
    main(sys.argv[1:])
