"""`brein serve --workers N`: N serving processes on one port, as gRPC's multiprocessing example
does (examples/python/multiprocessing/server.py): the processes are started before any gRPC server
exists, each binds the port with SO_REUSEPORT, and the kernel spreads new connections over them.
They share nothing but the store, so it must be one that several processes write: PostgreSQL.

Process i serves its metrics on the metrics port plus i; only process 0 runs the worker (joiner,
learner, retention) beside itself, every process follows the store for the champion and the newest
snapshot. A process that dies is started again; SIGTERM or SIGINT stops them all, each draining.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import time
from multiprocessing.process import BaseProcess
from types import FrameType

from bandit.config import BreinConfig
from bandit.errors import BreinError
from store.opening import is_postgres

log = logging.getLogger("brein.serve")
RESTART_SECONDS = 1.0


def check_processes(config: BreinConfig, processes: int) -> None:
    """BreinError unless ``processes`` serving processes can share the config's store."""
    if processes < 1:
        raise BreinError(f"--workers: expected at least 1 serving process, got {processes}")
    if processes > 1 and not is_postgres(config.server.store):
        raise BreinError(
            f"--workers {processes}: several serving processes need a store they can all write, PostgreSQL "
            f"(postgresql://...); {config.server.store} is SQLite, served by one process"
        )


def _serve(config: BreinConfig, process: int, processes: int, level: str) -> None:
    import asyncio

    from brain import logs
    from serving.server import serve

    logs.configure(level)
    asyncio.run(serve(config, process, processes))


def serve_processes(config: BreinConfig, processes: int, level: str) -> int:
    """Run ``processes`` serving processes until SIGTERM or SIGINT; the exit code."""
    check_processes(config, processes)
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
