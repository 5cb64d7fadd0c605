"""Who may call what: TLS on the port, authenticated callers with roles, a rate limit per caller.

Transport: ``[tls]`` makes the port TLS (``grpc.ssl_server_credentials``), and mutual TLS with
``client_ca_file``. Without ``[tls]`` the port is plaintext, which is allowed only on loopback
unless ``server.allow_plaintext = true`` says otherwise explicitly.

Callers: one ``grpc.aio.ServerInterceptor`` guards every DecisionService method. A caller proves who
it is with an API key (``authorization: Bearer <key>`` metadata; the config holds its SHA-256) or a
client certificate whose identity (its SANs, else its CN, as gRPC reports them) the config maps to
it. No credentials: UNAUTHENTICATED; a role the method does not allow: PERMISSION_DENIED; past the
caller's token bucket: RESOURCE_EXHAUSTED. Health and reflection stay open. Without ``[security]``
every call is allowed, as on a developer's loopback.

Requests are decoded here, after admission, not by gRPC before it: gRPC decodes a request before
any interceptor runs, so corrupt bytes would reach its parser without credentials and be answered
UNKNOWN with an ERROR traceback each. Here they are INVALID_ARGUMENT, counted, and logged as one
WARNING line per method a minute at most.
"""

from __future__ import annotations

import contextvars
import hashlib
import ipaddress
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from bandit.config import BreinConfig
from bandit.errors import (
    BreinError,
    ConfigError,
    DeadlineExpired,
    InvalidRequest,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    excerpt,
)
from bandit.security_config import SecurityConfig, TLSConfig
from brain.logs import LimitedLog
from serving.errors import status_for
from serving.metrics import Metrics

SERVICE = "/brein.v1.DecisionService/"
ROLE_OF_METHOD: dict[str, str] = {
    SERVICE + "Decide": "channel",
    SERVICE + "DecideBatch": "channel",
    SERVICE + "ReportOutcome": "channel",
    SERVICE + "Activate": "channel",
    SERVICE + "Explain": "analyst",
    SERVICE + "Forget": "admin",
}
# Any other method (policy changes, anything added later) is for admins only: closed by default.
DEFAULT_ROLE = "admin"
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")
MALFORMED_LINES_PER_MINUTE = 1
"""WARNING lines a minute, per method, about request bodies that do not decode."""

log = logging.getLogger("brein.security")

_caller: contextvars.ContextVar[str | None] = contextvars.ContextVar("brein_caller", default=None)


def actor(context: grpc.aio.ServicerContext) -> str:
    """The authenticated caller's name, for the audit table; the peer address when [security] is off."""
    return _caller.get() or f"unauthenticated {context.peer()}"


def key_hash(key: str) -> str:
    """What the config stores for an API key: its SHA-256, hex."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


# -- transport ------------------------------------------------------------------------------------


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1, localhost and unix sockets; False for 0.0.0.0, [::] and the rest."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _pem(path: str, key: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ConfigError(f"{key}: cannot read {path}: {error.strerror}") from None
    if b"-----BEGIN " not in data:
        raise ConfigError(f"{key}: {path} is not a PEM file")
    return data


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials:
    cert, key = _pem(tls.cert_file, "tls.cert_file"), _pem(tls.key_file, "tls.key_file")
    client_ca = None if tls.client_ca_file is None else _pem(tls.client_ca_file, "tls.client_ca_file")
    _check_loads(tls)
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def _check_loads(tls: TLSConfig) -> None:
    """ConfigError unless the files are a certificate, its own private key and (if given) CA
    certificates: gRPC takes any PEM text here and fails only when it binds the port, with no reason
    (the store opened by then), so they are loaded first by OpenSSL, which says what is wrong."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=b"")
    except ssl.SSLError as error:
        raise ConfigError(f"tls.cert_file, tls.key_file: {tls.cert_file} and {tls.key_file} are not a certificate and its "
                          f"unencrypted private key ({error.reason or error})") from None  # fmt: skip
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(tls.client_ca_file)
        except ssl.SSLError as error:
            why = error.reason or error
            raise ConfigError(f"tls.client_ca_file: {tls.client_ca_file} holds no CA certificate ({why})") from None


