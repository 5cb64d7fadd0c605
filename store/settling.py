"""What every backend's writer thread does alike around a group commit: taking the group off its
queue, and telling the callers what became of their writes once it has committed or failed."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import suppress
from typing import Any, TypeVar

from store.errors import StoreError, StoreUnavailable, reason
from store.ports import CommitListener

T = TypeVar("T")
U = TypeVar("U")

Settled = tuple[Future[Any], Any, BaseException | None]
"""A write of a committed group: its future, its result, the error it failed with alone (or None)."""


def next_group(waiting: queue.SimpleQueue[T | None], most: int) -> list[T] | None:
    """The writes queued now, waiting for the first, up to ``most``; None when the end of the queue
    (None, put there at close) comes first. An end found after some writes is put back."""
    item = waiting.get()
    if item is None:
        return None
    group = [item]
    while len(group) < most:
        try:
            more = waiting.get_nowait()
        except queue.Empty:
            break
        if more is None:
            waiting.put(None)
            break
        group.append(more)
    return group


def committed(results: Sequence[Settled], started: float, on_commit: CommitListener | None) -> None:
    """The group committed: each write's result, or the error it failed with alone."""
    if on_commit:
        on_commit(time.perf_counter() - started, len(results), True)
    for future, value, refused in results:
        if refused is None:
            future.set_result(value)
        else:
            future.set_exception(refused)


def failed(
    futures: Iterable[Future[Any]], count: int, error: Exception, started: float, on_commit: CommitListener | None
) -> None:
    """The group could not commit: every write fails with ``error`` when the store raised it on purpose
    (a StoreError), else (the database's) as StoreUnavailable."""
    failure = error if isinstance(error, StoreError) else StoreUnavailable(f"the store could not commit: {reason(error)}")
    if failure is not error:
        failure.__cause__ = error
    if on_commit:  # counted before any caller hears of it, as a success is
        on_commit(time.perf_counter() - started, count, False)
    for future in futures:
        with suppress(InvalidStateError):  # a caller may have cancelled it meanwhile
            future.set_exception(failure)


def chained(first: Future[T], then: Callable[[T], Future[U]]) -> Future[U]:
    """A future for ``then(first's result)``: a write submitted only once ``first`` has committed,
    without a thread waiting between them. ``first``'s failure, or ``then``'s, fails it."""
    outcome: Future[U] = Future()

    def succeeded(done: Future[Any]) -> bool:
        """Whether ``done`` succeeded; if not, ``outcome`` ends as it did."""
        if done.cancelled():
            outcome.cancel()
            return False
        error = done.exception()
        if error is not None:
            outcome.set_exception(error)
        return error is None

    def relay(done: Future[U]) -> None:
        if succeeded(done):
            outcome.set_result(done.result())

    def start(done: Future[T]) -> None:
        if succeeded(done):
            try:
                then(done.result()).add_done_callback(relay)
            except Exception as failure:
                outcome.set_exception(failure)

    first.add_done_callback(start)
    return outcome
