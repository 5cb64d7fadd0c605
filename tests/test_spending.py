"""Alpha spending across the candidates judged against one champion (policies/spending.py): the rule,
the rank a candidate is judged at, read from what every store holds, and the gate's check that the
evidence was judged at its candidate's level."""

from __future__ import annotations

import json
import math
import time
from dataclasses import replace
from typing import Any

import pytest

from bandit.config import BreinConfig
from policies import operations
from policies.estimators import ALPHA, level
from policies.gate import GateRefused, check_gate
from policies.registry import Registry
from policies.spending import (
    TRIAL_ACTION,
    Spending,
    candidate_alpha,
    look_alpha,
    ordinal,
    rank,
    trial_entry,
    trials,
)
from store import Store
from store.records import AuditEntry
from tests.test_registry import GATE, HOUR, NOW, _evaluation

RULES_A = json.dumps([{"action": "do_nothing"}]).encode()
RULES_B = json.dumps([{"action": "data_upsell/app_push/morning"}]).encode()


def test_the_candidates_against_one_champion_share_alpha_and_all_their_looks_keep_the_bound_one_candidate_had() -> None:
    """Σ_i ALPHA_i = ALPHA; over the candidates, their looks and their set-ups, at most ALPHA·π²/6 (8.2%)."""
    alphas = [candidate_alpha(i) for i in range(1, 200_001)]
    assert sum(alphas) == pytest.approx(ALPHA, rel=1e-5) and sum(alphas) <= ALPHA
    assert alphas[:3] == [pytest.approx(0.05 * 6 / math.pi**2 / i**2) for i in (1, 2, 3)]
    family = sum(Spending(i, k, m).alpha * m for i in range(1, 400) for k in range(1, 400) for m in (1, 13)) / 2
    assert family <= ALPHA * math.pi**2 / 6
    assert [level(candidate_alpha(i)) for i in (1, 2, 10)] == ["96.96%", "99.24%", "99.9696%"]
    assert Spending(2, 3, 13).alpha == pytest.approx(candidate_alpha(2) / (13 * 9)) == look_alpha(3, 13, candidate_alpha(2))
    assert look_alpha(1) == ALPHA  # a look that spends nothing (no evidence): 95%
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 102, 111)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "102nd", "111th",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("judged", "key", "expected"),
    [
        ({}, None, 1),  # the first candidate against a new champion
        ({}, "a", 1),
        ({"a": {1}}, None, 2),
        ({"a": {1}}, "a", 1),  # its later looks keep its rank
        ({"a": {1}, "b": {2}, "run:x": {3}}, None, 4),  # a tuning run that registered nothing counts
        ({"a": {1}, "b": {2}}, "b", 2),
        ({"a": {1}, "b": {1}}, "a", 1),  # two first looks at once, one rank: the first by key holds it
        ({"a": {1}, "b": {1}}, "b", 2),  # ... and the other takes the next free one when it looks again
        ({"a": {1}, "b": {1, 2}}, "b", 2),
        ({"a": {1}, "b": {1, 2}}, None, 3),
        ({"a": {1, 2}}, "a", 1),  # a tuning run's model that an earlier candidate's was: it keeps the first
        ({"a": set(), "b": set()}, "a", 2),  # looks recorded before spending: after every candidate judged
        ({"a": set()}, "a", 1),
        ({"a": {1}, "b": {3}}, None, 4),  # a rank skipped: never given again
    ],
)
def test_a_candidate_keeps_its_rank_and_a_new_one_takes_the_next(
    judged: dict[str, set[int]], key: str | None, expected: int
) -> None:
    assert rank(judged, key) == expected


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (Spending(3, 2, 13).as_dict(), Spending(3, 2, 13)),
        ({"rank": 1, "look": 1, "selected_among": 1}, Spending(1)),
        (None, None),
        ({"rank": 1, "look": 1}, None),
        ({"rank": 0, "look": 1, "selected_among": 1}, None),
        ({"rank": "1", "look": 1, "selected_among": 1}, None),
        ([1, 1, 1], None),
    ],
)
def test_a_stored_level_is_read_back_only_as_it_was_written(data: Any, expected: Spending | None) -> None:
    assert Spending.read(data) == expected


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: candidate_alpha(0), "rank: expected an integer >= 1, got 0"),
        (lambda: candidate_alpha(True), "rank: expected an integer >= 1, got True"),
        (lambda: Spending(1, 0), "look: expected an integer >= 1, got 0"),
        (lambda: Spending(1, 1, 2.0), "selected_among: expected an integer >= 1, got 2.0"),  # type: ignore[arg-type]
    ],
)
def test_bad_ranks_and_looks_are_refused(make: Any, message: str) -> None:
    with pytest.raises(ValueError) as refused:
        make()
    assert str(refused.value) == message