def transport(config: BreinConfig, address: str) -> grpc.ServerCredentials | None:
    """The port's credentials, or None for plaintext; ConfigError when plaintext is not allowed there."""
    if config.tls is not None:
        return server_credentials(config.tls)
    if not is_loopback(address) and not config.server.allow_plaintext:
        raise ConfigError(
            f"server.address {address}: plaintext gRPC is allowed only on loopback; configure [tls] cert_file and key_file, "
            "or set server.allow_plaintext = true to accept plaintext explicitly"
        )
    return None


def bind(server: grpc.aio.Server, config: BreinConfig, address: str) -> int:
    credentials = transport(config, address)
    port: int = server.add_insecure_port(address) if credentials is None else server.add_secure_port(address, credentials)
    if port == 0:
        raise OSError(f"could not bind {address}")
    return port


# -- callers --------------------------------------------------------------------------------------


@dataclass(slots=True)
class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; a call takes one (a batch one per item)."""

    rate: float
    burst: float
    clock: Callable[[], float] = time.monotonic
    tokens: float = field(init=False)
    stamp: float = field(init=False)

    def __post_init__(self) -> None:
        self.tokens, self.stamp = self.burst, self.clock()

    def take(self, cost: float = 1.0) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < cost:
            return False
        self.tokens -= cost
        return True


@dataclass(slots=True)
class Caller:
    name: str
    roles: frozenset[str]
    bucket: TokenBucket


class Callers:
    """The configured callers, found by API-key hash or by client-certificate identity."""

    def __init__(self, security: SecurityConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.by_key: dict[str, Caller] = {}
        self.by_cert: dict[str, Caller] = {}
        for name, c in security.callers.items():
            bucket = TokenBucket(c.rate_per_second or security.rate_per_second, float(c.burst or security.burst), clock)
            caller = Caller(name, frozenset(c.roles), bucket)
            if c.api_key_sha256:
                self.by_key[c.api_key_sha256] = caller
            for cert_name in c.client_cert_names:
                self.by_cert[cert_name] = caller

    def authenticate(self, metadata: Sequence[tuple[str, Any]] | None, identities: Sequence[bytes] | None) -> Caller:
        """An API key, when sent, must be valid; else a client certificate's identity must be mapped."""
        for key, value in metadata or ():
            if key == "authorization":
                scheme, _, secret = str(value).partition(" ")
                if scheme.lower() != "bearer" or not secret.strip():
                    raise Unauthenticated("authorization: expected 'Bearer <API key>'")
                caller = self.by_key.get(key_hash(secret.strip()))
                if caller is None:
                    raise Unauthenticated("the API key matches no configured caller")
                return caller
        names = [i.decode("utf-8", "replace") for i in identities or ()]
        for name in names:
            caller = self.by_cert.get(name)
            if caller is not None:
                return caller
        if names:
            raise Unauthenticated(f"client certificate {excerpt(', '.join(names))} is not a configured caller")
        raise Unauthenticated("no credentials: send 'authorization: Bearer <API key>' metadata or a client certificate")


def _cost(message: Any) -> int:
    """Rate-limit tokens a streamed message takes: one per item of a DecideBatch chunk."""
    items = getattr(message, "items", None)
    return max(1, len(items)) if items is not None else 1


