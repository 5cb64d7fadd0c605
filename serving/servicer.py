"""The DecisionService servicer: convert the request, call the core, convert back."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from bandit.decider import HeldWrite, PendingDecision
from bandit.errors import InvalidRequest, OutOfRange
from bandit.in_place import errors_in_place
from bandit.requests import DecisionRequest
from brain.core import Brain
from serving import converters
from serving.deadlines import durable, finished, settle
from serving.errors import status_for
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.security import actor
from serving.supervision import ThreadHealth
from store.errors import StoreUnavailable
from store.opening import is_postgres

log = logging.getLogger("brein.serving")

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]

BATCH_SLICE = 50
"""On SQLite, DecideBatch decides a chunk this many items at a time on the event loop (one store read
each), and lets the loop serve other calls between slices; the chunk's decisions are one write,
submitted after its last slice (a HeldWrite: one commit a chunk, not one a slice). On PostgreSQL a
chunk is decided in one call in the decide pool: one read (a round trip the loop need not wait out)
and one write for all its items."""
LOOP_TURNS = 8
"""Event-loop iterations other calls get after each slice: gRPC's server accepts one new call per
iteration, and a unary call takes a few more to be read, decided and answered. With one turn per
slice, a streaming campaign would set how fast the server accepts other calls."""
BATCH_AHEAD = 2
"""Chunks of one DecideBatch stream decided ahead of the one whose commit is awaited."""
DECIDE_THREADS = 8
"""Decides at once in one serving process on PostgreSQL: enough to overlap the round trips of the calls in flight."""

Result = PendingDecision | tuple[grpc.StatusCode, str]
"""A DecideBatch item's decision, or the status of its error."""


async def _other_calls_turn() -> None:
    for _ in range(LOOP_TURNS):
        await asyncio.sleep(0)


def _writes(results: Sequence[Result]) -> dict[Future[None], int]:
    """The writes a chunk's decisions wait for (a slice's decisions share one; a replayed one waits
    for the write of the request that made it), each with how many of its decisions are the chunk's own."""
    writes: dict[Future[None], int] = {}
    for result in results:
        if isinstance(result, PendingDecision):
            writes[result.committed] = writes.get(result.committed, 0) + (not result.replayed)
    return writes


