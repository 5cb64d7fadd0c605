"""`brein policy tune` (issue 13, part 4) on a real SQLite store of 3,000 logged, joined decisions
(tests/test_policy_flow.py's world, logged by a cold champion: uniform exploration), with real VW."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from policies.registry import Registry
from policies.tuning import Setup, TuningError, default_setups, register_best, tune
from store import open_store
from tests import test_policy_flow
from tests.test_policy_flow import SPLIT, Flow, _utc

world = test_policy_flow.world  # the logged world, made once for this module too
flow = test_policy_flow.flow

SETUPS = """
[[setup]]
name = "plain"

[[setup]]
name = "cubic-fast"
interactions = ["uo", "uc", "us", "ho", "no", "oc", "uoc"]
learning_rate = 1.0
power_t = 0.25

[[setup]]
name = "epsilon-dr"
exploration = "epsilon"
cb_type = "dr"
l2 = 1e-7
clip_p = 0.05
"""


def _setups(flow: Flow, text: str = SETUPS) -> Path:
    path = flow.tmp_path / "setups.toml"
    path.write_text(text)
    return path


def _everything(flow: Flow) -> tuple[list[str], int, int]:
    """The registry's policies, and how many evaluations and snapshots the store holds."""
    store = open_store(str(flow.store))
    try:
        ids = [e.id for e in Registry(store.registry).list()]
        evaluations = sum(len(store.registry.evaluations(i)) for i in ids + ["tuned-x", "plain", "cubic-fast", "epsilon-dr"])
        snapshots = sum(1 for i in ids for _ in store.models.newest_first(i))
    finally:
        store.close()
    return ids, evaluations, snapshots


def test_tune_trains_evaluates_and_registers_the_best_reliable_setup_with_its_evidence(flow: Flow) -> None:
    result = flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), "--json")
    tuning = json.loads(result.output)
    assert [t["setup"] for t in tuning["tried"]] == ["plain", "cubic-fast", "epsilon-dr"]
    assert (tuning["trained_on"], tuning["evaluated_on"], tuning["champion"]) == (1500, 1500, "champion")
    for tried in tuning["tried"]:
        assert tried["trained_on"] == 1500 and tried["estimator"] == "snips" and tried["train_seconds"] > 0
        assert tried["lift_interval"][0] <= tried["lift"] <= tried["lift_interval"][1]
        assert list(tried["evaluation"]["estimators"]) == ["ips", "clipped_ips", "snips", "dm", "dr", "sndr"]
    cubic, epsilon = (" ".join(tried["args"]) for tried in tuning["tried"][1:])
    assert "--interactions uoc" in cubic and "--learning_rate 1.0" in cubic and "--power_t 0.25" in cubic
    assert "--cb_type dr" in epsilon and "--clip_p 0.05" in epsilon and "--clip_p 0.1" not in epsilon  # the config's replaced
    # Logged by uniform exploration: every evaluation is reliable, and the trained models beat the uniform champion.
    reliable = [t for t in tuning["tried"] if t["reliable"]]
    assert reliable and all(t["lift"] > 0 for t in reliable)
    best = max(reliable, key=lambda t: t["lift_interval"][0])
    assert tuning["best"] == best["setup"]
    assert tuning["registered"] == f"tuned-{_utc(SPLIT)[:10].replace('-', '')}-{best['setup']}"

    shown = json.loads(flow.cli("policy", "show", tuning["registered"], "--json").output)
    assert shown["state"] == "candidate" and shown["parent"] == "champion" and shown["args"] == best["args"]
    assert [(h["from_state"], h["to_state"], h["actor"][:4]) for h in shown["history"]] == [("", "candidate", "cli:")]
    assert f"best of 3 set-ups: {best['setup']}" in shown["history"][0]["reason"]
    [evaluation] = shown["evaluations"]
    assert (evaluation["against"], evaluation["estimator"], evaluation["decisions"]) == ("champion", "snips", 1500)
    assert evaluation["lift_lower"] == pytest.approx(best["lift_interval"][0])
    assert [t["setup"] for t in evaluation["report"]["tuning"]["tried"]] == ["plain", "cubic-fast", "epsilon-dr"]
    assert _everything(flow)[2] == 1  # the candidate's model, learned up to the cut: promoted, it learns on from there
    # The table: every set-up, the best marked, and what was registered (under the id asked for).
    table = flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), "--id", "second").output
    assert all(f"│ {name} " in table for name in ("plain", "cubic-fast", "epsilon-dr"))
    assert table.count("<- best") == 1 and f"registered candidate second: {best['setup']}: the highest lower bound" in table

    # The gate lets it through on that evidence; tuned again, nothing beats it (the same model): nothing is registered.
    assert "is the champion (was champion)" in flow.cli("policy", "promote", tuning["registered"]).output
    again = flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), "--id", "third")
    assert "<- best" not in again.output
    assert f"nothing registered: no reliable set-up beats {tuning['registered']}: the best" in again.output
    assert set(flow.states()) == {"champion", tuning["registered"], "second"}


