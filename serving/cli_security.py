"""The `brein` commands for running it safely: API keys, pseudonyms, retention; and the client side
of TLS and API keys for the client commands (decide, outcome, explain, forget, ...)."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import click
import grpc
from rich.console import Console
from rich.table import Table

from bandit.config import BreinConfig, load_config
from bandit.config_types import MAX_DAYS
from bandit.errors import BreinError
from serving.cli_store import opened_store, store_option
from serving.cli_types import ApiKey, FiniteFloatRange
from serving.security import key_hash

console = Console()


def _config(path: str) -> BreinConfig:
    try:
        return load_config(path)
    except BreinError as error:
        raise click.ClickException(str(error)) from None


# -- client credentials ---------------------------------------------------------------------------


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _CallDetails(_Details, grpc.ClientCallDetails):  # type: ignore[misc]
    pass


class _BearerKey(grpc.UnaryUnaryClientInterceptor, grpc.StreamStreamClientInterceptor):  # type: ignore[misc]
    """Adds ``authorization: Bearer <key>`` to every call."""

    def __init__(self, key: str) -> None:
        self._metadata = ("authorization", f"Bearer {key}")

    def _details(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._metadata]
        return _CallDetails(
            details.method, details.timeout, metadata, details.credentials, details.wait_for_ready, details.compression
        )

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True)
class ClientCredentials:
    """How the client commands reach a secured server: TLS with ``ca_file`` (mutual with a client
    certificate), an API key as bearer metadata."""

    api_key: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    def channel(self, address: str) -> grpc.Channel:
        if (self.cert_file is None) != (self.key_file is None):
            raise click.UsageError("--cert-file and --key-file go together")
        if self.cert_file is not None and self.ca_file is None:
            raise click.UsageError("a client certificate needs TLS: add --ca-file")
        if self.ca_file is None:
            channel = grpc.insecure_channel(address)
        else:
            tls = grpc.ssl_channel_credentials(_read(self.ca_file), _read(self.key_file), _read(self.cert_file))
            channel = grpc.secure_channel(address, tls)
        return channel if self.api_key is None else grpc.intercept_channel(channel, _BearerKey(self.api_key))


def credential_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Options of the top-level group: credentials for every client command (or BREIN_* variables)."""
    path = click.Path(dir_okay=False, exists=True)
    for option in reversed(
        [
            click.option(
                "--api-key",
                envvar="BREIN_API_KEY",
                type=ApiKey(),
                help="API key sent as 'authorization: Bearer' (env BREIN_API_KEY).",
            ),
            click.option(
                "--ca-file", envvar="BREIN_CA_FILE", type=path, help="Connect over TLS, trusting this CA (env BREIN_CA_FILE)."
            ),
            click.option(
                "--cert-file",
                envvar="BREIN_CERT_FILE",
                type=path,
                help="Client certificate for mutual TLS (env BREIN_CERT_FILE).",
            ),
            click.option("--key-file", envvar="BREIN_KEY_FILE", type=path, help="Its private key (env BREIN_KEY_FILE)."),
        ]
    ):
        command = option(command)
    return command


# -- commands -------------------------------------------------------------------------------------


@click.group()
def key() -> None:
    """Make and hash API keys for [security.callers]."""


@key.command("new")
@click.option("--json", "as_json", is_flag=True, help="Print the key and its hash as JSON.")
def key_new(as_json: bool) -> None:
    """Print a new random API key (give it to the caller) and its SHA-256 (put it in the config)."""
    secret = "brein_" + secrets.token_urlsafe(32)
    digest = key_hash(secret)
    if as_json:
        click.echo(json.dumps({"api_key": secret, "api_key_sha256": digest}))
        return
    click.echo(f"API key (give it to the caller; it is not stored anywhere): {secret}")
    click.echo(f'config line for its [security.callers.NAME]:              api_key_sha256 = "{digest}"')


@key.command("hash")
def key_hash_command() -> None:
    """Read an API key on standard input and print the SHA-256 the config stores for it."""
    secret = sys.stdin.readline().strip()
    if not secret:
        raise click.UsageError("expected an API key on standard input")
    click.echo(key_hash(secret))


@click.command()
@click.argument("customer_id")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
def pseudonym(customer_id: str, config_path: str) -> None:
    """Print the pseudonym the store holds for a customer id (needs the pseudonymisation key)."""
    from bandit.pseudonyms import Pseudonyms

    config = _config(config_path)
    if not config.privacy.pseudonymise:
        raise click.ClickException(f"{config_path}: privacy.pseudonymise is off; the store holds raw customer ids")
    try:
        click.echo(Pseudonyms.from_config(config.privacy).customer_id(customer_id))
    except BreinError as error:
        raise click.ClickException(str(error)) from None


@click.group()
def retention() -> None:
    """Delete decisions, outcomes and joined examples older than privacy.retention_days."""


@retention.command("run")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False), help="The TOML config file.")
@store_option
@click.option("--days", type=FiniteFloatRange(min=0, min_open=True, max=MAX_DAYS),
              help="Retention in days; default privacy.retention_days.")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON, for scripts.")
def retention_run(config_path: str, store_url: str | None, days: float | None, as_json: bool) -> None:
    """Delete what is older than the retention now (the server also does it in the background)."""
    import time

    from policies.cli import cli_actor
    from reward.retention import apply_retention

    config = _config(config_path)
    days = days if days is not None else config.privacy.retention_days
    if days is None:
        raise click.ClickException(f"{config_path}: privacy.retention_days is not set; pass --days")
    if problem := config.retention_problem(days):
        raise click.ClickException(f"--days: {problem}")
    with opened_store(config, store_url) as store:
        report = apply_retention(store.privacy, store.audit, days, now=time.time(), actor=cli_actor())
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
        return
    table = Table(
        "decisions", "outcomes", "activations", "joined examples", "seconds", title=f"deleted: older than {days:g} days"
    )
    table.add_row(*(str(n) for n in report.deleted.values()), f"{report.seconds:.2f}")
    console.print(table)


COMMANDS = (key, pseudonym, retention)
