"""The policy registry on every store: one champion, allowed transitions, an append-only
history with who/when/why, rollback; and the promotion gate's refusals, one sentence each."""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import astuple
from functools import partial
from typing import Any

import pytest
from vowpal_wabbit_next import Workspace

from bandit.catalog import Catalog
from bandit.config import BreinConfig, GateConfig
from bandit.errors import BreinError
from bandit.learner import LabelledExample, VWPolicy, train, vw_arguments, vw_refusal
from bandit.policies import DoNothingPolicy, RulePolicy, UniformPolicy
from brain.champion import bootstrap_champion
from policies import operations
from policies.gate import CLOCK_TOLERANCE, GateRefused, check_gate, look
from policies.loading import MAX_RULES, PolicyLoadError, load_policy, parse_rules
from policies.registry import ChampionChanged, InvalidTransition, Registry, UnknownPolicy, artifact_hash, unused_policy_id
from policies.spending import Spending, look_alpha
from reward.joiner import Joiner
from store import Store, open_store
from store.errors import Conflict
from store.ports import RegistryStorage
from store.records import DAY, LEFTOVERS_ACTION, START, EvaluationRecord, ModelSnapshot, PolicyEvent
from tests.conftest import T0
from tests.test_joiner import _populate

NOW = 1_780_000_000.0
HOUR = 3600.0


@pytest.fixture
def registry(store: Store) -> Registry:
    """A champion 'champ' (uniform) and a candidate 'cand' (do-nothing)."""
    registry = Registry(store.registry)
    registry.register("champ", "uniform", actor="test", state="champion", note="bootstrapped", now=NOW)
    registry.register("cand", "do_nothing", actor="test", parent="champ", now=NOW + 1)
    return registry


def _audit(store: Store) -> list[tuple[Any, ...]]:
    return [astuple(entry) for entry in store.audit.entries()]


def _states(registry: Registry) -> dict[str, str]:
    return {e.id: e.state for e in registry.list()}


# --- Registering and reading -------------------------------------------------------------------


def test_a_registered_policy_reads_back_as_registered(registry: Registry) -> None:
    rules = b'[{"action": "renewal/sms/evening", "when": "numeric.months_to_contract_end <= 3.0"}]'
    entry = registry.register("r1", "rules", artifact=rules, args=["--quiet"], features={"non_personal": ["region"]},
                              parent="champ", note="holiday rules", actor="alice", now=NOW + 5)  # fmt: skip
    assert registry.get("r1") == entry
    assert entry.artifact_hash == artifact_hash("rules", rules) == hashlib.sha256(b"rules\0" + rules).hexdigest()
    assert (entry.kind, entry.state, entry.parent, entry.created) == ("rules", "candidate", "champ", NOW + 5)
    assert entry.note == "holiday rules"
    assert artifact_hash("uniform", None) != artifact_hash("do_nothing", None)  # the kind is part of the hash
    assert [e.id for e in registry.list()] == ["champ", "cand", "r1"]  # by creation time
    assert registry.has("r1") and not registry.has("r2")
    assert [e.id for e in registry.in_state("candidate")] == ["cand", "r1"]
    assert registry.champion() is not None and registry.champion().id == "champ"  # type: ignore[union-attr]
    assert registry.history("r1") == [PolicyEvent("r1", NOW + 5, "alice", "", "candidate", "holiday rules")]


def test_a_new_registry_has_no_champion_and_nothing_to_roll_back_to(store: Store, config: BreinConfig) -> None:
    registry = Registry(store.registry)
    assert registry.champion() is None and registry.list() == [] and registry.previous_champion() is None
    with pytest.raises(ValueError, match="^there is no previous champion to roll back to$"):
        operations.rollback(config, store, actor="test")


