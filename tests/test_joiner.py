"""The joiner on a real store: credit, exactly once, out-of-order and late outcomes, kill -9."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from bandit.config import BreinConfig
from reward.forget import forget_customer
from reward.joiner import Joiner, JoinReport
from store import Store, open_store
from store.records import ActivationRecord, DecisionRecord, ForgetReport, OutcomeRecord
from tests.conftest import EXAMPLE, T0, copy_sqlite_store, sqlite_count, sqlite_files, sqlite_rows

DAY = 86_400.0
CLOSE = (30 + 1) * DAY  # longest window + allowed lateness in the example config


def decision(decision_id: str, customer: str, at: float, action: str = "renewal/email/morning") -> DecisionRecord:
    offer, channel, slot = action.split("/") if "/" in action else (action, "", "")
    return DecisionRecord(
        decision_id=decision_id, request_id=decision_id, customer_id=customer, touchpoint="app", event_time=at, action_id=action,
        offer=offer, channel=channel, slot=slot, send_at=at, probability=0.5, exploratory=False, policy_id="p", model_version="v",
        personalised=True, features={"n": {"touchpoint": "app"}}, eligible=("do_nothing", action), pmf=(0.5, 0.5),
    )  # fmt: skip


def outcome(outcome_id: str, customer: str, at: float, kind: str = "contract_renewal", value: float = 240.0) -> OutcomeRecord:
    return OutcomeRecord(outcome_id, customer, kind, value, at)


def joined(store: Store) -> dict[str, tuple[str, float, dict[str, float]]]:
    rows = sqlite_rows(store, "SELECT decision_id, status, reward, credit FROM joined_examples")
    return {r[0]: (r[1], round(r[2], 9), json.loads(r[3])) for r in rows}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    store = open_store(f"sqlite:///{tmp_path / 'log.db'}")
    yield store
    store.close()


def test_join_credits_rewards_once_and_only_after_the_window_closes(config: BreinConfig, store: Store) -> None:
    # Full credit (the example shares equally): every decision in the window gets the whole outcome.
    joiner = Joiner(config.model_copy(update={"joiner": config.joiner.model_copy(update={"credit": "full"})}), store.joins)
    for record in (decision("a", "c1", T0), decision("b", "c1", T0 + 5 * DAY, "do_nothing"), decision("x", "c2", T0)):
        store.decisions.submit_decisions([record]).result()
    store.decisions.submit_activation(ActivationRecord("a", T0 + 60)).result()
    store.decisions.submit_outcome(outcome("r1", "c1", T0 + 10 * DAY)).result()
    store.decisions.submit_outcome(outcome("k1", "c1", T0 + 11 * DAY, "complaint", -50.0)).result()

    early = joiner.run(until=T0 + 20 * DAY)
    assert early.joined == 0 and early.pending == 3
    report = joiner.run(until=T0 + CLOSE + 5 * DAY + 1)
    assert (report.joined, report.unactivated, report.pending) == (2, 1, 0)
    result = joined(store)
    assert result["a"] == ("joined", round(240.0 - 0.05, 9), {"contract_renewal": 240.0})  # the complaint: past a's 7-day window
    assert result["b"] == ("joined", 190.0, {"contract_renewal": 240.0, "complaint": -50.0})  # do-nothing shares the credit
    assert result["x"] == ("unactivated", 0.0, {})  # an e-mail never sent: kept, counted, not learned from
    again = joiner.run(until=T0 + 100 * DAY)
    assert again.joined == again.unactivated == 0
    assert sqlite_count(store, "joined_examples") == 3
    # Runs that found nothing new (the server runs one every few seconds) leave no row behind.
    assert [r.joined + r.unactivated for r in store.joins.runs()] == [0, 3]


def test_a_horizon_learns_from_a_decision_once_it_has_passed_and_credits_it_only_within_it(
    config: BreinConfig, store: Store
) -> None:
    # The example's renewal window is 30 days; a 10-day horizon closes decisions after 10 days (and
    # a day's lateness) and leaves a renewal on day 15 uncredited: outside every cut window.
    horizon = config.model_copy(update={"joiner": config.joiner.model_copy(update={"horizon_days": 10.0})})
    joiner = Joiner(horizon, store.joins)
    store.decisions.submit_decisions([decision("a", "c1", T0), decision("b", "c2", T0)]).result()
    for decision_id in ("a", "b"):
        store.decisions.submit_activation(ActivationRecord(decision_id, T0)).result()
    store.decisions.submit_outcome(outcome("r1", "c1", T0 + 4 * DAY)).result()
    store.decisions.submit_outcome(outcome("r2", "c2", T0 + 15 * DAY)).result()
    assert joiner.run(until=T0 + 10 * DAY).joined == 0
    report = joiner.run(until=T0 + 11 * DAY + 1)
    assert (report.joined, report.pending) == (2, 0)  # the 30-day window would keep them pending for 20 more days
    result = joined(store)
    assert result["a"] == ("joined", round(240.0 - 0.05, 9), {"contract_renewal": 240.0})
    assert result["b"] == ("joined", -0.05, {})
    # Reported after a was joined: day 6 is inside a's cut window (late), day 20 only inside its 30 days.
    store.decisions.submit_outcome(outcome("r3", "c1", T0 + 6 * DAY)).result()
    store.decisions.submit_outcome(outcome("r4", "c1", T0 + 20 * DAY)).result()
    assert joiner.run(until=T0 + 40 * DAY).late_outcomes == 1
    assert sqlite_rows(store, "SELECT outcome_id, decision_id FROM late_outcomes") == [("r3", "a")]


@pytest.mark.parametrize(("credit", "late", "credited"), [("equal", [("r", "a")], 120.0), ("last_touch", [], 240.0)])
def test_an_outcome_is_late_only_for_a_joined_decision_the_credit_rules_give_it_to(
    config: BreinConfig, store: Store, credit: str, late: list[tuple[str, str]], credited: float
) -> None:
    # A renewal reported after a was joined falls in a's window and in c's, a later contact not
    # joined yet. Shared equally, a's share came too late; to the last touch only, it is c's alone,
    # credited when c is joined: not late for anyone.
    rules = config.joiner.model_copy(update={"horizon_days": 10.0, "credit": credit})
    joiner = Joiner(config.model_copy(update={"joiner": rules}), store.joins)
    store.decisions.submit_decisions([decision("a", "c1", T0), decision("c", "c1", T0 + 5 * DAY)]).result()
    for decision_id, at in (("a", T0), ("c", T0 + 5 * DAY)):
        store.decisions.submit_activation(ActivationRecord(decision_id, at)).result()
    assert joiner.run(until=T0 + 11 * DAY + 1).joined == 1
    store.decisions.submit_outcome(outcome("r", "c1", T0 + 6 * DAY)).result()
    assert joiner.run(until=T0 + 12 * DAY).late_outcomes == len(late)
    assert sqlite_rows(store, "SELECT outcome_id, decision_id FROM late_outcomes") == late
    assert joiner.run(until=T0 + 17 * DAY).joined == 1
    assert joined(store)["c"][2] == {"contract_renewal": credited}


def test_a_decision_is_learned_provisionally_at_each_shorter_window_then_whole(config: BreinConfig, store: Store) -> None:
    # The example's windows: complaints and unsubscribes 7 days, SIM activations 14, renewals 30. A
    # decision gets a provisional example a day after 7 and after 14 days: what the closed types
    # credited it, less its cost, plus the mean of what the open ones credited its action's decisions
    # joined whole (none yet for a; a's for b).
    joiner = Joiner(config, store.joins)
    store.decisions.submit_decisions([decision("a", "c1", T0), decision("b", "c2", T0 + 40 * DAY)]).result()
    for decision_id, at in (("a", T0), ("b", T0 + 40 * DAY)):
        store.decisions.submit_activation(ActivationRecord(decision_id, at)).result()
    complaint = outcome("k1", "c1", T0 + 2 * DAY, "complaint", -50.0)
    for record in (complaint, outcome("s1", "c1", T0 + 10 * DAY, "sim_activation", 80.0), outcome("r1", "c1", T0 + 20 * DAY)):
        store.decisions.submit_outcome(record).result()

    def provisional() -> list[tuple[str, int, str, float]]:
        return sqlite_rows(store, "SELECT decision_id, stage, status, round(reward, 9) FROM provisional_examples ORDER BY 1, 2")

    assert joiner.run(until=T0 + 8 * DAY - 1).provisional == 0
    assert joiner.run(until=T0 + 8 * DAY + 1).provisional == 1
    assert joiner.run(until=T0 + 15 * DAY + 1).provisional == 1
    assert provisional() == [("a", 0, "joined", -50.05), ("a", 1, "joined", 29.95)]
    assert joiner.run(until=T0 + CLOSE + 1).joined == 1
    assert joined(store)["a"] == ("joined", 269.95, {"complaint": -50.0, "sim_activation": 80.0, "contract_renewal": 240.0})
    assert joiner.run(until=T0 + 48 * DAY + 1).provisional == 1
    assert provisional()[-1] == ("b", 0, "joined", round(-0.05 + 320.0, 9))  # a's renewal and SIM activation
    restarted = Joiner(config, store.joins)  # reads the means from the store, writes no stage twice
    assert restarted.run(until=T0 + 55 * DAY + 1).provisional == 1
    assert provisional()[-1] == ("b", 1, "joined", round(-0.05 + 240.0, 9))
    assert len(provisional()) == 4
    progress = [s.staged_until for s in store.joins.stages([7 * DAY, 14 * DAY])]  # where the next joiner starts
    assert progress == [T0 + 55 * DAY + 1 - 8 * DAY, T0 + 55 * DAY + 1 - 15 * DAY]
    off = config.model_copy(update={"joiner": config.joiner.model_copy(update={"provisional": False})})
    store.decisions.submit_decisions([decision("c", "c3", T0 + 60 * DAY)]).result()
    assert Joiner(off, store.joins).run(until=T0 + 75 * DAY).provisional == 0 and len(provisional()) == 4


def test_changed_windows_stage_no_decision_twice_at_one_age(config: BreinConfig, store: Store) -> None:
    # Stages at 7 and 14 days; then complaints get a 3-day window (stages at 3, 7 and 14 days). A
    # decision staged at 7 and 14 days is not staged again (by number, its 14-day stage was the
    # third now); one that comes after is staged at all three.
    store.decisions.submit_decisions([decision("a", "c1", T0), decision("b", "c2", T0 + 16 * DAY)]).result()
    for decision_id, at in (("a", T0), ("b", T0 + 16 * DAY)):
        store.decisions.submit_activation(ActivationRecord(decision_id, at)).result()
    assert Joiner(config, store.joins).run(until=T0 + 15 * DAY + 1).provisional == 2
    outcomes = dict(config.outcomes)
    outcomes["complaint"] = outcomes["complaint"].model_copy(update={"window_days": 3.0})
    changed = Joiner(config.model_copy(update={"outcomes": outcomes}), store.joins)
    assert changed.run(until=T0 + 16 * DAY + 1).provisional == 0
    assert changed.run(until=T0 + 31 * DAY + 1).provisional == 3
    rows = sqlite_rows(store, "SELECT p.decision_id, s.age / 86400 FROM provisional_examples p "
                              "JOIN provisional_stages s ON s.stage = p.stage ORDER BY 1, 2")  # fmt: skip
    assert rows == [("a", 7.0), ("a", 14.0), ("b", 3.0), ("b", 7.0), ("b", 14.0)]


def test_stages_written_before_the_registry_keep_their_meaning(config: BreinConfig, store: Store) -> None:
    # A store staged by a joiner that numbered stages by their order (before stages had keys): its
    # first joiner now registers the config's ages in that order, so nothing is staged again.
    store.decisions.submit_decisions([decision("a", "c1", T0)]).result()
    store.decisions.submit_activation(ActivationRecord("a", T0)).result()
    assert store.joins.closed_count(T0) == 1  # the decision taken into the join queue
    store.joins.write_provisional([("a", 0, "c1", T0, 1, "joined", 1.0), ("a", 1, "c1", T0, 1, "joined", 2.0)]).result()
    assert Joiner(config, store.joins).run(until=T0 + 16 * DAY).provisional == 0
    assert sqlite_rows(store, "SELECT stage, age / 86400 FROM provisional_stages ORDER BY 1") == [(0, 7.0), (1, 14.0)]


def test_out_of_order_duplicate_and_late_outcomes(config: BreinConfig, store: Store) -> None:
    joiner = Joiner(config, store.joins)
    store.decisions.submit_outcome(outcome("r1", "c1", T0 + 3 * DAY)).result()  # the outcome is reported before its decision is logged
    store.decisions.submit_outcome(outcome("r1", "c1", T0 + 3 * DAY)).result()  # and twice
    store.decisions.submit_decisions([decision("a", "c1", T0)]).result()
    store.decisions.submit_activation(ActivationRecord("a", T0)).result()
    joiner.run(until=T0 + CLOSE)
    assert joined(store)["a"][1] == pytest.approx(240.0 - 0.05)
    store.decisions.submit_outcome(outcome("r2", "c1", T0 + 20 * DAY)).result()  # inside a's window, which is final now
    report = joiner.run(until=T0 + CLOSE + DAY)
    assert report.late_outcomes == 1
    assert joined(store)["a"][1] == pytest.approx(240.0 - 0.05)  # never credited twice, never silently dropped
    assert sqlite_rows(store, "SELECT outcome_id, decision_id FROM late_outcomes") == [("r2", "a")]
    assert sqlite_count(store, "outcomes") == 2
    assert joiner.run(until=T0 + CLOSE + 2 * DAY).late_outcomes == 0  # counted once


def test_late_outcomes_of_a_customer_decided_for_over_and_over_mark_only_the_decisions_they_credit(
    config: BreinConfig, store: Store
) -> None:
    # 400 decisions of one customer in ten days, joined; then two renewals arrive, each shared by
    # the latest three decisions before it (max_credited_decisions), and one for a decision the
    # joiner has not closed yet. Late for those three only, whatever the decisions around them.
    rules = config.joiner.model_copy(update={"max_credited_decisions": 3})
    joiner = Joiner(config.model_copy(update={"joiner": rules}), store.joins)
    store.decisions.submit_decisions([decision(f"d{i:03}", "c1", T0 + i * DAY / 40) for i in range(400)]).result()
    store.decisions.submit_activation(ActivationRecord("d399", T0 + 9 * DAY)).result()  # the rest never sent: not credited
    for i in range(0, 399, 2):
        store.decisions.submit_activation(ActivationRecord(f"d{i:03}", T0 + i * DAY / 40)).result()
    assert joiner.run(until=T0 + CLOSE + 10 * DAY).joined == 201
    store.decisions.submit_decisions([decision("new", "c1", T0 + 40 * DAY, "do_nothing")]).result()
    for record in (outcome("r1", "c1", T0 + 5 * DAY), outcome("r2", "c1", T0 + 12 * DAY), outcome("r3", "c1", T0 + 41 * DAY)):
        store.decisions.submit_outcome(record).result()
    assert joiner.run(until=T0 + CLOSE + 11 * DAY).late_outcomes == 2
    marked = sqlite_rows(store, "SELECT outcome_id, decision_id FROM late_outcomes ORDER BY 1, 2")
    assert marked == [("r1", "d194"), ("r1", "d196"), ("r1", "d198"), ("r2", "d396"), ("r2", "d398"), ("r2", "d399")]


def test_a_customer_forgotten_during_a_run_gets_no_example(config: BreinConfig, store: Store) -> None:
    joiner = Joiner(config, store.joins)
    for record in (decision("a", "c1", T0), decision("b", "c2", T0)):
        store.decisions.submit_decisions([record]).result()
    forgotten: list[ForgetReport] = []

    def forget_c1(done: int, total: int) -> None:  # once the examples are computed, before they are written
        if not forgotten:
            forgotten.append(forget_customer(store.privacy, "c1", actor="test", now=T0).result())

    joiner.run(until=T0 + CLOSE, progress=forget_c1)
    assert set(joined(store)) == {"b"}  # not brought back by the write that followed
    assert store.joins.pending_count() == 0


def test_two_runs_at_once_each_report_and_record_what_it_wrote(config: BreinConfig, store_url: str) -> None:
    """Two joiners on one backlog at once (each on a store instance of its own, as two `brein join`
    processes): the second runs whole while the first has computed its examples but written none.
    Each decision is joined once, by the second; the first reports and records that it wrote
    nothing, so the runs' counts add up to the examples in the store."""
    first_store, second_store = open_store(store_url), open_store(store_url)
    try:
        for record in (decision("a", "c1", T0), decision("b", "c2", T0), decision("x", "c3", T0)):
            first_store.decisions.submit_decisions([record]).result()
        for shown in ("a", "b"):  # x, never shown: unactivated
            first_store.decisions.submit_activation(ActivationRecord(shown, T0 + 60)).result()
        meanwhile: list[JoinReport] = []

        def second_run(done: int, total: int) -> None:  # after the first's first customer, before its write
            if not meanwhile:
                meanwhile.append(Joiner(config, second_store.joins).run(until=T0 + CLOSE))

        first = Joiner(config, first_store.joins).run(until=T0 + CLOSE, progress=second_run)
        (second,) = meanwhile
        assert (second.joined, second.unactivated) == (2, 1)
        assert (first.joined, first.unactivated) == (0, 0)
        recorded = {run.run: (run.joined, run.unactivated) for run in first_store.joins.runs()}
        assert recorded == {first.run: (0, 0), second.run: (2, 1)}
        assert first_store.examples.count() == 2 and first_store.joins.pending_count() == 0
    finally:
        first_store.close()
        second_store.close()


