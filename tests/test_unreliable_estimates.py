"""Issue 15, item 7: estimates that say how sure they are.

The issue's case is uniform random replayed on the Open Bandit Dataset's "women" campaign, where one
impression logged with propensity 1e-6 holds 69% of the importance weight. ``tests/data/obd_all.npz``
holds campaign "all" only, so the same situation is built from it: its least likely impression (no
click, as in the issue) gets propensity 1e-6 and then holds 56% of the weight (ESS 3.2; the clipped
weights' ESS stays 784). The log goes through the real CLI as a DSJSON export of 80 item actions and
no do-nothing action.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

import policies.cli
from policies.estimators import (
    DM,
    DR,
    IPS,
    SNDR,
    SNIPS,
    ClippedIPS,
    Estimator,
    LoggedDecisions,
    Reliability,
    compare_policies,
    evaluate,
)
from serving.cli import main
from tests.conftest import EXAMPLE

pytestmark = pytest.mark.costly

OPEN_BANDIT = Path(__file__).parent / "data" / "obd_all.npz"
ESTIMATORS = ["ips", "clipped_ips", "snips", "dm", "dr", "sndr"]
ESS_REASON = "the effective sample size of the unclipped importance weights is 3.2, below the 100 required"
SHARE_REASON = "one logged decision holds 56% of the importance weight, more than the 20% allowed"
CAVEAT = (
    "one logged decision holds 56% of the importance weight this interval averages, more than the 20% allowed: its coverage is "
    "unknown"
)


@pytest.fixture(scope="module")
def dominated_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Bernoulli TS log of campaign "all" as a Brein export, its least likely impression at propensity 1e-6."""
    data = dict(np.load(OPEN_BANDIT))
    propensity = data["bts_propensity"].copy()
    dominant = int(np.argmin(propensity))
    assert data["bts_click"][dominant] == 0
    propensity[dominant] = 1e-6
    items = [f"item{k:02d}/web/now" for k in range(data["item_numeric"].size)]
    rows = zip(data["bts_item"].tolist(), propensity.tolist(), data["bts_click"].tolist(), data["bts_position"].tolist(),
               data["bts_user"].tolist(), strict=True)  # fmt: skip
    lines = []
    for i, (item, probability, click, position, user) in enumerate(rows):
        lines.append(json.dumps({
            "EventId": f"obd-{i}", "_time": 1_780_000_000.0 + i, "_actions": items, "_labelIndex": item,
            "_label_probability": probability, "_reward": float(click),
            "_features": {"n": {"position": str(position)}, "u": {f"user_feature_{k}": str(v) for k, v in enumerate(user)}},
        }))  # fmt: skip
    path = tmp_path_factory.mktemp("obd") / "obd.dsjson"
    path.write_text("\n".join(lines) + "\n")
    return path


def _brein(*args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(EXAMPLE)])


