"""The server's health follows its store's background threads (store/threads.py): a thread's failure
is counted and makes the server NOT_SERVING, so that load balancers send its work elsewhere; the
store's next successful commit (the thread runs again by itself) makes it SERVING again."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TypeAlias

from grpc_health.v1 import health, health_pb2

from serving.metrics import Metrics

Status: TypeAlias = health_pb2.HealthCheckResponse.ServingStatus.ValueType
log = logging.getLogger("brein.server")


class ThreadHealth:
    """Give ``failed`` and ``on_commit`` to the server's store (open_store), then ``bind`` the
    running server's health service."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._down = False
        self._health: health.aio.HealthServicer | None = None
        self._services: Sequence[str] = ()
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, servicer: health.aio.HealthServicer, services: Sequence[str], loop: asyncio.AbstractEventLoop) -> None:
        self._health, self._services, self._loop = servicer, services, loop

    def failed(self, thread: str, error: BaseException) -> None:
        """On the failed thread: count it and report NOT_SERVING until the store commits again."""
        self.metrics.background_failures.labels(thread).inc()
        self._down = True
        log.error("the server reports NOT_SERVING until its store commits again (%s failed)", thread)
        self._report(health_pb2.HealthCheckResponse.NOT_SERVING)

    def on_commit(self, seconds: float, writes: int, succeeded: bool) -> None:
        self.metrics.on_commit(seconds, writes, succeeded)
        if succeeded and self._down:
            self._down = False
            log.info("the store commits again: the server reports SERVING")
            self._report(health_pb2.HealthCheckResponse.SERVING)

    def _report(self, status: Status) -> None:
        if self._health is not None and self._loop is not None:
            asyncio.run_coroutine_threadsafe(self._set(self._health, status), self._loop)

    async def _set(self, servicer: health.aio.HealthServicer, status: Status) -> None:
        for service in self._services:
            await servicer.set(service, status)
