"""`brein policy tune` (issue 13, part 4) on a real SQLite store of 3,000 logged, joined decisions
(tests/test_policy_flow.py's world, logged by a cold champion: uniform exploration), with real VW."""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
import tomllib
from contextlib import ExitStack, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from bandit.config import BreinConfig, parse_config
from bandit.features import FeatureEncoder
from bandit.learner import VWPolicy, vw_arguments
from brain.worker import Worker
from policies.evaluation import AsServed, PolicyCannotAct, distribution, load_logged
from policies.loading import load_policy
from policies.registry import Registry
from policies.spending import TRIAL_ACTION, Spending
from policies.tuning import Setup, TuningError, candidate_id, default_setups, fresh_id, load_setups, register_best, tune
from store import open_store
from store.records import LEFTOVERS_ACTION
from tests import test_policy_flow
from tests.conftest import example_data
from tests.test_policy_flow import DAY, SPLIT, Flow, _utc
from tests.test_registry import _Meeting, _race

pytestmark = pytest.mark.costly

world = test_policy_flow.world  # the logged world, made once for this module too
logged_flow = test_policy_flow.flow
WINDOW_DAYS = 5.0
KNOWN = SPLIT - (WINDOW_DAYS + 1) * DAY
"""What the champion had learned by the cut SPLIT: decisions joined by then (window + a day's lateness)."""


_flow_config_data = test_policy_flow._config_data


def _config_data(store: Path | str, **gate: Any) -> dict[str, Any]:
    """The flow's config with 5-day attribution windows, this module's world logged with it too: with
    30-day windows nothing the champion had learned by the cut of the 60-day log would be joined."""
    data = _flow_config_data(store, **gate)
    for outcome in data["outcomes"].values():
        outcome["window_days"] = WINDOW_DAYS
    return data


@pytest.fixture
def flow(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Flow:
    monkeypatch.setattr(test_policy_flow, "_config_data", _config_data)
    made: Flow = request.getfixturevalue("logged_flow")
    return made

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
    # Against the champion as served: trained on what it had learned by the cut (decisions 6 days before it: 1,200).
    assert (tuning["trained_on"], tuning["evaluated_on"], tuning["baseline"]) == (1200, 1500, "champion")
    assert tuning["against_champion"] and tuning["baseline_as_served"] and tuning["trained_until"] == KNOWN
    for tried in tuning["tried"]:
        assert tried["trained_on"] == 1200 and tried["estimator"] == "snips" and tried["train_seconds"] > 0
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
    assert evaluation["gate_window"] and shown["trained_until"] == tuning["trained_until"]  # the gate's evidence, held out
    assert [t["setup"] for t in evaluation["report"]["tuning"]["tried"]] == ["plain", "cubic-fast", "epsilon-dr"]
    assert _everything(flow)[2] == 1  # the candidate's model, learned up to the cut: promoted, it learns on from there
    assert evaluation["report"]["spending"] == {"rank": 1, "look": 1, "selected_among": 3, "alpha": tuning["alpha"]}
    # The table: every set-up, and what was registered. The same grid tuned again is the 2nd candidate judged
    # against the champion: each set-up at 1 - 0.05·6/(π² 2²) / 3, where the first was at 1 - 0.05·6/π² / 3,
    # and its best does not beat the champion at that level (registered at 95%, it would have been a second
    # chance for the grid).
    table = flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), "--id", "second").output
    assert all(f"│ {name} " in table for name in ("plain", "cubic-fast", "epsilon-dr")) and "99.747% interval" in table
    assert tuning["alpha"] == pytest.approx(Spending(1).alpha / 3)
    assert table.count("<- best") == 0 and "nothing registered: no reliable set-up beats champion as served: the best, " in table
    assert "(99.747% interval: 99.24% for the best of 3, the 2nd candidate judged against champion)" in " ".join(table.split())

    # The gate lets it through on that evidence. Tuned again on the same cut, the new champion served none of
    # the held-out decisions: it is judged by its model, against set-ups that learned up to the cut.
    assert "is the champion (was champion)" in flow.cli("policy", "promote", tuning["registered"]).output
    # Its own id: the same set-up may win again, and its default id is taken.
    again = json.loads(flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), "--id", "again",
                                "--json").output)  # fmt: skip
    assert (again["baseline"], again["baseline_as_served"], again["trained_on"]) == (tuning["registered"], False, 1500)
    assert f"lift vs {tuning['registered']} " in flow.cli("policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)),
                                                          "--id", "third", ok=False).output  # fmt: skip


