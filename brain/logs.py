"""Structured logs: one JSON object per line, for events worth a person's attention, and a limit on
lines a caller can cause at will."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import UTC, datetime

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


@dataclass(slots=True)
class _Window:
    start: float
    logged: int = 0
    held: int = 0


class LimitedLog:
    """At most ``limit`` lines per key every ``period`` seconds through ``logger``, for events a
    caller can cause at will (corrupt request bytes): a line each would let anyone fill the log.
    The next line let through after some were held back says how many (``suppressed``); metrics
    count every event. Keys must be a small set (method names): each keeps a window."""

    def __init__(self, logger: logging.Logger, *, limit: int, period: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.limit = limit
        self.period = period
        self._clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._lock = threading.Lock()

    def warning(self, key: Hashable, message: str, *args: object) -> bool:
        """Log a WARNING line unless ``key`` had its ``limit`` this period; True when logged."""
        now = self._clock()
        with self._lock:
            window = self._windows.get(key)
            if window is None or now - window.start >= self.period:
                window = self._windows[key] = _Window(now, held=window.held if window else 0)
            if window.logged >= self.limit:
                window.held += 1
                return False
            window.logged += 1
            held, window.held = window.held, 0
        if held:
            message, args = message + "; %d more like it not logged before this one", (*args, held)
        self.logger.warning(message, *args, extra={"suppressed": held} if held else None)
        return True
