"""`python -m brain.worker_process STORE_URL LOG_LEVEL`: the worker (brain/worker.py) as a child of
`brein serve`, its joining, learning and tuning on the CPU the server leaves, so that Decide keeps its latency.

Joining and learning are long stretches of Python; in the server's process they would hold the GIL
that every Decide needs (a round over a 200,000-decision backlog put Decide's p99 at 300 calls/s
above 2 s). The child shares only the store with its server. It reads its config (JSON) from the
first line of its standard input, writes its events (worker.event_line) to its standard output,
logs JSON lines to standard error, and ends once its standard input closes: when its server stops
or is killed. Its writes are exactly once whatever happens to it, so the server may end it at any
moment (SIGTERM) and starts another one if it dies. It imports nothing of `serving`.
"""

from __future__ import annotations

import json
import logging
import os
import select
import sys
import threading

from bandit.config import parse_config
from brain import logs
from brain.worker import BESIDE_A_SERVER_COMMIT_PAUSE, ThreadFailed, WorkerEvent, event_line, work
from store import open_store
from store.errors import StoreError, StoreReplaced
from store.threads import IDLE_SAFE_THREADS

log = logging.getLogger("brein.worker")


def yield_cpu_to_the_server() -> None:
    """This thread (joining, learning, tuning, retention) runs on the CPU the server leaves: on a
    machine with few cores a round of learning or tuning would otherwise take the core that Decide
    calls need. Linux's SCHED_IDLE: a waking Decide thread preempts it at once (at niceness 10 or 19
    it waited out the worker's time slice: Decide's worst 2 s window while the worker tuned 16-45 ms
    against 8-14 ms; docs/benchmarks.md, "Decide while the worker tunes"), and it still gets a small
    share of a busy CPU, so the log is joined and learned from under load too. Elsewhere the lowest
    niceness. This thread and the store's threads that hold no lock a Decide waits for
    (store.threads.IDLE_SAFE_THREADS: the SQLite worker's own file's writer, which ran at the server's
    priority for 2 s of a 10 s join while the server's loop waited for a CPU 20% of the time,
    docs/benchmarks.md); Linux sets a scheduling policy per thread. The store's other threads keep
    the server's priority: while the log's writer holds SQLite's write lock the server's Decide
    writes wait for it (docs/benchmarks.md, "The worker's lock holds")."""
    if not hasattr(os, "sched_setscheduler"):
        os.nice(19)
        return
    idle = os.sched_param(0)
    os.sched_setscheduler(0, os.SCHED_IDLE, idle)
    for thread in threading.enumerate():
        if thread.name.startswith(IDLE_SAFE_THREADS) and thread.native_id is not None:
            os.sched_setscheduler(thread.native_id, os.SCHED_IDLE, idle)


_reporting = threading.Lock()  # the store's supervised threads report too


def _report(event: WorkerEvent) -> None:
    with _reporting:
        sys.stdout.write(event_line(event) + "\n")
        sys.stdout.flush()


def _thread_failed(thread: str, error: BaseException) -> None:
    """A supervised thread of the store failed (logged there, and it runs again): the server counts it."""
    _report(ThreadFailed(thread, f"{type(error).__name__}: {error}"))


def _stop(timeout: float) -> bool:
    """Wait up to ``timeout`` seconds; True once the server has closed our standard input."""
    ready, _, _ = select.select([sys.stdin], [], [], timeout)
    return bool(ready)


def main() -> None:
    url, level = sys.argv[1:3]
    logs.configure(level)
    config = parse_config(json.loads(sys.stdin.readline()), source="the server's config")
    try:
        # Not created: the server opened (or made) the store; a child that found none at its URL (a
        # database dropped and created anew) would build an empty one for the server to decide on.
        store = open_store(url, write_pause=BESIDE_A_SERVER_COMMIT_PAUSE, create=False, on_thread_failure=_thread_failed)
    except StoreError as error:
        log.error("the worker cannot work on the store: %s", error)
        sys.exit(1)
    yield_cpu_to_the_server()  # after the store's threads started: the others keep the server's priority
    try:
        work(config, store, _report, _stop)
    except BrokenPipeError:  # the server is gone: nobody to flush the rest of standard output to
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except StoreReplaced as error:  # the store's URL holds another store now: nothing of it is ours to work on
        log.error("the worker stops: %s", error)
        sys.exit(1)
    finally:
        store.close()


if __name__ == "__main__":
    main()