def test_the_intervals_of_setups_competing_to_be_the_best_are_at_a_level_shared_among_them(flow: Flow) -> None:
    """The winner's curse: the best of k lower bounds on one log is too high, so each set-up's
    intervals are at 1 - alpha / k (Bonferroni), and the gate's 1 - alpha holds for the one picked; alpha
    is the run's as a candidate judged against the champion (the i-th run's 0.05·6/(π² i²))."""
    supported = flow.write_config("supported.toml", **SUPPORTED)
    args = ["policy", "tune", "--cut", _utc(SPLIT), "--json", "--setups"]
    cubic_fast_only = "[[setup]]" + SETUPS.split("[[setup]]")[2]
    alone = json.loads(flow.cli(*args, str(_setups(flow, cubic_fast_only)), "--id", "alone", config=supported).output)
    three = json.loads(flow.cli(*args, str(_setups(flow)), "--id", "of-three", config=supported).output)
    assert (alone["alpha"], three["alpha"]) == (Spending(1).alpha, pytest.approx(Spending(2).alpha / 3))
    assert (alone["spending"]["rank"], three["spending"]["rank"], three["spending"]["selected_among"]) == (1, 2, 3)
    [cubic] = [t for t in three["tried"] if t["setup"] == "cubic-fast"]
    [single] = alone["tried"]
    assert single["setup"] == "cubic-fast" and single["lift"] == pytest.approx(cubic["lift"])
    assert cubic["lift_interval"][0] < single["lift_interval"][0] and cubic["lift_interval"][1] > single["lift_interval"][1]
    expected = [pytest.approx(Spending(2).alpha / 3)] * 6
    assert [row["candidate"]["alpha"] for row in cubic["evaluation"]["estimators"].values()] == expected
    # Evaluated again, the one picked keeps its share of its run's alpha: at the level of one on the log it
    # was picked on, it would pass on the error that made it the best (its window starts where the champion's
    # knowledge ended, so this is its second look: alpha / (3 * 2²)).
    assert json.loads(flow.cli("policy", "show", "of-three", "--json", config=supported).output)["selected_among"] == 3
    # (When cubic-fast is the best of three, its model is alone's, byte for byte: the same candidate, which
    # keeps the rank of its first look.)
    rank = 1 if three["best"] == "cubic-fast" else 2
    again = json.loads(flow.cli("policy", "evaluate", "of-three", "--json", config=supported).output)
    assert [row["candidate"]["alpha"] for row in again["estimators"].values()] == [pytest.approx(Spending(rank).alpha / 12)] * 6
    assert again["spending"] == {"rank": rank, "look": 2, "selected_among": 3, "alpha": pytest.approx(Spending(rank).alpha / 12)}
    assert "picked as the best of 3 set-ups" in flow.cli("policy", "show", "of-three", config=supported).output
    table = flow.cli(*args[:-2], "--setups", str(_setups(flow)), "--id", "shown", config=supported).output
    assert "99.887% interval" in table  # the third run: 0.05·6/(π² 3²) / 3
    assert "(99.887% interval: 99.662% for the best of 3, the 3rd candidate judged against champion)" in table


