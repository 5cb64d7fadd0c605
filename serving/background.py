"""The joiner and the online learner in a process of their own, beside the server.

Joining and learning are long stretches of Python; in the server's process they would hold the GIL
that every Decide needs (a round over a 200,000-decision backlog put Decide's p99 at 300 calls/s
above 2 s). The worker process shares only the store with the server: it joins and learns as
``Brain.join_and_learn`` does, stores each snapshot, and tells the server its version; the server
loads that snapshot and swaps it in. Its writes are exactly once whatever happens to it, so the
server ends it with SIGTERM and starts another one if it dies. It ends by itself once the server's
end of the pipe is gone (the server was killed).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess

from bandit.config import BreinConfig
from bandit.store import ModelSnapshot
from reward.joiner import JoinReport

log = logging.getLogger("brein.background")

STOP_SECONDS = 5.0
WRITE_ROWS = 250
"""Joined examples per write beside a live server: each write holds SQLite's write lock, and the
server's Decide writes wait for it (50,000 rows, the joiner's own default, hold it about a second)."""
COMMIT_PAUSE = 0.01
"""Seconds the worker's writer waits after each commit: the server's writer, trying every
millisecond, takes the lock in between."""
NICENESS = 10
"""The worker's CPU priority below the server's: on a machine with few cores a round of learning
would otherwise take the core that Decide calls need."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The worker stored a snapshot of ``policy_id``'s model."""

    policy_id: str
    version: str


@dataclass(frozen=True, slots=True)
class Round:
    """One round of joining and learning is done."""

    report: JoinReport
    learned: int


@dataclass(frozen=True, slots=True)
class Failed:
    """A round failed (logged by the worker); the next one retries."""

    error: str


Message = Snapshot | Round | Failed


def _work(config: BreinConfig, store_path: str, interval: float, log_level: int, conn: Connection) -> None:
    """The worker process's entry point."""
    from serving import logs
    from serving.app import Brain

    logs.configure(logging.getLevelName(log_level))
    os.nice(NICENESS)

    def stored(snapshot: ModelSnapshot) -> None:
        conn.send(Snapshot(snapshot.policy_id, snapshot.version))

    brain = Brain(config, store_path, on_snapshot=stored, join_write_rows=WRITE_ROWS, commit_pause=COMMIT_PAUSE)
    try:
        while True:
            started = time.monotonic()
            try:
                report, learned = brain.join_and_learn()
                conn.send(Round(report, learned))
            except (BrokenPipeError, EOFError):
                return  # the server is gone
            except Exception as error:
                log.exception("join/learn round failed; retrying in %.0f s", interval)
                conn.send(Failed(f"{type(error).__name__}: {error}"))
            if conn.poll(max(0.0, interval - (time.monotonic() - started))):
                return  # the server closed its end (or sent anything): stop
    except (BrokenPipeError, EOFError):
        return
    finally:
        brain.close()


class BackgroundWorker:
    """One worker process and the server's end of its pipe."""

    def __init__(self, config: BreinConfig, store_path: str, interval: float) -> None:
        context = multiprocessing.get_context("spawn")  # not fork: the server has threads (gRPC, the store's writer)
        self._conn, child = context.Pipe()
        level = logging.getLogger().getEffectiveLevel()
        self._process: BaseProcess = context.Process(
            target=_work, args=(config, store_path, interval, level, child), name="brein-join-learn", daemon=True
        )
        self._process.start()
        child.close()

    def receive(self) -> Message | None:
        """The worker's next message (blocking); None once it has exited."""
        try:
            message: Message = self._conn.recv()
        except (EOFError, OSError):
            return None
        return message

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def stop(self) -> None:
        """End the worker (its writes are exactly once, so any moment will do) and wait for it."""
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(STOP_SECONDS)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(STOP_SECONDS)
        self._conn.close()  # after the worker is gone: a thread may still be waiting in receive()