class Guard(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    """Deadline, authentication, role and rate limit in front of every DecisionService method."""

    def __init__(self, security: SecurityConfig | None, metrics: Metrics, clock: Callable[[], float] = time.monotonic) -> None:
        self.callers = None if security is None else Callers(security, clock)
        self.metrics = metrics
        self.malformed_log = LimitedLog(log, limit=MALFORMED_LINES_PER_MINUTE, period=60.0, clock=clock)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler
        return self._wrap(handler, method)

    async def _refuse(self, context: grpc.aio.ServicerContext, method: str, error: BreinError) -> None:
        code, message = status_for(error)
        self.metrics.rpc_errors.labels(method.rpartition("/")[2], code.name).inc()
        await context.abort(code, message)

    def _admit(self, context: grpc.aio.ServicerContext, method: str, cost: int) -> Caller | None:
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExpired("the deadline passed before the call began; nothing was done")
        if self.callers is None:
            return None
        caller = self.callers.authenticate(context.invocation_metadata(), context.peer_identities())
        role = ROLE_OF_METHOD.get(method, DEFAULT_ROLE)
        if role not in caller.roles:
            raise PermissionDenied(f"caller {caller.name} lacks the {role} role that {method.rpartition('/')[2]} needs")
        _caller.set(caller.name)  # this RPC's task only: the servicer reads it for the audit trail
        self._spend(caller, cost)
        return caller

    def _decode(self, decode: Callable[[bytes], Any], body: bytes, method: str, context: grpc.aio.ServicerContext) -> Any:
        """The request message; InvalidRequest (no parser internals) for bytes that are not one."""
        try:
            return decode(body)
        except DecodeError:
            name = method.rpartition("/")[2]
            line = "%s request body of %d bytes from %s does not decode"
            self.malformed_log.warning(name, line, name, len(body), actor(context))
            raise InvalidRequest("request body", f"not a valid {decode.__self__.DESCRIPTOR.name}") from None  # type: ignore[attr-defined]

    def _spend(self, caller: Caller, cost: int) -> None:
        """Take ``cost`` tokens, or refuse: RateLimited while the bucket refills, InvalidRequest for
        a cost over the burst, which no wait lets pass (a DecideBatch chunk of more items)."""
        burst = caller.bucket.burst
        if cost > burst:
            raise InvalidRequest("items", f"{cost} items in one chunk, more than caller {caller.name}'s rate-limit burst of "
                                          f"{burst:g}: such a chunk never passes; "
                                          f"split it into chunks of at most {burst:g} items")
        if not caller.bucket.take(cost):
            self.metrics.rate_limited.labels(caller.name).inc()
            raise RateLimited(f"caller {caller.name} is over its rate limit of {caller.bucket.rate:g} calls a second "
                              f"(burst {caller.bucket.burst:g}); retry later")  # fmt: skip

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        """The same handler with the guard in front, for each of gRPC's four kinds of method. gRPC
        hands it the request bytes (no deserializer): they are decoded once the caller is admitted."""
        guard = self
        decode = handler.request_deserializer
        kwargs = {"request_deserializer": None, "response_serializer": handler.response_serializer}

        async def admit(context: grpc.aio.ServicerContext, cost: int) -> Caller | None:
            try:
                return guard._admit(context, method, cost)
            except BreinError as error:
                await guard._refuse(context, method, error)
                raise  # unreachable: abort raises

        async def decoded(body: bytes, context: grpc.aio.ServicerContext) -> Any:
            try:
                return guard._decode(decode, body, method, context)
            except InvalidRequest as error:
                await guard._refuse(context, method, error)
                raise  # unreachable: abort raises

        async def metered(
            bodies: AsyncIterator[bytes], caller: Caller | None, context: grpc.aio.ServicerContext
        ) -> AsyncIterator[Any]:
            async for body in bodies:
                message = guard._decode(decode, body, method, context)
                if caller is not None:
                    guard._spend(caller, _cost(message))
                yield message

        async def unary_unary(body: bytes, context: grpc.aio.ServicerContext) -> Any:
            await admit(context, 1)
            return await handler.unary_unary(await decoded(body, context), context)

        async def unary_stream(body: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            await admit(context, 1)
            async for response in handler.unary_stream(await decoded(body, context), context):
                yield response

        # A stream's messages are decoded and paid for as the servicer reads them (a DecideBatch item
        # is a call); the first that does not decode or is over the limit ends the stream.
        async def stream_unary(bodies: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> Any:
            caller = await admit(context, 0)
            try:
                return await handler.stream_unary(metered(bodies, caller, context), context)
            except (RateLimited, InvalidRequest) as error:
                await guard._refuse(context, method, error)

        async def stream_stream(bodies: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            caller = await admit(context, 0)
            try:
                async for response in handler.stream_stream(metered(bodies, caller, context), context):
                    yield response
            except (RateLimited, InvalidRequest) as error:
                await guard._refuse(context, method, error)

        if handler.unary_unary is not None:
            return grpc.unary_unary_rpc_method_handler(unary_unary, **kwargs)
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(unary_stream, **kwargs)
        if handler.stream_unary is not None:
            return grpc.stream_unary_rpc_method_handler(stream_unary, **kwargs)
        return grpc.stream_stream_rpc_method_handler(stream_stream, **kwargs)
