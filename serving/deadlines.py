"""Waiting for the store within the caller's deadline.

A write is queued for the store's group commit; the RPC waits for it at most until shortly before
the caller's deadline (or ``limits.store_wait_seconds`` without one). If it has not committed by
then, the write is cancelled — the store's writer never begins a cancelled write — and the caller
gets UNAVAILABLE in time to use its own fallback, with nothing half-written left behind. A write
that has already begun is inside a group commit that ends (commits or fails) within one commit's
time, so that outcome is awaited instead. The same happens when the RPC itself is cancelled.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc

from serving.metrics import Metrics
from store.errors import StoreUnavailable

T = TypeVar("T")

MAX_MARGIN = 0.05
"""Answer this long (or a fifth of the time left, if less) before the caller's deadline."""


class _Waker:
    """Runs callbacks on an event loop for futures done on the store's writer thread, waking the loop
    once for all those done before it gets to run them: a group commit resolves many futures, and
    each wake-up makes the writer give up the GIL and wait to take it back from a busy loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []

    def call_soon(self, callback: Callable[[], None]) -> None:  # any thread
        with self._lock:
            self._callbacks.append(callback)
            if len(self._callbacks) > 1:
                return  # a wake-up is on its way
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:  # the loop's thread
        with self._lock:
            callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Waker] = weakref.WeakKeyDictionary()


def _waker(loop: asyncio.AbstractEventLoop) -> _Waker:
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _Waker(loop)
    return waker


def budget(context: grpc.aio.ServicerContext, wait: float) -> float:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return wait
    return max(0.0, min(wait, remaining - min(MAX_MARGIN, remaining / 5)))


async def settle(
    futures: Sequence[Future[Any]], context: grpc.aio.ServicerContext, *, wait: float, metrics: Metrics, abandon: Sequence[int]
) -> list[Any]:
    """Each future's result or exception, in order; futures not durable in time are abandoned where
    ``abandon`` allows: it counts the caller's own requests each write carries (0 for a replayed
    decision's write, which belongs to the request that made it); abandoned requests are counted."""
    pending = [f for f in futures if not f.done()]
    if pending:
        # One loop future woken when the last write is done or at the deadline: no task, no set, no
        # asyncio future chained to each write.
        loop = asyncio.get_running_loop()
        waker = _waker(loop)
        woken: asyncio.Future[None] = loop.create_future()
        left = [len(pending)]

        def one_done() -> None:  # on the loop's thread
            left[0] -= 1
            if left[0] == 0 and not woken.done():
                woken.set_result(None)

        def expire() -> None:
            if not woken.done():
                woken.set_result(None)

        def wake(_: Future[Any]) -> None:  # on the store's writer thread
            waker.call_soon(one_done)

        for future in pending:
            future.add_done_callback(wake)
        timer = loop.call_later(budget(context, wait), expire)
        try:
            await woken
        except asyncio.CancelledError:
            for future, mine in zip(futures, abandon, strict=True):
                if mine and future.cancel():
                    metrics.store_abandoned.inc(mine)
            raise
        finally:
            timer.cancel()
    results: list[Any] = []
    for future, mine in zip(futures, abandon, strict=True):
        if future.done() and not future.cancelled():
            error = future.exception()
            results.append(future.result() if error is None else error)
        elif mine and future.cancel():
            metrics.not_in_time(mine)
            results.append(StoreUnavailable("the store did not commit in time; nothing was written"))
        elif mine:
            try:  # the write has begun: its group commit is ending, one way or the other
                results.append(await asyncio.wrap_future(future))
            except Exception as error:
                results.append(error)
        else:
            metrics.not_in_time(0)
            results.append(StoreUnavailable("the store did not commit in time"))
    return results


async def durable(
    future: Future[T], context: grpc.aio.ServicerContext, *, wait: float, metrics: Metrics, abandon: bool = True
) -> T:
    """The write's result once durable, or StoreUnavailable before the caller's deadline."""
    (result,) = await settle([future], context, wait=wait, metrics=metrics, abandon=[int(abandon)])
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[no-any-return]


async def finished(future: Future[T]) -> T:
    """The result of ``future``, done on another thread (a decide pool's), with no deadline: the loop
    is woken through the same waker as for the store's commits, so results and commits done
    together cost one wake-up (``run_in_executor`` pays one ``call_soon_threadsafe`` each)."""
    if not future.done():
        loop = asyncio.get_running_loop()
        waker = _waker(loop)
        woken: asyncio.Future[None] = loop.create_future()

        def ready() -> None:  # on the loop's thread
            if not woken.done():
                woken.set_result(None)

        future.add_done_callback(lambda _: waker.call_soon(ready))
        await woken
    return future.result()
