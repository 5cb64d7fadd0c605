"""The load generator: a grpc.aio client in a process of its own, so it does not share the
server's GIL, driven by the parent over a pipe.

Unary calls go out as pre-serialised bytes and come back as bytes (no protobuf work in the
client's hot loop), so the client stays cheap next to the server it measures. Every call has a
deadline, and every loop is bounded in count and in time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import grpc

from bench.workload import request_bases, with_request_id
from serving.pb.brein.v1 import brein_pb2 as pb

DECIDE = "/brein.v1.DecisionService/Decide"
DECIDE_BATCH = "/brein.v1.DecisionService/DecideBatch"
DEADLINE = 10.0
SAMPLE_EVERY = 64  # parse one response in this many to see how many actions were eligible


@dataclass
class ClosedLoop:
    """``concurrency`` calls always in flight; throughput counted after a warm-up."""

    address: str
    concurrency: int
    warmup: float
    duration: float
    max_requests: int
    tag: str


@dataclass
class OpenLoop:
    """Calls sent on a fixed schedule whatever the completions; latency from the scheduled time."""

    address: str
    rate: float
    count: int
    warmup_count: int
    tag: str


@dataclass
class Batch:
    """One DecideBatch stream, ``window`` chunks in flight, until ``max_decisions`` or ``max_seconds``."""

    address: str
    chunk: int
    max_decisions: int
    max_seconds: float
    window: int
    tag: str


Command = ClosedLoop | OpenLoop | Batch


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


class Client:
    def __init__(self, customers: int, seed: int) -> None:
        self.bases = request_bases(customers, seed)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._rng = random.Random(seed)

    async def channel(self, address: str) -> grpc.aio.Channel:
        """A channel to ``address``; to several servers, ``ipv4:HOST:PORT,HOST:PORT``, with calls
        spread over them round robin (as a channel backend spreads them over replicas)."""
        channel = self._channels.get(address)
        if channel is None:
            options = [("grpc.lb_policy_name", "round_robin")] if "," in address else []
            channel = grpc.aio.insecure_channel(address, options=options)
            await asyncio.wait_for(channel.channel_ready(), DEADLINE)
            self._channels[address] = channel
        return channel

    def request(self, tag: str, sequence: int) -> bytes:
        """A request for a customer drawn at random from the pool, with a fresh request id."""
        base = self.bases[self._rng.randrange(len(self.bases))]
        return with_request_id(base, f"{tag}-{sequence}")

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()

    async def closed_loop(self, c: ClosedLoop) -> dict[str, Any]:
        call = (await self.channel(c.address)).unary_unary(DECIDE)
        sequence = itertools.count()
        completed = errors = 0
        eligible: list[int] = []
        stop = False

        async def worker() -> None:
            nonlocal completed, errors
            while not stop:
                n = next(sequence)
                if n >= c.max_requests:
                    return
                try:
                    reply = await call(self.request(c.tag, n), timeout=DEADLINE)
                except grpc.aio.AioRpcError:
                    errors += 1
                    continue
                completed += 1
                if n % SAMPLE_EVERY == 0:
                    eligible.append(len(pb.DecideResponse.FromString(reply).ranking))

        cpu0 = time.process_time()
        workers = [asyncio.create_task(worker()) for _ in range(c.concurrency)]
        await asyncio.sleep(c.warmup)
        done0, t0, cpu1 = completed, time.perf_counter(), time.process_time()
        await asyncio.sleep(c.duration)
        done1, t1, cpu2 = completed, time.perf_counter(), time.process_time()
        stop = True
        await asyncio.wait(workers, timeout=DEADLINE + 1)
        return {
            "rate": (done1 - done0) / (t1 - t0),
            "completed": completed,
            "errors": errors,
            "client_cpu": (cpu2 - cpu1) / (t1 - t0),
            "client_cpu_total": time.process_time() - cpu0,
            "eligible": statistics.fmean(eligible) if eligible else float("nan"),
        }

    async def open_loop(self, o: OpenLoop) -> dict[str, Any]:
        call = (await self.channel(o.address)).unary_unary(DECIDE)
        latencies: list[float] = [float("nan")] * o.count
        errors = 0
        eligible: list[int] = []

        async def one(n: int, scheduled: float) -> None:
            nonlocal errors
            try:
                reply = await call(self.request(o.tag, n), timeout=DEADLINE)
            except grpc.aio.AioRpcError:
                errors += 1
                return
            latencies[n] = time.perf_counter() - scheduled
            if n % SAMPLE_EVERY == 0:
                eligible.append(len(pb.DecideResponse.FromString(reply).ranking))

        start = time.perf_counter() + 0.05
        tasks = []
        late = 0.0
        for n in range(o.count):
            scheduled = start + n / o.rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                late = max(late, -delay)
            tasks.append(asyncio.create_task(one(n, scheduled)))
        await asyncio.wait(tasks, timeout=DEADLINE + 1)
        measured = sorted(x for x in latencies[o.warmup_count :] if x == x)
        return {
            "p50": percentile(measured, 0.50),
            "p99": percentile(measured, 0.99),
            "max": measured[-1] if measured else float("nan"),
            "measured": len(measured),
            "latencies": measured,
            "errors": errors,
            "sender_late": late,
            "eligible": statistics.fmean(eligible) if eligible else float("nan"),
        }

    async def batch(self, b: Batch) -> dict[str, Any]:
        call = (await self.channel(b.address)).stream_stream(
            DECIDE_BATCH,
            request_serializer=pb.DecideBatchRequest.SerializeToString,
            response_deserializer=pb.DecideBatchResponse.FromString,
        )
        window = asyncio.Semaphore(b.window)
        deadline = time.perf_counter() + b.max_seconds
        sent = 0

        async def chunks() -> AsyncIterator[pb.DecideBatchRequest]:
            nonlocal sent
            while sent < b.max_decisions and time.perf_counter() < deadline:
                await window.acquire()
                size = min(b.chunk, b.max_decisions - sent)
                chunk = pb.DecideBatchRequest()
                for n in range(sent, sent + size):
                    chunk.items.add().MergeFromString(self.request(b.tag, n))
                sent += size
                yield chunk

        decisions = errors = 0
        eligible: list[int] = []
        started = time.perf_counter()
        stream = call(chunks(), timeout=b.max_seconds + 2 * DEADLINE)
        async for response in stream:
            window.release()
            for result in response.results:
                if result.HasField("decision"):
                    decisions += 1
                    eligible.append(len(result.decision.ranking))
                else:
                    errors += 1
        seconds = time.perf_counter() - started
        return {
            "decisions": decisions,
            "errors": errors,
            "sent": sent,
            "seconds": seconds,
            "rate": decisions / seconds,
            "eligible": statistics.fmean(eligible) if eligible else float("nan"),
        }

    async def run(self, command: Command) -> dict[str, Any]:
        if isinstance(command, ClosedLoop):
            return await self.closed_loop(command)
        if isinstance(command, OpenLoop):
            return await self.open_loop(command)
        return await self.batch(command)


async def _drive(conn: Connection, customers: int, seed: int) -> None:
    client = Client(customers, seed)
    loop = asyncio.get_running_loop()
    conn.send("ready")
    try:
        while True:
            command = await loop.run_in_executor(None, conn.recv)
            if command is None:
                return
            try:
                conn.send(("ok", await client.run(command)))
            except Exception as error:  # report to the parent, keep serving the next command
                conn.send(("error", f"{type(error).__name__}: {error}"))
    finally:
        await client.close()


def drive(conn: Connection, customers: int, seed: int) -> None:
    """The client process's entry point: run each command sent over ``conn`` until ``None``."""
    try:
        asyncio.run(_drive(conn, customers, seed))
    finally:
        conn.close()
