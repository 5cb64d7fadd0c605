"""The config sections that keep customer data safe: [tls], [security], [privacy] and [limits].

No secret is ever in the config file itself: callers' API keys are stored as their SHA-256 (the
keys are 256-bit random strings, so a fast hash is enough: there is nothing to brute-force), and
the pseudonymisation key is read from a file or an environment variable named here.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from bandit.config_types import ConfigSection, Days, Seconds

Role = Literal["channel", "analyst", "admin"]
CallerName = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
Sha256Hex = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class TLSConfig(ConfigSection):
    """TLS on the gRPC port. With ``client_ca_file``, mutual TLS: every connection must present a
    client certificate signed by that CA (gRPC Python either requires client certificates or does
    not ask for them)."""

    cert_file: str = Field(min_length=1)
    key_file: str = Field(min_length=1)
    client_ca_file: str | None = None


class CallerConfig(ConfigSection):
    """One calling backend or operator: its roles and how it proves who it is."""

    roles: list[Role] = Field(min_length=1)
    # sha256 hex of the caller's API key (`brein key new` makes a key and prints its hash).
    api_key_sha256: Sha256Hex | None = None
    # Client-certificate identities (the SANs, or the CN when there are none) that are this caller.
    client_cert_names: list[Annotated[str, Field(min_length=1)]] = []
    # Token bucket: sustained calls per second and the burst; absent means [security]'s defaults.
    rate_per_second: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _has_a_credential(self) -> CallerConfig:
        if self.api_key_sha256 is None and not self.client_cert_names:
            raise ValueError("a caller needs api_key_sha256 or client_cert_names")
        return self


class SecurityConfig(ConfigSection):
    """Authenticated callers with roles. Without a [security] section every caller may do everything
    (the local loopback default); with one, a call without valid credentials is refused."""

    callers: dict[CallerName, CallerConfig] = Field(min_length=1)
    rate_per_second: float = Field(default=200.0, gt=0)
    burst: int = Field(default=400, ge=1)

    @model_validator(mode="after")
    def _unique_credentials(self) -> SecurityConfig:
        seen: dict[str, str] = {}
        for name, caller in self.callers.items():
            credentials = [f"api key {caller.api_key_sha256[:12]}..."] if caller.api_key_sha256 else []
            credentials += [f"client certificate name {n!r}" for n in caller.client_cert_names]
            for credential in credentials:
                if credential in seen:
                    raise ValueError(f"callers {seen[credential]} and {name} share the {credential}")
                seen[credential] = name
        return self


class PrivacyConfig(ConfigSection):
    # Store customer ids as HMAC-SHA256 pseudonyms, keyed from a file or an environment variable.
    pseudonymise: bool = False
    key_file: str | None = None
    key_env: str | None = None
    # Delete decisions, outcomes and joined examples older than this (by event time); absent keeps all.
    retention_days: Days | None = None
    retention_interval_seconds: Seconds = 3600.0

    @model_validator(mode="after")
    def _one_key_source(self) -> PrivacyConfig:
        if self.key_file is not None and self.key_env is not None:
            raise ValueError("set one of key_file and key_env, not both")
        if self.pseudonymise and self.key_file is None and self.key_env is None:
            raise ValueError("pseudonymise needs key_file or key_env (the key is never in the config itself)")
        return self


class LimitsConfig(ConfigSection):
    # Largest gRPC message accepted or sent; bigger ones get RESOURCE_EXHAUSTED.
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    # Longest a write waits for the store when the caller set no (longer) deadline; then UNAVAILABLE.
    store_wait_seconds: Seconds = 2.0


Roles = frozenset[Role]
ALL_ROLES: Roles = frozenset(("channel", "analyst", "admin"))