def test_a_tuning_run_is_a_candidate_judged_against_the_champion_whether_it_registers_its_best_or_nothing(flow: Flow) -> None:
    """A run whose best did not beat the champion registered nothing and left nothing: the next run (the
    worker's a week later, or an operator's), judged at its own first look at 95%, was a fresh chance for a
    grid no better than the champion. Each run with a reliable set-up is a trial against the champion now,
    recorded whether it registers its best or nothing, and the next candidate is judged at the next rank.
    A run whose set-ups are all unreliable could not pass, whatever the rewards: it spends nothing."""
    plain = str(_setups(flow, '[[setup]]\nname = "plain"\n'))
    args = ["policy", "tune", "--cut", _utc(SPLIT), "--setups", plain, "--json"]
    unreliable = json.loads(flow.cli(*args, config=flow.write_config("unreliable.toml", min_ess=1e9), ok=False).output)
    assert unreliable["spending"]["rank"] == 1 and unreliable["best"] is None
    strict = flow.write_config("strict.toml", min_lift=1e9, **SUPPORTED)
    first, second = (json.loads(flow.cli(*args, config=strict).output) for _ in range(2))
    assert (first["registered"], second["registered"]) == (None, None)
    assert (first["spending"]["rank"], second["spending"]["rank"]) == (1, 2)
    assert (first["alpha"], second["alpha"]) == (Spending(1).alpha, Spending(2).alpha)
    [once], [again] = first["tried"], second["tried"]
    assert once["lift"] == again["lift"] and again["lift_interval"][0] < once["lift_interval"][0]  # one model, judged stricter
    third = json.loads(flow.cli(*args, "--id", "third", config=flow.write_config("supported.toml", **SUPPORTED)).output)
    assert third["spending"]["rank"] == 3 and third["registered"] == "third"
    [evidence] = json.loads(flow.cli("policy", "show", "third", "--json").output)["evaluations"]
    assert evidence["report"]["spending"] == {"rank": 3, "look": 1, "selected_among": 1, "alpha": Spending(3).alpha}
    trained = json.loads(flow.cli("policy", "train", "--id", "by-hand", "--until", _utc(SPLIT), "--json").output)
    assert trained["evaluation"]["spending"]["rank"] == 4  # an operator's candidate after three runs
    with closing(open_store(str(flow.store))) as store:
        runs = [json.loads(e.detail) for e in store.audit.entries(TRIAL_ACTION)]
        third_hash = Registry(store.registry).get("third").artifact_hash
    assert [(r["champion"], r["rank"], r["candidate"]) for r in runs] == [
        ("champion", 1, None), ("champion", 2, None), ("champion", 3, "third"),
    ]  # fmt: skip
    assert runs[0]["key"].startswith("run:") and runs[0]["key"] != runs[1]["key"] and runs[2]["key"] == third_hash
    assert runs[0]["verdict"].startswith("no reliable set-up beats champion as served: the best, plain, has a snips lift of ")
    assert "(96.96% interval: 96.96% for the best of 1, the 1st candidate judged against champion)" in runs[0]["verdict"]


