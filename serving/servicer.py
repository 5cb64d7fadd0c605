"""The DecisionService servicer: convert the request, call the core, convert back."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

import grpc

from bandit.decider import PendingDecision
from serving import converters
from serving.app import Brain
from serving.deadlines import durable, settle
from serving.errors import status_for
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.security import actor

log = logging.getLogger("brein.serving")

Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]


def _report(metrics: Metrics, method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    code, message = status_for(error)
    metrics.rpc_errors.labels(method, code.name).inc()
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
                code, message = _report(self.metrics, method, error)
                await context.abort(code, message)
                raise  # unreachable: abort raises

        return guarded

    return wrap


class DecisionServicer(pb_grpc.DecisionServiceServicer):
    def __init__(self, brain: Brain, metrics: Metrics) -> None:
        self.brain = brain
        self.metrics = metrics

    async def _durable(self, future: Future[Any], context: grpc.aio.ServicerContext, *, abandon: bool = True) -> Any:
        """The write's result once durable; UNAVAILABLE before the caller's deadline when the store is stuck."""
        wait = self.brain.config.limits.store_wait_seconds
        return await durable(future, context, wait=wait, metrics=self.metrics, abandon=abandon)

    def _count(self, pending: PendingDecision) -> None:
        if not pending.replayed:
            record = pending.record
            self.metrics.decisions.labels(record.action_id, record.channel, record.policy_id).inc()

    @unary("Decide")
    async def Decide(self, request: pb.DecideRequest, context: grpc.aio.ServicerContext) -> pb.DecideResponse:
        started = time.perf_counter()
        pending = self.brain.decide(converters.decision_request(request))
        await self._durable(pending.committed, context, abandon=not pending.replayed)
        self._count(pending)
        self.metrics.decide_latency.observe(time.perf_counter() - started)
        return converters.decide_response(pending)

    async def DecideBatch(
        self, request_iterator: AsyncIterator[pb.DecideBatchRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.DecideBatchResponse]:
        async for chunk in request_iterator:
            results: list[PendingDecision | tuple[grpc.StatusCode, str]] = []
            for item in chunk.items:
                try:
                    results.append(self.brain.decide(converters.decision_request(item)))
                except Exception as error:
                    results.append(_report(self.metrics, "DecideBatch", error))
            response = pb.DecideBatchResponse()
            pending = [r for r in results if isinstance(r, PendingDecision)]
            wait, abandon = self.brain.config.limits.store_wait_seconds, [not p.replayed for p in pending]
            settled = await settle([p.committed for p in pending], context, wait=wait, metrics=self.metrics, abandon=abandon)
            committed = iter(settled)
            for result in results:
                if isinstance(result, PendingDecision):
                    outcome = next(committed)
                    if isinstance(outcome, Exception):
                        result = _report(self.metrics, "DecideBatch", outcome)
                if isinstance(result, PendingDecision):
                    self._count(result)
                    response.results.add(decision=converters.decide_response(result))
                else:
                    code, message = result
                    response.results.add(error=pb.ItemError(code=code.value[0], message=message))
            yield response

    @unary("ReportOutcome")
    async def ReportOutcome(self, request: pb.ReportOutcomeRequest, context: grpc.aio.ServicerContext) -> pb.ReportOutcomeResponse:
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
            decisions=report.decisions, outcomes=report.outcomes, activations=report.activations, joined_examples=report.joined_examples
        )