def _populate(path: Path | str, customers: int, seed: int = 3) -> float:
    """A log of several decisions and outcomes per customer over 90 days; returns the last event time."""
    rng = random.Random(seed)
    store = open_store(str(path))
    actions = ["renewal/email/morning", "sim_only/sms/evening", "do_nothing", "renewal_discount/app_push/evening"]
    futures: list[Future[Any]] = []
    last = T0
    for c in range(customers):
        for k in range(rng.randint(1, 6)):
            at = T0 + rng.uniform(0, 90) * DAY
            last = max(last, at)
            decision_id = f"d{c}-{k}"
            futures.append(store.decisions.submit_decisions([decision(decision_id, f"c{c}", at, rng.choice(actions))]))
            if rng.random() < 0.8:
                futures.append(store.decisions.submit_activation(ActivationRecord(decision_id, at + 60)))
        for k in range(rng.randint(0, 2)):
            kind, value = rng.choice([("contract_renewal", 240.0), ("sim_activation", 80.0), ("complaint", -50.0)])
            futures.append(store.decisions.submit_outcome(outcome(f"o{c}-{k}", f"c{c}", T0 + rng.uniform(0, 95) * DAY, kind, value)))
    for future in futures:
        future.result()
    store.close()
    return last


JOIN = """
import sys
from bandit.config import load_config
from reward.joiner import Joiner, JoinReport
from store import open_store
store = open_store(sys.argv[2])
Joiner(load_config(sys.argv[1]), store.joins, write_rows=int(sys.argv[3])).run(until=float(sys.argv[4]))
store.close()
"""


