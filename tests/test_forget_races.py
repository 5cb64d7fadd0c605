"""Forget racing decisions: once a Forget is answered, nothing made on the forgotten history is logged.

A decision is made on a history read from the store and logged afterwards. A Forget of its customer
that commits in between deletes that history; the decision (a quiet period after a forgotten
complaint) must then be made again on the history the Forget left, on either backend: through a
DecideBatch chunk decided in slices (SQLite) or in one call (PostgreSQL), a unary Decide, and at the
store itself (a head read before the Forget is stale)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import Future
from typing import Any

import pytest

from bandit.requests import DecisionRequest
from brain.core import Brain
from reward.ingest import OutcomeReport
from serving import converters, servicer
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.servicer import BATCH_SLICE
from store import Store
from store.errors import StaleHistory
from store.opening import is_postgres
from store.records import DecisionRecord
from store.sqlite.forgets import NOTED, Forgets
from tests.conftest import T0, LiveServer, store_rows
from tests.test_store_contract import decision, log, outcome

DAY = 86_400.0
BACKENDS = ["sqlite", "postgres"]


def request(customer: str, request_id: str) -> pb.DecideRequest:
    return pb.DecideRequest(request_id=request_id, customer_id=customer, channel="app", event_time=converters.timestamp(T0),
                            consent=pb.Consent(personalisation=pb.CONSENT_STATE_GRANTED))  # fmt: skip


def complained(brain: Brain, customer: str, *, decided_before: bool) -> None:
    """A customer with a complaint a day before T0 (a quiet period at T0); with ``decided_before``, a
    decision three days before it too (on PostgreSQL: a head, where a customer of outcomes only has none)."""
    if decided_before:
        brain.decide(DecisionRequest(customer, "app", f"{customer}-earlier", T0 - 3 * DAY)).committed.result(timeout=10)
    _, stored = brain.report_outcome(OutcomeReport(f"{customer}-complaint", customer, "complaint", event_time=T0 - DAY))
    stored.result(timeout=10)


def assert_made_on_the_history_the_forget_left(brain: Brain, customer: str, request_id: str, decision_id: str) -> DecisionRecord:
    """The decision logged for ``request_id`` is the one answered, made on no history at all."""
    logged = brain.store.decisions.decisions_by_request([request_id])
    assert list(logged) == [request_id]
    record = logged[request_id]
    assert record.customer_id == customer and record.decision_id == decision_id
    assert "quiet period" not in json.dumps(record.exclusions), record.exclusions  # the forgotten complaint's
    assert "h" not in record.features  # no history: the Forget left none
    return record


def logged_requests(brain: Brain, customer: str) -> list[str]:
    """The request ids of every decision of the customer logged (do-nothing ones too)."""
    return sorted(r for (r,) in store_rows(brain.store, f"SELECT request_id FROM decisions WHERE customer_id = '{customer}'"))


# -- a DecideBatch chunk, on a live server ---------------------------------------------------------


def _pause_the_chunk_after_reading(
    live: LiveServer, customer: str, monkeypatch: pytest.MonkeyPatch
) -> tuple[threading.Event, threading.Event]:
    """(read, go_on): the chunk that decides ``customer`` sets ``read`` once their history is read and
    decided on, and waits for ``go_on`` before it goes on to log. On SQLite the chunk is decided in
    slices on the event loop, which serves other calls between slices: it waits after its first
    slice, letting the loop serve. On PostgreSQL it is decided in one call in the decide pool: that
    call waits after its read, while the loop serves."""
    brain = live.running.brain
    read, go_on = threading.Event(), threading.Event()
    if is_postgres(brain.store.url):
        reads = brain.decider.store.deciding_reads

        def reading(request_ids: Any, customer_ids: Collection[str], *args: Any) -> Any:
            result = reads(request_ids, customer_ids, *args)
            if customer in customer_ids and not read.is_set():
                read.set()
                assert go_on.wait(30)
            return result

        monkeypatch.setattr(brain.decider.store, "deciding_reads", reading)
    else:
        turn = servicer._other_calls_turn

        async def after_a_slice() -> None:
            if not read.is_set():
                read.set()
                while not go_on.is_set():
                    await asyncio.sleep(0.001)
            await turn()

        monkeypatch.setattr(servicer, "_other_calls_turn", after_a_slice)
    return read, go_on


@pytest.mark.parametrize("decided_before", [True, False], ids=["decided-before", "outcomes-only"])
@pytest.mark.parametrize("make_brain", BACKENDS, indirect=True)
def test_a_chunk_decided_across_a_forget_logs_its_customer_decided_on_the_history_the_forget_left(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch, decided_before: bool
) -> None:
    """The audit's finding: Forget(x) answered while a DecideBatch chunk holding x was being decided
    (SQLite: between its slices). The chunk's decision for x, made on x's history from before the
    Forget (a quiet period after the forgotten complaint), was logged after the Forget had answered.
    Now it is made again on the history the Forget left, and that is what the chunk answers."""
    brain = live.running.brain
    complained(brain, "x", decided_before=decided_before)
    read, go_on = _pause_the_chunk_after_reading(live, "x", monkeypatch)
    items = [request("x", "bx")] + [request(f"c{i}", f"b{i}") for i in range(2 * BATCH_SLICE)]
    answers: list[pb.DecideBatchResponse] = []
    chunk = threading.Thread(
        target=lambda: answers.extend(live.stub.DecideBatch(iter([pb.DecideBatchRequest(items=items)]), timeout=60))
    )
    chunk.start()
    try:
        assert read.wait(30)
        forgot = live.stub.Forget(pb.ForgetRequest(customer_id="x"), timeout=30)  # answered while the chunk is being decided
        assert not answers and (forgot.decisions, forgot.outcomes) == (int(decided_before), 1)
    finally:
        go_on.set()
        chunk.join(60)
    (answer,) = answers
    assert all(r.HasField("decision") for r in answer.results) and len(answer.results) == len(items)
    x = answer.results[0].decision
    record = assert_made_on_the_history_the_forget_left(brain, "x", "bx", x.decision_id)
    assert record.action_id == x.action.id
    assert logged_requests(brain, "x") == ["bx"]  # nothing from before the Forget
    explained = live.stub.Explain(pb.ExplainRequest(decision_id=x.decision_id))
    assert "quiet period" not in str(explained)
    assert len(brain.store.decisions.decisions_by_request([f"b{i}" for i in range(2 * BATCH_SLICE)])) == 2 * BATCH_SLICE


# -- a unary Decide --------------------------------------------------------------------------------


def test_a_decide_read_before_a_queued_forget_commits_is_decided_again_after_it(live: LiveServer) -> None:
    """SQLite, as a server interleaves calls: a Forget is queued behind a busy writer; a Decide for the
    same customer reads the history before the Forget commits (reads see committed data only), and its
    write is queued behind the Forget. The Decide answers the decision made again after the Forget."""
    brain = live.running.brain
    complained(brain, "x", decided_before=True)
    engine = brain.store.engine  # type: ignore[attr-defined]
    busy, free = threading.Event(), threading.Event()

    def block(_: Any) -> None:
        busy.set()
        assert free.wait(30)

    engine.submit(block)
    assert busy.wait(10)
    answers: dict[str, Any] = {}
    calls = [
        threading.Thread(
            target=lambda: answers.setdefault("forget", live.stub.Forget(pb.ForgetRequest(customer_id="x"), timeout=30))
        ),
        threading.Thread(target=lambda: answers.setdefault("decide", live.stub.Decide(request("x", "ux"), timeout=30))),
    ]
    try:
        for queued, call in enumerate(calls, start=1):
            call.start()
            _until(lambda queued=queued: engine._queue.qsize() == queued)  # the Forget's deletion, then the Decide's write
    finally:
        free.set()
        for call in calls:
            call.join(30)
    assert answers["forget"].outcomes == 1
    assert_made_on_the_history_the_forget_left(brain, "x", "ux", answers["decide"].decision_id)
    assert logged_requests(brain, "x") == ["ux"]


@pytest.mark.parametrize("decided_before", [True, False], ids=["decided-before", "outcomes-only"])
@pytest.mark.parametrize("make_brain", BACKENDS, indirect=True)
def test_a_decide_whose_forget_commits_between_its_read_and_its_write_is_decided_again(
    brain: Brain, monkeypatch: pytest.MonkeyPatch, decided_before: bool
) -> None:
    """In process, on either backend: the Forget commits (and answers) right after the Decide has
    read the history; the Decide's write comes after it."""
    complained(brain, "x", decided_before=decided_before)
    reads = brain.decider.store.deciding_reads
    forgot: list[Any] = []

    def reading(request_ids: Any, customer_ids: Collection[str], *args: Any) -> Any:
        result = reads(request_ids, customer_ids, *args)
        if not forgot:
            forgot.append(brain.forget("x", actor="ops").result(timeout=10))
        return result

    monkeypatch.setattr(brain.decider.store, "deciding_reads", reading)
    pending = brain.decide(converters.decision_request(request("x", "ux")))
    pending.committed.result(timeout=30)
    assert forgot[0].outcomes == 1
    record = assert_made_on_the_history_the_forget_left(brain, "x", "ux", pending.record.decision_id)
    assert record == pending.record  # the decision answered is the one logged
    assert logged_requests(brain, "x") == ["ux"]