def test_opening_the_registry_twice_keeps_its_rows(store: Store, registry: Registry) -> None:
    again = Registry(store.registry)
    assert _states(again) == {"champ": "champion", "cand": "candidate"}


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"policy_id": "cand", "kind": "uniform"}, InvalidTransition, r"^a policy 'cand' is already registered$"),
        ({"policy_id": "c2", "kind": "uniform", "state": "champion"}, InvalidTransition,
         r"^there is a champion already: register as a candidate and promote it$"),
        ({"policy_id": "c2", "kind": "linear"}, ValueError,
         r"^kind: expected one of vw, rules, uniform, do_nothing, got 'linear'$"),
        ({"policy_id": "c2", "kind": "uniform", "state": "paused"}, ValueError,
         r"^state: expected one of candidate, shadow, champion, retired, got 'paused'$"),
        ({"policy_id": "", "kind": "uniform"}, ValueError, r"^policy_id: expected 1-64 letters, digits, '_', '-' or '\.', got"),
        ({"policy_id": "a\x00b", "kind": "uniform"}, ValueError, r"^policy_id: expected 1-64 letters, .*, got 'a\\x00b'$"),
        ({"policy_id": "x" * 65, "kind": "uniform"}, ValueError, r"^policy_id: expected 1-64 letters, .*\(65 characters\)$"),
    ],
)  # fmt: skip
def test_register_refuses(
    registry: Registry, store: Store, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    before = (registry.list(), registry.history(), _audit(store))
    with pytest.raises(error, match=message):
        registry.register(actor="test", **kwargs)
    assert (registry.list(), registry.history(), _audit(store)) == before


def test_a_registration_takes_its_id_clean_of_what_no_entry_held_there(registry: Registry, store: Store) -> None:
    """What a registration killed before its entry left under an id (an evaluation, from before evaluations
    were written with their entry; a model snapshot, from before snapshots were) refused that id forever,
    with no way to clean it: now the write that registers the id removes them, audited, and the new entry
    inherits neither (``load_policy`` would serve the snapshot; the gate would take the evaluation)."""
    store.registry.record_evaluation(_evaluation(policy_id="judged")).result()
    store.models.save(ModelSnapshot("v1", [], b"model", "judged")).result()
    store.models.save(ModelSnapshot("v9", [], b"model", "other")).result()
    assert unused_policy_id(registry, "judged") == "judged" and unused_policy_id(registry, "fresh") == "fresh"
    with pytest.raises(InvalidTransition, match=r"^a policy 'cand' is already registered$"):
        unused_policy_id(registry, "cand")
    rules = b'[{"action": "do_nothing"}]'
    entry = registry.register("judged", "rules", artifact=rules, actor="alice", now=NOW + 9)
    assert registry.evaluations("judged") == [] and store.models.newest_version("judged") is None
    assert load_policy(entry, store.models)[0].version == entry.artifact_hash[:12]
    assert store.models.newest_version("other") == "v9"  # another id's leftovers stay until it is registered
    removed = [e for e in store.audit.entries() if e.subject == "judged"]
    assert [(e.actor, e.action) for e in removed] == [("alice", "policy_leftovers"), ("alice", "policy")]
    assert removed[0].detail == ("removed 1 evaluation(s) and 1 model snapshot(s) (v1) of no registered policy (left by an "
                                 "interrupted registration) before registering the id")  # fmt: skip


def test_an_entry_and_its_evidence_are_registered_in_one_write(registry: Registry, store: Store) -> None:
    evidence = _evaluation(policy_id="tuned")
    registry.register("tuned", "uniform", actor="test", evidence=[evidence])
    assert registry.evaluations("tuned") == [evidence]
    with pytest.raises(InvalidTransition, match="already registered"):  # refused: neither the entry nor its evidence again
        registry.register("tuned", "uniform", actor="test", evidence=[evidence])
    with pytest.raises(Conflict):  # the write itself: an id taken meanwhile writes no evidence either
        store.registry.register(registry.get("tuned"), PolicyEvent("tuned", NOW, "test", "", "candidate", ""), [],
                                [evidence]).result()  # fmt: skip
    assert registry.evaluations("tuned") == [evidence]


# --- Exactly one champion ------------------------------------------------------------------------


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run the calls at the same moment on their own threads; each one's result or exception."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = calls[i]()
        except Exception as error:  # noqa: BLE001 - the outcome under test
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


def test_two_processes_bootstrapping_a_champion_at_once_get_one(store_url: str) -> None:
    # Two stores on one database: two writers (a server and a CLI, say), serialised only by the database.
    first, second = open_store(store_url), open_store(store_url)
    try:
        a, b = Registry(first.registry), Registry(second.registry)
        for round_ in range(5):
            results = _race(partial(a.register, f"a{round_}", "uniform", actor="a", state="champion"),
                            partial(b.register, f"b{round_}", "uniform", actor="b", state="champion"))  # fmt: skip
            refused = [r for r in results if isinstance(r, InvalidTransition)]
            if round_ == 0:
                assert len(refused) == 1, results  # one of them is the champion, the other is told so
            else:
                assert len(refused) == 2, results  # there is a champion already
            assert len(a.in_state("champion")) == 1
    finally:
        first.close()
        second.close()


def test_a_bootstrapped_champion_takes_its_id_clean_as_every_registration_does(store: Store, config: BreinConfig) -> None:
    """A model snapshot and an evaluation stored under the config's policy id with no entry (a killed
    registration's): the champion bootstrapped on that store served the snapshot, not the config's model
    (cold here), and carried the evaluation; it registers as every policy does, removing them."""
    policy_id = config.learner.policy_id
    store.models.save(ModelSnapshot("orphan", vw_arguments(config.learner), _trained(config), policy_id)).result()
    store.registry.record_evaluation(_evaluation(policy_id=policy_id)).result()
    champion = bootstrap_champion(config, Registry(store.registry))
    served, learned = load_policy(champion, store.models)
    assert isinstance(served, VWPolicy) and served.cold and learned == START
    assert store.models.newest_version(policy_id) is None and store.registry.evaluations(policy_id) == []
    assert [e.subject for e in store.audit.entries(LEFTOVERS_ACTION)] == [policy_id]


class _Meeting:
    """A store's registry port whose ``register`` first waits for the other racers' (once): their writes
    at one moment, as two processes' that decided to register one id within the same milliseconds."""

    def __init__(self, storage: RegistryStorage, barrier: threading.Barrier) -> None:
        self._storage = storage
        self._barrier: threading.Barrier | None = barrier

    def __getattr__(self, name: str) -> Any:
        return getattr(self._storage, name)

    def register(self, *args: Any, **kwargs: Any) -> Any:
        if self._barrier is not None:
            self._barrier.wait(timeout=30)
            self._barrier = None
        return self._storage.register(*args, **kwargs)


@pytest.fixture
def joined_url(store_url: str, config: BreinConfig) -> str:
    """A store (each shared backend) with a cold champion and about 650 joined decisions."""
    _populate(store_url, customers=300)
    with closing(open_store(store_url)) as store:
        assert Joiner(config, store.joins).run().joined > 500
        bootstrap_champion(config, Registry(store.registry))
    return store_url


def test_of_two_trainings_registering_one_id_at_once_one_is_written_whole_and_nothing_of_the_other(
    joined_url: str, config: BreinConfig
) -> None:
    """Each checked the id free, trained, and registered: its snapshot first, then its entry. The one
    whose entry lost kept its snapshot under the other's entry, which then served it (4 and 6 of 8 such
    races on PostgreSQL and SQLite, unforced). Now the entry claims the id in the write of its snapshot:
    the loser writes nothing and is told so."""
    barrier = threading.Barrier(2)
    since = {"early": None, "late": T0 + 20 * DAY}  # the same arguments, other data: either model loads under either entry
    with ExitStack() as stack:
        stores = {name: stack.enter_context(closing(open_store(joined_url))) for name in since}
        for store in stores.values():
            store.registry = _Meeting(store.registry, barrier)  # type: ignore[misc]
        results = _race(*(partial(operations.train_candidate, config, stores[name], policy_id="m", since=since[name],
                                  until=T0 + 200 * DAY, actor=name) for name in since))  # fmt: skip
        store = stores["early"]
        entry = Registry(store.registry).get("m")
        snapshots = [s.data for s in store.models.newest_first("m")]
        newest_own = snapshots[0] == entry.artifact
        assert snapshots == [entry.artifact], f"{len(snapshots)} snapshots under m, the newest its own: {newest_own}"
        served, learned = load_policy(entry, store.models)
        assert served.version == VWPolicy(entry.args, entry.artifact).version and learned != START
        lost = [r for r in results if isinstance(r, Exception)]
        assert len(lost) == 1 and isinstance(lost[0], InvalidTransition), results
        winner = Registry(store.registry).history("m")[0].actor
        assert str(lost[0]) == (f"a policy 'm' is already registered: {winner} registered it while this registration was "
                                f"being written, and nothing of this one was written")  # fmt: skip


def test_servers_starting_together_on_a_new_store_serve_one_champion(store_url: str, config: BreinConfig) -> None:
    stores = [open_store(store_url) for _ in range(3)]
    try:
        registries = [Registry(store.registry) for store in stores]
        results = _race(*(partial(bootstrap_champion, config, registry) for registry in registries))
        assert not [r for r in results if isinstance(r, Exception)], results
        assert {r.id for r in results} == {config.learner.policy_id}  # type: ignore[attr-defined]
        assert len(registries[0].history()) == 1  # registered once
    finally:
        for store in stores:
            store.close()


@pytest.mark.parametrize(
    ("policy_id", "message"),
    [
        ("champion", "policy_id: 'champion' is a keyword ('champion' names the current champion, 'uniform' and 'do_nothing' "
                     "the built-in policies): choose another id"),
        ("do_nothing", "policy_id: 'do_nothing' is a keyword"),
        ("renew.json", "policy_id: 'renew.json' looks like a file name: choose an id without '.json'"),
        ("model.VW", "policy_id: 'model.VW' looks like a file name: choose an id without '.VW'"),
        ("a b", "policy_id: expected 1-64 letters, digits"),
    ],
)  # fmt: skip
def test_a_new_policy_id_is_refused_when_a_spec_would_read_it_as_something_else(
    registry: Registry, store: Store, config: BreinConfig, policy_id: str, message: str
) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}"):
        operations.register_policy(config, store, policy_id=policy_id, kind="uniform", actor="t")
    assert not registry.has(policy_id)
    tuned = operations.register_policy(config, store, policy_id="tuned-20261207-lr-0.1", kind="uniform", actor="t")
    assert tuned.state == "candidate"


