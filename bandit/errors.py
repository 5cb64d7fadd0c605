"""Domain errors. The serving edge maps each to one gRPC status code; the CLI to an exit code.
The store's own errors (StoreUnavailable, Conflict, ...) are in store/errors.py."""


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


class UnknownDecision(BreinError):
    """A decision id that the log does not hold."""

    def __init__(self, decision_id: str) -> None:
        super().__init__(f"decision_id: no decision {decision_id!r} in the log")
        self.decision_id = decision_id


class Unauthenticated(BreinError):
    """The caller sent no credentials, or credentials that match no configured caller."""


class PermissionDenied(BreinError):
    """An authenticated caller without the role a method needs."""


class RateLimited(BreinError):
    """A caller past its rate limit."""


class DeadlineExpired(BreinError):
    """The caller's deadline passed before the work started; nothing was done."""
