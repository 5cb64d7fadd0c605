"""The server's health follows its store: a failure of the store's background threads (store/threads.py)
is counted and makes the server NOT_SERVING, and so does a read or a write that could not reach the
store (StoreUnavailable: a Decide's read, the follow loop's), so that load balancers send its work
elsewhere. The store's next successful commit makes it SERVING again (a thread that failed runs again
by itself); after an unreachable store, so does its next successful read (the follow loop reads it
every server.follow_seconds, also while no calls come)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeAlias

from grpc_health.v1 import health, health_pb2

from serving.metrics import Metrics
from store.errors import StoreUnavailable

Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType
log = logging.getLogger("brein.server")


class ThreadHealth:
    """Give ``failed`` and ``on_commit`` to the server's store (open_store), ``unavailable`` and
    ``read`` to what reads it, then ``bind`` the running server's health service."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._thread_failed = False
        """A store thread failed: cleared by a commit only (a read does not show the writer works)."""
        self._unreachable = False
        """The store could not be reached: cleared by a read or a commit."""
        self._health: health.aio.HealthServicer | None = None
        self._services: Sequence[str] = ()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, servicer: health.aio.HealthServicer, services: Sequence[str], loop: asyncio.AbstractEventLoop) -> None:
        self._health, self._services, self._loop = servicer, services, loop

    def failed(self, thread: str, error: BaseException) -> None:
        """On the failed thread: count it and report NOT_SERVING until the store commits again."""
        self.metrics.background_failures.labels(thread).inc()
        self._thread_failed = True
        log.error("the server reports NOT_SERVING until its store commits again (%s failed)", thread)
        self._report(health_pb2.HealthCheckResponse.NOT_SERVING)

    def unavailable(self, error: StoreUnavailable) -> None:
        """A call or the follow loop could not reach the store: brein_store_up 0, and NOT_SERVING
        until the store is read or commits again (said once, however many calls fail meanwhile)."""
        self.metrics.store_up.set(0)
        if not self._unreachable:
            self._unreachable = True
            log.error("the server reports NOT_SERVING until its store is read or commits again: %s", error)
            self._report(health_pb2.HealthCheckResponse.NOT_SERVING)

    def read(self) -> None:
        """The store was read: SERVING again if only an unreachable store had made it NOT_SERVING."""
        if self._unreachable:
            self._unreachable = False
            self.metrics.store_up.set(1)
            self._serving_again("the store is read again")

    def on_commit(self, seconds: float, writes: int, succeeded: bool) -> None:
        self.metrics.on_commit(seconds, writes, succeeded)
        if succeeded and (self._thread_failed or self._unreachable):
            self._thread_failed = self._unreachable = False
            self._serving_again("the store commits again")

    def _serving_again(self, why: str) -> None:
        if not self._thread_failed:
            log.info("%s: the server reports SERVING", why)
            self._report(health_pb2.HealthCheckResponse.SERVING)

    def _report(self, status: Status) -> None:
        if self._health is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._set(self._health, status), self._loop)

    async def _set(self, servicer: health.aio.HealthServicer, status: Status) -> None:
        for service in self._services:
            await servicer.set(service, status)