def test_of_two_promotions_judged_against_one_champion_only_the_first_commits(store_url: str) -> None:
    """Each replaces the champion both were judged against: the second finds it replaced and changes nothing
    (it was never compared with the first), whichever process wins the write."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        a, b = Registry(first.registry), Registry(second.registry)
        a.register("champ", "uniform", actor="test", state="champion")
        previous = "champ"
        for i in range(4):
            a.register(f"x{i}", "uniform", actor="test")
            a.register(f"y{i}", "do_nothing", actor="test")
            results = _race(partial(a.make_champion, f"x{i}", replacing=previous, actor="a", reason="race"),
                            partial(b.make_champion, f"y{i}", replacing=previous, actor="b", reason="race"))  # fmt: skip
            outcome = dict(zip((f"x{i}", f"y{i}"), results, strict=True))
            champions = a.in_state("champion")
            assert len(champions) == 1 and champions[0].id in outcome
            winner = champions[0].id
            loser = f"y{i}" if winner == f"x{i}" else f"x{i}"
            assert outcome[winner] == previous
            refused = outcome[loser]
            assert isinstance(refused, ChampionChanged) and (refused.expected, refused.current) == (previous, winner)
            assert str(refused) == (f"the champion changed from {previous} to {winner} since {loser}'s change was decided: "
                                    "nothing was changed")  # fmt: skip
            assert (a.get(previous).state, a.get(loser).state) == ("retired", "candidate")
            assert [e.to_state for e in a.history(loser)] == ["candidate"]
            previous = winner
        promotions = [e for e in a.history() if e.to_state == "champion"]
        retirements = [e for e in a.history() if e.from_state == "champion"]
        assert len(promotions) == 1 + 4 and len(retirements) == 4
    finally:
        first.close()
        second.close()


def test_a_champion_change_judged_against_a_replaced_champion_changes_nothing(registry: Registry, store: Store) -> None:
    registry.register("third", "uniform", actor="test", now=NOW + 2)
    registry.make_champion("third", replacing="champ", actor="t", reason="first")
    before = (registry.list(), registry.history(), _audit(store))
    with pytest.raises(ChampionChanged, match=r"^the champion changed from champ to third since cand's change was decided"):
        registry.make_champion("cand", replacing="champ", actor="t", reason="judged against champ")
    with pytest.raises(ChampionChanged, match=r"^the champion changed from none to third since cand's change"):
        registry.make_champion("cand", replacing=None, actor="t", reason="judged against no champion")
    assert (registry.list(), registry.history(), _audit(store)) == before


def test_the_database_itself_refuses_a_second_champion(store: Store, registry: Registry) -> None:
    with pytest.raises(Conflict):  # a registry write made from a stale read
        store.registry.transition([PolicyEvent("cand", NOW, "t", "candidate", "champion", "x")], []).result()
    assert _states(registry) == {"champ": "champion", "cand": "candidate"}


# --- Transitions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        (lambda r: r.set_state("champ", "retired", actor="t", reason="x"), InvalidTransition,
         r"^champ is the champion: promote another policy or roll back first$"),
        (lambda r: r.set_state("champ", "shadow", actor="t", reason="x"), InvalidTransition,
         r"^champ is the champion: promote another policy or roll back first$"),
        (lambda r: r.set_state("cand", "champion", actor="t", reason="x"), InvalidTransition,
         r"^use promote to make a policy the champion$"),
        (lambda r: r.set_state("cand", "candidate", actor="t", reason="x"), InvalidTransition, r"^cand is a candidate already$"),
        (lambda r: r.set_state("cand", "paused", actor="t", reason="x"), ValueError,
         r"^state: expected one of candidate, shadow, champion, retired, got 'paused'$"),
        (lambda r: r.make_champion("champ", replacing="champ", actor="t", reason="x"), InvalidTransition,
         r"^champ is the champion already$"),
        (lambda r: r.set_state("nope", "shadow", actor="t", reason="x"), UnknownPolicy, r"^no policy 'nope' in the registry$"),
        (lambda r: r.make_champion("nope", replacing="champ", actor="t", reason="x"), UnknownPolicy,
         r"^no policy 'nope' in the registry$"),
        (lambda r: r.get("nope"), UnknownPolicy, r"^no policy 'nope' in the registry$"),
    ],
)  # fmt: skip
def test_refused_transitions_change_nothing(
    registry: Registry, store: Store, change: Callable[[Registry], object], error: type[Exception], message: str
) -> None:
    before = (registry.list(), registry.history(), _audit(store))
    with pytest.raises(error, match=message):
        change(registry)
    assert (registry.list(), registry.history(), _audit(store)) == before


def test_a_candidate_goes_to_shadow_back_to_candidate_and_retires(registry: Registry) -> None:
    registry.set_state("cand", "shadow", actor="bob", reason="watch it", now=NOW + 10)
    assert [e.id for e in registry.in_state("shadow")] == ["cand"]
    registry.set_state("cand", "candidate", actor="bob", reason="enough", now=NOW + 11)
    registry.set_state("cand", "retired", actor="bob", reason="worse", now=NOW + 12)
    with pytest.raises(InvalidTransition, match="^cand is retired already$"):
        registry.set_state("cand", "retired", actor="bob", reason="again")
    assert [(e.from_state, e.to_state, e.reason) for e in registry.history("cand")] == [
        ("", "candidate", "registered"), ("candidate", "shadow", "watch it"), ("shadow", "candidate", "enough"),
        ("candidate", "retired", "worse"),
    ]  # fmt: skip


def test_history_is_append_only_with_who_when_and_why_mirrored_in_the_audit(registry: Registry, store: Store) -> None:
    earlier = registry.history()
    registry.set_state("cand", "shadow", actor="carol", reason="compare live", now=NOW + 20)
    assert registry.make_champion("cand", replacing="champ", actor="dave", reason="passed the gate", now=NOW + 30) == "champ"
    history = registry.history()
    assert history[: len(earlier)] == earlier  # nothing before was changed or removed
    assert history[len(earlier) :] == [
        PolicyEvent("cand", NOW + 20, "carol", "candidate", "shadow", "compare live"),
        PolicyEvent("champ", NOW + 30, "dave", "champion", "retired", "replaced by cand: passed the gate"),
        PolicyEvent("cand", NOW + 30, "dave", "shadow", "champion", "passed the gate"),
    ]
    mirrored = [(e.at, e.actor, "policy", e.policy_id, f"{e.from_state or 'new'} -> {e.to_state}: {e.reason}") for e in history]
    assert _audit(store) == mirrored
    assert [e.to_state for e in registry.history("champ")] == ["champion", "retired"]


def test_promotion_retires_the_champion_and_rollback_restores_it(registry: Registry, store: Store, config: BreinConfig) -> None:
    assert registry.previous_champion() is None
    registry.register("third", "uniform", actor="test", now=NOW + 2)
    assert registry.make_champion("cand", replacing="champ", actor="t", reason="better") == "champ"
    assert _states(registry) == {"champ": "retired", "cand": "champion", "third": "candidate"}
    assert registry.previous_champion() == "champ"
    assert operations.rollback(config, store, actor="ops", reason="complaints are up") == "champ"
    assert _states(registry) == {"champ": "champion", "cand": "retired", "third": "candidate"}
    assert registry.history("champ")[-1].reason == "rollback: complaints are up"
    assert registry.history("cand")[-1].reason == "replaced by champ: rollback: complaints are up"
    # Rolling back again undoes the rollback; a later promotion makes the one it replaced the previous.
    assert registry.previous_champion() == "cand"
    assert registry.make_champion("third", replacing="champ", actor="t", reason="try") == "champ"
    assert operations.rollback(config, store, actor="ops") == "champ"
    assert registry.history("champ")[-1].reason == "rollback"


def test_rollback_refuses_a_previous_champion_that_does_not_load(registry: Registry, store: Store, config: BreinConfig) -> None:
    registry.register("bad", "rules", artifact=b"{not json", actor="test")
    registry.make_champion("bad", replacing="champ", actor="t", reason="x")
    registry.make_champion("cand", replacing="bad", actor="t", reason="y")
    with pytest.raises(PolicyLoadError, match="rules: expected a JSON list"):
        operations.rollback(config, store, actor="ops")
    assert registry.champion().id == "cand"  # type: ignore[union-attr]


# --- Loading ---------------------------------------------------------------------------------------


def test_every_kind_loads_and_a_broken_artifact_is_a_load_error(
    registry: Registry, store: Store, config: BreinConfig
) -> None:
    text = b'[{"action": "sim_only/sms/morning", "when": "touchpoint == \'app\'"}]'
    registry.register("rules", "rules", artifact=text, actor="t")
    registry.register("bad-cel", "rules", artifact=b'[{"action": "sim_only/sms/morning", "when": "touchpoint =="}]', actor="t")
    registry.register("bad-vw", "vw", artifact=b"not a model", args=vw_arguments(config.learner), actor="t")
    assert isinstance(load_policy(registry.get("champ"), store.models)[0], UniformPolicy)
    assert isinstance(load_policy(registry.get("cand"), store.models)[0], DoNothingPolicy)
    rules = load_policy(registry.get("rules"), store.models)[0]
    assert isinstance(rules, RulePolicy) and rules.version == registry.get("rules").artifact_hash[:12]
    with pytest.raises(PolicyLoadError, match=r"^policy bad-cel: rules\[0\]\.when: invalid CEL rule"):
        load_policy(registry.get("bad-cel"), store.models)
    with pytest.raises(PolicyLoadError, match=r"^policy bad-vw: its VW model does not load with --cb_explore_adf"):
        load_policy(registry.get("bad-vw"), store.models)


SIXTEEN = "[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]"
NESTED_EXISTS = "".join(f"{SIXTEEN}.exists(v{i}, " for i in range(5)) + "v0 + v1 + v2 + v3 + v4 < 0" + ")" * 5
"""The audit's rule: 16^5 evaluations of its innermost condition whenever it runs."""


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        (b'[{"action": "sim_only/sms/morning", "when": "1"}]', r"^rules\[0\]\.when: rule '1' must give true or false"),
        (b"[" * 100_000 + b"]" * 100_000, r"^rules: expected a JSON list of .*maximum recursion depth exceeded"),
        (json.dumps([{"action": "sim_only/sms/morning"}] * (MAX_RULES + 1)).encode(),
         r"^rules: 1,001 rules, more than the 1,000 a rule policy may have$"),
        (json.dumps([{"action": "sim_only/sms/morning", "when": "(" * 3000 + "true" + ")" * 3000}]).encode(),
         r"^rules\[0\]\.when: a CEL rule of 6,004 characters, more than the 1,024 allowed$"),
        (json.dumps([{"action": "sim_only/sms/morning", "when": "numeric.x > 1 &&& " * 50 + "true"}]).encode(),
         r"^rules\[0\]\.when: invalid CEL rule 'numeric.x > 1 &&& numeric.x > 1 &&& numeric.x > 1 &&& numeric.x '\.\.\. "
         r"\(904 characters\): ERROR: <input>:1:17: Syntax error: token recognition error at: '& '$"),
        (json.dumps([{"action": "sim_only/sms/morning", "when": NESTED_EXISTS}]).encode(),
         r"^rules\[0\]\.when: rule '\[0,1,.*\(286 characters\) uses the comprehension macro exists\(\), "
         r"whose work its length does not bound$"),
        (json.dumps([{"action": "sim_only/sms/morning", "when": "[" + ",".join(["numeric"] * 100) + "] == []"}]).encode(),
         r"^rules\[0\]\.when: rule '\[numeric,.*\(807 characters\) uses the whole map numeric, not by a key \(numeric\.key, "
         r"numeric\[key\], key in numeric or size\(numeric\)\), whose work its length does not bound$"),
        (json.dumps([{"action": "sim_only/sms/morning", "when": "size([1]" + "+[1]" * 250 + ") < 0"}] * 1000).encode(),
         r"^rules: 1,000 conditions of 1,013,000 characters weigh 1,026,169,000 \(each its length squared\), "
         r"more than the 1,048,576 allowed$"),
    ],
    ids=["not-boolean", "nested-past-the-stack", "too-many-rules", "too-long", "quoted-by-an-excerpt", "unbounded-work",
         "whole-map", "too-heavy"],
)  # fmt: skip
def test_a_rules_file_is_refused_with_what_is_wrong(artifact: bytes, message: str) -> None:
    """A condition that is not true or false never held (the rule never fired); JSON nested past
    Python's stack was a RecursionError traceback; a 100,000-rule shadow made every Decide 127 ms; a
    bad condition of 36,000 characters made a 108 MB message (the parser repeats the source under
    each error it finds); five nested macros in 286 characters made every Decide 1.2 s as a shadow; on a
    request of 1,000 features, 1,000 conditions of 4,096 characters comparing lists of whole maps made it
    113 s, and 1,000 copying the list they build on each +, 42 s."""
    with pytest.raises(BreinError, match=message):
        RulePolicy(parse_rules(artifact), version="v")


