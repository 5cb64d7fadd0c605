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
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc

from bandit.errors import StoreUnavailable
from serving.metrics import Metrics

T = TypeVar("T")

MAX_MARGIN = 0.05
"""Answer this long (or a fifth of the time left, if less) before the caller's deadline."""


def budget(context: grpc.aio.ServicerContext, wait: float) -> float:
    remaining: float | None = context.time_remaining()
    if remaining is None:
        return wait
    return max(0.0, min(wait, remaining - min(MAX_MARGIN, remaining / 5)))


async def settle(
    futures: Sequence[Future[Any]], context: grpc.aio.ServicerContext, *, wait: float, metrics: Metrics, abandon: Sequence[bool]
) -> list[Any]:
    """Each future's result or exception, in order; futures not durable in time are abandoned (where
    ``abandon`` allows: a replayed decision's future belongs to the request that made it)."""
    waiters = [asyncio.wrap_future(f) for f in futures]
    try:
        if waiters:
            await asyncio.wait(waiters, timeout=budget(context, wait))
    except asyncio.CancelledError:
        for future, may in zip(futures, abandon, strict=True):
            if may and future.cancel():
                metrics.store_abandoned.inc()
        raise
    results: list[Any] = []
    for future, waiter, may in zip(futures, waiters, abandon, strict=True):
        if waiter.done() and not waiter.cancelled():
            error = waiter.exception()
            results.append(waiter.result() if error is None else error)
        elif may and future.cancel():
            metrics.store_abandoned.inc()
            results.append(StoreUnavailable("the store did not commit in time; nothing was written"))
        elif may:
            try:  # the write has begun: its group commit is ending, one way or the other
                results.append(await waiter)
            except Exception as error:
                results.append(error)
        else:
            results.append(StoreUnavailable("the store did not commit in time"))
    return results


async def durable(
    future: Future[T], context: grpc.aio.ServicerContext, *, wait: float, metrics: Metrics, abandon: bool = True
) -> T:
    """The write's result once durable, or StoreUnavailable before the caller's deadline."""
    (result,) = await settle([future], context, wait=wait, metrics=metrics, abandon=[abandon])
    if isinstance(result, BaseException):
        raise result
    return result  # type: ignore[no-any-return]
