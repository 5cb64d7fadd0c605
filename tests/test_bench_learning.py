"""`python -m bench.learning`: the seeds it runs, the hygiene between choosing and held-out seeds,
its summary, and one tiny world end to end (process pool, JSON)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench.learning import main, read_overrides, resolve, seed_hygiene, summary, weekly_gains
from policies.simulation.base import DAY
from policies.simulation.family import CHOOSING_SEEDS, HELD_OUT_SEEDS
from policies.simulation.harness import RunResult


def test_seed_sets_resolve_to_worlds() -> None:
    assert resolve(["held-out"], None) == [f"g{s}" for s in HELD_OUT_SEEDS]
    assert resolve(["choosing"], 10) == [f"g{s}" for s in CHOOSING_SEEDS[:10]]
    assert resolve(["101", "g102", "telecom", "telecom:2"], None) == ["g101", "g102", "telecom", "telecom:2"]


def test_held_out_worlds_refuse_overrides_marked_for_choosing() -> None:
    with pytest.raises(ValueError, match="marked for choosing"):
        seed_hygiene(["g201"], True, "choosing")
    assert "held-out seeds are spent" in (seed_hygiene(["g201"], True, None) or "")
    assert seed_hygiene(["g201"], True, "report") is None
    assert seed_hygiene([], True, "choosing") is None
    assert seed_hygiene(["g201"], False, None) is None


def test_the_overrides_say_their_purpose(tmp_path: Path) -> None:
    path = tmp_path / "variant.toml"
    path.write_text('[benchmark]\npurpose = "choosing"\n\n[learner]\nreward_scale = 10.0\n')
    assert read_overrides(path) == ({"learner": {"reward_scale": 10.0}}, "choosing")


@pytest.mark.parametrize(
    ("argv", "overrides", "message"),
    [
        (["--seeds", "nonsense"], None, "--seeds: expected held-out, choosing"),
        (["--seeds", "choosing", "--days", "20"], None, "--days must exceed 30"),
        (["--seeds", "choosing", "--jobs", "0"], None, "must be positive"),
        (["--seeds", "held-out"], '[benchmark]\npurpose = "choosing"\n', "marked for choosing"),
        (["--seeds", "choosing"], '[benchmark]\npurpose = "tuning"\n', "benchmark.purpose: expected one of choosing, report"),
        (["--seeds", "11"], "[learner]\nno_such_setting = 1\n", "learner.no_such_setting"),
        (["--seeds", "11"], "[learner\n", "not valid TOML|Expected"),
    ],
)
def test_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], overrides: str | None, message: str
) -> None:
    if overrides is not None:
        path = tmp_path / "overrides.toml"
        path.write_text(overrides)
        argv = [*argv, "--config-overrides", str(path)]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def _result(values_by_day: dict[float, float], days: float) -> RunResult:
    result = RunResult("r", 0.0, days * DAY)
    for day, value in sorted(values_by_day.items()):
        result.times.append(day * DAY)
        result.values.append(value)
    return result


def test_weekly_gains_count_whole_weeks_back_from_the_end() -> None:
    result = _result({d + 0.5: (-1.0 if d == 65 else 1.0) for d in range(100)}, 100.0)
    weeks = weekly_gains(result, 60.0)
    assert len(weeks) == 5  # days 65-100
    assert weeks[0] == pytest.approx((6 * 1.0 - 1.0) / 7)


def test_the_summary_counts_against_the_targets() -> None:
    def world(name: str, brein: float, yardstick: float, best: float, below: bool, *outcomes: str) -> dict[str, object]:
        return {
            "world": name,
            "share": {"brein": brein, "yardstick": yardstick, "best_single": best},
            "below_do_nothing_after_day_60": below,
            "yardstick_below_do_nothing_after_day_60": name == "c",
            "tuning": [{"outcome": outcome} for outcome in outcomes],
        }

    totals = summary(
        [
            world("a", 0.7, 0.8, 0.5, False, "refused", "promoted"),
            world("b", 0.5, 0.7, 0.45, True),
            world("c", 0.6, 0.75, 0.3, False, "nothing registered"),
        ]
    )
    assert totals["median_share_brein"] == 0.6 and totals["median_share_yardstick"] == 0.75
    assert totals["ratio"] == pytest.approx(0.8)
    assert totals["beats_best_single_by_margin"] == 2
    assert totals["below_do_nothing_after_day_60"] == ["b"]
    assert totals["tuning_promotions"] == 1
    assert totals["yardstick_below_do_nothing_after_day_60"] == ["c"]
    assert totals["targets_met"] == {"ratio": False, "beats_best_single": False, "never_below_do_nothing": False}


def test_one_small_world_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    main(["--seeds", "11", "--days", "40", "--decisions", "1500", "--jobs", "1", "--json", "--plot", str(tmp_path)])
    report = json.loads(capsys.readouterr().out)
    (world,) = report["worlds"]
    assert world["world"] == "g11" and world["decisions"] >= 1500
    assert set(world["share"]) == {"brein", "yardstick", "best_single", "uniform"}
    assert world["contacts"]["oracle"] > 0
    assert world["tuning"] == []  # [tuning] is opt-in
    assert report["summary"]["worlds"] == 1 and report["settings"]["held_out"] == []
    assert (tmp_path / "g11.png").stat().st_size > 10_000