def _trained(config: BreinConfig) -> bytes:
    """A model of the config's learner arguments, learned from a few examples."""
    actions = tuple(Catalog(config).actions[:3])
    examples = [LabelledExample("shared |u plan=basic", actions, i % 3, 1 / 3, -1.0) for i in range(30)]
    data, learned = train(vw_arguments(config.learner), None, examples)
    assert data is not None and learned == 30
    return data


def _other_reduction(*args: str) -> bytes:
    """A model VW makes with ``args``, having learned nothing."""
    return Workspace([*args, "--quiet"]).serialize()


@pytest.mark.parametrize(
    ("model", "refusal"),
    [
        (_trained, None),
        (lambda config: _trained(config)[:-10], r"^the file is [\d,]+ bytes, the model in it [\d,]+: cut short or with bytes"),
        (lambda config: _trained(config) + bytes(10), r"^the file is [\d,]+ bytes, the model in it [\d,]+: cut short"),
        (lambda _: _other_reduction(), r"^the file holds a model of no options \(a plain regression\), which these arguments"),
        (lambda _: _other_reduction("--csoaa_ldf", "multiline"), r"^the file holds a model of '--csoaa_ldf multiline', "),
        (lambda _: _other_reduction("--cb_adf"), r"^the file holds a model of '--cb_adf --cb_type mtr .*', which these"),
        (lambda _: _other_reduction("--cb_explore_adf", "--epsilon", "0.3"), r"^the file holds a model of '.*--epsilon 0\.3"),
    ],
    ids=["whole", "cut-short", "bytes-after", "regression", "csoaa", "cb_adf", "other-exploration"],
)  # fmt: skip
def test_a_vw_file_is_refused_unless_it_is_a_whole_model_of_the_arguments(
    config: BreinConfig, model: Callable[[BreinConfig], bytes], refusal: str | None
) -> None:
    """VW loads a file cut short as a smaller model and one of another reduction as an empty
    cb_explore_adf: both were registered and replayed, and served something else than the file."""
    found = vw_refusal(vw_arguments(config.learner), model(config))
    assert found is None if refusal is None else re.search(refusal, found or ""), found


