"""The gRPC server: DecisionService, the standard health service and server reflection."""

from __future__ import annotations

import asyncio
import logging
import math
import signal
from contextlib import ExitStack
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CollectorRegistry, start_http_server

from bandit.config import BreinConfig
from bandit.errors import BreinError
from brain.core import Brain, open_brain
from brain.worker import Failed, Joined, Retained, RetentionFailed, StandingBy, ThreadFailed, WorkerEvent
from serving.background import WorkerProcess
from serving.heap import freeze_startup_heap
from serving.metrics import Metrics
from serving.pb.brein.v1 import brein_pb2 as pb
from serving.pb.brein.v1 import brein_pb2_grpc as pb_grpc
from serving.ports import bind_problem
from serving.security import Guard, bind, transport
from serving.servicer import DecisionServicer
from serving.supervision import ThreadHealth
from store.errors import StoreUnavailable
from store.opening import in_memory

log = logging.getLogger("brein.server")

WORKER_PROCESS = "brein-worker-process"
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["DecisionService"].full_name


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    brain: Brain
    metrics: Metrics
    servicer: DecisionServicer
    background: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace: float) -> None:
        """Graceful: report NOT_SERVING, let in-flight requests finish, then close the store."""
        await self.health.enter_graceful_shutdown()
        for task in self.background:
            task.cancel()
        await asyncio.gather(*self.background, return_exceptions=True)
        await self.server.stop(grace)
        await _calls_finished()
        self.servicer.close()
        self.brain.store.close()


async def _calls_finished(timeout: float = 5.0) -> None:
    """Wait for gRPC's own per-call tasks. ``Server.stop`` returns once the core has no live call,
    but each call's task still has a step to run; if the loop closes first, ``asyncio.run``
    cancels it and gRPC logs that as "Exception not handled by _handle_exceptions" after our last line."""
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=timeout)


def _heard(metrics: Metrics, event: WorkerEvent) -> None:
    """What the worker said: a round to count, a failure, a retention run."""
    if isinstance(event, Joined):
        metrics.joined_round(event.joined, event.unactivated, event.late_outcomes, event.pending, event.learned, event.clamped,
                             event.provisional, event.set_aside)
    elif isinstance(event, Failed):
        metrics.background_failures.labels("brein-worker").inc()
    elif isinstance(event, ThreadFailed):
        metrics.background_failures.labels(event.thread).inc()  # the worker logged it
    elif isinstance(event, Retained):
        for kind, count in event.deleted.items():
            metrics.retention_deleted.labels(kind).inc(count)
        metrics.retention_runs.labels("ok").inc()
    elif isinstance(event, RetentionFailed):
        metrics.retention_runs.labels("failed").inc()
        metrics.background_failures.labels("brein-retention").inc()
    elif isinstance(event, StandingBy):
        log.info("another worker holds the store's worker lease: this server's worker stands by")


async def work_beside_forever(brain: Brain, metrics: Metrics, interval: float) -> None:
    """The worker (joiner, learner, retention) in a child process (serving/background.py); a worker
    that dies is counted and replaced after ``interval`` seconds."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            worker = WorkerProcess(brain.config, brain.store.url)
        except Exception:
            metrics.background_failures.labels(WORKER_PROCESS).inc()
            log.exception("could not start the worker; trying again in %.0f s", interval)
            await asyncio.sleep(interval)
            continue
        try:
            while (event := await loop.run_in_executor(None, worker.receive)) is not None:
                _heard(metrics, event)
        finally:
            await asyncio.shield(loop.run_in_executor(None, worker.stop))
        metrics.background_failures.labels(WORKER_PROCESS).inc()
        log.error("the worker exited (exit code %s); starting another in %.0f s", worker.exitcode, interval)
        await asyncio.sleep(interval)


async def follow_forever(
    brain: Brain, metrics: Metrics, interval: float, snapshot_interval: float, health: ThreadHealth | None = None
) -> None:
    """Serve what the store says, every ``interval`` seconds: the champion operators promote and roll
    back, the shadows, and the newest snapshot the worker learned once ``snapshot_interval`` seconds
    have passed since the serving model last changed. A failure is logged and counted
    (brein_background_failures_total{thread="brein-follow"}) and tried again at the next one.
    ``health`` hears whether the store could be read: the server's health follows it while no calls come."""
    loop = asyncio.get_running_loop()
    changed_at = -math.inf
    while True:
        try:
            started = loop.time()
            if await loop.run_in_executor(None, brain.follow, started - changed_at >= snapshot_interval):
                changed_at = loop.time()
                metrics.model_changes.observe(changed_at - started)
            if health is not None:
                health.read()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if health is not None and isinstance(error, StoreUnavailable):
                health.unavailable(error)
            metrics.background_failures.labels("brein-follow").inc()
            log.exception("could not follow the store; trying again in %.0f s", interval)
        await asyncio.sleep(interval)


