"""Domain errors. The serving edge maps each to one gRPC status code; the CLI to an exit code.

A message that quotes what a caller sent quotes it through ``excerpt``: an error must stay short
whatever came in (gRPC carries it in a trailer, and clients refuse trailers over 16 KiB).
The store's own errors (StoreUnavailable, Conflict, ...) are in store/errors.py.
"""

from pydantic import ValidationError

EXCERPT_CHARACTERS = 64


def excerpt(text: str) -> str:
    """``text`` quoted for an error message: whole up to 64 characters, else its start and its length."""
    if len(text) <= EXCERPT_CHARACTERS:
        return repr(text)
    return f"{text[:EXCERPT_CHARACTERS]!r}... ({len(text)} characters)"


def validation_problems(error: ValidationError) -> str:
    """A pydantic validation error in one line: each problem as its key path and the reason."""
    return "; ".join(f"{'.'.join(str(part) for part in item['loc']) or '(top level)'}: {item['msg']}" for item in error.errors())


class BreinError(Exception):
    """Base of every error Brein raises on purpose."""


class ConfigError(BreinError):
    """The configuration file is invalid; the message names the key and the reason."""


class InvalidRequest(BreinError):
    """A request field is invalid; the message names the field and the reason."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class OutOfRange(InvalidRequest):
    """A value beyond what Brein accepts: not finite, past its bound, too long. ``kind`` classes it
    for the refused-values metric ("outcome_value", "numeric_feature", "text"), never the value."""

    def __init__(self, field: str, reason: str, kind: str) -> None:
        super().__init__(field, reason)
        self.kind = kind


class UnknownDecision(BreinError):
    """A decision id that the log does not hold."""

    def __init__(self, decision_id: str, of: str = "") -> None:
        super().__init__(f"decision_id: no decision {excerpt(decision_id)} {of + ' ' if of else ''}in the log")
        self.decision_id = decision_id


class Unauthenticated(BreinError):
    """The caller sent no credentials, or credentials that match no configured caller."""


class PermissionDenied(BreinError):
    """An authenticated caller without the role a method needs."""


class RateLimited(BreinError):
    """A caller past its rate limit."""


class CustomerBusy(BreinError):
    """A customer with as many decisions in flight (made, not yet logged) as one may have: this one is
    not made; sent again once those are logged, it is."""


class DeadlineExpired(BreinError):
    """The caller's deadline passed before the work started; nothing was done."""
