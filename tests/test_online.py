"""Online learning from joined examples, snapshots across restarts, DSJSON parity with VW's CLI."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner
from vowpal_wabbit_next import DSJsonFormatParser, TextFormatParser, Workspace, run_cli_driver

from bandit.catalog import Catalog
from bandit.config import BreinConfig, parse_config
from bandit.learner import COLD_START, TextTrainer, VWPolicy, action_lines, example_text, vw_arguments
from bandit.requests import DecisionRequest
from brain.core import Brain
from brain.probe import Prober
from brain.worker import Worker
from reward.export import dsjson_lines
from reward.ingest import ActivationReport, OutcomeReport
from reward.joiner import JoinReport
from reward.online import MONEY_PER_COST, UNSCALED, ExampleReader, LearnRun, OnlineLearner, reward_scale
from serving.cli import main
from store import open_store
from store.opening import sqlite_path
from store.records import Cursor
from tests.conftest import T0, Clock, example_data, sqlite_files

DAY = 86_400.0


def simulate(brain: Brain, customers: int = 60, days: int = 40, seed: int = 1) -> None:
    """A little world: customers close to contract end renew after an SMS, complain after calls."""
    rng = random.Random(seed)
    for day in range(days):
        for c in rng.sample(range(customers), 8):
            at = T0 + day * DAY + rng.uniform(0, DAY / 2)
            months = float(c % 6)
            request = DecisionRequest(
                customer_id=f"c{c}", touchpoint="app", request_id=f"r{day}-{c}", event_time=at, personalisation="granted",
                numeric={"months_to_contract_end": months, "tenure_months": float(c)}, categorical={"plan": "basic", "has_app": "yes"},
            )  # fmt: skip
            record = brain.decider.decide_and_wait(request).record
            if record.action_id != "do_nothing":
                brain.activate(ActivationReport(record.decision_id, at + 60)).result()
            if record.channel == "sms" and months <= 3 and rng.random() < 0.7:
                brain.report_outcome(OutcomeReport(f"o-{record.decision_id}", f"c{c}", "contract_renewal", event_time=at + 2 * DAY))[1].result()
            if record.channel == "outbound_call" and rng.random() < 0.5:
                brain.report_outcome(OutcomeReport(f"k-{record.decision_id}", f"c{c}", "complaint", event_time=at + DAY))[1].result()


def config_with(*, provisional: bool = True, **learner: object) -> BreinConfig:
    data = example_data()
    data["learner"].update(learner)
    data.setdefault("joiner", {})["provisional"] = provisional
    return parse_config(data)


def join_and_learn(brain: Brain) -> tuple[JoinReport, int]:
    """A round of the worker on the Brain's store, then the Brain follows what it stored."""
    done = Worker(brain.config, brain.store, clock=brain.clock).round()
    brain.follow()
    return done.join, done.learned