# --- Evaluations and the gate ------------------------------------------------------------------------


SPREAD = {"ess": 900.0, "largest_weight_share": 0.01, "never_taken_share": 0.4}  # the diagnostics of a well-supported policy


def _evaluation(
    candidate: dict[str, Any] | None = None, baseline: dict[str, Any] | None = None, **changes: Any
) -> EvaluationRecord:
    """A stored evaluation whose report holds the two policies' diagnostics (SPREAD unless given) for its estimator,
    judged as the first look at the first candidate against its champion (``Spending``) unless ``spending`` is given."""
    fields: dict[str, Any] = {
        "policy_id": "cand", "against": "champ", "at": NOW - HOUR, "since": NOW - 30 * 24 * HOUR, "until": NOW - 2 * HOUR,
        "decisions": 5000, "estimator": "snips", "lift": 0.8, "lift_lower": 0.3, "lift_upper": 1.3, "ess": 900.0,
        "gate_window": True,
    }  # fmt: skip
    spending = changes.pop("spending", Spending(1))
    fields.update(changes)
    spread = {**SPREAD, "choices": fields["decisions"]}  # every decision offered a choice unless given
    row = {"candidate": {**spread, **(candidate or {})}, "baseline": {**spread, **(baseline or {})}, "difference": fields["lift"]}
    judged = {} if spending is None else {"spending": spending.as_dict()}
    fields.setdefault("report", {**judged, "estimators": {fields["estimator"]: row}})
    return EvaluationRecord(**fields)


