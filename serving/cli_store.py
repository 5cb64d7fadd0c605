"""The commands' way to a store: the --store option and opening it, a store error made into a message."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import click

from bandit.config import BreinConfig
from store import Store, open_store
from store.errors import StoreError

store_option = click.option("--store", "store_url", help="The store's URL (or a SQLite file); default the config's server.store.")


@contextmanager
def opened_store(
    config: BreinConfig, store_url: str | None, *, write_pause: float = 0.0, create: bool = False
) -> Iterator[Store]:
    """The existing store at ``store_url`` (default the config's), closed afterwards; a store error in
    the block becomes a one-line message and exit code 1. A new one only with ``create``: a mistyped
    path made an empty store (and its folder) that `join` or `log export` then reported nothing from;
    the services (`serve`, `worker`), one of which starts first on a new database, create it."""
    try:
        store = open_store(store_url or config.server.store, write_pause=write_pause, create=create)
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    try:
        yield store
    except StoreError as error:
        raise click.ClickException(str(error)) from None
    finally:
        store.close()
