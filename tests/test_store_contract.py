"""What every store promises, through its ports only: each test runs on every backend (the ``store``
and ``store_url`` fixtures in tests/conftest.py; a new backend is one more parameter there).

Idempotency, outcome order, exactly-once join writes, learning order, snapshots, registry
transitions and their conflicts, audit, Forget, retention, the worker lease, and closing."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import pytest

from store import Store, open_store
from store.errors import Conflict, StoreUnavailable
from store.records import (
    DAY,
    HISTORY_CONTACTS,
    LEFTOVERS_ACTION,
    START,
    ActivationRecord,
    AuditEntry,
    ClosingCustomer,
    Contact,
    CustomerHistory,
    DecisionRecord,
    EvaluationRecord,
    JoinedExample,
    JoinRun,
    Leftovers,
    ModelSnapshot,
    OutcomeFacts,
    OutcomeRecord,
    PolicyEntry,
    PolicyEvent,
    StoredStage,
    WrittenExamples,
    decision_id_for,
)
from tests.conftest import T0

EMAIL = "renewal/email/morning"


def decision(decision_id: str, customer: str, at: float, action: str = EMAIL, **changes: Any) -> DecisionRecord:
    offer, channel, slot = action.split("/") if "/" in action else (action, "", "")
    record = DecisionRecord(
        decision_id=decision_id, request_id=f"r-{decision_id}", customer_id=customer, touchpoint="app", event_time=at,
        action_id=action, offer=offer, channel=channel, slot=slot, send_at=at, probability=0.5, exploratory=False, policy_id="p",
        model_version="v", personalised=True, features={"n": {"touchpoint": "app", "hour": "9"}, "u": {"tenure_months": 12.0}},
        eligible=("do_nothing", action), pmf=(0.5, 0.5), exclusions={"offers": {"sim_only": "rule"}},
        contact_consent={"sms": "denied"}, shadow={"cand": (0.25, 0.75)}, shared_line="shared |n touchpoint=app",
        received_at=at + 1,
    )  # fmt: skip
    return replace(record, **changes)


def log(store: Store, *records: DecisionRecord) -> None:
    store.decisions.submit_decisions(records).result()


def outcome(
    outcome_id: str, customer: str, at: float, kind: str = "contract_renewal", value: float = 240.0, **changes: Any
) -> OutcomeRecord:
    return replace(OutcomeRecord(outcome_id, customer, kind, value, at, received_at=at + 5), **changes)


def example(decision_id: str, customer: str, at: float, run: int, horizon: int, reward: float = 1.0) -> JoinedExample:
    return (decision_id, customer, at, run, "joined", reward, 0.05, {"contract_renewal": reward}, ("o1",), horizon)


# -- the decision log --------------------------------------------------------------------------------


def test_decisions_read_back_as_logged_and_a_logged_id_is_refused(store: Store) -> None:
    first, second = decision("d1", "c1", T0), decision("d2", "c1", T0 + 60, "do_nothing", send_at=None)
    log(store, first, second)
    assert store.decisions.decision("d1") == first and store.decisions.decision("d2") == second
    assert store.decisions.decision("nope") is None
    assert store.decisions.decision_count() == 2 and store.joins.pending_count() == 2  # queued for the joiner in the same write
    for again in (decision("d1", "c9", T0), decision("d3", "c1", T0, request_id="r-d2")):
        with pytest.raises(Conflict):
            log(store, decision("d4", "c1", T0), again)  # all or none
    assert store.decisions.decision("d4") is None and store.decisions.decision_count() == 2


def test_decisions_by_request_finds_the_logged_ones(store: Store) -> None:
    log(store, *(decision(f"d{i}", "c", float(i)) for i in range(520)))
    wanted = [f"r-d{i}" for i in range(0, 520, 2)] + ["r-unknown"]
    found = store.decisions.decisions_by_request(wanted)
    assert set(found) == set(wanted) - {"r-unknown"}
    assert found["r-d4"] == store.decisions.decision("d4")
    assert store.decisions.decisions_by_request([]) == {}


def derived(request_id: str, customer: str, at: float) -> DecisionRecord:
    """A decision as the Decider makes it: its id follows from its request id."""
    return decision(decision_id_for(request_id), customer, at, request_id=request_id)


@pytest.mark.parametrize("together", [False, True])
def test_a_request_id_gives_one_decision_whatever_the_ids_of_its_decisions(store: Store, together: bool) -> None:
    """Decision ids that follow from the request id (the Decider's) and ids of their own (a
    record's) against each other, in either order, in one write or two, and found by request id."""
    kept = [derived("q1", "c1", T0), decision("own-1", "c1", T0, request_id="q2")]
    log(store, *kept)
    refused = (decision("own-2", "c2", T0, request_id="q1"), derived("q2", "c2", T0), decision("own-3", "c", T0, request_id="q2"))
    for again in refused:
        with pytest.raises(Conflict):
            if together:
                log(store, decision("d-ok", "c3", T0), again)
            else:
                log(store, again)
    for first, second in ((derived("q3", "c4", T0), decision("own-4", "c4", T0, request_id="q3")),
                          (decision("own-5", "c5", T0, request_id="q4"), derived("q4", "c5", T0))):  # fmt: skip
        with pytest.raises(Conflict):
            log(store, first, second)  # one write: all or none
    assert store.decisions.decision_count() == 2
    assert store.decisions.decisions_by_request(["q1", "q2", "q3", "q4"]) == {"q1": kept[0], "q2": kept[1]}
    logged, _ = store.decisions.deciding_reads(["q1", "q2", "q3"], ["c1"], T0, T0, 7.0)
    assert logged == {"q1": kept[0], "q2": kept[1]}


def test_features_before_reads_the_newest_decisions_raw_features(store: Store) -> None:
    """What a new lineage learns its numeric encoding from: every decision's customer and raw features, joined or not."""
    log(store, *(decision(f"d{i}", f"c{i}", T0 + i, features={"u": {"tenure_months": float(i)}}) for i in range(10)))
    assert store.decisions.features_before(None, 3) == [(f"c{i}", {"u": {"tenure_months": float(i)}}) for i in (9, 8, 7)]
    before = [(f"c{i}", {"u": {"tenure_months": float(i)}}) for i in range(4, -1, -1)]
    assert store.decisions.features_before(T0 + 5, 100) == before
    assert store.decisions.features_before(T0, 100) == []


def _reference_history(
    decisions: list[DecisionRecord], outcomes: list[OutcomeRecord], customer: str, now: float, days: float
) -> CustomerHistory:
    """What a customer's history as of ``now`` is, from what was logged (looking back ``days``, and
    as far ahead for contacts logged out of event-time order; outcomes from ``now`` on)."""
    mine = sorted((d for d in decisions if d.customer_id == customer and d.action_id != "do_nothing"), key=lambda d: d.event_time)
    before = [d for d in mine if d.event_time < now]
    contacts = tuple(Contact(d.decision_id, d.event_time, d.channel, d.offer) for d in before if d.event_time >= now - days * DAY)
    until = now + days * DAY
    later = tuple(Contact(d.decision_id, d.event_time, d.channel, d.offer) for d in mine if now <= d.event_time < until)
    last_outcome: dict[str, float] = {}
    next_outcome: dict[str, float] = {}
    for o in outcomes:
        if o.customer_id == customer and o.event_time < now:
            last_outcome[o.type] = max(o.event_time, last_outcome.get(o.type, o.event_time))
        elif o.customer_id == customer:
            next_outcome[o.type] = min(o.event_time, next_outcome.get(o.type, o.event_time))
    return CustomerHistory(contacts, before[-1].event_time if before else None, last_outcome, later, next_outcome)


def test_customer_logs_give_each_history_as_of_any_time_in_their_span(store: Store) -> None:
    rng = random.Random(5)
    customers = [f"c{i}" for i in range(12)]
    actions = ["do_nothing", EMAIL, "sim_only/sms/evening"]
    decisions = [decision(f"d{i}", rng.choice(customers), rng.uniform(0, 90) * DAY, rng.choice(actions)) for i in range(600)]
    outcomes = [outcome(f"o{i}", rng.choice(customers), rng.uniform(0, 90) * DAY, rng.choice(["complaint", "contract_renewal"]))
                for i in range(80)]  # fmt: skip
    futures = [store.decisions.submit_decisions([d]) for d in decisions] + [store.decisions.submit_outcome(o) for o in outcomes]
    for future in futures:
        future.result()
    for days in (7.0, 45.0):
        for _ in range(20):
            first = rng.uniform(20, 80) * DAY
            last = first + rng.choice([0.0, 1.0, rng.uniform(0, 10) * DAY])
            wanted = rng.sample(customers + ["nobody"], 5)
            logs = store.decisions.customer_logs(wanted, first, last, days)
            assert set(logs) == set(wanted)
            for customer in wanted:
                for now in (first, last, rng.uniform(first, last)):
                    assert logs[customer].at(now) == _reference_history(decisions, outcomes, customer, now, days)


def test_customer_logs_hold_what_was_logged_after_the_decisions_time(store: Store) -> None:
    """Decisions and outcomes logged out of event-time order: a history as of an earlier time holds
    them apart from its contacts (the contact policy counts them, features do not)."""
    log(store, decision("late", "c1", T0 + 2 * DAY), decision("far", "c1", T0 + 40 * DAY))
    log(store, decision("skip", "c1", T0 + DAY, "do_nothing"))
    store.decisions.submit_outcome(outcome("o1", "c1", T0 + 3 * DAY, "complaint")).result()
    store.decisions.submit_outcome(outcome("o2", "c1", T0 + 50 * DAY, "complaint")).result()
    history = store.decisions.customer_logs(["c1"], T0, T0, 30.0)["c1"].at(T0)
    assert history.contacts == () and history.last_contact is None and history.last_outcome == {}
    assert [c.decision_id for c in history.later] == ["late"]  # "far" is beyond the 30 days looked at
    assert history.next_outcome == {"complaint": T0 + 3 * DAY}
    assert history.contacts_before(T0 + 7 * DAY) == 1 and history.contacts_before(T0 + DAY) == 0


def test_a_customers_log_holds_its_latest_contacts_only(store: Store) -> None:
    # A customer decided for in a loop: its log is read with the latest HISTORY_CONTACTS contacts of
    # the span, do-nothing decisions not counted among them; another customer's log in the same
    # read is whole.
    flood = [decision(f"f{i}", "loop", T0 + i * 60, EMAIL if i % 2 else "do_nothing") for i in range(2 * HISTORY_CONTACTS + 10)]
    for start in range(0, len(flood), 500):
        log(store, *flood[start : start + 500])
    log(store, decision("other", "c1", T0))
    now = T0 + len(flood) * 60
    for customers in (["loop"], ["loop", "c1"]):
        logs = store.decisions.customer_logs(customers, now, now, 30.0)
        contacts = [c.decision_id for c in logs["loop"].at(now).contacts]
        assert contacts == [d.decision_id for d in flood if d.action_id != "do_nothing"][-HISTORY_CONTACTS:]
    assert [c.decision_id for c in logs["c1"].at(now).contacts] == ["other"]


def test_a_customers_log_holds_the_first_outcome_of_each_type_after_its_span(store: Store) -> None:
    # Outcomes reported ahead of a Decide's time (or a replay's whole future) are not read: a history
    # as of a time in the span needs only the first of each type after it.
    ahead = [outcome(f"a{i}", "c1", T0 + DAY + i, "complaint" if i % 2 else "contract_renewal") for i in range(400)]
    for future in [store.decisions.submit_outcome(o) for o in [*ahead, outcome("in", "c1", T0 + 60, "complaint")]]:
        future.result()
    log = store.decisions.customer_logs(["c1"], T0, T0 + 60, 30.0)["c1"]
    assert sorted(log.outcomes) == [("complaint", T0 + 60), ("complaint", T0 + DAY + 1), ("contract_renewal", T0 + DAY)]
    assert log.at(T0).next_outcome == {"complaint": T0 + 60, "contract_renewal": T0 + DAY}


def test_deciding_reads_are_the_request_ids_and_the_customers_logs_together(store: Store) -> None:
    log(store, *(decision(f"d{i}", f"c{i % 3}", T0 + i * DAY) for i in range(9)))
    store.decisions.submit_outcome(outcome("o1", "c1", T0 + 4.5 * DAY, "complaint")).result()
    for request_ids, customers in [((), ["c1"]), (["r-d4"], ["c1"]), (["r-d2", "r-none", "r-d7"], ["c0", "c2", "nobody"])]:
        logged, logs = store.decisions.deciding_reads(request_ids, customers, T0 + 3 * DAY, T0 + 5 * DAY, 7.0)
        assert logged == store.decisions.decisions_by_request(request_ids)
        assert logs == store.decisions.customer_logs(customers, T0 + 3 * DAY, T0 + 5 * DAY, 7.0)
    assert set(store.decisions.deciding_reads(["r-d2", "r-none", "r-d7"], ["c0"], T0, T0, 7.0)[0]) == {"r-d2", "r-d7"}


# -- idempotency by what the client sent -------------------------------------------------------------

SENT = OutcomeRecord("o1", "c1", "contract_renewal", 240.0, T0, "d1", received_at=T0 + 1, value_sent=False, event_time_sent=False)


@pytest.mark.parametrize(("again", "duplicate"), [
    (replace(SENT, received_at=T0 + 2, event_time=T0 + 1), True),  # the server's clock moved: the same client content
    (replace(SENT, value=100.0), True),  # a default value the config changed meanwhile is not what the client sent
    (replace(SENT, event_time=T0 + 1, event_time_sent=True), False),  # now the client sent a time
    (replace(SENT, value_sent=True), False),  # now the client sent the value
    (replace(SENT, decision_id="d2"), False),
    (replace(SENT, customer_id="c2"), False),
    (replace(SENT, type="complaint"), False),
])  # fmt: skip
def test_a_repeated_outcome_is_a_duplicate_when_the_client_sent_the_same(
    store: Store, again: OutcomeRecord, duplicate: bool
) -> None:
    assert store.decisions.submit_outcome(SENT).result() is False
    if duplicate:
        assert store.decisions.submit_outcome(again).result() is True
    else:
        with pytest.raises(Conflict, match="outcome_id 'o1' was already recorded with different content"):
            store.decisions.submit_outcome(again).result()
    assert store.joins.outcome_horizon() == 1  # stored once


def test_a_sent_value_and_time_must_match_exactly(store: Store) -> None:
    sent = replace(SENT, value_sent=True, event_time_sent=True)
    assert store.decisions.submit_outcome(sent).result() is False
    assert store.decisions.submit_outcome(replace(sent, received_at=T0 + 9)).result() is True
    for other in (replace(sent, value=240.5), replace(sent, event_time=T0 + 0.5)):
        with pytest.raises(Conflict):
            store.decisions.submit_outcome(other).result()


def test_the_first_activation_is_kept_and_a_repeat_is_a_duplicate(store: Store) -> None:
    log(store, decision("d1", "c1", T0))
    assert store.decisions.submit_activation(ActivationRecord("d1", T0 + 60, T0 + 61)).result() is False
    assert store.decisions.submit_activation(ActivationRecord("d1", T0 + 120, T0 + 121)).result() is True
    [closing] = store.joins.closing(T0, T0, 0)
    assert [d[5] for d in closing.closed] == [T0 + 60]


# -- outcome order and the joiner's state ------------------------------------------------------------


def test_outcomes_get_a_sequence_that_is_never_reused(store: Store) -> None:
    assert store.joins.outcome_horizon() == 0 and store.joins.watermark() is None
    for i, customer in enumerate(["c1", "c2", "c3"]):
        store.decisions.submit_outcome(outcome(f"o{i}", customer, T0 + i)).result()
    assert store.joins.outcome_horizon() == 3 and store.joins.watermark() == T0 + 2
    store.privacy.forget("c3", actor="test", at=T0).result()  # the newest outcome goes
    store.decisions.submit_outcome(outcome("o9", "c4", T0)).result()
    assert store.joins.outcome_horizon() > 3  # a horizon recorded as 3 never covers an outcome that came later
    log(store, decision("d4", "c4", T0))
    assert [c.outcomes for c in store.joins.closing(T0, T0, 3)] == [[]]
    assert [c.outcomes for c in store.joins.closing(T0, T0, store.joins.outcome_horizon())] == [
        [OutcomeFacts("o9", "contract_renewal", 240.0, T0, "")]]  # fmt: skip


def test_closing_customers_come_with_their_facts(store: Store) -> None:
    log(store, decision("a2", "c1", T0 + 20), decision("a1", "c1", T0 + 10), decision("b1", "c2", T0 + 5, "do_nothing"),
        decision("a3", "c1", T0 + 500), decision("z1", "c3", T0 + 1))  # fmt: skip
    store.decisions.submit_activation(ActivationRecord("a1", T0 + 11)).result()
    store.decisions.submit_activation(ActivationRecord("a3", T0 + 501)).result()
    for record in (outcome("o2", "c1", T0 + 30), outcome("o1", "c1", T0 + 30), outcome("o3", "c2", T0 + 6, "complaint", -50.0)):
        store.decisions.submit_outcome(record).result()
    assert store.joins.closed_count(T0 + 100) == 4
    closing = list(store.joins.closing(T0 + 100, T0 + 1000, store.joins.outcome_horizon()))
    assert closing == [
        ClosingCustomer("c1",
                        [("a1", T0 + 10, "renewal", "email", EMAIL, T0 + 11), ("a2", T0 + 20, "renewal", "email", EMAIL, None)],
                        [("a3", T0 + 500, "renewal", "email", EMAIL, T0 + 501)],  # not closing, up to the watermark
                        [OutcomeFacts(o, "contract_renewal", 240.0, T0 + 30, "") for o in ("o1", "o2")]),
        ClosingCustomer("c2", [("b1", T0 + 5, "do_nothing", "", "do_nothing", None)], [],
                        [OutcomeFacts("o3", "complaint", -50.0, T0 + 6, "")]),
        ClosingCustomer("c3", [("z1", T0 + 1, "renewal", "email", EMAIL, None)], [], []),
    ]  # by customer, then time and id  # fmt: skip
    assert [c.others for c in store.joins.closing(T0 + 100, T0 + 400, 1)] == [[], [], []]  # a3 is past that watermark
    first = next(store.joins.closing(T0 + 100, T0 + 1000, 1))
    assert first.outcomes == [OutcomeFacts("o2", "contract_renewal", 240.0, T0 + 30, "")]
    assert store.joins.closed_count(T0 + 5) == 2
    assert [c.customer_id for c in store.joins.closing(T0 + 5, T0 + 5, 1)] == ["c2", "c3"]


def test_run_numbers_come_from_the_store_and_examples_are_written_exactly_once(store: Store) -> None:
    log(store, *(decision(f"d{i}", f"c{i % 3}", T0 + i) for i in range(6)))
    store.decisions.submit_outcome(outcome("o1", "c0", T0 + 10)).result()
    horizon = store.joins.outcome_horizon()
    first = store.joins.start_run(T0 + 100, T0 + 50, horizon).result()
    second = store.joins.start_run(T0 + 100, T0 + 50, horizon).result()
    assert second > first >= 1  # a run that never finished still holds its number
    examples = [example(f"d{i}", f"c{i % 3}", T0 + i, second, horizon) for i in range(4)]
    assert store.joins.write_examples(examples[:2]).result() == WrittenExamples(2, 0)
    # A restarted run writes the first two again: ignored, and not counted as written.
    assert store.joins.write_examples(examples).result() == WrittenExamples(2, 0)
    store.privacy.forget("c2", actor="test", at=T0).result()  # d2 and d5 go while the run computes
    assert store.joins.write_examples([example("d5", "c2", T0 + 5, second, horizon)]).result() == (0, 0)  # not brought back
    assert store.joins.pending_count() == 1  # d4
    rows = store.examples.logged(START, 100)
    assert [r.decision_id for r in rows] == ["d0", "d1", "d3"]
    assert store.joins.start_run(T0, T0, horizon).result() > second


def test_late_outcomes_are_found_recorded_once_and_runs_read_back(store: Store) -> None:
    log(store, decision("d1", "c1", T0), decision("d2", "c2", T0))
    store.decisions.submit_outcome(outcome("early", "c1", T0 + DAY)).result()
    horizon = store.joins.outcome_horizon()
    run = store.joins.start_run(T0 + 40 * DAY, T0 + 9 * DAY, horizon).result()
    store.joins.write_examples([example("d1", "c1", T0, run, horizon), example("d2", "c2", T0, run, horizon)]).result()
    assert store.joins.runs() == [JoinRun(run, T0 + 40 * DAY, T0 + 9 * DAY, horizon)]
    store.joins.finish_run(JoinRun(run, T0 + 40 * DAY, T0 + 9 * DAY, horizon, 2, 0, 0, late_checked=horizon), []).result()
    assert store.joins.late_checked() == horizon
    log(store, decision("d3", "c1", T0 + DAY, action="do_nothing"))  # not joined
    store.decisions.submit_activation(ActivationRecord("d3", T0 + DAY + 60)).result()
    for record in (
        outcome("late", "c1", T0 + 2 * DAY),
        outcome("outside", "c1", T0 + 9 * DAY),
        outcome("other", "c2", T0 + 3 * DAY, "complaint", -5),
    ):
        store.decisions.submit_outcome(record).result()
    now = store.joins.outcome_horizon()
    # Each customer with its new outcomes and every decision in the window before them, joined or not.
    c1, c2 = store.joins.late_candidates(horizon, now, 7 * DAY)
    assert [(c.customer_id, [o.outcome_id for o, _ in c.outcomes]) for c in (c1, c2)] == [
        ("c1", ["late", "outside"]), ("c2", ["other"])]
    assert c1.outcomes[0][0] == OutcomeFacts("late", "contract_renewal", 240.0, T0 + 2 * DAY, "")
    assert horizon < c1.outcomes[0][1] < c1.outcomes[1][1] <= now  # their seqs
    assert c1.decisions == [
        ("d1", T0, "renewal", "email", EMAIL, None), ("d3", T0 + DAY, "do_nothing", "", "do_nothing", T0 + DAY + 60)]
    assert (c1.joined, c2.joined) == ({"d1": horizon}, {"d2": horizon})
    assert store.joins.late_candidates(horizon, now, 1 * DAY) == []  # no decision joined in a day before any of them
    assert store.joins.late_candidates(0, horizon, 7 * DAY) == []  # "early" came before d1 was joined
    assert store.joins.late_candidates(horizon, now - 3, 7 * DAY) == []  # only outcomes after ``after``, up to the horizon
    later = store.joins.start_run(T0 + 41 * DAY, T0 + 10 * DAY, now).result()
    finished = JoinRun(later, T0 + 41 * DAY, T0 + 10 * DAY, now, 0, 0, 1, late_checked=now)
    store.joins.finish_run(finished, [("late", "d1"), ("late", "d1")]).result()
    runs = store.joins.runs()
    assert [replace(r, finished_at=None) for r in runs[1:]] == [finished] and runs[1].finished_at is not None
    assert store.joins.late_checked() == now


# -- joined examples in learning order ---------------------------------------------------------------


def test_joined_examples_read_in_learning_order_from_a_cursor(store: Store) -> None:
    lines = [f"shared |n i={i}" if i % 3 else "" for i in range(20)]  # every third logged without its line
    records = [decision(f"d{i:02d}", f"c{i % 4}", T0 + (i % 5), shared_line=line) for i, line in enumerate(lines)]
    records = [replace(r, probability=1.0, eligible=(EMAIL,), pmf=(1.0,)) if i % 4 == 0 else r for i, r in enumerate(records)]
    log(store, *records)
    rows: list[JoinedExample] = [
        (r.decision_id, r.customer_id, r.event_time, 1 + i // 10, "unactivated" if i == 7 else "joined", float(i), 0.0,
         {"contract_renewal": float(i)}, (f"o{i}",), 0)
        for i, r in enumerate(records)
    ]  # fmt: skip
    store.joins.write_examples(rows).result()
    order = sorted((r for r in rows if r[4] == "joined"), key=lambda r: (r[3], r[2], r[0]))  # run, event time, decision id
    learned = store.examples.learning(START, 100)
    assert [r.position for r in learned] == [(r[3], r[2], r[0]) for r in order]
    first = learned[0]
    source = store.decisions.decision(first.decision_id)
    assert source is not None
    assert (first.reward, first.eligible, first.action_id, first.probability, first.shared_line) == (
        order[0][5], source.eligible, source.action_id, source.probability, source.shared_line)  # fmt: skip
    for row in learned:  # the raw features as stored JSON, and the model that decided
        logged_decision = store.decisions.decision(row.decision_id)
        assert logged_decision is not None
        assert json.loads(row.features_json) == logged_decision.features
        assert (row.policy_id, row.model_version) == (logged_decision.policy_id, logged_decision.model_version)
    paged, position = [], START
    while page := store.examples.learning(position, 4):
        paged += page
        position = page[-1].position
    assert paged == learned
    logged = store.examples.logged(START, 100)
    assert [r.position for r in logged] == [r.position for r in learned]
    assert (logged[0].credit, logged[0].pmf, logged[0].shadow) == ({"contract_renewal": order[0][5]}, source.pmf, source.shadow)
    assert (logged[0].policy_id, logged[0].model_version) == (source.policy_id, source.model_version)
    window = store.examples.logged(START, 100, since=T0 + 1, until=T0 + 3)
    assert [r.decision_id for r in window] == [r[0] for r in order if T0 + 1 <= r[2] < T0 + 3]
    assert store.examples.count() == 19 and store.examples.count(since=T0 + 1, until=T0 + 3) == len(window)
    assert store.examples.count(after=learned[9].position) == 9
    # Those with a choice of action (logged probability below 1), what the gate counts: not d00, d04, ... (nor d07, unactivated).
    assert store.examples.count(choices=True) == 19 - 5
    assert store.examples.count(since=T0 + 1, until=T0 + 3, choices=True) == len([r for r in window if r.probability < 1])


def test_provisional_examples_are_staged_exactly_once_and_learned_in_order_with_the_joined(store: Store) -> None:
    log(store, decision("a", "c1", T0), decision("b", "c2", T0 + 10), decision("c", "c3", T0 + 20), decision("z", "c1", T0 + 500))
    assert [s.key for s in store.joins.stages([7 * DAY, 14 * DAY])] == [0, 1]
    staged = [c.customer_id for c in store.joins.staging(0, -float("inf"), T0 + 10, T0 + 1000, 0)]
    assert staged == ["c1", "c2"] and [c.customer_id for c in store.joins.staging(0, T0, T0 + 10, T0 + 1000, 0)] == ["c2"]
    first = next(store.joins.staging(0, -float("inf"), T0 + 10, T0 + 1000, 0))
    assert [d[0] for d in first.closed] == ["a"] and [d[0] for d in first.others] == ["z"]  # since < time <= cutoff closes
    store.joins.write_provisional([("a", 0, "c1", T0, 1, "joined", 5.0), ("b", 0, "c2", T0 + 10, 1, "unactivated", 0.0)]).result()
    store.joins.write_provisional([("a", 0, "c1", T0, 2, "joined", 99.0), ("a", 1, "c1", T0, 2, "joined", 7.0)]).result()
    assert list(store.joins.staging(0, -float("inf"), T0 + 20, T0 + 1000, 0)) == [
        ClosingCustomer("c3", [("c", T0 + 20, "renewal", "email", EMAIL, None)], [], [])]  # each stage once  # fmt: skip
    store.joins.write_examples([example("b", "c2", T0 + 10, 2, 0)]).result()
    store.joins.write_provisional([("b", 1, "c2", T0 + 10, 3, "joined", 1.0)]).result()  # joined whole: out of the queue
    store.privacy.forget("c3", actor="test", at=T0).result()
    store.joins.write_provisional([("c", 0, "c3", T0 + 20, 3, "joined", 1.0)]).result()  # forgotten: not brought back
    learned = store.examples.learning(START, 10)
    assert [(r.position, r.reward) for r in learned] == [((1, T0, "a#0"), 5.0), ((2, T0, "a#1"), 7.0), ((2, T0 + 10, "b"), 1.0)]
    assert [r.position for r in store.examples.learning(learned[0].position, 10)] == [p.position for p in learned[1:]]
    assert learned[0].action_id == EMAIL and [r.decision_id for r in store.examples.logged(START, 10)] == ["b"]
    assert store.joins.recent_credit(10) == [(EMAIL, {"contract_renewal": 1.0})]
    store.privacy.forget("c1", actor="test", at=T0).result()
    assert store.examples.learning(START, 10) == learned[2:]


def test_a_stage_keeps_its_key_by_age_and_no_decision_is_staged_at_an_age_it_has_passed(store: Store) -> None:
    # Windows changed between two joiners: a shorter window added, one taken away. The ages seen
    # before keep their keys and progress; a decision staged at 14 days is not staged at 3 or 7 days afterwards.
    never = -float("inf")
    assert store.joins.stages([7 * DAY, 14 * DAY]) == [StoredStage(0, never), StoredStage(1, never)]
    store.joins.write_provisional([], staged=(1, T0 + 5)).result()
    store.joins.write_provisional([], staged=(1, T0 + 4)).result()  # progress never goes back
    assert store.joins.stages([3 * DAY, 14 * DAY]) == [StoredStage(2, never), StoredStage(1, T0 + 5)]
    assert [s.key for s in store.joins.stages([14 * DAY, 3 * DAY, 7 * DAY])] == [1, 2, 0]
    log(store, decision("a", "c1", T0), decision("b", "c2", T0 + 10))

    def staged() -> dict[int, list[str]]:
        return {key: [c.customer_id for c in store.joins.staging(key, -float("inf"), T0 + 10, T0 + 1000, 0)] for key in (0, 1, 2)}

    assert staged() == {0: ["c1", "c2"], 1: ["c1", "c2"], 2: ["c1", "c2"]}
    store.joins.write_provisional([("a", 1, "c1", T0, 1, "joined", 5.0), ("b", 2, "c2", T0 + 10, 1, "joined", 5.0)]).result()
    assert staged() == {0: ["c2"], 1: ["c2"], 2: []}


# -- model snapshots ---------------------------------------------------------------------------------


def test_snapshots_newest_first_and_a_stored_version_is_kept(store: Store) -> None:
    assert store.models.newest_version("p") is None and list(store.models.newest_first("p")) == []
    older = ModelSnapshot("v1", ["--cb_explore_adf"], b"one", "p", (1, T0, "d1"))
    newer = ModelSnapshot("v2", ["--cb_explore_adf"], b"two", "p", (2, T0 + 5, "d9"))
    store.models.save(older).result()
    store.models.save(newer).result()
    store.models.save(ModelSnapshot("x1", [], b"other", "q")).result()
    store.models.save(replace(older, data=b"changed")).result()  # a version is stored once per policy
    assert store.models.get("p", "v1") == older and store.models.get("p", "nope") is None
    assert store.models.get("q", "v1") is None
    assert store.models.newest_version("p") == "v2"
    assert list(store.models.newest_first("p")) == [newer, older]


def test_snapshots_are_keyed_by_policy_and_version_and_keep_their_encoding(store: Store) -> None:
    """Two policies whose models have the same bytes (the same version) each keep their own snapshot,
    with its own lineage's encoding; a snapshot without one reads back as None (``auto``)."""
    edges = {"kind": "quantile", "resolutions": [4, 16], "fields": {"tenure": [[3.0, 12.0], [1.0, 2.5, 3.0]]}, "unseen": ["x"]}
    first = ModelSnapshot("same", ["--cb_explore_adf"], b"bytes", "a", (1, T0, "d1"), edges)
    second = ModelSnapshot("same", ["--cb_explore_adf", "--epsilon", "0.1"], b"bytes", "b", (2, T0, "d2"))
    store.models.save(first).result()
    store.models.save(second).result()
    assert store.models.get("a", "same") == first and store.models.get("b", "same") == second
    assert store.models.get("b", "same").encoding is None  # type: ignore[union-attr]
    assert [s.encoding for s in store.models.newest_first("a")] == [edges]
    assert store.models.newest_version("b") == "same"


# -- the policy registry -----------------------------------------------------------------------------


def entry(policy_id: str, state: Any = "candidate", created: float = T0) -> PolicyEntry:
    return PolicyEntry(
        policy_id, "uniform", None, f"hash-{policy_id}", ["--quiet"], {"non_personal": ["region"]}, "", created, state, "n"
    )


def event(policy_id: str, from_state: str, to_state: str, at: float = T0) -> PolicyEvent:
    return PolicyEvent(policy_id, at, "tester", from_state, to_state, "why")


def mirrored(*events: PolicyEvent) -> list[AuditEntry]:
    return [AuditEntry(e.at, e.actor, "policy", e.policy_id, f"{e.from_state} -> {e.to_state}") for e in events]


def test_the_registry_stores_policies_events_evaluations_and_mirrors_the_audit(store: Store) -> None:
    registry = store.registry
    registry.register(
        entry("champ", "champion"), event("champ", "", "champion"), mirrored(event("champ", "", "champion"))
    ).result()
    registry.register(entry("b", created=T0 + 2), event("b", "", "candidate"), []).result()
    registry.register(entry("a", created=T0 + 2), event("a", "", "candidate"), []).result()
    assert [e.id for e in registry.policies()] == ["champ", "a", "b"]  # by creation, then id
    assert registry.policy("a") == entry("a", created=T0 + 2) and registry.policy("nope") is None
    assert registry.champion() == entry("champ", "champion")
    shadowed = event("a", "candidate", "shadow", T0 + 5)
    registry.transition([shadowed], mirrored(shadowed)).result()
    assert [e.id for e in registry.policies("shadow")] == ["a"]
    assert registry.events("a") == [event("a", "", "candidate"), shadowed]
    assert [e.policy_id for e in registry.events()] == ["champ", "b", "a", "a"]
    assert store.audit.entries("policy") == mirrored(event("champ", "", "champion"), shadowed)
    evaluation = EvaluationRecord("a", "champ", T0, T0 - DAY, T0, 1000, "snips", 0.5, 0.1, 0.9, 250.0, {"nan": float("nan")})
    registry.record_evaluation(evaluation).result()
    registry.record_evaluation(replace(evaluation, at=T0 + 1, lift=0.7, report={"interval": [float("-inf"), 1.0]})).result()
    found = registry.evaluations("a")
    assert [e.lift for e in found] == [0.7, 0.5] and found[0].report == {"interval": [float("-inf"), 1.0]}  # newest first
    assert found[1].report["nan"] != found[1].report["nan"]  # NaN kept as NaN
    assert registry.evaluations("b") == []


def test_the_registry_keeps_a_trained_policys_end_of_training_and_which_evaluations_are_on_the_gates_window(
    store: Store,
) -> None:
    """What the promotion gate fixes its window from (PolicyEntry.trained_until) and reads back
    (EvaluationRecord.gate_window); an entry and an evaluation without them read back as None and False."""
    registry = store.registry
    trained = replace(entry("vw-30", created=T0 + 1), kind="vw", trained_until=T0 + 30 * DAY)
    registry.register(entry("rules"), event("rules", "", "candidate"), []).result()
    registry.register(trained, event("vw-30", "", "candidate"), []).result()
    assert registry.policy("vw-30") == trained and registry.policy("rules") == entry("rules")
    assert registry.policy("rules").trained_until is None  # type: ignore[union-attr]
    chosen = EvaluationRecord("vw-30", "champ", T0, T0, T0 + 30 * DAY, 1500, "snips", 2.0, 1.0, 3.0, 250.0, {})
    held_out = replace(chosen, at=T0 - 1, since=T0 + 30 * DAY, until=T0 + 60 * DAY, gate_window=True)
    registry.record_evaluation(held_out).result()
    registry.record_evaluation(chosen).result()
    assert registry.evaluations("vw-30") == [chosen, held_out] and not chosen.gate_window


def test_registry_writes_are_compare_and_set(store: Store) -> None:
    registry = store.registry
    registry.register(entry("champ", "champion"), event("champ", "", "champion"), []).result()
    registry.register(entry("cand"), event("cand", "", "candidate"), []).result()
    before = (registry.policies(), registry.events(), store.audit.entries())
    refused = [
        lambda: registry.register(entry("cand"), event("cand", "", "candidate"), []),  # the id is taken
        lambda: registry.register(entry("other", "champion"), event("other", "", "champion"), []),  # a second champion
        lambda: registry.transition([event("cand", "shadow", "retired")], []),  # cand is not a shadow
        lambda: registry.transition([event("nope", "candidate", "shadow")], []),  # unknown
        lambda: registry.transition([event("cand", "candidate", "champion")], []),  # the champion would stay: two
        # all or none: the first change would apply, the second cannot
        lambda: registry.transition([event("champ", "champion", "retired"), event("cand", "retired", "champion")], []),
    ]  # fmt: skip
    for write in refused:
        with pytest.raises(Conflict):
            write().result()
    assert (registry.policies(), registry.events(), store.audit.entries()) == before
    promote = [event("champ", "champion", "retired"), event("cand", "candidate", "champion")]
    registry.transition(promote, mirrored(*promote)).result()
    assert registry.champion() == replace(entry("cand"), state="champion")
    with pytest.raises(Conflict):  # a second promotion made from the same read: the champion moved meanwhile
        registry.transition(promote, []).result()


def test_a_registration_and_its_snapshot_are_one_write_that_takes_the_id_clean(store: Store) -> None:
    """The entry's row claims the id in the write that stores its first snapshot and evidence: a second
    registration of the id writes nothing, its snapshot neither. What that write finds under the id with
    no entry (a killed registration's snapshots and evaluations) it removes, with an audit entry."""
    registry = store.registry
    evaluation = EvaluationRecord("m1", "champ", T0, T0 - DAY, T0, 1000, "snips", 0.5, 0.1, 0.9, 250.0, {})
    registry.record_evaluation(evaluation).result()
    store.models.save(ModelSnapshot("old-1", ["--cb_explore_adf"], b"killed", "m1")).result()
    store.models.save(ModelSnapshot("old-2", ["--cb_explore_adf"], b"killed again", "m1")).result()
    store.models.save(ModelSnapshot("x", ["--cb_explore_adf"], b"another id's", "m2")).result()
    first = ModelSnapshot("v1", ["--cb_explore_adf"], b"first", "m1", (3, T0, "d3"))
    removed = registry.register(entry("m1"), event("m1", "", "candidate"), mirrored(event("m1", "", "candidate")),
                                [replace(evaluation, lift=0.7)], first).result()  # fmt: skip
    assert removed == Leftovers(1, ("old-1", "old-2")) and removed.detail() == (
        "removed 1 evaluation(s) and 2 model snapshot(s) (old-1, old-2) of no registered policy (left by an interrupted "
        "registration) before registering the id"
    )
    assert list(store.models.newest_first("m1")) == [first] and [e.lift for e in registry.evaluations("m1")] == [0.7]
    assert store.models.get("m2", "x") is not None  # another id's is not touched
    assert store.audit.entries(LEFTOVERS_ACTION) == [AuditEntry(T0, "tester", LEFTOVERS_ACTION, "m1", removed.detail())]
    before = (registry.policies(), registry.events(), store.audit.entries(), list(store.models.newest_first("m1")))
    second = ModelSnapshot("v2", ["--cb_explore_adf"], b"second", "m1")
    with pytest.raises(Conflict):
        registry.register(entry("m1"), event("m1", "", "candidate"), [], [evaluation], second).result()
    assert (registry.policies(), registry.events(), store.audit.entries(), list(store.models.newest_first("m1"))) == before
    assert [e.lift for e in registry.evaluations("m1")] == [0.7]
    assert not registry.register(entry("m3"), event("m3", "", "candidate"), []).result()  # nothing found, nothing audited
    assert len(store.audit.entries(LEFTOVERS_ACTION)) == 1


# -- audit and privacy -------------------------------------------------------------------------------


def test_the_audit_trail_is_append_only_in_order(store: Store) -> None:
    entries = [AuditEntry(T0 + i, f"actor{i}", "explain" if i % 2 else "forget", f"s{i}", f"detail {i}") for i in range(5)]
    for audit_entry in entries:
        store.audit.record(audit_entry).result()
    assert store.audit.entries() == entries
    assert store.audit.entries("explain") == entries[1::2]
    assert store.audit.entries("nothing") == []


def test_forget_deletes_everything_of_one_customer_with_its_audit_entry_in_one_write(store: Store) -> None:
    log(store, decision("a1", "c1", T0), decision("a2", "c1", T0 + 1), decision("b1", "c2", T0))
    for record in (ActivationRecord("a1", T0 + 1), ActivationRecord("b1", T0 + 1)):
        store.decisions.submit_activation(record).result()
    store.decisions.submit_outcome(outcome("o1", "c1", T0 + 2)).result()
    store.decisions.submit_outcome(outcome("o2", "c2", T0 + 2)).result()
    store.joins.write_examples([example("a1", "c1", T0, 1, 2), example("b1", "c2", T0, 1, 2)]).result()
    report = store.privacy.forget("c1", actor="ops", at=T0 + 9).result()
    assert (report.decisions, report.outcomes, report.activations, report.joined_examples) == (2, 1, 1, 1)
    assert store.audit.entries() == [AuditEntry(T0 + 9, "ops", "forget", "c1", report.detail())]
    assert report.detail() == "deleted 2 decisions, 1 outcomes, 1 activations, 1 joined examples"
    assert store.decisions.decision("a1") is None and store.decisions.decision("b1") is not None
    assert store.decisions.customer_logs(["c1"], T0 + 10, T0 + 10, 30.0)["c1"].at(T0 + 10) == CustomerHistory()
    assert store.joins.pending_count() == 0  # a2 left the queue with it; a1 and b1 were joined
    assert [r.decision_id for r in store.examples.logged(START, 10)] == ["b1"]
    again = store.privacy.forget("c1", actor="ops", at=T0 + 10).result()
    assert (again.decisions, again.outcomes, again.activations, again.joined_examples) == (0, 0, 0, 0)


def test_retention_deletes_the_oldest_in_small_batches(store: Store) -> None:
    log(store, *(decision(f"d{i}", f"c{i % 3}", T0 + i) for i in range(10)))
    for i in range(10):
        store.decisions.submit_activation(ActivationRecord(f"d{i}", T0 + i)).result()
        store.decisions.submit_outcome(outcome(f"o{i}", f"c{i % 3}", T0 + i)).result()
    store.joins.write_examples([example("d0", "c0", T0, 1, 0), example("d5", "c2", T0 + 5, 1, 0)]).result()
    store.joins.write_provisional([("d1", 0, "c1", T0 + 1, 1, "joined", 1.0)]).result()
    first = store.privacy.delete_decisions_before(T0 + 7, 4).result()
    assert (first.decisions, first.activations, first.joined_examples) == (4, 4, 1)  # d0-d3, the oldest
    assert [r.decision_id for r in store.examples.learning(START, 10)] == ["d5"]  # d1's provisional example went with it
    rest = store.privacy.delete_decisions_before(T0 + 7, 4).result()
    assert (rest.decisions, rest.activations, rest.joined_examples) == (3, 3, 1)
    assert store.privacy.delete_decisions_before(T0 + 7, 4).result().decisions == 0
    assert store.decisions.decision_count() == 3 and store.joins.pending_count() == 3  # d7-d9 stay, still queued
    assert [store.privacy.delete_outcomes_before(T0 + 7, 5).result() for _ in range(3)] == [5, 2, 0]
    outcomes = {c.customer_id: c.outcomes for c in store.joins.closing(T0 + 100, T0 + 100, store.joins.outcome_horizon())}
    assert outcomes["c1"] == [OutcomeFacts("o7", "contract_renewal", 240.0, T0 + 7, "")]


# -- the worker lease ---------------------------------------------------------------------------------


def test_two_stores_cannot_both_hold_the_worker_lease(store_url: str) -> None:
    first, second = open_store(store_url), open_store(store_url)
    try:
        assert first.lease.try_acquire() and first.lease.try_acquire()  # held, and still held
        assert not second.lease.try_acquire()
        first.lease.release()
        assert second.lease.try_acquire() and not first.lease.try_acquire()
        second.close()  # closing lets it go too
        assert first.lease.try_acquire()
    finally:
        first.close()
        second.close()


def test_concurrent_takers_get_one_lease(store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(6)]
    barrier = threading.Barrier(len(stores))
    held: list[bool] = [False] * len(stores)

    def take(i: int) -> None:
        barrier.wait()
        held[i] = stores[i].lease.try_acquire()

    threads = [threading.Thread(target=take, args=(i,)) for i in range(len(stores))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    try:
        assert sum(held) == 1
    finally:
        for opened in stores:
            opened.close()


HOLD = """
import sys, time
from store import open_store
store = open_store(sys.argv[1])
assert store.lease.try_acquire()
print("held", flush=True)
time.sleep(60)
"""


def test_a_holder_that_dies_loses_the_lease(store_url: str) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, store_url], stdout=subprocess.PIPE, text=True)
    store = open_store(store_url)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not store.lease.try_acquire()
        holder.kill()  # SIGKILL: nothing of it runs to let go
        holder.wait(timeout=10)
        deadline = time.monotonic() + 5  # PostgreSQL lets go once the server sees the connection closed: soon, not at once
        while not store.lease.try_acquire():
            assert time.monotonic() < deadline, "the dead holder's lease was not let go within 5 s"
            time.sleep(0.01)
    finally:
        holder.kill()
        store.close()


def test_writes_after_close_fail_as_unavailable(store: Store) -> None:
    store.close()
    for write in (
        lambda: store.decisions.submit_decisions([decision("d", "c", T0)]),
        lambda: store.audit.record(AuditEntry(T0, "a", "b", "c", "d")),
        lambda: store.registry.register(entry("p"), event("p", "", "candidate"), [], [], ModelSnapshot("v", [], b"m", "p")),
    ):
        with pytest.raises(StoreUnavailable):
            write().result()
