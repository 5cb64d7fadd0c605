"""The worker (brain/worker.py) in a child process beside the server: `brein serve` starts it, counts
what it reports in the server's metrics, ends it with the server and starts another if it dies.

The child runs `python -m brain.worker_process`: a process of its own, so joining and learning never
hold the server's GIL, and one that imports nothing of the server. The server does not hear of
snapshots from it: every server follows the store (Brain.follow), whoever learned.
"""

from __future__ import annotations

import logging
import subprocess
import sys

from bandit.config import BreinConfig
from brain import worker_process
from brain.worker import WorkerEvent, parse_event

log = logging.getLogger("brein.background")

STOP_SECONDS = 5.0


class WorkerProcess:
    """One worker child and the server's ends of its pipes."""

    def __init__(self, config: BreinConfig, store_url: str) -> None:
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
        command = [sys.executable, "-m", worker_process.__name__, store_url, level]
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        self._stdin.write(config.model_dump_json() + "\n")
        self._stdin.flush()  # and kept open: the child ends when it closes

    @property
    def pid(self) -> int:
        return self._process.pid

    def receive(self) -> WorkerEvent | None:
        """The worker's next event (blocking); None once it has exited."""
        line = self._stdout.readline()
        return parse_event(line) if line else None

    @property
    def exitcode(self) -> int | None:
        return self._process.poll()

    def stop(self) -> None:
        """End the worker (its writes are exactly once, so any moment will do) and wait for it."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(STOP_SECONDS)
        self._stdin.close()
        self._stdout.close()  # after the worker is gone: a thread may still be waiting in receive()