def test_nothing_is_registered_when_no_setup_is_reliable(flow: Flow) -> None:
    strict = flow.write_config("strict.toml", min_ess=1e9)
    result = flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), config=strict, ok=False)
    assert result.exit_code == 1
    assert "nothing registered: no set-up's evaluation is reliable" in result.output
    assert "UNRELIABLE: champion: the effective sample size" in result.output
    assert _everything(flow) == (["champion"], 0, 0)


BAD_SETUPS = [
    ("[[setup]]\nname = \"x\"\nlearning_rat = 0.1\n", "set-up 'x': unknown learner key 'learning_rat'; expected some of"),
    ("[[setup]]\nname = \"x\"\nsnapshot_every = 5\n", "set-up 'x': unknown learner key 'snapshot_every'"),
    ("[[setup]\nname = \"x\"\n", "not valid TOML"),
    ("[learner]\nepsilon = 0.1\n", "expected one or more [[setup]] tables and nothing else, got keys learner"),
    ("[[setup]]\nname = \"x\"\n[[setup]]\nname = \"x\"\n", "set-up names must differ; x more than once"),
    ("[[setup]]\nname = \"x\"\ncb_type = \"dr\"\n", "set-up 'x': VW refuses --cb_explore_adf --quiet --squarecb"),
    ("[[setup]]\nname = \"x\"\nepsilon = 2.0\n", "set-up 'x': epsilon: Input should be less than or equal to 1"),
]


@pytest.mark.parametrize(("text", "message"), BAD_SETUPS)
def test_a_bad_setup_file_is_refused_before_anything_is_trained(flow: Flow, text: str, message: str) -> None:
    result = flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow, text)), ok=False)
    assert result.exit_code == 1 and message in result.output, result.output
    assert _everything(flow) == (["champion"], 0, 0)


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        ("2020-01-01", "the cut 2020-01-01 00:00 is before the log: no joined examples to train on before it"),
        ("2030-01-01", "the cut 2030-01-01 00:00 is after the log: no joined examples to evaluate on after it"),
        (_utc(SPLIT + 25 * 86_400), "too few joined examples after the cut"),
    ],
)
def test_a_cut_the_log_cannot_serve_is_refused(flow: Flow, cut: str, message: str) -> None:
    result = flow.cli("policy", "tune", "--cut", cut, ok=False)
    assert result.exit_code == 1 and message in result.output, result.output
    assert _everything(flow) == (["champion"], 0, 0)


def test_a_run_interrupted_half_way_leaves_nothing_behind(flow: Flow) -> None:
    def interrupt(what: str, done: int, total: int) -> None:
        if done == 3:
            raise KeyboardInterrupt

    store = open_store(str(flow.store))
    try:
        with pytest.raises(KeyboardInterrupt):
            tune(flow.config, store, cut=SPLIT, setups=[Setup("a"), Setup("b", {"learning_rate": 1.0})], progress=interrupt)
        # Registration fails at its last step (the id is taken meanwhile): the entry is not there, nor half of it.
        tuning = tune(flow.config, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        Registry(store.registry).register("taken", "uniform", actor="test")
        with pytest.raises(TuningError, match="'taken' is already registered"):
            register_best(flow.config, store, tuning, policy_id="taken")
    finally:
        store.close()
    assert _everything(flow) == (["champion", "taken"], 0, 0)


def test_the_default_grid_builds_on_the_configs_learner_and_every_setup_is_valid(flow: Flow) -> None:
    setups = default_setups(flow.config)
    assert 8 <= len(setups) <= 12 and setups[0] == Setup("config")
    assert len({s.name for s in setups}) == len(setups)
    for setup in setups:
        setup.config(flow.config)  # VW accepts every one
    cubic = next(s for s in setups if s.name == "cubic").overrides["interactions"]
    assert cubic[: len(flow.config.learner.interactions)] == flow.config.learner.interactions and "uoc" in cubic