def _join_process(path: Path, until: float) -> subprocess.Popen[bytes]:
    """The joiner in a process of its own, writing 500 examples a transaction: many writes for a kill to fall between."""
    return subprocess.Popen([sys.executable, "-c", JOIN, str(EXAMPLE), str(path), "500", str(until)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip


def test_killed_joiner_restarted_gives_the_same_examples_as_an_uninterrupted_run(tmp_path: Path) -> None:
    original = tmp_path / "log.db"
    until = _populate(original, customers=12_000) + 100 * DAY
    killed, whole = tmp_path / "killed.db", tmp_path / "whole.db"
    copy_sqlite_store(original, killed)
    copy_sqlite_store(original, whole)
    started = time.perf_counter()
    assert _join_process(whole, until).wait(timeout=300) == 0
    uninterrupted = time.perf_counter() - started

    rng = random.Random(11)
    partial_counts = []
    for _ in range(40):
        process = _join_process(killed, until)
        time.sleep(rng.uniform(0.3, 0.7) * uninterrupted)  # after start-up, mostly
        if process.poll() is not None:
            assert process.returncode == 0, process.stderr.read() if process.stderr else ""
            break
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        with closing(sqlite_files(killed)) as conn:
            partial_counts.append(conn.execute("SELECT COUNT(*) FROM joined_examples").fetchone()[0])
    else:
        assert _join_process(killed, until).wait(timeout=300) == 0
    with sqlite3.connect(whole) as conn:
        total = conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
    assert any(0 < n < total for n in partial_counts), f"never killed mid-run: {partial_counts}"

    def examples(path: Path) -> list[tuple[object, ...]]:
        with closing(sqlite_files(path)) as conn:
            query = "SELECT decision_id, status, reward, cost, credit, outcomes FROM joined_examples ORDER BY decision_id"
            return conn.execute(query).fetchall()

    expected = examples(whole)
    assert len(expected) == total
    assert examples(killed) == expected