def test_evaluations_are_recorded_and_read_newest_first(registry: Registry) -> None:
    older, newer = _evaluation(at=NOW - 2 * HOUR, lift=0.1), _evaluation(at=NOW - HOUR, lift=0.2)
    registry.record_evaluation(older)
    registry.record_evaluation(newer)
    registry.record_evaluation(_evaluation(policy_id="champ"))
    assert registry.evaluations("cand") == [newer, older]
    assert registry.evaluations("nope") == []


def test_the_latest_evaluation_is_the_last_recorded_whatever_the_clock_that_dated_it(registry: Registry) -> None:
    """A host whose clock is 3 days ahead recorded the first; one with a right clock the second."""
    ahead, later = _evaluation(at=NOW + 72 * HOUR, lift_lower=0.3), _evaluation(at=NOW, lift_lower=-0.5)
    registry.record_evaluation(ahead)
    registry.record_evaluation(later)
    assert registry.evaluations("cand") == [later, ahead]


NOT_BEATEN = "cand does not beat champ with confidence: the lower bound of the"
AT_FIRST = " (at 96.96%: its 1st look as the 1st candidate judged against champ)"
"""The level a refusal names: the first look at the first candidate against champ, 1 - 0.05·6/π²."""
GATE = GateConfig(estimator="snips", min_lift=0.0, min_decisions=1000, min_ess=100.0, max_weight_share=0.2, max_age_hours=24.0)
UNRELIABLE = "cand's snips evaluation against champ is unreliable:"