def _registered(store: Store) -> Registry:
    """champ (uniform) the champion; a and a-again the same rules file under two ids, b another file."""
    registry = Registry(store.registry)
    registry.register("champ", "uniform", actor="test", state="champion", now=NOW)
    for policy_id, artifact in (("a", RULES_A), ("a-again", RULES_A), ("b", RULES_B)):
        registry.register(policy_id, "rules", artifact=artifact, actor="test", parent="champ", now=NOW + 1)
    return registry


def test_the_candidates_judged_against_a_champion_are_read_from_what_the_store_holds(store: Store) -> None:
    """Every backend: the looks on the gate's window against the champion under any id (one candidate for
    one artifact, whatever its ids), and the tuning runs' trials; neither a window chosen by hand nor a
    look against another champion is a trial against this one."""
    registry = _registered(store)
    a, b = registry.get("a").artifact_hash, registry.get("b").artifact_hash
    assert a == registry.get("a-again").artifact_hash != b
    assert trials(store, "champ") == {} and rank(trials(store, "champ"), a) == 1
    registry.record_evaluation(_evaluation(policy_id="a", spending=Spending(1)))
    registry.record_evaluation(_evaluation(policy_id="a-again", until=NOW - HOUR, spending=Spending(1, 2)))  # a's 2nd look
    registry.record_evaluation(_evaluation(policy_id="b", spending=Spending(2)))
    registry.record_evaluation(_evaluation(policy_id="b", gate_window=False, spending=None))  # chosen by hand: no look
    registry.record_evaluation(_evaluation(policy_id="a", against="older", spending=Spending(5)))  # another question
    run = trial_entry("champ", Spending(3, 1, 13), actor="brein-tuning", at=NOW, verdict="no reliable set-up beats champ")
    store.audit.record(run).result()
    store.audit.record(trial_entry("older", Spending(1), actor="test", at=NOW, verdict="")).result()
    found = trials(store, "champ")
    [run_key] = set(found) - {a, b}
    assert run_key.startswith("run:") and found == {a: {1}, b: {2}, run_key: {3}}
    assert (rank(found, a), rank(found, b), rank(found, None)) == (1, 2, 4)
    assert trials(store, "older") == {a: {5}, json.loads(store.audit.entries(TRIAL_ACTION)[1].detail)["key"]: {1}}
    assert trials(store, "b") == {}  # a new champion: a new question
    detail = json.loads(run.detail)
    assert (run.action, run.subject, detail["rank"], detail["selected_among"], detail["candidate"]) == (
        TRIAL_ACTION, "champ", 3, 13, None,
    )  # fmt: skip
    assert detail["alpha"] == pytest.approx(candidate_alpha(3) / 13)


