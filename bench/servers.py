"""The benchmark's servers, each in a process of its own: Brein's real server, and a no-op twin.

The no-op server is made by ``create_server`` itself with the servicer swapped for one that
answers every Decide with one fixed, realistic DecideResponse (sampled from a real decision at
start-up) and does nothing else. So both servers have the same grpc.aio options, health service
and reflection, whatever ``create_server`` does now or later; the only difference is the handler.

The parent talks to a server process over a pipe: it receives ``("ready", port)``, may send
``"cpu"`` (answered with the process's CPU seconds, all threads) and ends it with ``"stop"``.
"""

from __future__ import annotations

import asyncio
import cProfile
import time
from collections.abc import AsyncIterator
from multiprocessing.connection import Connection
from typing import Any
from unittest import mock

import grpc
from prometheus_client import CollectorRegistry

from bandit.config import parse_config
from bench.workload import customers, decide_request
from brain.core import Brain
from serving import converters, server
from serving.heap import freeze_startup_heap
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from store import open_store

KINDS = ("decide", "noop")


class NoopServicer(pb_grpc.DecisionServiceServicer):
    """Decide and DecideBatch answered with a fixed response: the cost of gRPC alone."""

    def __init__(self, response: pb.DecideResponse) -> None:
        self.response = response

    def close(self) -> None:
        """Nothing to let go (the server's stop closes its servicer)."""

    async def Decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        return self.response

    async def DecideBatch(
        self, request_iterator: AsyncIterator[pb.DecideBatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DecideBatchResponse]:
        async for chunk in request_iterator:
            response = pb.DecideBatchResponse()
            for _ in chunk.items:
                response.results.add(decision=self.response)
            yield response


def sample_response(brain: Brain, seed: int, samples: int = 51) -> pb.DecideResponse:
    """A real decision, converted as the servicer converts it: of the decisions for the first
    ``samples`` workload customers, the one with the median number of eligible actions."""
    responses = []
    for i, c in enumerate(customers(samples, seed)):
        pending = brain.decider.decide_and_wait(converters.decision_request(decide_request(c, request_id=f"noop-sample-{i}")))
        responses.append(converters.decide_response(pending))
    responses.sort(key=lambda r: len(r.ranking))
    return responses[len(responses) // 2]


async def _serve(kind: str, config_data: dict[str, Any], store_path: str, seed: int, conn: Connection, background: bool) -> None:
    brain = Brain(parse_config(config_data), open_store(store_path))
    metrics = Metrics(CollectorRegistry())
    if kind == "noop":
        noop = NoopServicer(sample_response(brain, seed))
        with mock.patch.object(server, "DecisionServicer", lambda *_: noop):
            running = await server.create_server(brain, metrics, "127.0.0.1:0")
    else:
        running = await server.create_server(brain, metrics, "127.0.0.1:0", background=background)
    freeze_startup_heap()  # as `brein serve` does once it is up (serving/heap.py)
    conn.send(("ready", running.port))
    loop = asyncio.get_running_loop()
    try:
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command == "cpu":
                conn.send(time.process_time())
            elif command == "model_changes":
                changes = ("count", "sum")
                conn.send(tuple(metrics.registry.get_sample_value(f"brein_model_change_seconds_{c}") or 0.0 for c in changes))
            elif command == "stop":
                break
            else:
                raise ValueError(f"expected 'cpu', 'model_changes' or 'stop', got {command!r}")
    finally:
        await running.stop(2.0)


def serve(
    kind: str, config_data: dict[str, Any], store_path: str, seed: int, conn: Connection, profile: str | None, background: bool = False
) -> None:
    """A server process's entry point; with ``profile``, cProfile's stats of the event-loop thread
    (where the handlers run) go to that file; with ``background``, the server joins and learns as
    ``brein serve`` does (Brein's server only)."""
    if kind not in KINDS:
        raise ValueError(f"expected kind in {KINDS}, got {kind!r}")
    profiler = cProfile.Profile() if profile else None
    if profiler is not None:
        profiler.enable()
    try:
        asyncio.run(_serve(kind, config_data, store_path, seed, conn, background))
    except BaseException as error:
        conn.send(("failed", f"{type(error).__name__}: {error}"))
        raise
    finally:
        if profiler is not None and profile is not None:
            profiler.disable()
            profiler.dump_stats(profile)
        conn.send("stopped")
        conn.close()
