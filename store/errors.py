"""What a store raises on purpose. The gRPC edge maps each to a status code (serving/errors.py); the
CLIs print it and exit non-zero. Every backend raises these, never its driver's own exceptions."""

from __future__ import annotations

REASON_CHARACTERS = 200


def reason(error: BaseException) -> str:
    """A database driver's error as a caller reads it: its first line, clipped to REASON_CHARACTERS
    (libpq's run on with the state of its pipeline, "\\nPQsendQuery..."; the whole error stays
    chained to the StoreError for the logs)."""
    line = str(error).strip().split("\n", 1)[0]
    return line if len(line) <= REASON_CHARACTERS else f"{line[:REASON_CHARACTERS]}..."


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class StoreUnavailable(StoreError):
    """The store could not commit (or be reached); nothing of the failed write remains."""


class StoreReplaced(StoreUnavailable):
    """The database at the store's URL holds another store than the one this process opened (it was
    dropped and created anew, or restored from another): nothing is read from or written to it until
    the process is restarted, which then opens what is there as it would any store."""


class Conflict(StoreError):
    """A write that contradicts what the store holds: an idempotency key reused with different
    content, a policy id registered twice, a registry transition from a state the policy has left."""


class StaleHistory(StoreError):
    """Decisions were made on customer histories that another process changed before they committed
    (see DecisionLog.submit_decisions): those of ``customers`` were not written, and the caller
    decides them again; the write's decisions for its other customers were. ``customers`` None:
    the whole write was refused."""

    def __init__(self, message: str, customers: frozenset[str] | None = None) -> None:
        super().__init__(message)
        self.customers = customers


class LeaseLost(StoreError):
    """A write of a store instance that held the worker lease and holds it no more (its lease's
    connection broke; another worker may be working on the store now): refused, nothing written."""


class UnknownStore(StoreError):
    """A store URL that names no backend that is built, or no store where one must exist."""