def test_replaying_uniform_where_one_impression_holds_most_weight_says_unreliable(
    dominated_log: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    replayed = _brein("replay", str(dominated_log), "--policy", "uniform", "--json")
    assert replayed.exit_code == 0, replayed.output  # a report, which says what it is worth
    report = json.loads(replayed.output)
    assert report["reliable"] is False and report["thresholds"] == {"min_ess": 100.0, "max_weight_share": 0.2}
    assert list(report["estimators"]) == ESTIMATORS
    for name, row in report["estimators"].items():
        estimate = row["candidate"]
        assert row["reliable"] is False and estimate["reliable"] is False, name
        assert estimate["reasons"] == [ESS_REASON, SHARE_REASON], name  # the unclipped weights', whatever the estimator
        assert estimate["ess"] == pytest.approx(3.19, abs=0.01)  # about 1 / share^2: one decision is all there is
        assert estimate["largest_weight_share"] == pytest.approx(0.56, abs=0.01)
        assert estimate["never_taken_share"] == 0.0
    clipped = report["estimators"]["clipped_ips"]["candidate"]
    assert clipped["clipped_ess"] == pytest.approx(784, abs=1) and "clipped_ess" not in report["estimators"]["ips"]["candidate"]
    # The bootstrap interval of every estimator that averages the dominant weight is flagged; the
    # Cressie-Read interval of IPS and SNIPS is not (it spans up to 1, as wide as it should be).
    for name in ("ips", "snips", "dr", "sndr"):
        estimate = report["estimators"][name]["candidate"]
        assert (estimate["bootstrap_trustworthy"], estimate["bootstrap_caveat"]) == (False, CAVEAT), name
    for name in ("ips", "snips"):
        estimate = report["estimators"][name]["candidate"]
        assert estimate["analytic_trustworthy"] is True and estimate["analytic"][1] == 1.0
    for name in ("clipped_ips", "dm"):  # clipped weights of at most 50; DM averages no weight
        assert report["estimators"][name]["candidate"]["bootstrap_trustworthy"] is True

    monkeypatch.setattr(policies.cli, "console", Console(width=400))  # table rows and warnings on one line each
    plot = tmp_path / "uniform.png"
    table = _brein("replay", str(dominated_log), "--policy", "uniform", "--estimator=ips", "--estimator=clipped_ips",
                   "--plot", str(plot)).output  # fmt: skip
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.startswith("│")}
    assert set(rows) == {"ips", "clipped_ips"}
    assert all("UNRELIABLE" in row and "│ 3.2" in row and "56.0%" in row for row in rows.values())
    assert "unknown coverage" in rows["ips"] and "unknown coverage" not in rows["clipped_ips"]
    assert "3.2 (clipped 784)" in rows["clipped_ips"]
    assert f"UNRELIABLE: every estimate of uniform on this log ({ESS_REASON}; {SHARE_REASON})." in table
    assert f"Unknown coverage (ips bootstrap): {CAVEAT}." in table
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    nowhere = tmp_path / "missing" / "uniform.png"
    unwritable = _brein("replay", str(dominated_log), "--policy", "uniform", "--estimator=ips", "--plot", str(nowhere))
    assert unwritable.exit_code == 1
    assert unwritable.output.endswith(f"Error: --plot: cannot write {nowhere}: No such file or directory\n")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--policy", "uniform", "--against", "do_nothing"], "do_nothing cannot act on 10,000 of the 10,000 logged decisions"),
        (["--policy", "do_nothing"], "do_nothing cannot act on 10,000 of the 10,000 logged decisions"),
        # A rule policy falls back to do-nothing where no rule holds: the impressions at positions 2 and 3.
        (["--policy", "{rules}"], "rules.json cannot act on 6,638 of the 10,000 logged decisions"),
    ],
    ids=["against-do-nothing", "do-nothing", "rules-falling-back-to-do-nothing"],
)
def test_a_policy_that_cannot_act_on_logged_decisions_is_refused(
    dominated_log: Path, tmp_path: Path, args: list[str], message: str
) -> None:
    rules = tmp_path / "rules.json"
    rules.write_text(json.dumps([{"action": "item03/web/now", "when": "categorical.position == '1'"}]))
    refused = _brein("replay", str(dominated_log), *(a.format(rules=rules) for a in args))
    assert refused.exit_code == 1
    assert refused.output == (
        f"Error: {message}: none of its actions is among their eligible actions (the first, obd-0, allows item00/web/now, "
        "item01/web/now, item02/web/now and 77 more), so it cannot be evaluated on this log\n"
    )


# --- The rule, on weights ------------------------------------------------------------------------------------


def _log_with_weights(weights: npt.ArrayLike) -> tuple[LoggedDecisions, npt.NDArray[np.float64]]:
    """A log and a target (n,) whose importance weights pi / p are ``weights``, every decision logged
    with a choice (propensity below 1: ``LoggedDecisions.choice``)."""
    w = np.asarray(weights, dtype=np.float64)
    scale = 2 * max(float(w.max()), 1.0)
    rewards = np.random.default_rng(0).random(w.size)
    return LoggedDecisions(reward=rewards, propensity=np.full(w.size, 1 / scale)), w / scale


ESS = "the effective sample size of the unclipped importance weights is {}, below the {} required"
SHARE = "one logged decision holds {} of the importance weight, more than the {} allowed"
NOTHING = "the target gives probability 0 to every logged action: the log says nothing about it"


@pytest.mark.parametrize(
    ("weights", "rule", "reasons"),
    [
        (np.ones(200), Reliability(), []),
        (np.ones(100), Reliability(), []),  # exactly the minimum
        (np.ones(99), Reliability(), [ESS.format("99.0", "100")]),
        (np.r_[np.zeros(900), np.ones(99)], Reliability(), [ESS.format("99.0", "100")]),  # support on 99 of 999
        (np.r_[np.ones(199), 60.0], Reliability(min_ess=10), [SHARE.format("23%", "20%")]),
        (np.r_[np.ones(199), 60.0], Reliability(), [ESS.format("17.7", "100"), SHARE.format("23%", "20%")]),
        (np.ones(5), Reliability(min_ess=5), []),  # each holds exactly 20%
        (np.r_[np.ones(999), 200.0], Reliability(min_ess=1, max_weight_share=0.1), [SHARE.format("17%", "10%")]),
        (np.r_[np.ones(999), 200.0], Reliability(min_ess=1, max_weight_share=0.2), []),
        (np.zeros(50), Reliability(min_ess=0), [NOTHING]),
    ],
    ids=["spread", "at-min-ess", "below-min-ess", "little-support", "one-dominant-weight", "both", "at-max-share",
         "custom-share", "under-custom-share", "no-support"],
)  # fmt: skip
def test_reliability_of_weights(weights: npt.ArrayLike, rule: Reliability, reasons: list[str]) -> None:
    log, target = _log_with_weights(weights)
    for estimator in (IPS(n_bootstrap=40), ClippedIPS(clip=2.0, n_bootstrap=40)):  # clipping changes nothing here
        estimate = estimator.estimate(log, target, reliability=rule)
        assert list(estimate.reasons) == reasons and estimate.reliable is (not reasons)