def _report(metrics: Metrics, method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    code, message = status_for(error)
    metrics.rpc_errors.labels(method, code.name).inc()
    if isinstance(error, OutOfRange):
        metrics.refused_values.labels(error.kind).inc()
    if code is grpc.StatusCode.INTERNAL:
        log.error("internal error in %s", method, exc_info=error)
    return code, message


def unary(method: str) -> Callable[[Handler[Request, Response]], Handler[Request, Response]]:
    """Turn domain errors into their status code, counted; anything else into a bare INTERNAL."""

    def wrap(handler: Handler[Request, Response]) -> Handler[Request, Response]:
        @functools.wraps(handler)
        async def guarded(self: DecisionServicer, request: Request, context: grpc.aio.ServicerContext) -> Response:
            try:
                return await handler(self, request, context)
            except Exception as error:
                code, message = self._failed(method, error)
                await context.abort(code, message)
                raise  # unreachable: abort raises

        return guarded

    return wrap


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    def __init__(self, brain: Brain, metrics: Metrics, health: ThreadHealth | None = None) -> None:
        """``health``: told of every call that could not reach the store (serving/supervision.py)."""
        self.brain = brain
        self.metrics = metrics
        self.health = health
        # A read from SQLite takes tens of µs: a Decide is decided on the event loop, no hand-off to pay
        # for. A read from PostgreSQL is a round trip: Decides are decided in threads, so that calls
        # about other customers overlap their waits instead of queueing behind each one on the loop.
        self._deciders = ThreadPoolExecutor(DECIDE_THREADS, "brein-decide") if is_postgres(brain.store.url) else None
        self._result_bytes = converters.largest_result_bytes(brain.catalog)
        self.chunk_items = brain.config.limits.max_message_bytes // self._result_bytes
        """The most items a DecideBatch chunk may have: its answer then fits in one message, whatever is decided."""

    def _failed(self, method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
        """A call's (or a DecideBatch item's) error: counted, its status code and message."""
        if isinstance(error, StoreUnavailable) and self.health is not None:
            self.health.unavailable(error)
        return _report(self.metrics, method, error)

    def close(self) -> None:
        """Let the decide threads go, once the server has stopped: they finish what they began."""
        if self._deciders is not None:
            self._deciders.shutdown(wait=True)

    async def _decide(self, request: DecisionRequest) -> PendingDecision:
        if self._deciders is None:
            return self.brain.decide(request)
        return await finished(self._deciders.submit(self.brain.decide, request))

    async def _durable(self, future: Future[Any], context: grpc.aio.ServicerContext, *, abandon: bool = True) -> Any:
        """The write's result once durable; UNAVAILABLE before the caller's deadline when the store is stuck."""
        wait = self.brain.config.limits.store_wait_seconds
        return await durable(future, context, wait=wait, metrics=self.metrics, abandon=abandon)

    def _count(self, pending: PendingDecision) -> None:
        if not pending.replayed:
            record = pending.record
            self.metrics.decided(record.action_id, record.channel, record.policy_id)

    @unary("Decide")
    async def Decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        started = time.perf_counter()
        pending = await self._decide(converters.decision_request(request))
        await self._durable(pending.committed, context, abandon=not pending.replayed)
        if pending.refused is not None:
            raise pending.refused
        self._count(pending)
        self.metrics.decide_latency.observe(time.perf_counter() - started)
        return converters.decide_response(pending)

    async def DecideBatch(
        self, request_iterator: AsyncIterator[pb.DecideBatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DecideBatchResponse]:
        # A task decides the chunks as they come, up to BATCH_AHEAD ahead of the one being answered:
        # deciding goes on while the store commits the chunk before.
        decided: asyncio.Queue[list[Result] | Exception | None] = asyncio.Queue(BATCH_AHEAD)
        decider = asyncio.create_task(self._decide_chunks(request_iterator, decided))
        try:
            while (results := await decided.get()) is not None:
                if isinstance(results, Exception):
                    raise results
                yield await self._answer(results, context)
        finally:
            decider.cancel()
            await asyncio.gather(decider, return_exceptions=True)
            while not decided.empty():  # decided, never answered: not written unless already begun
                left = decided.get_nowait()
                if isinstance(left, list):
                    self._abandon(left)

    async def _decide_chunks(self, request_iterator: AsyncIterator[pb.DecideBatchRequest], decided: asyncio.Queue[Any]) -> None:
        try:
            async for chunk in request_iterator:
                results: list[Result] = []
                try:
                    items = chunk.items
                    self._check_chunk(len(items))
                    if self._deciders is not None:
                        results = await self._decide_in_pool(items)
                    else:
                        held = self.brain.hold_decisions()
                        try:
                            for start in range(0, len(items), BATCH_SLICE):
                                results += self._decide_slice(items[start : start + BATCH_SLICE], held)
                                await _other_calls_turn()
                        except BaseException:  # never released: its decisions must not stay in flight
                            held.cancel()
                            raise
                        held.release()
                    await decided.put(results)
                except asyncio.CancelledError:
                    self._abandon(results)
                    raise
        except Exception as error:  # the request stream failed (the caller's rate limit, ...): after the answers
            await decided.put(error)
            return
        await decided.put(None)

    def _check_chunk(self, items: int) -> None:
        """Refuse a chunk whose answer might not fit in a message, before any of it is decided: gRPC
        would refuse to send the answer of decisions already logged."""
        if items > self.chunk_items:
            limit = self.brain.config.limits.max_message_bytes
            each = self._result_bytes
            raise InvalidRequest("items", f"{items:,} items in one chunk, more than the {self.chunk_items:,} whose answer fits "
                                          f"in limits.max_message_bytes ({limit:,} bytes; up to {each:,} bytes an item): "
                                          f"split it into chunks of at most {self.chunk_items:,} items")  # fmt: skip

    async def _answer(self, results: list[Result], context: grpc.aio.ServicerContext) -> pb.DecideBatchResponse:
        """One chunk's response once its decisions are durable (or could not be made so in time)."""
        writes = _writes(results)
        futures = list(writes)
        wait = self.brain.config.limits.store_wait_seconds
        settled = await settle(futures, context, wait=wait, metrics=self.metrics, abandon=list(writes.values()))
        outcome = {id(future): result for future, result in zip(futures, settled, strict=True)}
        response = pb.DecideBatchResponse()
        for result in results:
            if isinstance(result, PendingDecision):
                error = outcome[id(result.committed)] or result.refused  # the write's failure, or the item's own
                if isinstance(error, Exception):
                    result = self._failed("DecideBatch", error)
            if isinstance(result, PendingDecision):
                self._count(result)
                converters.fill_decide_response(response.results.add().decision, result)
            else:
                code, message = result
                response.results.add(error=converters.item_error(code.value[0], message))
        return response

    def _abandon(self, results: list[Result]) -> None:
        """Cancel the writes of decisions that will not be answered, where they have not begun."""
        for future, mine in _writes(results).items():
            if mine and future.cancel():
                self.metrics.store_abandoned.inc(mine)

    async def _decide_in_pool(self, items: Sequence[pb.DecideRequest]) -> list[Result]:
        """A whole chunk decided in the decide pool; if the stream goes away meanwhile, the chunk's
        writes are abandoned once it is decided (those not begun are never written)."""
        assert self._deciders is not None
        future = self._deciders.submit(self._decide_slice, items)
        try:
            return await finished(future)
        except asyncio.CancelledError:
            future.add_done_callback(lambda done: self._abandon(done.result()))
            raise

    def _decide_slice(self, items: Sequence[pb.DecideRequest], held: HeldWrite | None = None) -> list[Result]:
        """Decide a slice of a chunk in one call of the core (its decisions joining ``held``'s write);
        an item's error stays the item's."""
        decided = errors_in_place(items, converters.decision_request, functools.partial(self._decide_valid, held=held))
        return [r if isinstance(r, PendingDecision) else _report(self.metrics, "DecideBatch", r) for r in decided]

    def _decide_valid(self, requests: list[DecisionRequest], held: HeldWrite | None) -> list[PendingDecision | Exception]:
        try:
            return self.brain.decide_many(requests, held)
        except Exception as error:  # the core could not decide at all (the store cannot be read): every item fails
            return [error] * len(requests)

    @unary("ReportOutcome")
    async def ReportOutcome(
        self, request: pb.ReportOutcomeRequest, context: grpc.aio.ServicerContext
    ) -> pb.ReportOutcomeResponse:
        record, stored = self.brain.report_outcome(converters.outcome_report(request))
        duplicate = await self._durable(stored, context)
        if not duplicate:
            self.metrics.outcomes.labels(record.type).inc()
        return pb.ReportOutcomeResponse(duplicate=duplicate, value=record.value)

    @unary("Activate")
    async def Activate(self, request: pb.ActivateRequest, context: grpc.aio.ServicerContext) -> pb.ActivateResponse:
        duplicate = await self._durable(self.brain.activate(converters.activation_report(request)), context)
        if not duplicate:
            self.metrics.activations.inc()
        return pb.ActivateResponse(duplicate=duplicate)

    @unary("Explain")
    async def Explain(self, request: pb.ExplainRequest, context: grpc.aio.ServicerContext) -> pb.ExplainResponse:
        explanation = await asyncio.get_running_loop().run_in_executor(None, self.brain.explain, request.decision_id)
        record = explanation.record
        detail = f"policy {record.policy_id}, model {record.model_version}"
        audited = self.brain.audit(actor(context), "explain", record.decision_id, detail)
        await self._durable(audited, context)  # no audit row, no answer
        return converters.explain_response(explanation)

    @unary("Forget")
    async def Forget(self, request: pb.ForgetRequest, context: grpc.aio.ServicerContext) -> pb.ForgetResponse:
        caller = actor(context)
        report = await self._durable(self.brain.forget(request.customer_id, actor=caller), context)
        log.info("forgot a customer on request of %s", caller, extra={"decisions": report.decisions, "outcomes": report.outcomes})
        return pb.ForgetResponse(
            decisions=report.decisions,
            outcomes=report.outcomes,
            activations=report.activations,
            joined_examples=report.joined_examples,
        )