def test_an_ordinary_decide_on_sqlite_waits_on_its_write_alone(brain: Brain) -> None:
    """No second try to pay for (a commit future between them: tens of µs a Decide) unless a Forget
    was called between the read and the write: not after one has committed, of this customer or another."""
    first = brain.decide(converters.decision_request(request("x", "o1")))
    assert type(first.committed) is Future
    first.committed.result(timeout=10)
    brain.forget("x", actor="ops").result(timeout=10)
    brain.forget("y", actor="ops").result(timeout=10)
    again = brain.decide(converters.decision_request(request("x", "o2")))
    assert type(again.committed) is Future
    again.committed.result(timeout=10)


# -- the store: a head read before a Forget is stale -----------------------------------------------


def test_a_write_made_on_heads_read_before_a_forget_is_stale(store: Store) -> None:
    log(store, decision("d1", "c1", T0))
    store.decisions.submit_outcome(outcome("o1", "c2", T0, "complaint", -50.0)).result()  # c2: outcomes only
    before = {c: log_.head for c, log_ in store.decisions.customer_logs(["c1", "c2", "c3"], T0 + 1, T0 + 1, 30.0).items()}
    queued = store.decisions.submit_decisions([decision("d2", "c1", T0 + 1)], {"c1": before["c1"]})  # before the Forget
    for customer in ("c1", "c2"):
        store.privacy.forget(customer, actor="ops", at=T0 + 2).result()
    queued.result()  # logged before the Forget, and deleted by it
    assert store.decisions.decision("d2") is None
    for customer in ("c1", "c2"):
        made = decision(f"late-{customer}", customer, T0 + 1)
        with pytest.raises(StaleHistory):
            store.decisions.submit_decisions([made], {customer: before[customer]}).result()
        assert store.decisions.decision(made.decision_id) is None
    log(store, decision("d3", "c3", T0 + 1))  # another customer's head read then is not stale
    store.decisions.submit_decisions([decision("d4", "c3", T0 + 1)], {"c3": before["c3"]}).result()
    after = store.decisions.customer_logs(["c1"], T0 + 3, T0 + 3, 30.0)["c1"]
    store.decisions.submit_decisions([decision("d5", "c1", T0 + 3)], {"c1": after.head}).result()
    # New decisions after the Forget do not make a head read before it current again (PostgreSQL
    # counted heads afresh from a deleted row: 1 again after one decision; one instance's own writes
    # were not checked against its reads).
    with pytest.raises(StaleHistory):
        store.decisions.submit_decisions([decision("d6", "c1", T0 + 3)], {"c1": before["c1"]}).result()
    assert [c.decision_id for c in store.decisions.customer_logs(["c1"], T0 + 4, T0 + 4, 30.0)["c1"].contacts] == ["d5"]
    assert store.decisions.may_refuse({"c1": before["c1"]}) and store.decisions.may_refuse({"c3": before["c3"]})


def test_forgets_noted_beyond_the_bound_make_older_reads_stale() -> None:
    """The SQLite writer notes the latest NOTED customers forgotten; a write read before the oldest
    Forget it no longer notes is refused (and made again), one read after it is not."""
    forgets = Forgets()
    for i in range(NOTED + 1):
        forgets.call(lambda generation: _done(None)).result()
        forgets.ran(f"c{i}", i + 1)
    assert forgets.visible == NOTED + 1
    assert forgets.refuses({"c0": 0}) and forgets.refuses({"other": 0})  # c0 is no longer noted
    assert not forgets.refuses({"other": 1}) and forgets.refuses({"c1": 1}) and forgets.refuses({"other": 1, "c1": 1})
    assert not forgets.refuses({"c1": NOTED + 1}) and not forgets.may_refuse({"c1": NOTED + 1})
    assert forgets.may_refuse({"c1": NOTED}) and not forgets.may_refuse({"c1": None}) and not forgets.refuses({"c1": None})


def _done(value: Any) -> Future[Any]:
    future: Future[Any] = Future()
    future.set_result(value)
    return future


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)
