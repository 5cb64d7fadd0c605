"""`brein serve --workers N`: N serving processes on one port, as gRPC's multiprocessing example
does (examples/python/multiprocessing/server.py): the processes are started before any gRPC server
exists, each binds the port with SO_REUSEPORT, and the kernel spreads new connections over them.
They share nothing but the store, so it must be one that several processes write: PostgreSQL.

Process i serves its metrics on the metrics port plus i; only process 0 runs the worker (joiner,
learner, retention) beside itself, every process follows the store for the champion and the newest
snapshot. A process that dies is started again, within a budget: one that cannot start (its gRPC
port taken, its store gone) was restarted forever. SIGTERM or SIGINT stops them all, each draining.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import sys
import time
from collections import deque
from dataclasses import dataclass, field, replace
from multiprocessing.process import BaseProcess
from types import FrameType

from bandit.config import BreinConfig
from bandit.errors import BreinError
from serving.ports import bind_problem
from store.errors import StoreError
from store.opening import is_postgres

log = logging.getLogger("brein.serve")
RESTART_SECONDS = 1.0
MAX_PROCESSES = 64
"""The most serving processes: each holds its models, its store connections and a metrics port, and
the kernel spreads connections over them; past the cores of any one machine more serve no faster."""


@dataclass
class RestartBudget:
    """At most ``restarts`` restarts of one serving process within ``seconds``: a process that dies
    now and then is started again, one that cannot start ends the command."""

    restarts: int = 5
    seconds: float = 60.0
    _spent: deque[float] = field(default_factory=deque, init=False)

    def spend(self, now: float) -> bool:
        """Count a restart at ``now`` (monotonic seconds); False once that is one too many."""
        self._spent.append(now)
        while self._spent[0] <= now - self.seconds:
            self._spent.popleft()
        return len(self._spent) <= self.restarts


def check_processes(config: BreinConfig, processes: int) -> None:
    """BreinError unless ``processes`` serving processes can share the config's store and each can
    serve its metrics (on the metrics port plus its number)."""
    if not 1 <= processes <= MAX_PROCESSES:
        raise BreinError(f"--workers: expected 1 to {MAX_PROCESSES} serving processes, got {processes}")
    if processes > 1 and not is_postgres(config.server.store):
        raise BreinError(
            f"--workers {processes}: several serving processes need a store they can all write, PostgreSQL "
            f"(postgresql://...); {config.server.store} is SQLite, served by one process"
        )
    host, _, port = config.server.metrics_address.rpartition(":")
    if int(port) == 0:  # each takes a free one
        return
    if int(port) + processes - 1 > 65_535:
        raise BreinError(f"--workers {processes}: serving process i serves metrics on port {port} + i, past 65535; "
                         "lower server.metrics_address's port")  # fmt: skip
    for i in range(processes):
        if problem := bind_problem(host, int(port) + i):
            raise BreinError(f"--workers {processes}: serving process {i} cannot serve metrics on {host}:{int(port) + i}: "
                             f"{problem}")  # fmt: skip


def _serve(config: BreinConfig, process: int, processes: int, level: str) -> None:
    import asyncio

    from brain import logs
    from serving.server import serve

    logs.configure(level)
    try:
        asyncio.run(serve(config, process, processes))
    except (BreinError, StoreError) as error:  # said in one line, as `brein serve` says it
        log.error("serving process %d cannot serve: %s", process, error)
        sys.exit(1)


def serve_processes(config: BreinConfig, processes: int, level: str, budget: RestartBudget | None = None) -> int:
    """Run ``processes`` serving processes until SIGTERM or SIGINT; the exit code. BreinError, once
    the others are stopped, when a process dies more often than ``budget`` (a copy for each) allows."""
    check_processes(config, processes)
    budgets = [replace(budget or RestartBudget()) for _ in range(processes)]
    context = multiprocessing.get_context("spawn")  # a fresh interpreter each: no gRPC state forked
    stopping = False

    def start(i: int) -> BaseProcess:
        child = context.Process(target=_serve, args=(config, i, processes, level), name=f"brein-serve-{i}")
        child.start()
        return child

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.is_alive():
                child.terminate()  # SIGTERM: it drains in-flight calls and exits

    children = [start(i) for i in range(processes)]
    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stopping:
            for i, child in enumerate(children):
                if not child.is_alive() and not stopping:
                    if not budgets[i].spend(time.monotonic()):
                        stop(signal.SIGTERM, None)
                        for other in children:
                            other.join()
                        raise BreinError(f"serving process {i} exited {budgets[i].restarts + 1} times within "
                                         f"{budgets[i].seconds:g} s (last exit code {child.exitcode}); giving up")  # fmt: skip
                    log.error("serving process %d exited (exit code %s); starting it again", i, child.exitcode)
                    time.sleep(RESTART_SECONDS)
                    children[i] = start(i)
            time.sleep(0.2)
        for child in children:
            child.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return max((child.exitcode or 0) for child in children)
