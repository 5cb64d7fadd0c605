"""Why an address cannot be bound: gRPC says only that it could not ("Failed to bind to address"),
so a plain socket tries the same and the OS's error says why (in use, not an address of this
machine, no such host)."""

from __future__ import annotations

import socket


def bind_problem(host: str, port: int) -> str | None:
    """Why a listening socket cannot bind ``host:port`` now, as the OS says it; None when it can.
    With SO_REUSEADDR, as gRPC's and Prometheus's servers bind: a port a closed server left in
    TIME_WAIT is free to them."""
    try:
        found = socket.getaddrinfo(host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, _, _, where = found[0]
        with socket.socket(family, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(where)
    except OSError as error:
        return error.strerror or str(error)
    return None
