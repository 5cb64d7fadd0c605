"""Supervised background threads: the one way a Brein process runs a loop in the background.

A background loop that raises does not die silently (a traceback on raw stderr, the process
living on without it): the failure is logged in the process's log (JSON once brain/logs.py has
configured it), reported to the process's ``ThreadFailure`` listener (which counts it, and marks a
server NOT_SERVING), and the loop is run again after a pause that doubles up to MAX_PAUSE, so that
it resumes by itself once the fault (a full disk, a lost database) is gone. Here at the bottom of
the layers so that the store's own threads (its writer) can use it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("brein.threads")

ThreadFailure = Callable[[str, BaseException], None]
"""Hears of a background thread's failure: the thread's name and the error it raised."""

IDLE_SAFE_THREADS = "brein-worker-file"
"""The start of the names of a store's threads that hold no lock a Decide waits for (SQLite: the
writer and checkpointer of the worker's own file): a worker process may run them on the CPU its
server leaves (brain/worker_process.py)."""

FIRST_PAUSE = 0.5
MAX_PAUSE = 10.0
"""Seconds before a failed loop runs again: FIRST_PAUSE, doubling up to MAX_PAUSE while it keeps failing."""


class Supervised:
    """``loop`` in a daemon thread named ``name``, run again whenever it raises, until it returns
    (the loop's owner ends it its own way, e.g. the writer on the None it queues at close)."""

    def __init__(self, name: str, loop: Callable[[], None], *, on_failure: ThreadFailure | None = None) -> None:
        self.name = name
        self._loop = loop
        self._on_failure = on_failure
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def _run(self) -> None:
        pause = FIRST_PAUSE
        while True:
            started = time.monotonic()
            try:
                self._loop()
                return
            except Exception as error:
                if time.monotonic() - started >= MAX_PAUSE:  # it had worked for a while: a new fault
                    pause = FIRST_PAUSE
                extra = {"background_thread": self.name}
                log.exception("background thread %s failed; it runs again in %.1f s", self.name, pause, extra=extra)
                if self._on_failure is not None:
                    try:
                        self._on_failure(self.name, error)
                    except Exception:
                        log.exception("the listener of background thread %s failed", self.name)
            time.sleep(pause)
            pause = min(2 * pause, MAX_PAUSE)