def test_the_champion_is_judged_as_it_served_the_held_out_decisions_while_it_served_them(flow: Flow) -> None:
    """The champion's side of every lift is the logged behaviour: every weight 1, its value the mean
    logged reward, whatever its model says now; the set-ups learn only what it had learned by the cut.
    A champion that served too few of them (promoted since the cut) is judged by its model instead,
    against set-ups trained up to the cut."""
    store = open_store(str(flow.store))
    try:
        tuning = tune(flow.config, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        assert tuning.as_served and tuning.baseline == "champion" and "lift over champion as served" in tuning.verdict
        assert (tuning.trained_until, tuning.trained_on) == (KNOWN, store.examples.count(until=KNOWN))
        held_out = load_logged(flow.config, store.examples, SPLIT)
        [tried] = tuning.tried
        choices = sum(len(actions) > 1 for actions in held_out.actions)  # the diagnostics' decisions (LoggedDecisions.choice)
        for comparison in tried.report.comparisons:
            assert comparison.baseline.diagnostics.ess == pytest.approx(choices)
            assert comparison.baseline.diagnostics.largest_weight_share == pytest.approx(1 / choices)
        assert tried.report.row("snips").baseline.value == pytest.approx(float(held_out.reward.mean()))  # type: ignore[union-attr]
        assert tried.report.row("ips").baseline.value == pytest.approx(float(held_out.reward.mean()))  # type: ignore[union-attr]

        Registry(store.registry).register("fresh", "uniform", actor="test")
        Registry(store.registry).make_champion("fresh", replacing="champion", actor="test", reason="test")
        fallback = tune(flow.config, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        assert (fallback.baseline, fallback.as_served, fallback.trained_until) == ("fresh", False, SPLIT)
        assert fallback.evaluated_on == 1500
        assert "lift over fresh among" in fallback.verdict or "beats fresh:" in fallback.verdict
    finally:
        store.close()


def test_a_setup_is_registered_only_when_its_lift_s_lower_bound_passes_the_gate(flow: Flow) -> None:
    """A positive point estimate is not a win: +0.426 [-0.527, +1.684] was registered. The best must
    have a lower bound above gate.min_lift, as the gate requires, or nothing is registered."""
    store = open_store(str(flow.store))
    try:
        tuning = tune(flow.config, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        assert tuning.best is not None and tuning.best.record.lift > 0
        lower = tuning.best.record.lift_lower
        strict = flow.config.model_copy(update={"gate": flow.config.gate.model_copy(update={"min_lift": lower})})
        again = tune(strict, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        [tried] = again.tried
        assert tried.reliable and tried.record.lift > 0 and tried.record.lift_lower == lower  # the same evidence
        assert again.best is None and register_best(strict, store, again) is None
        assert again.verdict.startswith("no reliable set-up beats champion as served: the best, a, has a snips lift of ")
        assert again.verdict.endswith(f"its lower bound not above the gate's minimum lift {lower:+g}")
        assert [e.id for e in Registry(store.registry).list()] == ["champion"]
    finally:
        store.close()


def test_an_export_has_no_served_distributions_to_judge_a_policy_as_served(flow: Flow) -> None:
    store = open_store(str(flow.store))
    try:
        data = load_logged(flow.config, store.examples, SPLIT)
    finally:
        store.close()
    data.served = []
    with pytest.raises(PolicyCannotAct, match="champion as served: the log holds no served distributions"):
        distribution("champion", AsServed(), FeatureEncoder(flow.config), data)


def test_against_a_setup_compares_with_it_retrained_on_the_same_examples_and_registers_nothing(flow: Flow) -> None:
    args = ["policy", "tune", "--cut", _utc(SPLIT), "--setups", str(_setups(flow)), "--against", "plain"]
    tuning = json.loads(flow.cli(*args, "--json").output)
    assert (tuning["baseline"], tuning["against_champion"], tuning["registered"]) == ("plain", False, None)
    plain = tuning["tried"][0]
    assert plain["lift"] == 0 and plain["lift_interval"] == [0, 0]  # itself: never the best
    assert tuning["best"] in ("cubic-fast", "epsilon-dr", None)
    assert "compared with the set-up plain, not the champion: nothing registered" in flow.cli(*args).output
    assert _everything(flow) == (["champion"], 0, 0)
    unknown = flow.cli(*args[:-1], "nope", ok=False)
    assert unknown.exit_code == 1
    assert "against: expected the name of a set-up (plain, cubic-fast, epsilon-dr), got 'nope'" in unknown.output


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
    ("[[setup]]\nname = \"fast one\"\n", "setup[0]: name 'fast one' makes no candidate id: policy_id: expected 1-64 letters"),
    ("[[setup]]\nname = \"x\"\nnumeric_default = \"raw\"\n",
     "set-up 'x': numeric_default: expected one of quantile, auto in the set-up and the config, got 'raw' and 'quantile'"),
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


def test_a_registration_interrupted_before_it_is_written_leaves_nothing_and_an_id_with_leftovers_is_taken_clean(
    flow: Flow, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C before the registration's write: nothing under the id, the model snapshot neither (it was
    saved before the entry, and refused the id to every later registration for good). What such a run
    left (here as a Brein before this one left it: the tuned model's snapshot and its evaluation under the
    id) is removed by the write of the next registration of the id, through any command: a rules file is
    not promoted on the tuned model's evidence, a trained model does not serve the orphaned snapshot."""
    store = open_store(str(flow.store))
    try:
        tuning = tune(flow.config, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        assert tuning.best is not None
        model = flow.tmp_path / "model.vw"
        model.write_bytes(tuning.tried[0].trained.data)

        def interrupted(*args: Any, **kwargs: Any) -> None:
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(Registry, "register", interrupted)
            with pytest.raises(KeyboardInterrupt):
                register_best(flow.config, store, tuning, policy_id="orphan")
        assert store.registry.evaluations("orphan") == [] and store.models.newest_version("orphan") is None
        for orphan in ("orphan", "orphan-vw", "orphan-train"):
            store.models.save(tuning.best.trained.snapshot(orphan)).result()
            store.registry.record_evaluation(replace(tuning.best.record, policy_id=orphan)).result()
    finally:
        store.close()
    rules = flow.tmp_path / "rules.json"
    rules.write_text('[{"action": "do_nothing"}]')
    flow.cli("policy", "register", "--id", "orphan", "--kind", "rules", "--file", str(rules))
    flow.cli("policy", "register", "--id", "orphan-vw", "--kind", "vw", "--file", str(model))
    flow.cli("policy", "train", "--id", "orphan-train", "--until", _utc(SPLIT), "--no-evaluate")
    for orphan in ("orphan", "orphan-vw", "orphan-train"):
        assert json.loads(flow.cli("policy", "show", orphan, "--json").output)["evaluations"] == []
    with closing(open_store(str(flow.store))) as store:
        registry = Registry(store.registry)
        assert [s.version for s in store.models.newest_first("orphan")] == []
        assert [s.version for s in store.models.newest_first("orphan-vw")] == []  # its file is what it serves
        trained = registry.get("orphan-train")
        assert [s.data for s in store.models.newest_first("orphan-train")] == [trained.artifact]
        assert load_policy(trained, store.models)[0].version == VWPolicy(trained.args, trained.artifact).version
        removed = store.audit.entries(LEFTOVERS_ACTION)
    assert [e.subject for e in removed] == ["orphan", "orphan-vw", "orphan-train"]
    assert all(e.actor.startswith("cli:") for e in removed)
    assert all(e.detail.startswith("removed 1 evaluation(s) and 1 model snapshot(s) (") for e in removed)


def test_a_tuning_takes_the_next_free_id_when_it_chose_the_id_and_refuses_a_named_one_that_is_taken(flow: Flow) -> None:
    """The id a tuning chooses (tuned-<cut's date>-<set-up>) is a name only: another tuning on the same
    day took it (the worker's and an operator's at once, or one after the other): it registered nothing
    ("tuned on this cut before?"), or, in a race, left its snapshot under the other's entry. Now it takes
    the next free id. An id the operator named is never replaced: taken, the registration is refused."""
    store = open_store(str(flow.store))
    try:
        first = tune(flow.config, store, cut=SPLIT, setups=[Setup("a")], n_bootstrap=50)
        second, third = copy.copy(first), copy.copy(first)
        base = candidate_id(SPLIT, "a")
        assert register_best(flow.config, store, first) is not None and first.registered == base
        assert register_best(flow.config, store, second) is not None and second.registered == f"{base}-2"
        with pytest.raises(TuningError, match=f"^a policy '{base}' is already registered$"):
            register_best(flow.config, store, third, policy_id=base)
        assert third.registered is None
        registry = Registry(store.registry)
        for policy_id in (base, f"{base}-2"):  # each with its own snapshot and evidence
            assert [s.version for s in store.models.newest_first(policy_id)] == [first.best.trained.policy().version]  # type: ignore[union-attr]
            assert [e.policy_id for e in registry.evaluations(policy_id)] == [policy_id]
    finally:
        store.close()
    assert fresh_id("x" * 64, 12) == "x" * 61 + "-12"  # still a policy id


def test_two_tunings_registering_their_chosen_id_at_once_each_get_one(flow: Flow) -> None:
    """The worker's scheduled tuning and an operator's `brein policy tune` on the same day and set-up: both
    chose one id and wrote at one moment. The loser's snapshot was left under the winner's entry, and
    the loser registered nothing; now one gets the id and the other the next."""
    with closing(open_store(str(flow.store))) as store:
        tuning = tune(flow.config, store, cut=SPLIT, setups=[Setup("a"), Setup("fast", {"learning_rate": 1.0})],
                      n_bootstrap=50)  # fmt: skip
    assert tuning.best is not None
    base = candidate_id(SPLIT, tuning.best.setup.name)
    barrier = threading.Barrier(2)
    tunings = [copy.copy(tuning), copy.copy(tuning)]
    with ExitStack() as stack:
        stores = [stack.enter_context(closing(open_store(str(flow.store)))) for _ in tunings]
        for store in stores:
            store.registry = _Meeting(store.registry, barrier)  # type: ignore[misc]
        results = _race(*(functools.partial(register_best, flow.config, s, t, actor=f"a{i}")
                          for i, (s, t) in enumerate(zip(stores, tunings, strict=True))))  # fmt: skip
        assert sorted(t.registered or "" for t in tunings) == [base, f"{base}-2"], results
        store = stores[0]
        for policy_id in (base, f"{base}-2"):
            entry = Registry(store.registry).get(policy_id)
            assert [s.data for s in store.models.newest_first(policy_id)] == [entry.artifact]
            assert [e.policy_id for e in store.registry.evaluations(policy_id)] == [policy_id]


def test_the_default_grid_builds_on_the_configs_learner_and_every_setup_is_valid(flow: Flow) -> None:
    setups = default_setups(flow.config)
    assert 8 <= len(setups) <= 13 and setups[0] == Setup("config")
    assert Setup("restraint-0.01", {"restraint": 0.01}) in setups
    assert len({s.name for s in setups}) == len(setups)
    for setup in setups:
        setup.config(flow.config)  # VW accepts every one
    cubic = next(s for s in setups if s.name == "cubic").overrides["interactions"]
    assert cubic[: len(flow.config.learner.interactions)] == flow.config.learner.interactions and "uoc" in cubic


def test_the_numeric_encoding_is_a_tuning_axis_and_each_setup_is_evaluated_on_its_own(flow: Flow) -> None:
    """A config without bins: ``quantile`` set-ups learn edges from the examples before the cut,
    ``auto`` ones none; the default grid holds the other encoding; the registered best keeps its own."""
    config = flow.config.model_copy(update={"features": flow.config.features.model_copy(update={"numeric": {}})})
    assert default_setups(config)[-1] == Setup("auto", {"numeric_default": "auto"})
    setups = [Setup("quantile"), Setup("auto", {"numeric_default": "auto"})]
    store = open_store(str(flow.store))
    try:
        tuning = tune(config, store, cut=SPLIT, setups=setups, n_bootstrap=50)
        quantile, auto = (t.trained for t in tuning.tried)
        assert quantile.encoding is not None and {"months_to_contract_end", "tenure_months"} <= set(quantile.encoding.edges["u"])
        assert auto.encoding is None
        values = [t.value.value for t in tuning.tried]
        assert values[0] != values[1]  # each scored on its own features, not both on the config's
        if tuning.best is not None:
            entry = register_best(config, store, tuning, policy_id="tuned-encoding")
            assert entry is not None
            (snapshot,) = store.models.newest_first("tuned-encoding")
            assert snapshot.encoding == (None if tuning.best.trained.encoding is None else tuning.best.trained.encoding.to_json())
    finally:
        store.close()


# --- [tuning]: the worker tunes on a schedule in event time and promotes through the gate ----------------


SUPPORTED = {"min_ess": 30.0}
"""Gate thresholds this world's set-ups meet: a quarter of its decisions had one eligible action, which
tell nothing about a set-up and count for no ESS (``LoggedDecisions.choice``); on the rest the
set-ups' ESS is 30 to 50."""
HELD_OUT_CHOICES = 700
"""At most the decisions with a choice that 25 held-out days hold (933 of 1,248), so that the worker's
cut stays at 25 days (it moves back until min_decisions of them lie after it)."""


def _worker_config(flow: Flow, holdout_days: float = 25.0, setups: str = SETUPS, **gate: Any) -> BreinConfig:
    data = _config_data(flow.store, **gate)
    data["tuning"] = {"enabled": True, "every_days": 7.0, "holdout_days": holdout_days, "setups": str(_setups(flow, setups))}
    return parse_config(data)


def test_the_held_out_days_grow_to_hold_the_decisions_the_gate_needs(flow: Flow) -> None:
    """5 held-out days hold about 250 of the 3,000 decisions: the cut moves back until 1,000
    (gate.min_decisions) with a choice of action lie after it, to the minute, so the gate can judge
    the run's candidate."""
    store = open_store(str(flow.store))
    try:
        worker = Worker(_worker_config(flow, holdout_days=5.0), store)
        done = worker.round().tuned
        assert done is not None and done.outcome in ("promoted", "refused", "nothing registered")
        until = done.event_time - worker.joiner.rules.close_after
        assert done.cut < until - 5 * DAY
        choices = functools.partial(store.examples.count, until=until, choices=True)  # what the gate counts
        assert choices(since=done.cut) >= 1000 > choices(since=done.cut + 60)
    finally:
        store.close()


def test_tuning_waits_for_enough_examples_without_recording_a_run_or_moving_the_schedule(flow: Flow) -> None:
    store = open_store(str(flow.store))
    try:
        worker = Worker(_worker_config(flow, min_decisions=5000), store)
        now = store.joins.watermark()
        assert now is not None
        for _ in range(2):
            done = worker.tune(now)
            assert done is not None and (done.outcome, done.candidate) == ("waiting", None)
            assert "is before the log: no joined examples to train on before it" in done.reason  # 3,000 after it: too few
        # Enough after the cut, but nothing the champion had learned by it (a decision joined 41 days after it;
        # asked 35 days later, as many decisions are joined as with 6 days now).
        data = _config_data(flow.store)
        data["outcomes"]["contract_renewal"]["window_days"] = 40.0
        data["tuning"] = _worker_config(flow).tuning.model_dump()
        late = Worker(parse_config(data), store).tune(now + 35 * DAY)
        assert late is not None and late.outcome == "waiting" and "what the champion had learned by the cut" in late.reason
        assert store.audit.entries("policy_tuning") == [] and [e.id for e in Registry(store.registry).list()] == ["champion"]
        ready = Worker(_worker_config(flow), store).tune(now)  # the gate asks for what the log holds: the run happens
        assert ready is not None and ready.outcome != "waiting" and len(store.audit.entries("policy_tuning")) == 1
    finally:
        store.close()


def test_a_worker_round_with_tuning_on_registers_and_promotes_through_the_gate(flow: Flow) -> None:
    """One set-up, the first candidate judged against the champion: at 1 - 0.05·6/π² (96.96%). (The three of
    SETUPS at a third of that each, 98.99%, beat the uniform champion on these 700 held-out decisions with
    a choice at 98.33%, a third of 95%, and not at 98.99%.)"""
    config = _worker_config(flow, setups="[[setup]]" + SETUPS.split("[[setup]]")[2], min_decisions=HELD_OUT_CHOICES, **SUPPORTED)
    store = open_store(str(flow.store))
    try:
        worker = Worker(config, store)
        now = store.joins.watermark()
        assert now is not None
        done = worker.round().tuned
        assert done is not None and (done.outcome, done.event_time) == ("promoted", now)
        assert done.cut == pytest.approx(now - worker.joiner.rules.close_after - 25 * DAY)
        registry = Registry(store.registry)
        champion = registry.champion()
        assert champion is not None and champion.id == done.candidate and champion.id.startswith("tuned-")
        promoted = registry.history(champion.id)[-1]
        assert (promoted.actor, promoted.from_state, promoted.to_state) == ("brein-tuning", "candidate", "champion")
        assert promoted.reason.startswith("tuning passed the gate: ") and "lift over champion" in promoted.reason
        [evaluation] = registry.evaluations(champion.id)
        assert evaluation.lift_lower > 0 and len(evaluation.report["tuning"]["tried"]) == 1
        assert evaluation.gate_window and champion.trained_until == evaluation.report["tuning"]["trained_until"]
        # Not due again until 7 days of event time have passed, also for a worker started afresh on the store.
        assert worker.round().tuned is None and Worker(config, store).tune(now + 6 * DAY) is None
        later = Worker(config, store).tune(now + 7 * DAY)
        assert later is not None and later.outcome in ("promoted", "nothing registered", "refused")
        runs = [json.loads(e.detail) for e in store.audit.entries("policy_tuning")]
        assert [r["event_time"] for r in runs] == [now, now + 7 * DAY] and runs[0]["outcome"] == "promoted"
        # Each run a trial against the champion it was judged against: the second, against the new one, its first.
        trials = [json.loads(e.detail) for e in store.audit.entries(TRIAL_ACTION)]
        assert (trials[0]["champion"], trials[0]["rank"], trials[0]["candidate"]) == ("champion", 1, champion.id)
        assert [(t["champion"], t["rank"]) for t in trials[1:]] == [(champion.id, 1)] * (len(trials) - 1)
        assert len(trials) == 2 or later.outcome == "nothing registered"
    finally:
        store.close()


def test_a_candidate_the_gate_refuses_is_retired_with_the_gates_reason(flow: Flow) -> None:
    store = open_store(str(flow.store))
    try:
        # Registered (reliable, its lift's lower bound above 0), refused: its evidence is older than the gate allows
        # by the time it is promoted (tuning holds out as many decisions with a choice as the gate needs).
        done = Worker(_worker_config(flow, max_age_hours=1e-9, **SUPPORTED), store).round().tuned
        assert done is not None and done.outcome == "refused" and done.candidate is not None
        assert done.reason.startswith(f"the gate refused it: {done.candidate}'s evaluation is 0.0 hours old, more than the 1e-09 "
                                      "allowed")  # fmt: skip
        registry = Registry(store.registry)
        champion = registry.champion()
        assert champion is not None and champion.id == "champion"
        retired = registry.history(done.candidate)[-1]
        assert (retired.from_state, retired.to_state, retired.reason) == ("candidate", "retired", f"tuning: {done.reason}")
    finally:
        store.close()


def test_tuning_is_off_by_default_and_a_bad_setups_file_stops_the_worker_at_start(flow: Flow) -> None:
    store = open_store(str(flow.store))
    try:
        assert not flow.config.tuning.enabled and Worker(flow.config, store).round().tuned is None
        config = _worker_config(flow)
        _setups(flow, "[[setup]]\nname = \"x\"\nfoo = 1\n")
        with pytest.raises(TuningError, match="set-up 'x': unknown learner key 'foo'"):
            Worker(config, store)
    finally:
        store.close()
    assert _everything(flow) == (["champion"], 0, 0)


def test_the_readmes_tuning_snippets_are_valid(tmp_path: Path) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme[readme.index("### Tuning learning set-ups from the log") :]
    setups_snippet, tuning_snippet = re.findall(r"```toml\n(.*?)```", section, re.S)[:2]
    (tmp_path / "setups.toml").write_text(setups_snippet)
    [setup] = load_setups(tmp_path / "setups.toml")
    data = example_data()
    data["tuning"] = tomllib.loads(tuning_snippet)["tuning"]
    config = parse_config(data)
    assert config.tuning.enabled and config.tuning.every_days == 7 and config.tuning.setups == "setups.toml"
    assert "--interactions uoc" in " ".join(vw_arguments(setup.config(config).learner))