def _why_unbindable(address: str) -> str:
    """Why gRPC could not bind ``address`` (gRPC does not say)."""
    host, _, port = address.rpartition(":")
    return (port.isdigit() and bind_problem(host, int(port))) or "gRPC could not bind it"


def serve_metrics(address: str, registry: CollectorRegistry, offset: int = 0) -> WSGIServer:
    """Prometheus's HTTP server on ``address`` (host:port), its port plus ``offset`` (port 0: any free
    one); BreinError naming the address and the OS's reason when it cannot be bound."""
    host, _, port = address.rpartition(":")
    number = int(port) + offset if int(port) else 0
    try:
        http_server, _ = start_http_server(number, addr=host, registry=registry)
    except OSError as error:  # in use, not an address of this machine, a host that does not resolve
        reason = error.strerror or str(error)
        raise BreinError(f"server.metrics_address {host}:{number}: cannot serve metrics there: {reason}") from None
    return http_server


async def create_server(
    brain: Brain,
    metrics: Metrics,
    address: str,
    *,
    background: bool = False,
    worker: bool = True,
    reuse_port: bool = False,
    thread_health: ThreadHealth | None = None,
) -> RunningServer:
    """Bind and start; ``address`` may end in ':0' to take a free port (tests bind 127.0.0.1:0).
    With ``background``, the server follows the store every ``server.follow_seconds`` and, with
    ``worker``, runs the worker (joiner, learner, retention) beside itself, on a store that other
    processes can open. ``reuse_port``: other processes may bind the same port (SO_REUSEPORT).
    ``thread_health``: the one the brain's store reports to; its health then follows the store's threads."""
    if background and in_memory(brain.store.url):
        raise ValueError(f"expected a store a worker process can open, got the in-memory {brain.store.url}")
    limits = brain.config.limits
    server = grpc.aio.server(
        interceptors=[Guard(brain.config.security, metrics)],  # deadline, caller, role, rate limit
        options=[
            ("grpc.max_receive_message_length", limits.max_message_bytes),
            ("grpc.max_send_message_length", limits.max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
        ]
    )
    servicer = DecisionServicer(brain, metrics, thread_health)
    pb_grpc.add_DecisionServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME), server)
    try:
        port = bind(server, brain.config, address)  # TLS per [tls]; plaintext only on loopback unless allowed
    except (RuntimeError, OSError):  # gRPC says only "Failed to bind to address ..."
        raise BreinError(f"server.address {address}: cannot serve gRPC there: {_why_unbindable(address)}") from None
    await server.start()
    services = ("", SERVICE_NAME)
    for service in services:
        await health_servicer.set(service, health_pb2.HealthCheckResponse.SERVING)
    if thread_health is not None:
        thread_health.bind(health_servicer, services, asyncio.get_running_loop())
    policy = brain.decider.policy
    metrics.serving(policy.policy_id, policy.model.version)
    tasks = []
    if background:
        following = brain.config.server
        follow = follow_forever(brain, metrics, following.follow_seconds, following.snapshot_seconds, thread_health)
        tasks.append(asyncio.create_task(follow))
        if worker:
            tasks.append(asyncio.create_task(work_beside_forever(brain, metrics, brain.config.joiner.interval_seconds)))
    return RunningServer(server, port, health_servicer, brain, metrics, servicer, tasks)


async def serve(config: BreinConfig, process: int = 0, processes: int = 1) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully. As serving process ``process`` of
    ``processes`` on one port (serving/processes.py): the port bound with SO_REUSEPORT, metrics on
    the metrics port plus ``process``, and only the first runs the worker beside itself."""
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    transport(config, config.server.address)  # refuse a plaintext non-loopback address before anything starts
    thread_health = ThreadHealth(metrics)
    with ExitStack() as started:  # stopped again if the rest cannot start: their threads would keep the process alive
        http_server = serve_metrics(config.server.metrics_address, registry, process)
        started.callback(http_server.shutdown)
        brain = open_brain(
            config,
            on_commit=thread_health.on_commit,
            on_model=lambda p: metrics.serving(p.policy_id, p.model.version),
            on_unusable=metrics.unusable,
            on_thread_failure=thread_health.failed,
        )
        started.callback(brain.store.close)
        running = await create_server(
            brain, metrics, config.server.address, background=True, worker=process == 0, reuse_port=processes > 1,
            thread_health=thread_health,
        )  # fmt: skip
        started.pop_all()
    frozen = freeze_startup_heap()
    log.info(
        "serving on %s, metrics on %s, store %s, %d actions, policy %s model %s",
        config.server.address, config.server.metrics_address, config.server.store, len(brain.catalog),
        brain.decider.policy.policy_id, brain.decider.policy.model.version,
        extra={"port": running.port, "metrics_port": http_server.server_port, "frozen_objects": frozen},
    )  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: draining in-flight requests for up to %.0f s", config.server.shutdown_grace)
    await running.stop(config.server.shutdown_grace)
    http_server.shutdown()
    log.info("stopped")
