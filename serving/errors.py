"""One table from domain errors to gRPC status codes. INTERNAL never carries the exception text."""

from __future__ import annotations

import grpc

from bandit.errors import (
    CustomerBusy,
    DeadlineExpired,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    UnknownDecision,
)
from store.errors import Conflict, StaleHistory, StoreUnavailable

STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownDecision: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.ALREADY_EXISTS,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    StaleHistory: grpc.StatusCode.ABORTED,  # another replica kept deciding for the customer: retry
    Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    RateLimited: grpc.StatusCode.RESOURCE_EXHAUSTED,
    CustomerBusy: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExpired: grpc.StatusCode.DEADLINE_EXCEEDED,
}

INTERNAL_MESSAGE = "internal error; the server log has the details"


def status_for(error: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS_OF.items():
        if isinstance(error, kind):
            return code, str(error)
    return grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE
