"""Off-policy estimators: `python -m bench.estimators [--quick]`.

Prints five tables:
  * speed: 1,000,000 logged decisions with up to 20 actions (100,000 with --quick), all six
    estimators with both intervals (500 bootstrap resamples, the default), next to the floor of a
    plain IPS mean on the same arrays; each in its own process so its peak RSS is its own
    (target: <= 10 s and <= 2 GiB);
  * coverage: 100 seeded repetitions (20 with --quick) of the synthetic problem of
    policies/synthetic.py, where the truth is known exactly: how often each 95% interval holds
    the target's value, and the paired interval the difference target - uniform baseline;
  * the best of k: 100 repetitions (20 with --quick) of the synthetic problem with every action of
    a context worth the same (every policy has the baseline's value), 13 random candidate policies
    compared with the uniform baseline by SNIPS, the best picked by its lower bound as
    `brein policy tune` picks it: how often the gate (lower bound > 0) would pass a candidate no
    better than the champion, at 95% for each and at 1 - 0.05 / 13 for each (tuning's level);
  * candidates in turn: 400 repetitions (40 with --quick) of 20 candidates no better than the champion
    tried against it one after the other, each judged on a log of its own, and 100 (5) of 20 tuning
    runs of 13 such set-ups each: how often some candidate of the first K passes the gate, each at its
    first look at 95% (1 - 0.05 / 13 for a run) as before, and at its rank's level (policies/spending.py);
  * parity: the largest absolute difference from vw-estimators (if installed) on IPS, SNIPS and
    the Cressie-Read interval;
  * coverage on the telecom simulator: 100 seeded repetitions (20 with --quick) of 3,000 logged
    decisions of the simulated telecom world (policies/simulation/logs.py: one decision per
    customer, an A/B/n mix of do-nothing, the renewal e-mail campaign and uniform exploration,
    money rewards as the world realises them, the cross-fitted VW reward model for DM/DR/SNDR):
    how often each 95% interval holds two targets' true values (the world's expected values at the
    decisions) and their true differences from do-nothing;
  * Open Bandit Dataset: the uniform random policy's click rate estimated from the Bernoulli TS
    log (campaign "all"), against the click rate the random log observed, with each estimate's
    diagnostics; then the same with the least likely impression at propensity 1e-6 (one
    impression holding most of the weight, as in issue 15's "women" campaign): unreliable.
The synthetic problem (policies/synthetic.py) and the OBD loader (policies/open_bandit.py) are
those the tests use; the OBD extract is read from --obd (default tests/data/obd_all.npz, run from
the repository root), the telecom config from --config (default examples/telecom.toml).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import resource
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from bandit.config import load_config
from policies.estimators import DM, DR, IPS, SNDR, SNIPS, ClippedIPS, Estimator, compare_policies, evaluate, level
from policies.gate import resamples as gate_resamples
from policies.open_bandit import load_open_bandit
from policies.simulation.logs import simulator_log
from policies.spending import Spending, look_alpha
from policies.synthetic import BINARY, all_estimators, parity_cases, simulate, synthetic_problem, vw_estimators
from policies.tuning import competing_level

OPEN_BANDIT = Path("tests/data/obd_all.npz")
TELECOM = Path("examples/telecom.toml")

WORKER = """
import json, resource, sys, time, tracemalloc
import numpy as np
from policies.estimators import evaluate, compare_policies
from policies.synthetic import all_estimators, simulate, synthetic_problem

mode, n = sys.argv[1], int(sys.argv[2])
log, target, baseline = simulate(synthetic_problem(actions=20), n, seed=0)
data_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def run():
    if mode == "baseline":
        return float(np.mean(target[np.arange(n), log.action] / log.propensity * log.reward))
    if mode == "estimators":
        return evaluate(log, target, all_estimators(n_bootstrap=500))[0].value
    return compare_policies(log, target, baseline, all_estimators(n_bootstrap=500))[0].difference

started = time.perf_counter()
value = run()
seconds = time.perf_counter() - started
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
tracemalloc.start()  # a second, untimed run: what the estimation itself allocates at its peak
run()
traced_mib = tracemalloc.get_traced_memory()[1] / 2**20
print(json.dumps({"seconds": seconds, "data_mib": data_mib, "peak_mib": peak_mib, "traced_mib": traced_mib, "value": value}))
"""


def timed_worker(mode: str, decisions: int) -> dict[str, float]:
    """In a fresh process: seconds spent estimating (data generation excluded), RSS after generating
    the data, peak RSS after estimating, and the peak memory the estimation itself allocated."""
    completed = subprocess.run([sys.executable, "-c", WORKER, mode, str(decisions)], capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit(f"the {mode} worker failed:\n{completed.stderr}")
    result: dict[str, float] = json.loads(completed.stdout)
    return result


def speed(console: Console, decisions: int) -> None:
    table = Table(
        "",
        "seconds",
        "RSS after data MiB",
        "peak RSS MiB",
        "allocated by estimation MiB",
        "value",
        title=f"speed: {decisions:,} decisions, up to 20 actions (data generation not timed)",
    )
    rows = [
        ("baseline: plain IPS mean", "baseline"),
        ("6 estimators, 2 intervals each", "estimators"),
        ("6 paired comparisons (2 policies)", "compare"),
    ]
    for label, mode in rows:
        result = timed_worker(mode, decisions)
        table.add_row(
            label,
            f"{result['seconds']:.2f}",
            f"{result['data_mib']:.0f}",
            f"{result['peak_mib']:.0f}",
            f"{result['traced_mib']:.0f}",
            f"{result['value']:.5f}",
        )
    console.print(table)
    console.print(
        "target: 6 estimators with their intervals <= 10 s and <= 2048 MiB peak for 1,000,000 decisions (500 resamples)"
    )


def coverage(console: Console, repetitions: int, decisions: int = 2000) -> None:
    problem = synthetic_problem()
    truth = problem.value(problem.target)
    difference = truth - problem.value(problem.baseline)
    hits: dict[tuple[str, str], int] = {}
    width: dict[tuple[str, str], float] = {}
    started = time.perf_counter()
    for repetition in range(repetitions):
        log, target, baseline = simulate(problem, decisions, seed=repetition)
        for comparison in compare_policies(log, target, baseline, all_estimators(n_bootstrap=500)):
            name = comparison.estimator
            for kind in ("bootstrap", "analytic"):
                for key, interval, value in (
                    ((name, kind), getattr(comparison.candidate, kind), truth),
                    ((f"{name} (target - baseline)", kind), getattr(comparison, kind), difference),
                ):
                    hits[key] = hits.get(key, 0) + (interval.low <= value <= interval.high)
                    width[key] = width.get(key, 0.0) + (interval.high - interval.low)
    table = Table(
        "estimator",
        "bootstrap coverage",
        "Cressie-Read coverage",
        "mean widths (boot / CR)",
        title=f"coverage of 95% intervals: {repetitions} repetitions x {decisions:,} decisions "
        f"(value {truth:.4f}, difference {difference:.4f}; {time.perf_counter() - started:.0f} s)",
    )
    for name in dict.fromkeys(key[0] for key in hits):
        boot, analytic = (name, "bootstrap"), (name, "analytic")
        table.add_row(
            name,
            f"{hits[boot] / repetitions:.0%}",
            f"{hits[analytic] / repetitions:.0%}",
            f"{width[boot] / repetitions:.4f} / {width[analytic] / repetitions:.4f}",
        )
    console.print(table)
    console.print("clipped IPS (clip 5) and DM (a deliberately wrong model) are biased: their intervals are not meant to cover")


def best_of_k(console: Console, repetitions: int, candidates: int = 13, decisions: int = 2000) -> None:
    """How often the best of ``candidates`` policies, none better than the baseline, passes the gate."""
    problem = synthetic_problem()
    offered = problem.mean > 0
    flat = offered * (problem.mean.sum(axis=1) / offered.sum(axis=1))[:, None]
    null = replace(problem, mean=flat)
    rng = np.random.default_rng(7)
    passed = {competing_level(k, 500): 0 for k in (1, candidates)}
    started = time.perf_counter()
    for repetition in range(repetitions):
        weights = np.where(offered, np.exp(rng.normal(0.0, 1.5, size=(candidates, *problem.mean.shape))), 0.0)
        # The same seed logs the same decisions whatever the target: each candidate's rows for that one log.
        logged = [simulate(replace(null, target=w / w.sum(axis=1, keepdims=True)), decisions, seed=repetition) for w in weights]
        for alpha, resamples in passed:
            estimator = SNIPS(alpha=alpha, n_bootstrap=resamples, reward_range=BINARY)
            lowers = []
            for log, target, baseline in logged:
                [comparison] = compare_policies(log, target, baseline, [estimator])
                lowers.append(min(comparison.bootstrap.low, comparison.analytic.low))
            passed[alpha, resamples] += max(lowers) > 0
    table = Table("each set-up's interval", "the best passes the gate (lower bound > 0)",
                  title=f"the best of {candidates} candidates no better than the champion: {repetitions} repetitions x "
                        f"{decisions:,} decisions, SNIPS ({time.perf_counter() - started:.0f} s)")  # fmt: skip
    for (alpha, _), count in passed.items():
        table.add_row(level(alpha), f"{count / repetitions:.0%} ({count} of {repetitions})")
    console.print(table)
    console.print("a gate at 95% should pass such a candidate at most 2.5% of the time (one-sided); tuning's: the second row")


def candidates_in_turn(console: Console, repetitions: int, candidates: int = 20, setups: int = 1, decisions: int = 2000) -> None:
    """How often some of ``candidates`` tried in turn against one champion, none better than it, passes
    the gate: each the best of ``setups`` random policies (a tuning run's set-ups; 1: an operator's
    candidate) on a log of its own (the decisions after it was registered), judged at its first look
    at the level it had before (1 - 0.05 / setups, whatever came before it) and at its rank's. The null
    problem of ``best_of_k``, SNIPS, the gate's bound (the lower of the two intervals' lower bounds)."""
    problem = synthetic_problem()
    offered = problem.mean > 0
    flat = offered * (problem.mean.sum(axis=1) / offered.sum(axis=1))[:, None]
    null = replace(problem, mean=flat)
    rng = np.random.default_rng(11)
    before, after = np.zeros((repetitions, candidates), bool), np.zeros((repetitions, candidates), bool)
    started = time.perf_counter()

    def lower(log: Any, target: Any, baseline: Any, alpha: float) -> tuple[float, float]:
        estimator = SNIPS(alpha=alpha, n_bootstrap=gate_resamples(alpha, 500), reward_range=BINARY)
        [comparison] = compare_policies(log, target, baseline, [estimator])
        return min(comparison.bootstrap.low, comparison.analytic.low), comparison.analytic.low

    for repetition in range(repetitions):
        for i in range(candidates):
            weights = np.where(offered, np.exp(rng.normal(0.0, 1.5, size=(setups, *problem.mean.shape))), 0.0)
            seed = repetition * candidates + i
            for w in weights:
                log, target, baseline = simulate(replace(null, target=w / w.sum(axis=1, keepdims=True)), decisions, seed=seed)
                if lower(log, target, baseline, 0.05)[1] <= 0:
                    continue  # its Cressie-Read bound is lower still at any stricter level: it passes at neither
                before[repetition, i] |= lower(log, target, baseline, look_alpha(1, setups))[0] > 0
                after[repetition, i] |= lower(log, target, baseline, Spending(i + 1, 1, setups).alpha)[0] > 0
    what = "candidates" if setups == 1 else f"tuning runs of {setups} set-ups"
    table = Table("the first K", "some passes: each at its first look at " + level(look_alpha(1, setups)),
                  "some passes: the i-th at its rank's level", "the i-th's level",
                  title=f"{candidates} {what} no better than the champion, tried in turn against it, each on a log of its "
                        f"own: {repetitions} repetitions x {decisions:,} decisions, SNIPS "
                        f"({time.perf_counter() - started:.0f} s)")  # fmt: skip
    for k in (1, 2, 3, 5, 10, 20, 50):
        if k <= candidates:
            old, new = int(before[:, :k].any(axis=1).sum()), int(after[:, :k].any(axis=1).sum())
            table.add_row(f"K = {k}", f"{old / repetitions:.1%} ({old} of {repetitions})",
                          f"{new / repetitions:.1%} ({new} of {repetitions})", level(Spending(k, 1, setups).alpha))  # fmt: skip
    console.print(table)
    console.print("the gate passes on the lower bound (one-sided): at most 2.5% for one candidate at 95%, and for all of them "
                  "together at their ranks' levels at most 0.05·6/π²·Σ 1/(2i²) = 2.5%")  # fmt: skip


def simulator_coverage(console: Console, config_path: Path, repetitions: int, decisions: int = 3000) -> None:
    """Coverage on logs of the telecom world, each repetition a fresh world of its own seed."""
    config = load_config(config_path)
    # Money rewards: no known bound, so each interval takes the range the log observed.
    kinds: list[type[Estimator]] = [IPS, SNIPS, DM, DR, SNDR]
    estimators = [kind(n_bootstrap=500) for kind in kinds]
    estimators.insert(1, ClippedIPS(clip=5.0, n_bootstrap=500))
    targets = ("campaign", "renewal rule")
    hits: dict[tuple[str, str, str], int] = {}
    width: dict[tuple[str, str, str], float] = {}
    error: dict[tuple[str, str], float] = {}
    truths: dict[str, list[float]] = {name: [] for name in (*targets, "do-nothing")}
    ess: dict[str, list[float]] = {name: [] for name in (*targets, "do-nothing")}
    started = time.perf_counter()
    for repetition in range(repetitions):
        log = simulator_log(config, decisions, seed=repetition)
        logged = log.logged(log.reward_model())
        baseline = log.truth("do-nothing")
        truths["do-nothing"].append(baseline)
        for target in targets:
            truth = log.truth(target)
            truths[target].append(truth)
            for comparison in compare_policies(logged, log.targets[target], log.targets["do-nothing"], estimators):
                name = comparison.estimator
                error[(target, name)] = error.get((target, name), 0.0) + comparison.candidate.value - truth
                if name == "ips":
                    ess[target].append(comparison.candidate.diagnostics.ess)
                    if target == targets[0]:
                        ess["do-nothing"].append(comparison.baseline.diagnostics.ess)
                for kind in ("bootstrap", "analytic"):
                    for what, interval, value in (
                        ("value", getattr(comparison.candidate, kind), truth),
                        ("difference", getattr(comparison, kind), truth - baseline),
                    ):
                        key = (target, name, f"{what} {kind}")
                        hits[key] = hits.get(key, 0) + (interval.low <= value <= interval.high)
                        width[key] = width.get(key, 0.0) + (interval.high - interval.low)
    seconds = time.perf_counter() - started
    table = Table(
        "target",
        "estimator",
        "value: bootstrap",
        "value: Cressie-Read",
        "- do-nothing: bootstrap",
        "- do-nothing: Cressie-Read",
        "mean error of the value",
        "mean widths, value (boot / CR)",
        title=f"coverage of 95% intervals on the telecom simulator: {repetitions} repetitions x {decisions:,} decisions, "
        f"one per customer ({seconds:.0f} s)",
    )
    for target in targets:
        for estimator in estimators:
            name = estimator.name
            cell = {
                kind: hits[(target, name, kind)] / repetitions
                for kind in ("value bootstrap", "value analytic", "difference bootstrap", "difference analytic")
            }
            table.add_row(
                target,
                name,
                f"{cell['value bootstrap']:.0%}",
                f"{cell['value analytic']:.0%}",
                f"{cell['difference bootstrap']:.0%}",
                f"{cell['difference analytic']:.0%}",
                f"{error[(target, name)] / repetitions:+.2f}",
                f"{width[(target, name, 'value bootstrap')] / repetitions:.2f} / "
                f"{width[(target, name, 'value analytic')] / repetitions:.2f}",
            )
    console.print(table)
    means = ", ".join(
        f"{name} {sum(values) / len(values):.2f} (IPS ESS {sum(ess[name]) / len(ess[name]):,.0f})"
        for name, values in truths.items()
    )
    console.print(f"true values per decision (mean over repetitions, money): {means}")
    console.print(
        "the truth of a repetition is the mean over its decisions of the world's expected value under the policy; "
        "DM and clipped IPS are not meant to cover (the model's bias; clip 5 never binds here: weights are <= 3)"
    )


def parity(console: Console, open_bandit: Path) -> None:
    if importlib.util.find_spec("estimators") is None:
        console.print("parity: vw-estimators is not installed (pip install vw-estimators), skipped")
        return
    from policies.estimators import IPS, SNIPS

    table = Table(
        "case", "n", "|IPS - vw|", "|SNIPS - vw|", "|CR low - vw|", "|CR high - vw|", title="parity with vw-estimators 0.2.2"
    )
    for case, log, logged, alpha, reward_range in parity_cases(open_bandit):
        vw_ips, vw_snips, (low, high) = vw_estimators(log, logged, alpha, reward_range)
        ips, snips = evaluate(
            log, logged, [IPS(alpha=alpha, reward_range=reward_range), SNIPS(alpha=alpha, reward_range=reward_range)]
        )
        diffs = (abs(ips.value - vw_ips), abs(snips.value - vw_snips), abs(ips.analytic.low - low), abs(ips.analytic.high - high))
        table.add_row(case, f"{log.n:,}", *(f"{d:.1e}" for d in diffs))
    console.print(table)


def open_bandit_dataset(console: Console, path: Path) -> None:
    """The extract as it is, then with its least likely impression (no click) at propensity 1e-6: the
    situation of the issue's "women" campaign, where one impression holds most of the weight."""
    started = time.perf_counter()
    obd = load_open_bandit(path)
    fitted = time.perf_counter() - started
    truth = obd.random_click_rate
    propensity = obd.log.propensity.copy()
    dominant = int(np.argmin(propensity))
    propensity[dominant] = 1e-6
    logs = {"as logged": obd.log, f"impression {dominant} at propensity 1e-6": replace(obd.log, propensity=propensity)}
    for name, log in logs.items():
        table = Table(
            "estimator",
            "estimate",
            "relative error",
            "bootstrap 95%",
            "Cressie-Read 95%",
            "ESS (clipped)",
            "largest weight",
            "reliable",
            title=f"Open Bandit Dataset (all), {name}: uniform random from the Bernoulli TS log, {log.n:,} impressions; "
            f"random log's click rate {truth:.5f} (VW reward model cross-fitted in {fitted:.1f} s)",
        )
        for estimate in evaluate(log, obd.target, all_estimators(n_bootstrap=500, clip=20.0)):
            clipped = "" if estimate.clipped_ess is None else f" ({estimate.clipped_ess:,.0f})"
            table.add_row(
                estimate.estimator,
                f"{estimate.value:.5f}",
                f"{abs(estimate.value - truth) / truth:.1%}",
                *(f"[{i.low:.5f}, {i.high:.5f}]{'' if i.trustworthy else ' ?'}" for i in (estimate.bootstrap, estimate.analytic)),
                f"{estimate.diagnostics.ess:,.1f}{clipped}",
                f"{estimate.diagnostics.largest_weight_share:.1%}",
                "yes" if estimate.reliable else "no",
            )
        console.print(table)
    clicks = int(obd.log.reward.sum())
    console.print(f"positions pooled (position is a context feature); {clicks} clicks in the TS log")
    console.print("?: an interval whose coverage is unknown (one impression holds more than 20% of the weight it averages)")
    console.print(
        f"the truth itself comes from {int(obd.random_clicks)} clicks in the random log: about +-{1 / obd.random_clicks**0.5:.0%}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m bench.estimators", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="100,000 decisions and 20 repetitions instead of 1,000,000 and 100")
    parser.add_argument("--obd", type=Path, default=OPEN_BANDIT, help="the Open Bandit Dataset extract (default %(default)s)")
    parser.add_argument("--config", type=Path, default=TELECOM, help="the telecom world's config (default %(default)s)")
    args = parser.parse_args(argv)
    console = Console(width=160)
    speed(console, 100_000 if args.quick else 1_000_000)
    coverage(console, 20 if args.quick else 100)
    best_of_k(console, 20 if args.quick else 100)
    candidates_in_turn(console, 40 if args.quick else 400)
    candidates_in_turn(console, 5 if args.quick else 100, setups=13)
    simulator_coverage(console, args.config, 20 if args.quick else 100)
    parity(console, args.obd)
    open_bandit_dataset(console, args.obd)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(
        f"command: python -m bench.estimators{' --quick' if args.quick else ''}; this process's peak RSS {peak:.0f} MiB"
    )


if __name__ == "__main__":
    main()