@pytest.mark.parametrize(
    ("evaluation", "gate", "message"),
    [
        (None, GATE, "cand has no evaluation against the champion champ: run `brein policy evaluate cand` first"),
        (_evaluation(gate_window=False), GATE,
         "cand's evaluations are all on windows chosen by hand (`policy evaluate --since/--until`, `policy train "
         "--holdout-until`), which the gate does not take as evidence: run `brein policy evaluate cand` without a window"),
        (_evaluation(against="older"), GATE,
         "cand's latest evaluation is against older, not the champion champ: evaluate it again"),
        (_evaluation(estimator="ips"), GATE, "cand's latest evaluation used ips, not the gate's snips: evaluate it again"),
        (_evaluation(at=NOW - 25 * HOUR), GATE, "cand's evaluation is 25.0 hours old, more than the 24 allowed"),
        (_evaluation(at=NOW - 3 * HOUR), GATE.model_copy(update={"max_age_hours": 2.5}),
         "cand's evaluation is 3.0 hours old, more than the 2.5 allowed"),
        (_evaluation(at=NOW + 72 * HOUR), GATE,
         "cand's evaluation is dated 72.0 hours ahead of this host's clock: the host that recorded it has a wrong clock; "
         "evaluate it again"),
        (_evaluation(at=NOW + CLOCK_TOLERANCE + 1), GATE,
         "cand's evaluation is dated 0.1 hours ahead of this host's clock: the host that recorded it has a wrong clock; "
         "evaluate it again"),
        (_evaluation(decisions=999), GATE,
         "cand was evaluated on 999 decisions, 999 of them with a choice of action, fewer than the 1000 required"),
        # 1,000 decisions with one eligible action each (candidate_actions=["do_nothing"]) count for nothing
        (_evaluation(decisions=1500, candidate={"choices": 500}, baseline={"choices": 500}), GATE,
         "cand was evaluated on 1500 decisions, 500 of them with a choice of action, fewer than the 1000 required"),
        (_evaluation(candidate={"ess": 99.4}), GATE,
         f"{UNRELIABLE} for cand, the effective sample size of the unclipped importance weights is 99.4, below the 100 required"),
        (_evaluation(candidate={"largest_weight_share": 0.25}), GATE,
         f"{UNRELIABLE} for cand, one logged decision holds 25% of the importance weight, more than the 20% allowed"),
        (_evaluation(candidate={"ess": 3.2, "largest_weight_share": 0.56}), GATE,
         f"{UNRELIABLE} for cand, the effective sample size of the unclipped importance weights is 3.2, below the 100 "
         "required; for cand, one logged decision holds 56% of the importance weight, more than the 20% allowed"),
        (_evaluation(baseline={"ess": 40.0}), GATE,
         f"{UNRELIABLE} for champ, the effective sample size of the unclipped importance weights is 40.0, below the 100 "
         "required"),
        (_evaluation(candidate={"largest_weight_share": 0.15}), GATE.model_copy(update={"max_weight_share": 0.1}),
         f"{UNRELIABLE} for cand, one logged decision holds 15% of the importance weight, more than the 10% allowed"),
        (_evaluation(report={"estimators": {"snips": {"difference": 0.8}}}), GATE,
         f"{UNRELIABLE} it holds no diagnostics for cand (it was made before estimates carried them): evaluate it again"),
        (_evaluation(lift_lower=-0.25), GATE,
         f"{NOT_BEATEN} snips lift is -0.250 per decision, not above the required +0{AT_FIRST}"),
        (_evaluation(lift_lower=0.0), GATE,
         f"{NOT_BEATEN} snips lift is +0.000 per decision, not above the required +0{AT_FIRST}"),
        (_evaluation(lift_lower=0.3), GATE.model_copy(update={"min_lift": 0.5}),
         f"{NOT_BEATEN} snips lift is +0.300 per decision, not above the required +0.5{AT_FIRST}"),
        (_evaluation(estimator="dr", lift_lower=-1.0), GATE.model_copy(update={"estimator": "dr"}),
         f"{NOT_BEATEN} dr lift is -1.000 per decision, not above the required +0{AT_FIRST}"),
    ],
    ids=["none", "chosen-window", "other-champion", "other-estimator", "too-old", "too-old-custom", "dated-ahead",
         "just-beyond-the-tolerance", "too-few-decisions", "too-few-with-a-choice", "ess", "dominant-weight", "both-reasons",
         "unreliable-champion", "custom-weight-share", "no-diagnostics", "negative-lift", "lift-at-the-minimum", "below-min-lift",
         "dr-gate"],
)  # fmt: skip
def test_the_gate_refuses_in_one_sentence(evaluation: EvaluationRecord | None, gate: GateConfig, message: str) -> None:
    with pytest.raises(GateRefused) as refused:
        check_gate(gate, [] if evaluation is None else [evaluation], "cand", "champ", NOW)
    assert str(refused.value) == message
    assert "\n" not in message and ". " not in message


@pytest.mark.parametrize(
    "evaluation",
    [
        _evaluation(),
        # every threshold exactly met
        _evaluation(at=NOW - 24 * HOUR, decisions=1000, lift_lower=1e-9, candidate={"ess": 100.0, "largest_weight_share": 0.2},
                    baseline={"ess": 100.0, "largest_weight_share": 0.2}),
        _evaluation(at=NOW + CLOCK_TOLERANCE),  # clocks differ a little
    ],
    ids=["clear", "at-the-thresholds", "ahead-within-the-tolerance"],
)
def test_the_gate_lets_a_candidate_through(evaluation: EvaluationRecord) -> None:
    check_gate(GATE, [evaluation], "cand", "champ", NOW)


