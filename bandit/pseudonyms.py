"""Pseudonymous customer ids: with ``[privacy] pseudonymise = true`` the core sees, stores and logs
only HMAC-SHA256(key, raw id), never the raw id a channel sent.

Applied once, where requests enter the core (``brain.core.Brain``): Decide, ReportOutcome and
Forget keep taking the raw id. The key comes from a file or an environment variable, never from
the config file; whoever holds it can recompute a customer's pseudonym (``brein pseudonym``), nobody
can reverse one. Changing the key cuts every customer off from their history.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
from pathlib import Path
from typing import TypeVar

from bandit.errors import ConfigError
from bandit.requests import check_text
from bandit.security_config import PrivacyConfig

MIN_KEY_BYTES = 16
PREFIX = "p1:"  # marks a pseudonym (and its scheme's version) wherever it shows up

HasCustomer = TypeVar("HasCustomer")


def load_key(privacy: PrivacyConfig, environ: dict[str, str] | None = None) -> bytes:
    """The HMAC key from ``key_file`` or ``key_env``; ConfigError naming the source when unusable."""
    if privacy.key_file is not None:
        try:
            key = Path(privacy.key_file).read_bytes().strip()
        except OSError as error:
            raise ConfigError(f"privacy.key_file: cannot read {privacy.key_file}: {error.strerror}") from None
        source = f"privacy.key_file {privacy.key_file}"
    elif privacy.key_env is not None:
        key = (os.environ if environ is None else environ).get(privacy.key_env, "").strip().encode()
        source = f"privacy.key_env: environment variable {privacy.key_env}"
    else:
        raise ConfigError("privacy: pseudonymise needs key_file or key_env")
    if len(key) < MIN_KEY_BYTES:
        raise ConfigError(f"{source}: expected a key of at least {MIN_KEY_BYTES} bytes, got {len(key)}")
    return key


class Pseudonyms:
    """Maps raw customer ids to what the core keeps; the identity when pseudonymisation is off."""

    def __init__(self, key: bytes | None) -> None:
        self._key = key

    @classmethod
    def from_config(cls, privacy: PrivacyConfig, environ: dict[str, str] | None = None) -> Pseudonyms:
        return cls(load_key(privacy, environ) if privacy.pseudonymise else None)

    @property
    def enabled(self) -> bool:
        return self._key is not None

    def customer_id(self, raw: str) -> str:
        if self._key is None:
            return raw
        check_text("customer_id", raw, required=True)  # checked on the raw id: an empty id must not hash
        return PREFIX + hmac.new(self._key, raw.encode("utf-8"), hashlib.sha256).hexdigest()

    def request(self, request: HasCustomer) -> HasCustomer:
        """A copy of a request dataclass (DecisionRequest, OutcomeReport) with its customer id pseudonymised."""
        if self._key is None:
            return request
        raw: str = request.customer_id  # type: ignore[attr-defined]
        return dataclasses.replace(request, customer_id=self.customer_id(raw))  # type: ignore[type-var]
