"""The decider's striped locks: calls about other keys go on, calls about one key wait."""

from __future__ import annotations

import threading

from bandit.keyed_locks import KeyedLocks


def _held_meanwhile(locks: KeyedLocks, first: list[str], second: list[str]) -> bool:
    """Whether ``second``'s stripes can be taken while another thread holds ``first``'s."""
    holding, done = threading.Event(), threading.Event()

    def hold() -> None:
        with locks.holding(first):
            holding.set()
            done.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(5)
    got = threading.Event()

    def take() -> None:
        with locks.holding(second):
            got.set()

    taker = threading.Thread(target=take)
    taker.start()
    meanwhile = got.wait(0.3)
    done.set()
    holder.join(5)
    taker.join(5)
    return meanwhile


def test_other_keys_are_not_held_up_and_a_shared_key_is() -> None:
    locks = KeyedLocks(stripes=4096)
    assert _held_meanwhile(locks, ["customer-1"], ["customer-2"])
    assert not _held_meanwhile(KeyedLocks(stripes=4096), ["customer-1", "request-9"], ["request-9"])


def test_two_holders_taking_overlapping_keys_in_any_order_do_not_deadlock() -> None:
    locks = KeyedLocks(stripes=8)
    keys = [f"k{i}" for i in range(8)]
    rounds = 500

    def run(order: list[str]) -> None:
        for _ in range(rounds):
            with locks.holding(order):
                pass

    threads = [threading.Thread(target=run, args=(keys,)), threading.Thread(target=run, args=(keys[::-1],))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