def test_the_gate_takes_evidence_only_at_the_level_its_candidates_rank_gives_its_look() -> None:
    judged = _evaluation(spending=Spending(2, 3))
    check_gate(GATE, [judged], "cand", "champ", NOW, 2)
    check_gate(GATE, [judged], "cand", "champ", NOW)  # no rank: the level is not checked (a report's reader)
    with pytest.raises(GateRefused) as moved:
        check_gate(GATE, [judged], "cand", "champ", NOW, 3)
    assert str(moved.value) == (
        "cand's evaluation was judged at 99.9156%: its 3rd look as the 2nd candidate judged against champ, and it is the "
        "3rd now (another's first look against champ was recorded at the same time), judged at 99.9625%: evaluate it again"
    )
    with pytest.raises(GateRefused) as shared:  # picked among 10 set-ups, and judged as if alone
        check_gate(GATE, [_evaluation(spending=Spending(2, 3))], "cand", "champ", NOW, 2, selected_among=10)
    assert str(shared.value) == ("cand's evaluation has its intervals at 99.9156%, wider than those of 99.99156%: its 3rd "
                                 "look as the 2nd candidate judged against champ, shared among 10 set-ups: evaluate it again")
    with pytest.raises(GateRefused) as before:
        check_gate(GATE, [_evaluation(spending=None)], "cand", "champ", NOW, 1)
    assert str(before.value) == ("cand's evaluation was made before the gate shared its alpha among the candidates judged "
                                 "against a champion, at a level it does not say: evaluate it again")  # fmt: skip
    wider = _evaluation(spending=Spending(1))
    wider.report["estimators"]["snips"]["candidate"]["alpha"] = ALPHA  # its intervals at 95%, whatever it says
    with pytest.raises(GateRefused, match="^cand's evaluation has its intervals at 95%, wider than those of 96.96%: its 1st"):
        check_gate(GATE, [wider], "cand", "champ", NOW, 1)


def test_promote_refuses_evidence_of_a_rank_its_candidate_does_not_hold_and_the_count_restarts_with_a_new_champion(
    store: Store, config: BreinConfig
) -> None:
    """Every backend. a and b judged at once, both as the 1st candidate against champ: the first by key
    holds the rank, the other is not promoted on that evidence (both would have had the first
    candidate's alpha) until it is judged again, as the 2nd. Against a new champion, the first candidate
    judged is the first again."""
    gated = config.model_copy(update={"gate": GATE})
    registry = _registered(store)
    holder, other = sorted(("a", "b"), key=lambda policy_id: registry.get(policy_id).artifact_hash)
    now = time.time() - HOUR  # promote's 'now' is the wall clock
    for policy_id in ("a", "b"):
        registry.record_evaluation(_evaluation(policy_id=policy_id, at=now))
    with pytest.raises(GateRefused) as refused:
        operations.promote(gated, store, other, actor="ops")
    assert str(refused.value) == (
        f"{other}'s evaluation was judged at 96.96%: its 1st look as the 1st candidate judged against champ, and it is the "
        "2nd now (another's first look against champ was recorded at the same time), judged at 99.24%: evaluate it again"
    )
    registry.record_evaluation(_evaluation(policy_id=other, at=now + 1, spending=Spending(2)))  # judged again, as the 2nd
    assert rank(trials(store, "champ"), registry.get(holder).artifact_hash) == 1
    assert operations.promote(gated, store, other, actor="ops") == "champ"
    assert trials(store, other) == {} and rank(trials(store, other), registry.get(holder).artifact_hash) == 1
    registry.record_evaluation(_evaluation(policy_id=holder, against=other, at=now + 2))  # the 1st against the new champion
    assert operations.promote(gated, store, holder, actor="ops") == other


def test_an_audit_entry_of_a_trial_round_trips(store: Store) -> None:
    row = trial_entry("champ", Spending(4, 1, 3), actor="cli:ann", at=NOW, verdict="v", candidate="t", artifact_hash="abc")
    store.audit.record(row).result()
    [back] = store.audit.entries(TRIAL_ACTION)
    assert back == row and isinstance(back, AuditEntry)
    assert trials(store, "champ") == {"abc": {4}}
    assert replace(row, detail="{}") != back