@pytest.mark.parametrize("make_brain", ["sqlite", "postgres"], indirect=True)
def test_online_learning_stores_snapshots_served_and_resumed_after_restart(make_brain: Callable[..., Brain], clock: Clock) -> None:
    config = config_with(snapshot_every=50)
    swaps: list[str] = []
    brain = make_brain(config, on_model=lambda policy: swaps.append(policy.model.version))
    simulate(brain)
    report, learned = join_and_learn(brain)
    assert report.joined > 0 and learned == report.joined + report.provisional
    snapshots = list(brain.store.models.newest_first(config.learner.policy_id))
    assert len(snapshots) == -(-learned // 50)  # one snapshot per 50 examples, and one for the rest
    serving = brain.decider.policy.model
    assert serving.version == swaps[-1] == snapshots[0].version != COLD_START and not serving.cold  # the server follows the newest
    assert snapshots[0].learned is not None and all(s.learned is not None for s in snapshots)
    assert [s.learned for s in snapshots] == sorted((s.learned for s in snapshots if s.learned), reverse=True)
    record = brain.decider.decide_and_wait(DecisionRequest("new", "app", "after", event_time=clock.now)).record
    assert record.model_version == serving.version
    url = brain.store.url
    brain.store.close()
    store = open_store(url)
    try:
        restarted = Brain(config, store, clock=clock)
        assert restarted.decider.policy.model.version == serving.version
        worker = Worker(config, store, clock=clock)
        learner = worker.learner()
        assert learner is not None and learner.step().learned == 0  # it knows how far its snapshot had learned
    finally:
        store.close()


def test_dsjson_export_trains_vw_cli_to_the_same_predictions(make_brain: Callable[..., Brain], clock: Clock, tmp_path: Path) -> None:
    # The export holds whole examples: the same model as online learning that learns no provisional ones.
    config = config_with(snapshot_every=10_000, provisional=False)
    brain = make_brain(config)
    simulate(brain, days=45)
    _, learned = join_and_learn(brain)
    assert learned > 100
    export = tmp_path / "log.dsjson"
    result = CliRunner().invoke(main, ["log", "export", "--config", "examples/telecom.toml", "--store", brain.store.url, "-o", str(export)])
    assert result.exit_code == 0, result.output
    lines = export.read_text().splitlines()
    assert len(lines) == learned
    first = json.loads(lines[0])
    assert {"_label_cost", "_label_probability", "_labelIndex", "a", "p", "c"} <= set(first) and "_multi" in first["c"]

    model_file = tmp_path / "cli.vw"
    args = brain.decider.policy.model.args
    run_cli_driver(["--dsjson", "-d", str(export), "-f", str(model_file), *args])
    from_cli = VWPolicy(args, model_file.read_bytes())
    online = brain.decider.policy.model
    actions = list(brain.catalog.actions)
    rng = random.Random(5)
    for _ in range(25):
        features = {"n": {"touchpoint": "app", "hour": str(rng.randint(0, 23)), "weekday": "2"},
                    "u": {"months_to_contract_end": float(rng.randint(0, 6)), "tenure_months": float(rng.randint(0, 60)), "plan": "basic"}}  # fmt: skip
        line = brain.decider.encoder_for(online).shared_line(features)
        # The two models' weights agree to the last bits (plain SquareCB's pmfs agree to 1e-7); --elim's
        # cost ranges, a binary search to VW's tolerance of 1e-6, spread that to about 1.4e-6.
        assert from_cli.pmf(line, actions) == pytest.approx(online.pmf(line, actions), abs=1e-5)


def _named_weights(workspace: Workspace) -> dict[str, float]:
    """A workspace's weights by feature name, from its readable model ("name:index:weight ...")."""
    model = workspace.readable_model(include_feature_names=True).split("\n")
    return {name: float(rest.split(" ")[0]) for name, _, rest in (line.split(":", 2) for line in model if "^" in line)}


@pytest.mark.parametrize(
    ("numeric", "categorical"),
    [
        ({}, {"a b": "x", "a_b": "x", "a|b": "x", "a:b": "x"}),
        ({"k=v": 2.0}, {"k": "v", "j=v": "w", "j": "v=w"}),
        ({}, {"_promo": "yes"}),  # VW skipped the key
        ({}, {"_labelx": "yes"}),  # VW refused the line
        ({"_label_cost": -1e12, "_label_probability": 0.5}, {}),  # VW read them as the label
    ],
    ids=["separators", "equals", "skipped", "refused", "label"],
)
def test_vw_reads_each_exported_line_as_the_learner_reads_its_text(
    make_brain: Callable[..., Brain], numeric: dict[str, float], categorical: dict[str, str]
) -> None:
    """Fields the text line held apart were one key of the export's context (a_b=x four times), and
    VW's DSJSON reader took a name starting with '_' for a key of its own."""
    data = example_data()
    data["features"]["numeric_default"] = "raw"  # numeric names reach the export as keys of their own
    config = parse_config(data)
    brain = make_brain(config)
    for i in range(6):
        request = DecisionRequest(f"c{i}", "app", f"r{i}", event_time=T0 + i * 600, personalisation="granted",
                                  numeric=numeric, categorical=categorical)  # fmt: skip
        record = brain.decider.decide_and_wait(request).record
        if record.action_id != "do_nothing":
            brain.activate(ActivationReport(record.decision_id, record.event_time + 60)).result()
    Worker(config, brain.store).joiner.run(until=T0 + 60 * DAY)
    reader = ExampleReader(config, brain.store.examples)
    exported = list(zip(reader.read(), dsjson_lines(reader, brain.store.models), strict=True))
    assert len(exported) == 6
    args = vw_arguments(config.learner)
    for (_, example, _), line in exported:
        text = Workspace(args, record_feature_names=True)
        text.learn_one([TextFormatParser(text).parse_line(part) for part in example_text(example).split("\n") if part])
        dsjson = Workspace([*args, "--dsjson"], record_feature_names=True)
        dsjson.learn_one(DSJsonFormatParser(dsjson).parse_json(line))
        # VW's JSON and text readers round numbers apart in the last bits.
        assert _named_weights(dsjson) == pytest.approx(_named_weights(text), rel=1e-5)
        assert sum(name.startswith("u^") and "*" not in name for name in _named_weights(text)) == len(numeric) + len(categorical)


def test_learning_texts_are_the_examples_text_in_learning_order(make_brain: Callable[..., Brain]) -> None:
    config = config_with(snapshot_every=10_000)
    brain = make_brain(config)
    simulate(brain, days=10)
    Worker(config, brain.store).joiner.run(until=T0 + 60 * DAY)
    reader = ExampleReader(config, brain.store.examples, logged_lines=True)
    read = [(position, example_text(example)) for position, example, _ in reader.read()]
    assert len(read) > 20 and list(reader.texts()) == read
    after = read[len(read) // 2][0]
    assert list(reader.texts(after)) == read[len(read) // 2 + 1 :]
    first = read[0][1].splitlines()
    assert first[0].startswith("shared ") and first[-1] == "" and sum(line.startswith("0:") for line in first) == 1


def test_the_default_reward_scale_is_a_share_of_the_configs_money_so_learning_does_not_depend_on_its_unit() -> None:
    """Counted in cents, a world's costs to VW are what they are in euros: a fixed default scale made
    every cost gap 100 times as wide to SquareCB, and Brein stopped contacting (docs/simulation.md)."""
    euros = config_with(reward_scale=None)
    data = example_data()
    data["learner"].pop("reward_scale")
    for kind in data["outcomes"].values():
        kind["value"] *= 100
    cents = parse_config(data)
    largest = max(abs(t.value) for t in euros.outcomes.values())
    assert reward_scale(euros) == pytest.approx(largest / MONEY_PER_COST) == pytest.approx(10.0)  # the example's 240
    assert reward_scale(cents) == pytest.approx(100 * reward_scale(euros))
    assert reward_scale(config_with(reward_scale=3.0)) == 3.0  # a scale given is used as given
    for kind in data["outcomes"].values():
        kind["value"] = 0.0
    assert reward_scale(parse_config(data)) == UNSCALED  # no money to scale by


def test_restraint_learns_every_contact_a_share_of_the_largest_outcome_value_worse(make_brain: Callable[..., Brain]) -> None:
    config = config_with(snapshot_every=10_000)
    brain = make_brain(config)
    simulate(brain, days=10)
    Worker(config, brain.store).joiner.run(until=T0 + 60 * DAY)
    restrained = config_with(snapshot_every=10_000, restraint=0.05)
    margin = 0.05 * max(abs(t.value) for t in config.outcomes.values())
    plain = list(ExampleReader(config, brain.store.examples, logged_lines=True).read())
    held = list(ExampleReader(restrained, brain.store.examples, logged_lines=True).read())
    assert margin > 0 and len(plain) == len(held) > 20
    contacts = 0
    for (_, example, row), (_, restrained_example, _) in zip(plain, held, strict=True):
        assert example.cost == pytest.approx(-row.reward / reward_scale(config))
        extra = 0.0 if row.action_id == "do_nothing" else margin / reward_scale(config)
        assert restrained_example.cost == pytest.approx(example.cost + extra)
        contacts += row.action_id != "do_nothing"
    assert 0 < contacts < len(plain)
    texts = ExampleReader(restrained, brain.store.examples, logged_lines=True).texts()
    assert [text for _, text in texts] == [example_text(example) for _, example, _ in held]


def _weights(model: bytes) -> dict[str, float]:
    """A model's weights by index, from VW's readable model ("index:weight adaptive normalised")."""
    text = Workspace(["--quiet"], model_data=model).readable_model()
    return {index: float(weight) for index, weight in re.findall(r"^(\d+):(\S+)", text, re.MULTILINE)}


@pytest.mark.parametrize("regulariser", [["--l2", "1e-3"], ["--l1", "1e-4"]])
def test_chunked_learning_keeps_the_options_a_model_file_forgets(regulariser: list[str]) -> None:
    """VW does not keep --l1 and --l2 in a model file: learned in chunks, each resumed from the last
    model, the model must still be the one a single run with the same options learns."""
    rng = random.Random(4)
    texts = []
    for _ in range(600):
        user, taken = rng.randrange(8), rng.randrange(3)
        cost = (-1.0 if (user + taken) % 3 == 0 else 0.0) + rng.gauss(0, 0.3)
        actions = [f"{f'0:{cost!r}:0.3333 ' if a == taken else ''}|o a{a}" for a in range(3)]
        texts.append("\n".join([f"shared |u f{user}", *actions]) + "\n\n")
    args = ["--cb_explore_adf", "--squarecb", "--quiet", "-q", "uo", *regulariser]
    with TextTrainer(args) as trainer:
        whole, _ = trainer.learn(None, texts)
        half, _ = trainer.learn(None, texts[:300])
        chunked, _ = trainer.learn(half, texts[300:])
    assert whole is not None and chunked is not None
    assert _weights(chunked) == pytest.approx(_weights(whole))


def spend_config(*interactions: str) -> BreinConfig:
    """The example config with ``lifetime_spend`` encoded raw and ``interactions`` added."""
    data = example_data()
    data["learner"].update(snapshot_every=50)
    data["learner"]["interactions"] = [*data["learner"]["interactions"], *interactions]
    data["features"]["numeric"]["lifetime_spend"] = {"encoding": "raw"}
    return parse_config(data)


def spend(brain: Brain, count: int, value: float) -> list[str]:
    """``count`` decisions for customer "p" a minute apart from day 41 at lifetime_spend ``value``, each
    contact activated: their decision ids."""
    decided = []
    for i in range(count):
        at = T0 + 41 * DAY + i * 60
        record = brain.decider.decide_and_wait(DecisionRequest("p", "app", f"p{i}", event_time=at, personalisation="granted",
                                                               numeric={"lifetime_spend": value})).record  # fmt: skip
        if record.action_id != "do_nothing":
            brain.activate(ActivationReport(record.decision_id, at + 30)).result()
        decided.append(record.decision_id)
    return decided


def poisoned_texts(config: BreinConfig, count: int, poisoned: set[int]) -> list[tuple[Cursor, str]]:
    """``count`` learning texts of a raw ``lifetime_spend``, at 1e12 (and no outcome) in those ``poisoned``."""
    lines = action_lines(tuple(Catalog(config).actions))
    rng = random.Random(3)
    texts = []
    for i in range(count):
        spend, cost = (1e12, 0.0) if i in poisoned else (rng.uniform(0, 6000), rng.choice([0.0, -24.0]))
        shared = f"shared |u lifetime_spend:{spend:.6g} has_app=yes |n touchpoint=app"
        texts.append(((1, float(i), f"d{i}"), lines.text(shared, rng.randrange(len(lines.actions)), cost, 0.25)))
    return texts


def test_a_chunk_whose_learning_leaves_non_finite_weights_is_learned_without_the_examples_that_do_it(brain: Brain) -> None:
    """A value VW cannot learn from leaves a model that fails the probe, and every model learned on
    from it too: the learner finds those examples by halving the chunk, sets them aside, and the model
    is the one learning the rest would have made."""
    config = spend_config("uu")
    args = vw_arguments(config.learner)
    prober = Prober(config)
    learner = OnlineLearner(config, brain.store.examples, brain.store.models, args, None, decisions=brain.store.decisions,
                            policy_id="guarded", probe=prober.check)  # fmt: skip
    chunk = poisoned_texts(config, 64, {7, 30, 31})
    with TextTrainer(args) as trainer:
        start, _ = trainer.learn(None, [text for _, text in poisoned_texts(config, 200, set())])
        unguarded, _ = trainer.learn(start, [text for _, text in chunk])
        model, learned, aside = learner.learn_finite(trainer, start, chunk)
        clean, _ = trainer.learn(start, [text for i, (_, text) in enumerate(chunk) if i not in {7, 30, 31}])
    assert prober.check(VWPolicy(args, unguarded)) is not None  # what the learner stored before
    assert aside == ["d7", "d30", "d31"] and learned == 61
    assert model is not None and clean is not None and prober.check(VWPolicy(args, model)) is None
    assert _weights(model) == pytest.approx(_weights(clean))


def test_one_customers_extreme_values_are_set_aside_and_learning_goes_on_for_everyone(
    make_brain: Callable[..., Brain], clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Lines logged at lifetime_spend 1e12 under "uu" (as before the encoder bounded them) made every
    later snapshot fail the probe: serving froze on the last good one, and a restarted learner learned
    the same examples into the same state. Now they are set aside, logged and counted."""
    config = spend_config("uu")
    brain = make_brain(config)
    simulate(brain)
    join_and_learn(brain)
    assert not brain.decider.policy.model.cold
    poison = spend(brain, 3, 1000.0)
    path = sqlite_path(brain.store.url)
    assert path is not None
    with closing(sqlite_files(path)) as conn:
        changed = conn.execute("UPDATE decisions SET shared_line = replace(shared_line, 'lifetime_spend:1000', "
                               "'lifetime_spend:1e+12') WHERE customer_id = 'p'").rowcount  # fmt: skip
        conn.commit()
    assert changed == 3

    with caplog.at_level(logging.WARNING, logger="brein.learner"):
        done = Worker(config, brain.store, clock=clock).round(until=T0 + 80 * DAY)
    brain.follow()
    [warning] = [r.getMessage() for r in caplog.records if r.name == "brein.learner"]
    positions = warning.partition("(decisions ")[2].rstrip(")").split(", ")  # provisional ones as decision#stage
    assert {position.partition("#")[0] for position in positions} == set(poison)
    assert done.set_aside == len(positions) >= 3 and warning.startswith(f"set aside {done.set_aside} joined examples")
    assert done.learned + done.set_aside == done.join.joined + done.join.provisional
    prober = Prober(config)
    snapshots = list(brain.store.models.newest_first(config.learner.policy_id))
    assert all(prober.check(VWPolicy(s.args, s.data, brain.decider.policy.model.encoding)) is None for s in snapshots)
    assert brain.decider.policy.model.version == snapshots[0].version  # serving follows the newest
    learner = Worker(config, brain.store, clock=clock).learner()  # a restart: past the examples set aside
    assert learner is not None and learner.step() == LearnRun(0)