def test_diagnostics_are_the_unclipped_weights_and_clipped_ess_stands_beside() -> None:
    log, target = _log_with_weights(np.r_[np.ones(999), 200.0, np.zeros(1000)])
    ips, clipped = evaluate(log, target, [IPS(n_bootstrap=40), ClippedIPS(clip=5.0, n_bootstrap=40)])
    assert ips.diagnostics == clipped.diagnostics
    assert clipped.diagnostics.ess == pytest.approx(1199**2 / (999 + 200**2))
    assert clipped.diagnostics.largest_weight_share == pytest.approx(200 / 1199)
    assert clipped.diagnostics.never_taken_share == 0.5
    assert clipped.clipped_ess == pytest.approx(1004**2 / (999 + 25)) and ips.clipped_ess is None


# --- Intervals whose coverage is known to fail --------------------------------------------------------------


def _dominated_problem() -> tuple[LoggedDecisions, npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """500 decisions of two actions, the logged one of decision 7 at propensity 0.0005; a target that takes
    it (weight 2,000 there, 1 elsewhere: 80% of its weight on one decision) and a spread policy that does not."""
    rng = np.random.default_rng(1)
    n = 500
    action = rng.integers(0, 2, size=n)
    propensity = np.full(n, 0.5)
    propensity[7] = 0.0005
    target = np.tile([0.5, 0.5], (n, 1))
    spread = target.copy()
    target[7] = np.eye(2)[action[7]]
    spread[7] = np.eye(2)[1 - action[7]]
    log = LoggedDecisions(reward=rng.random(n), propensity=propensity, action=action, reward_hat=np.full((n, 2), 0.5))
    return log, target, spread


@pytest.mark.parametrize(
    ("estimator", "bootstrap", "analytic"),
    [
        (IPS(n_bootstrap=40), False, True),  # Cressie-Read under E[w] = 1: no known failure
        (SNIPS(n_bootstrap=40), False, True),
        (ClippedIPS(clip=5.0, n_bootstrap=40), True, True),  # the clipped weights are spread
        (ClippedIPS(clip=5000.0, n_bootstrap=40), False, False),  # a clip that does not bind: the t-interval too
        (DM(n_bootstrap=40), True, True),  # no weight averaged
        (DR(n_bootstrap=40), False, False),
        (SNDR(n_bootstrap=40), False, False),
    ],
    ids=["ips", "snips", "clipped", "clipped-unbound", "dm", "dr", "sndr"],
)
def test_intervals_say_when_one_weight_dominates(estimator: Estimator, bootstrap: bool, analytic: bool) -> None:
    log, target, spread = _dominated_problem()
    estimate = estimator.estimate(log, target)
    assert (estimate.bootstrap.trustworthy, estimate.analytic.trustworthy) == (bootstrap, analytic)
    for interval in (estimate.bootstrap, estimate.analytic):
        assert (interval.caveat is None) is interval.trustworthy
        assert interval.caveat is None or interval.caveat.startswith("one logged decision holds 80% of the importance weight")
    assert not estimate.reliable and estimator.estimate(log, spread).reliable
    # A paired difference's intervals (both treat its terms as a sample) are flagged when either side is dominated.
    for candidate, baseline in ((target, spread), (spread, target)):
        comparison = compare_policies(log, candidate, baseline, [estimator])[0]
        assert (comparison.bootstrap.trustworthy, comparison.analytic.trustworthy) == (bootstrap, bootstrap)
        assert not comparison.reliable
    same = compare_policies(log, spread, spread, [estimator])[0]
    assert same.reliable and same.bootstrap.trustworthy and same.analytic.trustworthy


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_ess": -1.0}, r"min_ess: expected a finite number >= 0, got -1.0"),
        ({"min_ess": math.inf}, r"min_ess: expected a finite number >= 0, got inf"),
        ({"min_ess": math.nan}, r"min_ess: expected a finite number >= 0, got nan"),
        ({"min_ess": True}, r"min_ess: expected a finite number >= 0, got True"),
        ({"max_weight_share": 0.0}, r"max_weight_share: expected a number in \(0, 1\], got 0.0"),
        ({"max_weight_share": 1.5}, r"max_weight_share: expected a number in \(0, 1\], got 1.5"),
        ({"max_weight_share": math.nan}, r"max_weight_share: expected a number in \(0, 1\], got nan"),
        ({"max_weight_share": "0.2"}, r"max_weight_share: expected a number in \(0, 1\], got '0.2'"),
    ],
)
def test_invalid_reliability_thresholds(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Reliability(**kwargs)


def test_the_default_thresholds_are_the_gates() -> None:
    from bandit.config import GateConfig

    gate = GateConfig()
    assert Reliability() == Reliability(min_ess=gate.min_ess, max_weight_share=gate.max_weight_share)