def test_a_look_is_a_log_not_judged_before_against_that_champion() -> None:
    """The k-th look's intervals are at 1 - 0.05 / k²; the same log judged again is the same look, and
    neither a chosen window nor an evaluation against another champion is a look."""
    judged = (NOW - 30 * 24 * HOUR, NOW - 2 * HOUR, 5000)  # _evaluation's log
    evaluations = [
        _evaluation(), _evaluation(at=NOW - 2 * HOUR),  # one log judged twice
        _evaluation(until=NOW - 9 * HOUR, decisions=4000),  # the log a week before
        _evaluation(until=NOW, decisions=6000, gate_window=False), _evaluation(against="older", decisions=3000),
    ]
    assert look([], "champ", judged) == 1
    assert look(evaluations, "champ", judged) == 2
    assert look(evaluations, "champ", (NOW - 30 * 24 * HOUR, NOW, 6000)) == 3
    assert [look_alpha(k) for k in (1, 2, 3)] == [0.05, 0.05 / 4, 0.05 / 9]  # of a candidate whose alpha is 0.05
    assert [Spending(1, k).alpha for k in (1, 2, 3)] == [pytest.approx(0.05 * 6 / math.pi**2 / k**2) for k in (1, 2, 3)]


def test_the_gate_takes_the_newest_evaluation_on_its_window_not_a_newer_one_on_a_chosen_window() -> None:
    """An evaluation on a window someone chose (a passing one found by trying many) is no evidence,
    however new: the gate reads the newest one on its own window."""
    refused, chosen = _evaluation(lift_lower=-0.2), _evaluation(at=NOW - 1, lift_lower=0.5, gate_window=False)
    with pytest.raises(GateRefused, match=r"^cand does not beat champ with confidence: .* -0\.200 per decision"):
        check_gate(GATE, [chosen, refused], "cand", "champ", NOW)
    check_gate(GATE, [chosen, _evaluation(at=NOW - 2)], "cand", "champ", NOW)


def test_promote_goes_through_the_gate_and_force_is_recorded(registry: Registry, store: Store, config: BreinConfig) -> None:
    gated = config.model_copy(update={"gate": GATE})
    with pytest.raises(GateRefused, match="^cand has no evaluation"):
        operations.promote(gated, store, "cand", actor="ops")
    with pytest.raises(ValueError, match=r"^--force needs --reason: say why the gate is overridden$"):
        operations.promote(gated, store, "cand", actor="ops", force=True)
    registry.record_evaluation(_evaluation(at=time.time() - HOUR))  # promote's 'now' is the wall clock
    assert operations.promote(gated, store, "cand", actor="ops") == "champ"
    assert registry.history("cand")[-1].reason == "passed the gate"
    with pytest.raises(InvalidTransition, match="^cand is the champion already$"):
        operations.promote(gated, store, "cand", actor="ops", force=True, reason="again")
    assert operations.promote(gated, store, "champ", actor="ops", force=True, reason="incident 42") == "cand"
    last = registry.history("champ")[-1]
    assert (last.actor, last.to_state, last.reason) == ("ops", "champion", "forced: incident 42")


def test_a_promotion_commits_only_while_the_champion_is_the_one_the_gate_judged_against(
    registry: Registry, store: Store, config: BreinConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two promotes at once, both judged against champ: 'other' becomes the champion between cand's gate
    check and its write; cand, never compared with 'other', is refused and nothing of it changes."""
    gated = config.model_copy(update={"gate": GATE})
    registry.register("other", "uniform", actor="test")
    for rank, policy_id in enumerate(("cand", "other"), 1):  # the 1st and the 2nd candidate judged against champ
        registry.record_evaluation(_evaluation(policy_id=policy_id, at=time.time() - HOUR, spending=Spending(rank)))
    real_check = operations.check_gate

    def check_then_other_promoted(gate: GateConfig, evaluation: EvaluationRecord | None, candidate: str, *rest: Any) -> None:
        real_check(gate, evaluation, candidate, *rest)
        if candidate == "cand":
            operations.promote(gated, store, "other", actor="ops-2")

    monkeypatch.setattr(operations, "check_gate", check_then_other_promoted)
    with pytest.raises(GateRefused) as refused:
        operations.promote(gated, store, "cand", actor="ops-1")
    assert str(refused.value) == ("the champion changed from champ to other since cand was checked against it: "
                                  "evaluate cand against other and promote it again")  # fmt: skip
    assert _states(registry) == {"champ": "retired", "cand": "candidate", "other": "champion"}
    assert [e.to_state for e in registry.history("cand")] == ["candidate"]


def test_a_rollback_commits_only_while_the_champion_is_the_one_rolled_back_from(
    registry: Registry, store: Store, config: BreinConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry.register("other", "uniform", actor="test")
    registry.make_champion("cand", replacing="champ", actor="t", reason="better")
    real_load = operations.load_policy

    def load_while_other_is_promoted(entry: Any, models: Any) -> Any:
        if registry.champion().id == "cand":  # type: ignore[union-attr]
            registry.make_champion("other", replacing="cand", actor="ops-2", reason="meanwhile")
        return real_load(entry, models)

    monkeypatch.setattr(operations, "load_policy", load_while_other_is_promoted)
    with pytest.raises(ChampionChanged, match=r"^the champion changed from cand to other since champ's change was decided"):
        operations.rollback(config, store, actor="ops-1", reason="complaints are up")
    assert _states(registry) == {"champ": "retired", "cand": "retired", "other": "champion"}


def test_promote_refuses_a_policy_that_does_not_load_even_when_forced(
    registry: Registry, store: Store, config: BreinConfig
) -> None:
    registry.register("bad", "vw", artifact=b"garbage", args=vw_arguments(config.learner), actor="t")
    with pytest.raises(PolicyLoadError, match="^policy bad: its VW model does not load"):
        operations.promote(config, store, "bad", actor="ops", force=True, reason="trust me")
    assert registry.champion().id == "champ"  # type: ignore[union-attr]
