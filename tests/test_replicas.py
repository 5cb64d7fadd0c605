"""Several replicas on one PostgreSQL store: one customer, one brain. Two Brains, each on a store
instance of its own (as two serving processes have), decide for one customer at the same instant;
the store serialises the customer (its advisory lock and head), so a contact cap holds across them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future

import pytest

from bandit.catalog import DO_NOTHING
from bandit.config import BreinConfig
from brain.core import Brain
from store import Store, open_store
from store.errors import StaleHistory
from tests.conftest import T0, Clock, postgres_store_url
from tests.test_decider import request

SMS = "sim_only/sms/morning"  # at most 1 sms a customer a day (examples/telecom.toml)
REQUESTS = 30


@pytest.fixture
def shared_url(postgres_database: str) -> Iterator[str]:
    with postgres_store_url(postgres_database) as url:
        yield url


@pytest.fixture
def replicas(shared_url: str, config: BreinConfig, clock: Clock) -> Iterator[list[Brain]]:
    stores: list[Store] = [open_store(shared_url) for _ in range(2)]
    yield [Brain(config, store, clock=clock) for store in stores]
    for store in stores:
        store.close()


def test_two_replicas_deciding_for_one_customer_at_once_make_one_contact_within_its_cap(replicas: list[Brain]) -> None:
    barrier = threading.Barrier(len(replicas))
    pending: list[list[Future[None]]] = [[] for _ in replicas]
    records = []

    def decide(i: int) -> None:
        barrier.wait()
        for k in range(REQUESTS):  # each a contact or nothing, until the cap leaves only nothing
            made = replicas[i].decider.decide(request("c1", f"r{i}-{k}", at=T0 + k, candidate_actions=(SMS,)))
            pending[i].append(made.committed)
            records.append(made)

    threads = [threading.Thread(target=decide, args=(i,)) for i in range(len(replicas))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    refused = 0
    for committed in (c for mine in pending for c in mine):
        try:
            committed.result(timeout=30)
        except StaleHistory:  # made again MAX_TRIES times on a history the other replica kept changing
            refused += 1
    logs = replicas[0].store.decisions.customer_logs(["c1"], T0 + REQUESTS, T0 + REQUESTS, 1.0)
    contacts = logs["c1"].at(T0 + REQUESTS).contacts
    assert len(contacts) == 1 and contacts[0].channel == "sms"
    assert replicas[0].store.decisions.decision_count() == 2 * REQUESTS - refused
    assert refused < REQUESTS  # most calls are answered
    committed_contacts = [m.record for m in records if m.committed.exception() is None and m.record.action_id != DO_NOTHING]
    assert len(committed_contacts) == 1  # what the callers were told agrees with the store
